"""Bottom-up-attention style image regions from a PaddleDetection Faster R-CNN (UNIMO paper §2.1).

UNIMO sees an image as up to 100 regions, each a 2048-d Faster R-CNN RoI feature, a box and the detector's
class distribution (1600 Visual Genome objects + background), as produced by bottom-up-attention
(github.com/peteanderson80/bottom-up-attention, ``tools/generate_tsv.py``). This module builds that detector
with paddledet 2.6.0 from our own config dict and follows ``generate_tsv.py``:

1. backbone + RPN give up to ``proposals`` boxes;
2. every proposal is RoI-pooled and run through the box head: feature (global average pool of ``Res5Head``
   for C4, 2048-d; the ``TwoFCHead`` output for FPN, 1024-d) and ``softmax(bbox_score)`` over
   ``num_classes + 1`` columns (paddledet puts background last; the stored distribution puts it **first**,
   as bottom-up-attention's ``cls_prob`` does, so extracted and converted stores agree);
3. per-class NMS (IoU ``nms_iou``) over the foreground classes; a box's confidence is its best score over
   the classes in which it survives NMS; keep boxes with confidence >= ``conf_threshold``, but at least
   ``min_boxes`` and at most ``max_boxes`` (the most confident), ordered by confidence.

Boxes are the **proposals** by default, as in ``generate_tsv.py``: the feature was pooled from exactly that
box, so box and feature describe the same region. ``regress_boxes=True`` instead runs NMS on each class's
regressed boxes (the class-specific deltas of ``bbox_delta``) and reports the regressed box of the winning
class. Boxes are in original-image pixels, clipped to ``[0, W] x [0, H]``.

An image without proposals (frequent with random weights) gets one whole-image region, so every image has at
least one region; the result's notes say so.
"""
from __future__ import annotations

import copy
import contextlib
import os
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..data.regions import RegionRecord
from ..fileio import DataError
from . import paddledet_compat

# paddledet's test-time NormalizeImage (ImageNet statistics, RGB in [0, 1]).
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclass
class ExtractorConfig:
    arch: str = "c4"  # "c4": ResNet-C4 + Res5Head (2048-d, as bottom-up attention); "fpn": R50-FPN (1024-d)
    depth: Optional[int] = None  # ResNet depth; None = 101 for c4, 50 for fpn
    num_classes: int = 1600  # foreground classes (Visual Genome objects); the detector adds background
    proposals: int = 300  # RPN boxes kept after NMS, i.e. RoIs through the box head (its cost is per RoI)
    pre_nms_top_n: int = 6000
    rpn_nms: float = 0.7
    short_side: int = 600  # resize target of the short side (small CPU default; paddledet trains at 800)
    max_side: int = 1000  # cap of the long side
    conf_threshold: float = 0.2
    nms_iou: float = 0.3
    min_boxes: int = 10
    max_boxes: int = 100
    regress_boxes: bool = False
    roi_batch: int = 64  # RoIs per box-head call, bounds memory (C4: ~1.6 MB per RoI in res5)

    def __post_init__(self):
        if self.arch not in ("c4", "fpn"):
            raise ValueError(f"arch must be 'c4' or 'fpn', got {self.arch!r}")
        if self.depth is None:
            self.depth = 101 if self.arch == "c4" else 50
        if self.depth not in (50, 101, 152):  # bottleneck ResNets: res5 gives the 2048 channels of feature_dim
            raise ValueError(f"depth must be 50, 101 or 152, got {self.depth}")
        if not 1 <= self.min_boxes <= self.max_boxes:
            raise ValueError(f"need 1 <= min_boxes <= max_boxes, got {self.min_boxes}, {self.max_boxes}")
        if not (0.0 <= self.conf_threshold <= 1.0 and 0.0 < self.nms_iou <= 1.0):
            raise ValueError(f"conf_threshold must be in [0, 1] and nms_iou in (0, 1], got "
                             f"{self.conf_threshold}, {self.nms_iou}")
        for name in ("proposals", "short_side", "max_side", "roi_batch", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def feature_dim(self) -> int:
        return 2048 if self.arch == "c4" else 1024

    @property
    def pad_stride(self) -> int:
        return 32 if self.arch == "fpn" else 0  # FPN adds upsampled maps to laterals: sizes must divide by 32


def ppdet_config(cfg: ExtractorConfig) -> dict:
    """The paddledet config dict (what a PaddleDetection YAML would hold) for ``create('FasterRCNN')``."""
    fpn = cfg.arch == "fpn"
    test_proposal = {"min_size": 0.0, "nms_thresh": cfg.rpn_nms, "pre_nms_top_n": cfg.pre_nms_top_n,
                     "post_nms_top_n": cfg.proposals}
    return {
        "architecture": "FasterRCNN",
        "num_classes": cfg.num_classes,
        "FasterRCNN": {"backbone": "ResNet", "neck": "FPN" if fpn else None, "rpn_head": "RPNHead",
                       "bbox_head": "BBoxHead", "bbox_post_process": "BBoxPostProcess"},
        "ResNet": {"depth": cfg.depth, "norm_type": "bn", "freeze_at": 0,
                   "return_idx": [0, 1, 2, 3] if fpn else [2], "num_stages": 4 if fpn else 3},
        "FPN": {"out_channel": 256},
        "RPNHead": {
            "anchor_generator": {"aspect_ratios": [0.5, 1.0, 2.0],
                                 "anchor_sizes": [[32], [64], [128], [256], [512]] if fpn
                                 else [32, 64, 128, 256, 512],
                                 "strides": [4, 8, 16, 32, 64] if fpn else [16]},
            "rpn_target_assign": {"batch_size_per_im": 256, "fg_fraction": 0.5, "negative_overlap": 0.3,
                                  "positive_overlap": 0.7, "use_random": True},
            "train_proposal": {"min_size": 0.0, "nms_thresh": 0.7, "pre_nms_top_n": 2000,
                               "post_nms_top_n": 1000 if fpn else 2000, "topk_after_collect": fpn},
            "test_proposal": test_proposal},
        "BBoxHead": {"head": "TwoFCHead" if fpn else "Res5Head", "bbox_assigner": "BBoxAssigner",
                     "roi_extractor": {"resolution": 7 if fpn else 14, "sampling_ratio": 0, "aligned": True},
                     "with_pool": not fpn},
        "Res5Head": {"depth": cfg.depth},
        "TwoFCHead": {"out_channel": 1024},
        "BBoxAssigner": {"batch_size_per_im": 512, "bg_thresh": 0.5, "fg_thresh": 0.5, "fg_fraction": 0.25,
                         "use_random": True},
        "BBoxPostProcess": {"decode": "RCNNBox", "nms": {"name": "MultiClassNMS", "keep_top_k": 100,
                                                         "score_threshold": 0.05, "nms_threshold": 0.5}},
    }


@contextlib.contextmanager
def _scoped_ppdet_config():
    """paddledet keeps one process-global config that merge_config and create mutate; restore it afterwards
    so that building C4 and then FPN in one process does not leak keys (e.g. ``neck``) between them."""
    from ppdet.core.config.schema import SchemaDict
    from ppdet.core.workspace import global_config
    saved = {k: (copy.deepcopy(dict(v)) if isinstance(v, SchemaDict) else v) for k, v in global_config.items()}
    try:
        yield
    finally:
        for key in [k for k in global_config if k not in saved]:
            del global_config[key]
        for key, value in saved.items():
            if isinstance(global_config[key], SchemaDict):
                dict.clear(global_config[key])
                dict.update(global_config[key], value)
            else:
                global_config[key] = value


def build_detector(cfg: ExtractorConfig, weights: Optional[str] = None, random_weights: bool = False,
                   seed: int = 0):
    """Faster R-CNN in eval mode, with ``weights`` (.pdparams, strict) or seeded random weights if asked."""
    if bool(weights) == bool(random_weights):
        raise ValueError("pass exactly one of weights=<file.pdparams> or random_weights=True")
    paddledet_compat.apply()
    import paddle
    from ppdet.core.workspace import create, merge_config
    if random_weights:
        paddle.seed(seed)  # reproducible initialisation (and no change to the caller's RNG otherwise)
    with _scoped_ppdet_config():
        merge_config(ppdet_config(cfg))
        model = create("FasterRCNN")
    if weights:
        load_weights(model, weights)
    else:
        _zero_residual_gamma(model)
    model.eval()
    return model


def _zero_residual_gamma(model) -> None:
    """Random weights only: zero the scale of the last BN in every residual branch (zero-gamma, Goyal et al.
    2017). With paddle's default init and frozen BN statistics (mean 0, var 1) activations grow about 1.5x per
    block, to ~1e5 after ResNet-101, and the RPN then decodes every anchor into one empty box. With zero-gamma
    each block starts as its shortcut, activations stay O(1) and the RPN yields ordinary boxes. The features
    remain meaningless; this only keeps the pipeline's shapes and counts realistic for tests and benchmarks."""
    import paddle
    from ppdet.modeling.backbones.resnet import BasicBlock, BottleNeck
    for layer in model.sublayers():
        last = getattr(layer, "branch2c", None) if isinstance(layer, BottleNeck) else \
            getattr(layer, "branch2b", None) if isinstance(layer, BasicBlock) else None
        if last is not None:
            last.norm.weight.set_value(paddle.zeros(last.norm.weight.shape, last.norm.weight.dtype))


def load_weights(model, path: str) -> None:
    """Strict load: every model tensor present with its shape, no tensor of the file left unused."""
    from ..checkpoint import read_paddle_file
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: weights file not found")
    state = read_paddle_file(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {list(state[k].shape)} vs model {list(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if list(state[k].shape) != list(own[k].shape)]
    problems = [f"{len(items)} {what} (first: {items[:8]})" for what, items in
                (("missing", missing), ("unexpected", unexpected), ("shape mismatches", shapes)) if items]
    if problems:
        raise DataError(f"{path} does not fit this detector ({model.__class__.__name__}, "
                         f"{len(own)} tensors): " + "; ".join(problems))
    model.set_state_dict(state)


class ImageError(Exception):
    """An image that cannot be used; ``str(err)`` is the reason written to errors.jsonl."""


def read_image(path: str) -> Tuple[np.ndarray, List[str]]:
    """RGB uint8 (H, W, 3) and notes on conversions (grayscale, alpha, 16-bit, tiny), or ImageError.

    The stored pixel grid is used as is (no EXIF rotation), so boxes, image_w and image_h refer to it."""
    import cv2
    if not os.path.exists(path):
        raise ImageError("broken symlink" if os.path.islink(path) else "missing file")
    if not os.path.isfile(path):
        raise ImageError("not a regular file")
    data = np.fromfile(path, np.uint8)  # with imdecode: also works for non-ASCII paths
    if data.size == 0:
        raise ImageError("empty file")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageError("cv2 cannot decode it (corrupt or not an image)")
    notes = []
    if image.dtype == np.uint16:
        image, notes = (image / 257.0).round().astype(np.uint8), notes + ["16-bit scaled to 8-bit"]
    elif image.dtype != np.uint8:
        raise ImageError(f"unsupported pixel type {image.dtype}")
    channels = 1 if image.ndim == 2 else image.shape[2]
    codes = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}
    if channels not in codes:
        raise ImageError(f"unsupported channel count {channels}")
    notes += {1: ["grayscale converted to RGB"], 4: ["alpha channel dropped"]}.get(channels, [])
    if min(image.shape[:2]) < 32:
        notes.append(f"tiny image {image.shape[1]}x{image.shape[0]}: upscaled by the resize")
    return cv2.cvtColor(image, codes[channels]), notes


def preprocess(image: np.ndarray, cfg: ExtractorConfig):
    """paddledet's test pipeline: keep-ratio resize (cubic), normalize, CHW, pad to stride. Returns numpy
    ``image (1,3,H',W')``, ``im_shape (1,2)`` = resized h, w and ``scale_factor (1,2)`` = (sy, sx)."""
    import cv2
    h, w = image.shape[:2]
    scale = min(cfg.short_side / min(h, w), cfg.max_side / max(h, w))
    new_h, new_w = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_CUBIC)
    chw = ((resized.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    if cfg.pad_stride:
        s = cfg.pad_stride
        padded = np.zeros((3, -(-new_h // s) * s, -(-new_w // s) * s), np.float32)
        padded[:, :new_h, :new_w] = chw
        chw = padded
    return (chw[None], np.array([[new_h, new_w]], np.float32),
            np.array([[new_h / h, new_w / w]], np.float32))


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS; indices kept, best first. Continuous coordinates (no +1 pixel)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order, keep = np.argsort(-scores, kind="stable"), []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        inter = (np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
                 * np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None))
        union = np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[inter / union <= iou]
    return np.asarray(keep, np.int64)


def best_scores(class_boxes: np.ndarray, probs: np.ndarray, iou: float, floor: float):
    """Per box: max score over the foreground classes where it survives per-class NMS, and that class.

    ``class_boxes (N, C, 4)`` (or (N, 1, 4) shared by all classes), ``probs (N, C+1)`` background last.
    Only (box, class) pairs scoring >= floor take part. That is exact for every box whose result is >= floor:
    in greedy NMS a pair is only suppressed by a higher-scoring pair, and those all pass the floor.
    """
    conf = np.zeros(len(probs), np.float32)
    best = np.zeros(len(probs), np.int64)
    fg = probs[:, :-1]
    for c in np.flatnonzero((fg >= floor).any(axis=0)):
        cand = np.flatnonzero(fg[:, c] >= floor)
        boxes = class_boxes[cand, c if class_boxes.shape[1] > 1 else 0]
        kept = cand[nms(boxes, fg[cand, c], iou)]
        better = fg[kept, c] > conf[kept]
        conf[kept[better]], best[kept[better]] = fg[kept[better], c], c
    return conf, best


def select_regions(class_boxes: np.ndarray, probs: np.ndarray, cfg: ExtractorConfig) -> tuple:
    """generate_tsv.py's choice: indices of the kept boxes (most confident first) and their best class."""
    floors = [cfg.conf_threshold, cfg.conf_threshold / 10, cfg.conf_threshold / 100, 0.0]
    for floor in floors:  # lower the floor only when too few boxes reach it (see best_scores)
        conf, best = best_scores(class_boxes, probs, cfg.nms_iou, floor)
        if floor == 0.0 or (conf >= floor).sum() >= min(cfg.min_boxes, len(conf)):
            break
    order = np.argsort(-conf, kind="stable")
    n = int((conf >= cfg.conf_threshold).sum())
    n = min(max(n, cfg.min_boxes), cfg.max_boxes, len(conf))
    return order[:n], best[order[:n]]


def describe(cfg: ExtractorConfig) -> dict:
    """The settings that decide the extracted values, as recorded beside a region store."""
    return {**asdict(cfg), "feature_dim": cfg.feature_dim,
            "class_probs": f"{cfg.num_classes + 1} columns, first = background"}


class RegionExtractor:
    """Image -> RegionRecord. ``timings`` accumulates seconds per stage over all images."""

    def __init__(self, cfg: ExtractorConfig, weights: Optional[str] = None, random_weights: bool = False,
                 seed: int = 0):
        self.cfg = cfg
        self.model = build_detector(cfg, weights, random_weights, seed)
        self.timings: Dict[str, float] = {"backbone_rpn": 0.0, "roi_head": 0.0, "select": 0.0}
        self.num_rois = 0

    def describe(self) -> dict:
        return describe(self.cfg)

    def _tick(self, stage: str, start: float) -> float:
        now = time.perf_counter()
        self.timings[stage] += now - start
        return now

    def extract(self, image: np.ndarray, image_id: str) -> Tuple[RegionRecord, List[str]]:
        """Regions of one RGB uint8 image, and notes (e.g. the whole-image fallback)."""
        import paddle
        h, w = image.shape[:2]
        arrays = preprocess(image, self.cfg)
        inputs = dict(zip(("image", "im_shape", "scale_factor"), (paddle.to_tensor(a) for a in arrays)))
        start = time.perf_counter()
        with paddle.no_grad():
            body = self.model.backbone(inputs)
            if self.model.neck is not None:
                body = self.model.neck(body)
            rois, _, _ = self.model.rpn_head(body, inputs)
            rois, notes = rois[0], []
            if rois.shape[0] == 0:
                new_h, new_w = arrays[1][0]
                rois, notes = paddle.to_tensor([[0.0, 0.0, new_w, new_h]]), ["no proposals: one whole-image box"]
            start = self._tick("backbone_rpn", start)
            feats, probs, deltas = self._box_head(body, rois)
            start = self._tick("roi_head", start)
        class_boxes = self._class_boxes(rois, deltas, arrays[2][0], w, h)
        keep, best = select_regions(class_boxes, probs, self.cfg)
        boxes = class_boxes[keep, best if class_boxes.shape[1] > 1 else 0]
        self._tick("select", start)
        self.num_rois += int(rois.shape[0])
        kept = probs[keep]
        background_first = np.concatenate([kept[:, -1:], kept[:, :-1]], axis=1)  # bottom-up-attention's order
        return RegionRecord(image_id, w, h, np.ascontiguousarray(boxes, np.float32),
                            np.ascontiguousarray(feats[keep]), np.ascontiguousarray(background_first)), notes

    def _box_head(self, body, rois):
        """Pooled RoI features (N, D), class probabilities (N, C+1) and box deltas (N, 4C), numpy."""
        import paddle
        import paddle.nn.functional as F
        head = self.model.bbox_head
        feats = []
        for s in range(0, rois.shape[0], self.cfg.roi_batch):
            chunk = rois[s:s + self.cfg.roi_batch]
            x = head.head(head.roi_extractor(body, [chunk], paddle.to_tensor([chunk.shape[0]], "int32")))
            feats.append(F.adaptive_avg_pool2d(x, 1).flatten(1) if head.with_pool else x)  # (n, D)
        feat = paddle.concat(feats)
        probs = F.softmax(head.bbox_score(feat), axis=-1)
        deltas = head.bbox_delta(feat) if self.cfg.regress_boxes else None
        return feat.numpy(), probs.numpy(), deltas

    def _class_boxes(self, rois, deltas, scale_factor, w: int, h: int) -> np.ndarray:
        """Boxes in original pixels, clipped: (N, 1, 4) proposals, or (N, C, 4) per-class regressed boxes."""
        if deltas is None:
            boxes = rois.numpy()[:, None, :]
        else:
            from ppdet.modeling.bbox_utils import delta2bbox
            boxes = delta2bbox(deltas, rois, self.model.bbox_head.bbox_weight).numpy()  # (N, C, 4)
        sy, sx = float(scale_factor[0]), float(scale_factor[1])
        boxes = boxes / np.array([sx, sy, sx, sy], np.float32)
        boxes[..., 0::2] = boxes[..., 0::2].clip(0, w)
        boxes[..., 1::2] = boxes[..., 1::2].clip(0, h)  # x1 <= x2 survives: decoded widths are exp(dw) >= 0
        return boxes.astype(np.float32)
