"""Unit tests of the vision-language understanding parts, each against an independent reference.

* the three pair heads (retrieval, visual entailment, VQA) against their formulas recomputed in float64 numpy from
  ``model.unimo``'s hidden states and the heads' own weights, on a batch with padded regions and padded text;
* loading a task model from a pretrained LM folder (fresh head, unused LM head, shared encoder), strict reloads,
  partial heads, ``load_any``;
* converting an original-format fine-tuned retrieval / visual entailment checkpoint (``tools.convert_checkpoint``);
* ``circle_loss`` and its gradient against the numpy formula of Sun et al. 2020 (a_p, a_n held constant);
* the adversarial perturbation (``initial_delta``, ``ascend``, ``symmetric_kl``, ``adversarial_loss``) against a
  step-by-step numpy replay;
* object tags, ``Regions.key``, ``pair_batch`` / ``TextEncoder`` and ``build_char_vocab(words=True)``;
* the exported forward program (``export.InferenceForward``) of an understanding model against dynamic mode.

Everything runs on the tiny preset (hidden 36, 2 layers, 24-d region features).
"""
import json
import logging
import math

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from paddle_unimo import get_preset, masks
from paddle_unimo.checkpoint import WEIGHTS_NAME, CheckpointError, load_any, load_pretrained
from paddle_unimo.data.object_tags import (TagIds, image_number, lookup_tags, read_class_names, read_tag_file,
                                           tags_from_regions)
from paddle_unimo.data.regions import RegionRecord, RegionStore
from paddle_unimo.fileio import DataError
from paddle_unimo.losses import circle_loss
from paddle_unimo.modeling import UNIMOForRetrieval, UNIMOForVisualEntailment, UNIMOForVQA, UNIMOLMHeadModel
from paddle_unimo.tokenization import SPECIAL_TOKENS, WordPieceTokenizer, basic_tokenize
from paddle_unimo.training.adversarial import (AdversarialConfig, adversarial_loss, ascend, initial_delta,
                                               symmetric_kl)

from tasks.vision_language import Regions, TextEncoder, pair_batch
from tools import convert_checkpoint

from test_checkpoint import original_encoder_shapes, save_legacy

PAIR_CLASSES = (UNIMOForRetrieval, UNIMOForVisualEntailment, UNIMOForVQA)
NUM_LABELS = 3
F64 = np.float64


# ---- shared helpers ----------------------------------------------------------------------------------------

def tiny(**overrides):
    return get_preset("tiny", **overrides)


def randomize(layer, rng, scale=0.3):
    """Every parameter of ``layer`` to random values (LayerNorm scales around 1), so that a load, a transpose or
    a mix-up of two tensors shows in the values."""
    for name, p in layer.named_parameters():
        value = rng.standard_normal(p.shape) * scale
        if name.endswith("norm.weight") or "norm1.weight" in name or "norm2.weight" in name:
            value = 1.0 + value
        p.set_value(value.astype("float32"))


def linear64(x, layer):
    """paddle.nn.Linear in float64: x @ W + b with W stored [in, out]."""
    return x @ layer.weight.numpy().astype(F64) + layer.bias.numpy().astype(F64)


def gelu64(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def layer_norm64(x, layer, eps=1e-5):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * layer.weight.numpy().astype(F64) + layer.bias.numpy().astype(F64)


def log_softmax64(x):
    x = np.asarray(x, F64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def region_inputs(rng, valid, dim=24, junk_padding=True):
    """Region inputs for a (B, R) validity pattern; padded rows hold junk (never zero) when ``junk_padding``."""
    valid = np.asarray(valid, bool)
    feats = rng.standard_normal(valid.shape + (dim,)).astype("float32")
    locs = rng.random(valid.shape + (5,)).astype("float32")
    if not junk_padding:
        feats[~valid], locs[~valid] = 0.0, 0.0
    return {"region_feats": feats, "region_locs": locs, "region_valid": valid}


TEXTS = [[3, 17, 45, 88, 9, 5], [3, 60, 5], [3, 11, 70, 23, 5]]  # [CLS]=3 ... ; pad_token_id of tiny is 2
REGION_VALID = [[True, True, True, True], [True, True, False, False], [True, True, True, False]]


def make_batch(seed=0, texts=TEXTS, valid=REGION_VALID, extra_pad=0):
    """pair_batch of TEXTS and random regions; ``extra_pad`` more pad columns at the end of the text."""
    rng = np.random.default_rng(seed)
    cfg = tiny()
    batch = pair_batch(texts, region_inputs(rng, valid), cfg.pad_token_id, cfg.position_start)
    if extra_pad:
        b = len(texts)
        batch["input_ids"] = np.concatenate([batch["input_ids"], np.full((b, extra_pad), cfg.pad_token_id)], 1)
        for key in ("token_type_ids", "position_ids"):
            batch[key] = np.concatenate([batch[key], np.zeros((b, extra_pad), np.int64)], 1)
        keys = np.concatenate([batch["region_valid"], batch["input_ids"] != cfg.pad_token_id], 1)
        batch["attention_mask"] = masks.may_attend(keys, np.zeros(keys.shape, np.int64))
    return batch


def tensors(batch):
    return {k: paddle.to_tensor(v) for k, v in batch.items()}


def head_reference(model, inputs):
    """The model's output recomputed in float64 numpy from model.unimo's hidden states and the head weights."""
    with paddle.no_grad():
        hidden = model.unimo(inputs["input_ids"], inputs["token_type_ids"], inputs["position_ids"],
                             inputs["attention_mask"], region_feats=inputs["region_feats"],
                             region_locs=inputs["region_locs"], region_valid=inputs["region_valid"])
    hidden = hidden.numpy().astype(F64)
    r = inputs["region_feats"].shape[1]
    text = np.maximum(linear64(hidden[:, r], model.unimo.text_pooler), 0.0)  # [CLS] of the text
    image = np.maximum(linear64(hidden[:, 0], model.unimo.image_pooler), 0.0)  # the global region
    if isinstance(model, UNIMOForRetrieval):
        return linear64(text * image, model.match_fc)[:, 0]
    if isinstance(model, UNIMOForVisualEntailment):
        return linear64(linear64(text + image, model.cls_out_0), model.cls_out_1)
    seq = model.vqa_output
    h = layer_norm64(gelu64(linear64(text + image, seq[0])), seq[2])
    return linear64(h, seq[3])


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory):
    """A saved tiny UNIMOLMHeadModel (with regions, random weights) and its state as numpy."""
    paddle.seed(0)
    model = UNIMOLMHeadModel(tiny())
    randomize(model, np.random.default_rng(1))
    folder = tmp_path_factory.mktemp("lm")
    model.save_pretrained(str(folder))
    state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    return str(folder), state


def load_pair(cls, folder):
    return load_pretrained(cls, folder, num_labels=NUM_LABELS)


# ---- 1. heads --------------------------------------------------------------------------------------------

def test_pair_batch_is_bidirectional_over_valid_regions_and_real_tokens():
    batch = make_batch()
    cfg = tiny()
    ids = batch["input_ids"]
    assert ids.shape == (3, 6) and (ids[1, 3:] == cfg.pad_token_id).all() and (ids[2, 5:] == cfg.pad_token_id).all()
    keys = np.concatenate([np.asarray(REGION_VALID), ids != cfg.pad_token_id], axis=1)
    expected = np.broadcast_to(keys[:, None, :], (3, keys.shape[1], keys.shape[1]))
    np.testing.assert_array_equal(batch["attention_mask"], expected)
    for row, text in zip(batch["position_ids"], TEXTS):
        np.testing.assert_array_equal(row[:len(text)], cfg.position_start + np.arange(len(text)))


def test_each_head_equals_its_formula_and_the_encoder_is_shared(lm_folder):
    folder, saved = lm_folder
    rng = np.random.default_rng(7)
    inputs = tensors(make_batch(seed=3))
    models = [load_pair(cls, folder) for cls in PAIR_CLASSES]
    hidden = []
    for model in models:
        head = [layer for name, layer in model.named_children() if name not in ("unimo", "head_dropout")]
        for layer in head:
            randomize(layer, rng)  # a head of large random weights: every entry matters
        model.eval()
        assert not model.training
        with paddle.no_grad():
            got = model(**inputs).numpy()
            hidden.append(model.unimo(inputs["input_ids"], inputs["token_type_ids"], inputs["position_ids"],
                                      inputs["attention_mask"], region_feats=inputs["region_feats"],
                                      region_locs=inputs["region_locs"]).numpy())
        want = head_reference(model, inputs)
        assert got.shape == want.shape == ((3,) if isinstance(model, UNIMOForRetrieval) else (3, NUM_LABELS))
        assert np.abs(want).max() > 0.1  # not a degenerate all-zero case
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5, err_msg=type(model).__name__)
        # the rows differ: the pooled [CLS] and global region of each example are used, not one shared row
        assert np.abs(want[0] - want[1]).max() > 1e-3
    # one encoder: the folder's tensors in all three models, hence the same hidden states
    for model in models:
        encoder = {k: v.numpy() for k, v in model.state_dict().items() if k.startswith("unimo.")}
        assert set(encoder) == {k for k in saved if k.startswith("unimo.")}
        for k, v in encoder.items():
            np.testing.assert_array_equal(v, saved[k], err_msg=k)
    for h in hidden[1:]:
        np.testing.assert_array_equal(h, hidden[0])


def test_heads_ignore_padded_regions_and_padded_text(lm_folder):
    """Junk in padded region rows and extra pad columns change no output of any head (the masks hide them)."""
    folder, _ = lm_folder
    rng = np.random.default_rng(5)
    plain = make_batch(seed=11)
    padded = make_batch(seed=11, extra_pad=4)
    junk = dict(plain)
    junk["region_feats"] = plain["region_feats"].copy()
    junk["region_locs"] = plain["region_locs"].copy()
    pad = ~plain["region_valid"]
    junk["region_feats"][pad] = rng.standard_normal((pad.sum(), 24)) * 50
    junk["region_locs"][pad] = rng.random((pad.sum(), 5))
    changed = dict(plain)  # control: a valid region's feature does change the output
    changed["region_feats"] = plain["region_feats"].copy()
    changed["region_feats"][1, 1] += 1.0
    for cls in PAIR_CLASSES:
        model = load_pair(cls, folder)
        with paddle.no_grad():
            outs = [model(**tensors(b)).numpy() for b in (plain, padded, junk, changed)]
        np.testing.assert_allclose(outs[1], outs[0], atol=1e-6, err_msg=cls.__name__)
        np.testing.assert_allclose(outs[2], outs[0], atol=1e-6, err_msg=cls.__name__)
        assert np.abs(outs[3][1] - outs[0][1]).max() > 1e-6, cls.__name__
        np.testing.assert_allclose(outs[3][[0, 2]], outs[0][[0, 2]], atol=1e-6)  # other rows untouched


# ---- 2. loading ----------------------------------------------------------------------------------------

def test_pair_models_load_from_a_pretrained_lm_folder_with_a_fresh_head(lm_folder, caplog):
    folder, saved = lm_folder
    std = tiny().initializer_range
    for cls in PAIR_CLASSES:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="paddle_unimo.checkpoint"):
            model = load_pair(cls, folder)
        state = {k: v.numpy() for k, v in model.state_dict().items()}
        head = sorted(k for k in state if k.startswith(cls.head_prefixes))
        assert head and not any(k.startswith("lm_head.") for k in state) and not hasattr(model, "lm_head")
        # every non-head tensor is the folder's; the LM head is the only thing of the folder left out
        assert set(state) - set(head) == {k for k in saved if k.startswith("unimo.")}
        for k in set(state) - set(head):
            np.testing.assert_array_equal(state[k], saved[k], err_msg=k)
        # the head is freshly initialised: truncated normal(0, std) weights cut at 2 std, zero biases, unit LN
        # (retrieval's match_fc: the original's Xavier / uniform, tested below)
        for k in (k for k in head if not k.startswith("match_fc.")):
            v = state[k]
            if k.endswith("bias"):
                assert (v == 0).all(), k
            elif v.ndim == 1:  # vqa_output.2 (LayerNorm) scale
                assert (v == 1).all(), k
            else:
                assert np.abs(v).max() <= 2 * std + 1e-7 and v.std() > 0.5 * std, k
        wide = state.get("cls_out_0.weight")
        if wide is not None:  # 36 x 2048 draws: the truncated normal's std, 0.8796 std
            assert abs(wide.std() - 0.8796 * std) < 0.03 * std and abs(wide.mean()) < 0.02 * std
        text = caplog.text
        assert "lm_head tensors unused" in text, cls.__name__
        assert f"no {cls.__name__} head" in text and all(k in text for k in head), text
        assert model.config.num_labels == NUM_LABELS and not model.training


def test_pair_folder_reloads_strictly_with_identical_outputs(lm_folder, tmp_path):
    folder, _ = lm_folder
    inputs = tensors(make_batch(seed=2))
    rng = np.random.default_rng(9)
    for cls in PAIR_CLASSES:
        model = load_pair(cls, folder)
        randomize(model, rng)  # head and encoder differ from the LM folder now
        model.eval()
        out = tmp_path / cls.__name__
        model.save_pretrained(str(out))
        assert json.loads((out / "config.json").read_text())["architectures"] == [cls.__name__]
        for again in (cls.from_pretrained(str(out)), load_any(str(out))):
            assert type(again) is cls
            got = {k: v.numpy() for k, v in again.state_dict().items()}
            want = {k: v.numpy() for k, v in model.state_dict().items()}
            assert set(got) == set(want)
            for k in want:
                np.testing.assert_array_equal(got[k], want[k], err_msg=k)
            with paddle.no_grad():
                np.testing.assert_array_equal(again(**inputs).numpy(), model(**inputs).numpy())
    assert type(load_any(folder)) is UNIMOLMHeadModel


def test_the_retrieval_head_starts_as_the_original_xavier_weight_and_uniform_bias():
    """The original's match_fc: fluid Xavier() (uniform within sqrt(6 / (fan_in + fan_out))) and
    UniformInitializer() (uniform in [-1, 1]), over 30 seeds; the other heads keep the truncated normal."""
    weights, biases, hidden = [], [], get_preset("tiny").hidden_size
    for seed in range(30):
        paddle.seed(seed)
        model = UNIMOForRetrieval(get_preset("tiny", num_labels=0))
        weights.append(model.match_fc.weight.numpy().ravel())
        biases.append(float(model.match_fc.bias.numpy()[0]))
    weights, limit = np.concatenate(weights), math.sqrt(6.0 / (hidden + 1))
    assert np.abs(weights).max() <= limit and np.abs(weights).max() > 0.9 * limit
    assert np.std(weights) == pytest.approx(limit / math.sqrt(3), rel=0.1)  # uniform, far wider than std 0.02
    assert max(np.abs(biases)) <= 1.0 and min(biases) < -0.5 and max(biases) > 0.5
    paddle.seed(0)
    entailment = UNIMOForVisualEntailment(get_preset("tiny", num_labels=3))
    assert np.abs(entailment.cls_out_0.weight.numpy()).max() <= 2 * 0.02 + 1e-7


@pytest.mark.parametrize("cls, dropped", [(UNIMOForRetrieval, "match_fc.bias"),
                                          (UNIMOForVisualEntailment, "cls_out_1.weight"),
                                          (UNIMOForVQA, "vqa_output.2.weight")])
def test_a_partly_missing_head_is_an_error_naming_the_tensor(lm_folder, tmp_path, cls, dropped):
    folder, _ = lm_folder
    model = load_pair(cls, folder)
    model.save_pretrained(str(tmp_path))
    weights = str(tmp_path / WEIGHTS_NAME)
    state = paddle.load(weights, return_numpy=True)
    del state[dropped]
    paddle.save(state, weights)
    with pytest.raises(CheckpointError, match="missing") as err:
        cls.from_pretrained(str(tmp_path))
    assert dropped in str(err.value)
    with pytest.raises(CheckpointError, match=dropped.replace(".", r"\.")):
        load_any(str(tmp_path))


# ---- 3. conversion of original fine-tuned checkpoints -----------------------------------------------------

# the keys of the released unimo_base_en.json, at a small size
SMALL_ORIGINAL_CONFIG = {
    "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 36,
    "initializer_range": 0.02, "max_position_embeddings": 40, "num_attention_heads": 4, "num_hidden_layers": 2,
    "type_vocab_size": 0, "sent_type_vocab_size": 0, "task_type_vocab_size": 0, "vocab_size": 99, "max_img_len": 9,
    "max_obj_len": 5, "image_class_size": 7, "image_attr_size": 5, "image_embedding_size": 24,
    "image_predict_feature": True, "image_predict_class": True, "image_use_attr": False,
    "image_use_soft_label": True, "use_neg_lm_loss": False, "fusion_method": "mul", "similarity_method": "softmax",
    "txt_mask_ratio": 0.15, "vl_mask_ratio": 0.15, "scenegraph_mask_ratio": 0.3, "overlap_ratio": 0.4,
    "num_labels": 2, "max_pixel_len": 256, "max_pixel_position_embeddings": 196}


# paddle_unimo names written out by hand (not through the library's name map) for the non-layer tensors
HAND_NAMES = {
    "word_embedding": "unimo.embeddings.word_embeddings.weight",
    "pos_embedding": "unimo.embeddings.position_embeddings.weight",
    "pre_encoder_layer_norm_scale": "unimo.encoder_norm.weight",
    "pre_encoder_layer_norm_bias": "unimo.encoder_norm.bias",
    "image_emb.w_0": "unimo.region_embeddings.image_emb.weight",
    "image_emb.b_0": "unimo.region_embeddings.image_emb.bias",
    "image_loc.w_0": "unimo.region_embeddings.image_loc.weight",
    "image_loc.b_0": "unimo.region_embeddings.image_loc.bias",
    "v_pre_encoder_layer_norm_scale": "unimo.region_embeddings.layer_norm.weight",
    "v_pre_encoder_layer_norm_bias": "unimo.region_embeddings.layer_norm.bias",
    "pooled_fc_text.w_0": "unimo.text_pooler.weight", "pooled_fc_text.b_0": "unimo.text_pooler.bias",
    "pooled_fc_image.w_0": "unimo.image_pooler.weight", "pooled_fc_image.b_0": "unimo.image_pooler.bias",
    "match_fc.w_0": "match_fc.weight", "match_fc.b_0": "match_fc.bias",
    "cls_out_w_0": "cls_out_0.weight", "cls_out_b_0": "cls_out_0.bias",
    "cls_out_w_1": "cls_out_1.weight", "cls_out_b_1": "cls_out_1.bias",
}


def hand_name(original):
    if original in HAND_NAMES:
        return HAND_NAMES[original]
    layer, rest = original[len("encoder_layer_"):].split("_", 1)
    parts = {"multi_head_att_query_fc": "self_attn.q_proj", "multi_head_att_key_fc": "self_attn.k_proj",
             "multi_head_att_value_fc": "self_attn.v_proj", "multi_head_att_output_fc": "self_attn.out_proj",
             "ffn_fc_0": "linear1", "ffn_fc_1": "linear2", "post_att_layer_norm": "norm1",
             "post_ffn_layer_norm": "norm2"}
    for old, new in parts.items():
        if rest.startswith(old):
            suffix = {".w_0": "weight", ".b_0": "bias", "_scale": "weight", "_bias": "bias"}[rest[len(old):]]
            return f"unimo.encoder.layers.{layer}.{new}.{suffix}"
    raise AssertionError(original)


@pytest.mark.parametrize("task", ["retrieval", "visual_entailment"])
def test_original_fine_tuned_checkpoint_converts_with_its_head(tmp_path, task):
    rng = np.random.default_rng(4 if task == "retrieval" else 6)
    cfg = SMALL_ORIGINAL_CONFIG
    h, labels = cfg["hidden_size"], 3  # the JSON says num_labels 2: the weight must decide
    shapes = original_encoder_shapes(cfg)
    if task == "retrieval":
        shapes.update({"match_fc.w_0": (h, 1), "match_fc.b_0": (1,)})
    else:
        shapes.update({"cls_out_w_0": (h, 2048), "cls_out_b_0": (2048,), "cls_out_w_1": (2048, labels),
                       "cls_out_b_1": (labels,)})
    params = {n: (rng.standard_normal(s) * 0.3 + ("scale" in n)).astype("float32") for n, s in shapes.items()}
    folder = tmp_path / "params"
    folder.mkdir()
    for name, array in params.items():
        save_legacy(array, folder / name)
    for extra in ("match_fc.w_0_moment1_0", "learning_rate_0"):  # optimizer state beside them is skipped
        save_legacy(np.zeros(2, "float32"), folder / extra)
    config = tmp_path / "unimo_small_en.json"
    config.write_text(json.dumps(cfg))

    model = convert_checkpoint.convert(str(folder), str(config), str(tmp_path / "out"))
    cls = UNIMOForRetrieval if task == "retrieval" else UNIMOForVisualEntailment
    reloaded = load_any(str(tmp_path / "out"))
    for m in (model, reloaded):
        assert type(m) is cls
        if task == "visual_entailment":
            assert m.config.num_labels == labels
        state = {k: v.numpy() for k, v in m.state_dict().items()}
        assert set(state) == {hand_name(n) for n in params}
        for name, array in params.items():  # [in, out] in both layouts: equal as stored
            np.testing.assert_array_equal(state[hand_name(name)], array, err_msg=name)

    # the converted head computes the original's formula with the files' weights
    reloaded.eval()
    inputs = tensors(make_batch(seed=8))
    inputs["position_ids"] = inputs["position_ids"] + 2  # the English model's positions start at 2
    inputs["token_type_ids"] = paddle.zeros_like(inputs["token_type_ids"])
    with paddle.no_grad():
        got = reloaded(**inputs).numpy()
        hidden = reloaded.unimo(inputs["input_ids"], inputs["token_type_ids"], inputs["position_ids"],
                                inputs["attention_mask"], region_feats=inputs["region_feats"],
                                region_locs=inputs["region_locs"]).numpy().astype(F64)
    P = {k: v.astype(F64) for k, v in params.items()}
    r = inputs["region_feats"].shape[1]
    text = np.maximum(hidden[:, r] @ P["pooled_fc_text.w_0"] + P["pooled_fc_text.b_0"], 0)
    image = np.maximum(hidden[:, 0] @ P["pooled_fc_image.w_0"] + P["pooled_fc_image.b_0"], 0)
    if task == "retrieval":
        want = ((text * image) @ P["match_fc.w_0"] + P["match_fc.b_0"])[:, 0]
    else:
        want = ((text + image) @ P["cls_out_w_0"] + P["cls_out_b_0"]) @ P["cls_out_w_1"] + P["cls_out_b_1"]
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# ---- 4. circle loss ---------------------------------------------------------------------------------------

def circle_reference(sp, sn, m, s):
    """Per-row loss, d(mean loss)/d s_p and d(mean loss)/d s_n with a_p, a_n held constant (float64)."""
    sp, sn = np.asarray(sp, F64), np.asarray(sn, F64)
    a_p = np.maximum(0.0, 1.0 + m - sp)
    a_n = np.maximum(0.0, sn + m)
    # log(1 + sum_n exp(s a_n (s_n - m)) exp(-s a_p (s_p - 1 + m))), stably
    z_n = s * a_n * (sn - m)
    z_p = -s * a_p * (sp - 1.0 + m)
    z = np.log(np.exp(z_n - z_n.max(1, keepdims=True)).sum(1)) + z_n.max(1) + z_p
    loss = np.logaddexp(0.0, z)
    sig = 1.0 / (1.0 + np.exp(-z))
    soft = np.exp(z_n - z_n.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    b = len(sp)
    grad_p = sig * (-s * a_p) / b
    grad_n = (sig[:, None] * soft * s * a_n) / b
    return loss, grad_p, grad_n


def test_circle_loss_and_its_gradient_equal_the_formula():
    for seed in range(20):
        rng = np.random.default_rng(seed)
        b, n = rng.integers(1, 6), rng.integers(1, 8)
        sp = rng.uniform(-0.5, 1.5, b)  # both sides of the a_p = 0 and a_n = 0 kinks
        sn = rng.uniform(-0.8, 1.0, (b, n))
        for margin, scale in ((0.2, 1.0), (0.25, 16.0), (0.1, 64.0), (0.4, 4.0)):
            loss, grad_p, grad_n = circle_reference(sp, sn, margin, scale)
            p = paddle.to_tensor(sp, stop_gradient=False)
            q = paddle.to_tensor(sn, stop_gradient=False)
            got = circle_loss(p, q, margin, scale)
            got.backward()
            assert got.shape == [] or got.shape == [1]
            np.testing.assert_allclose(float(got), loss.mean(), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(p.grad.numpy(), grad_p, rtol=1e-8, atol=1e-12)
            np.testing.assert_allclose(q.grad.numpy(), grad_n, rtol=1e-8, atol=1e-12)
            # finite differences of the formula with a_p, a_n frozen at their values agree with the analytic form
            if seed < 3:
                a_p, a_n = np.maximum(0, 1 + margin - sp), np.maximum(0, sn + margin)

                def frozen(sp_, sn_):
                    zn = scale * a_n * (sn_ - margin)
                    return np.logaddexp(0.0, np.log(np.exp(zn).sum(1)) - scale * a_p * (sp_ - 1 + margin)).mean()
                eps = 1e-6
                fd = [(frozen(sp + eps * e, sn) - frozen(sp - eps * e, sn)) / (2 * eps) for e in np.eye(b)]
                np.testing.assert_allclose(fd, grad_p, rtol=1e-5, atol=1e-8)
    # float32 inputs, as the trainer gives them
    rng = np.random.default_rng(99)
    sp, sn = rng.uniform(-0.5, 1.5, 8), rng.uniform(-0.8, 1.0, (8, 5))
    got = circle_loss(paddle.to_tensor(sp.astype("float32")), paddle.to_tensor(sn.astype("float32")), 0.25, 16.0)
    np.testing.assert_allclose(float(got), circle_reference(sp, sn, 0.25, 16.0)[0].mean(), rtol=1e-5)


# ---- 5. adversarial perturbation ---------------------------------------------------------------------------

def test_initial_delta_is_masked_and_scaled_per_example():
    """delta = u * mask * init_mag / sqrt(valid * width), u ~ U(-1, 1): zero where masked, ||delta|| <= init_mag
    and E ||delta||^2 = init_mag^2 / 3 for every example with a valid position."""
    width, init_mag = 12, 0.7
    squares = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        mask = rng.random((4, 9)) < 0.6
        mask[0] = False  # an example without a valid position: all zero, no NaN
        mask[1, 0] = True
        paddle.seed(seed)
        delta = initial_delta(paddle.to_tensor(mask), width, init_mag).numpy().astype(F64)
        paddle.seed(seed)
        u = paddle.uniform([4, 9, width], min=-1.0, max=1.0).numpy().astype(F64)  # the same draw
        assert delta.shape == (4, 9, width) and np.isfinite(delta).all()
        assert (delta[~mask] == 0).all() and (delta[0] == 0).all()
        scale = init_mag / np.sqrt(np.maximum(mask.sum(1) * width, 1))
        np.testing.assert_allclose(delta, u * mask[..., None] * scale[:, None, None], rtol=1e-6, atol=1e-9)
        norms = np.sqrt((delta ** 2).sum(axis=(1, 2)))
        assert (norms <= init_mag + 1e-6).all()
        squares.extend((norms[1:] ** 2).tolist())
    np.testing.assert_allclose(np.mean(squares), init_mag ** 2 / 3, rtol=0.05)


def test_ascend_is_a_normalised_step_projected_into_the_ball():
    for seed in range(20):
        rng = np.random.default_rng(seed)
        mask = rng.random((3, 7)) < 0.7
        mask[:, 0] = True
        delta = rng.standard_normal((3, 7, 5)) * rng.uniform(0.01, 2.0) * mask[..., None]
        grad = rng.standard_normal((3, 7, 5)) * rng.uniform(1e-3, 1e3) * mask[..., None]
        lr = rng.uniform(0.01, 1.0)
        g_norm = np.sqrt((grad ** 2).sum(axis=(1, 2)))[:, None, None]
        free = delta + lr * grad / g_norm
        t = lambda x: paddle.to_tensor(x.astype("float32"))  # noqa: E731
        unprojected = ascend(t(delta), t(grad), paddle.to_tensor(mask), lr, 0.0).numpy()
        np.testing.assert_allclose(unprojected, free, rtol=1e-5, atol=1e-6)
        step = np.sqrt(((unprojected - delta) ** 2).sum(axis=(1, 2)))
        np.testing.assert_allclose(step, lr, rtol=1e-5)  # a step of exactly lr along grad / ||grad||
        for max_norm in (0.05, 0.5, 5.0):
            got = ascend(t(delta), t(grad), paddle.to_tensor(mask), lr, max_norm).numpy().astype(F64)
            norms = np.sqrt((got ** 2).sum(axis=(1, 2)))
            free_norms = np.sqrt((free ** 2).sum(axis=(1, 2)))
            assert (norms <= max_norm + 1e-6).all()
            want = free * np.minimum(1.0, max_norm / free_norms)[:, None, None]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
            cos = (got * free).sum(axis=(1, 2)) / (norms * free_norms)
            np.testing.assert_allclose(cos, 1.0, atol=1e-5)  # the projection keeps the direction
            assert (got[~mask] == 0).all()
    # a gradient at masked positions never moves them
    mask = np.array([[True, False, True]])
    got = ascend(paddle.zeros([1, 3, 2]), paddle.ones([1, 3, 2]), paddle.to_tensor(mask), 0.3, 0.0).numpy()
    assert (got[0, 1] == 0).all() and (got[0, [0, 2]] > 0).all()


def test_symmetric_kl_equals_the_numpy_formula():
    for seed in range(20):
        rng = np.random.default_rng(seed)
        a = rng.standard_normal((5, 4)) * 3
        b = a + rng.standard_normal((5, 4)) * rng.uniform(0.01, 3)
        lp, lq = log_softmax64(a), log_softmax64(b)
        p, q = np.exp(lp), np.exp(lq)
        want = ((p * (lp - lq)).sum(1) + (q * (lq - lp)).sum(1)).mean()
        got = float(symmetric_kl(paddle.to_tensor(a), paddle.to_tensor(b)))
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
        assert got > 0
        got = float(symmetric_kl(paddle.to_tensor(b), paddle.to_tensor(a)))  # symmetric
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
        assert float(symmetric_kl(paddle.to_tensor(a), paddle.to_tensor(a))) == 0.0
        # a constant shift of the logits is the same distribution
        assert abs(float(symmetric_kl(paddle.to_tensor(a), paddle.to_tensor(a + 2.5)))) < 1e-12


@pytest.fixture(scope="module")
def ve_model():
    paddle.seed(3)
    model = UNIMOForVisualEntailment(tiny(num_labels=NUM_LABELS, hidden_dropout_prob=0.0,
                                          attention_probs_dropout_prob=0.0))
    randomize(model, np.random.default_rng(12), scale=0.2)
    model.eval()
    return model


def adversarial_setup(model):
    batch = tensors(make_batch(seed=21))
    inputs = {k: batch[k] for k in ("input_ids", "position_ids", "attention_mask", "region_feats", "region_locs",
                                    "region_valid", "token_type_ids")}
    targets = paddle.to_tensor(np.array([0, 2, 1]))

    def forward(text_delta, region_feats):
        return model(**{**inputs, "region_feats": region_feats}, text_delta=text_delta)

    def loss_of(logits):
        return F.cross_entropy(logits, targets)
    text_mask = batch["input_ids"] != model.config.pad_token_id
    return batch, forward, loss_of, targets.numpy(), text_mask


def ce64(logits, targets):
    return -log_softmax64(logits)[np.arange(len(targets)), targets].mean()


def kl64(a, b):
    lp, lq = log_softmax64(a), log_softmax64(b)
    return ((np.exp(lp) - np.exp(lq)) * (lp - lq)).sum(1).mean()


def test_adversarial_loss_without_steps_is_the_clean_loss(ve_model):
    batch, forward, loss_of, targets, text_mask = adversarial_setup(ve_model)
    loss, clean = adversarial_loss(AdversarialConfig(steps=0), forward, loss_of, text_mask, batch["region_feats"],
                                   batch["region_valid"], ve_model.config.hidden_size)
    assert float(loss) == float(loss_of(forward(None, batch["region_feats"])))
    np.testing.assert_allclose(float(loss), ce64(clean.numpy(), targets), rtol=1e-6)


@pytest.mark.parametrize("training", [False, True])
def test_adversarial_loss_equals_a_step_by_step_replay(ve_model, training):
    """clean CE + sum_k [(CE_text + CE_image) / K + w (KL(clean, text) + KL(clean, image))], the deltas replayed from
    the same seed: U(-1, 1) * mask * init_mag / sqrt(valid * width), then normalised ascent steps projected into
    the max_norm ball. In training mode (no dropout here) the CPU's linear layers run as ``_LinearFunction``, which
    the ascent's paddle.grad towards the delta alone cannot go through: the perturbed forwards use paddle's own."""
    from paddle_unimo.modeling import paddle_linear
    ve_model.train() if training else ve_model.eval()
    batch, forward, loss_of, targets, text_mask = adversarial_setup(ve_model)
    cfg = AdversarialConfig(steps=3, lr=0.4, init_mag=1.5, max_norm=1.0, kl_weight=0.7)
    h = ve_model.config.hidden_size
    feats = batch["region_feats"]
    for seed in (0, 1):
        paddle.seed(seed)
        loss, clean = adversarial_loss(cfg, forward, loss_of, text_mask, feats, batch["region_valid"], h)
        loss.backward()  # the returned loss is differentiable for the trainer
        assert ve_model.cls_out_1.weight.grad is not None
        ve_model.clear_gradients()

        paddle.seed(seed)
        clean_ref = forward(None, feats).numpy()
        masks_np = {"text": text_mask.numpy(), "image": batch["region_valid"].numpy()}
        shapes = {"text": list(text_mask.shape) + [h], "image": list(feats.shape)}
        deltas = {}
        for kind in ("text", "image"):
            u = paddle.uniform(shapes[kind], min=-1.0, max=1.0).numpy().astype(F64)
            m = masks_np[kind]
            scale = cfg.init_mag / np.sqrt(np.maximum(m.sum(1) * shapes[kind][-1], 1))
            deltas[kind] = u * m[..., None] * scale[:, None, None]
        total = ce64(clean_ref, targets)
        kl_sum = 0.0
        for _ in range(cfg.steps):
            for kind in ("text", "image"):
                delta = paddle.to_tensor(deltas[kind].astype("float32"), stop_gradient=False)
                with paddle_linear():
                    logits = forward(delta, feats) if kind == "text" else forward(None, feats + delta)
                grad, = paddle.grad(loss_of(logits), delta)
                logits = logits.numpy()
                total += ce64(logits, targets) / cfg.steps + cfg.kl_weight * kl64(clean_ref, logits)
                kl_sum += kl64(clean_ref, logits)
                g = grad.numpy().astype(F64)
                new = (deltas[kind] + cfg.lr * g / np.sqrt((g ** 2).sum(axis=(1, 2)))[:, None, None])
                new *= masks_np[kind][..., None]
                norm = np.sqrt((new ** 2).sum(axis=(1, 2)))
                deltas[kind] = new * np.minimum(1.0, cfg.max_norm / norm)[:, None, None]
        np.testing.assert_allclose(clean.numpy(), clean_ref, rtol=1e-6, atol=1e-6)
        assert kl_sum > 1e-4  # the perturbations do change the predictions
        np.testing.assert_allclose(float(loss), total, rtol=2e-5)
    # only the text or only the image perturbed: one modality's terms
    paddle.seed(0)
    only_text, _ = adversarial_loss(AdversarialConfig(steps=1, perturb_image=False), forward, loss_of, text_mask,
                                    feats, batch["region_valid"], h)
    paddle.seed(0)
    none, _ = adversarial_loss(AdversarialConfig(steps=1), forward, loss_of, None, feats, None, h)
    assert float(none) == float(loss_of(forward(None, feats)))
    assert float(only_text) > float(none)
    ve_model.eval()


def test_perturbations_at_masked_positions_change_nothing(ve_model):
    batch, forward, _, _, text_mask = adversarial_setup(ve_model)
    feats = batch["region_feats"]
    base = forward(None, feats).numpy()
    rng = np.random.default_rng(0)
    h = ve_model.config.hidden_size
    pads = ~text_mask.numpy()
    assert pads.any()
    text_delta = rng.standard_normal(pads.shape + (h,)) * 5 * pads[..., None]
    np.testing.assert_allclose(forward(paddle.to_tensor(text_delta.astype("float32")), feats).numpy(), base,
                               atol=1e-6)
    empty = ~batch["region_valid"].numpy()
    region_delta = rng.standard_normal(feats.shape) * 5 * empty[..., None]
    np.testing.assert_allclose(forward(None, feats + paddle.to_tensor(region_delta.astype("float32"))).numpy(), base,
                               atol=1e-6)
    # and an initial delta drawn with the text mask is zero on the pads, while one on a real token moves the logits
    assert (initial_delta(text_mask, h, 1.0).numpy()[pads] == 0).all()
    real = np.zeros(pads.shape + (h,), "float32")
    real[1, 1] = rng.standard_normal(h)  # not a constant vector: LayerNorm would remove that
    moved = forward(paddle.to_tensor(real), feats).numpy()
    assert np.abs(moved[1] - base[1]).max() > 1e-4
    np.testing.assert_allclose(moved[[0, 2]], base[[0, 2]], atol=1e-6)


# ---- 6. object tags ----------------------------------------------------------------------------------------

def tags_reference(probs, names, threshold, max_boxes):
    out = []
    for row in probs[:max_boxes]:
        fg = row[1:]
        best = int(np.argmax(fg))
        if fg[best] >= threshold and names[best] not in out:
            out.append(names[best])
    return " ".join(out)


def test_tags_from_regions_picks_each_box_best_foreground_class():
    names = ["cat", "dog", "man", "tree", "car"]
    # background (column 0) highest in box 0; box 1 dog exactly at the threshold; box 2 man below it; box 3 dog
    # again (named once); box 4 car beyond max_boxes
    probs = np.array([[0.9, 0.05, 0.05, 0.0, 0.0, 0.0],
                      [0.1, 0.0, 0.5, 0.1, 0.3, 0.0],
                      [0.3, 0.1, 0.1, 0.4, 0.1, 0.0],
                      [0.0, 0.2, 0.8, 0.0, 0.0, 0.0],
                      [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]], np.float32)
    assert tags_from_regions(probs, names, 0.5, 4) == "dog"  # box 0: cat 0.05 < 0.5; box 2: man 0.4 < 0.5
    assert tags_from_regions(probs, names, 0.05, 4) == "cat dog man"  # box 0's background is not a class
    assert tags_from_regions(probs, names, 0.5, 5) == "dog car"
    assert tags_from_regions(probs, names, 0.81, 5) == "car"
    assert tags_from_regions(probs, names, 0.5, 0) == ""
    assert tags_from_regions(np.zeros((0, 6), np.float32), names, 0.5, 10) == ""
    for seed in range(20):
        rng = np.random.default_rng(seed)
        n, c = rng.integers(0, 12), rng.integers(1, 6)
        p = rng.dirichlet(np.ones(c + 1), size=n).astype(np.float32)
        cls_names = [f"c{i}" for i in range(c)]
        thr, max_boxes = rng.uniform(0, 0.6), rng.integers(0, 14)
        assert tags_from_regions(p, cls_names, thr, max_boxes) == tags_reference(p, cls_names, thr, max_boxes)
    with pytest.raises(DataError, match="5 foreground classes but the class name file names 4"):
        tags_from_regions(probs, names[:4], 0.5, 4)


def test_read_class_names_keeps_the_first_alternative(tmp_path):
    path = tmp_path / "objects_vocab.txt"
    path.write_text("person,man\n\ntraffic light\nskis , ski\n")
    assert read_class_names(str(path)) == ["person", "traffic light", "skis"]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DataError, match="no class names"):
        read_class_names(str(tmp_path / "empty.txt"))


def test_read_tag_file_and_lookup(tmp_path):
    js = tmp_path / "tags.json"
    js.write_text(json.dumps({"COCO_val2014_000000391895.jpg": "man bike", "2248275918.jpg": ["dog", "ball"]}))
    table = read_tag_file(str(js))
    assert table == {"COCO_val2014_000000391895.jpg": "man bike", "2248275918.jpg": "dog ball"}
    assert lookup_tags(table, "2248275918.jpg") == "dog ball" and lookup_tags(table, "other.jpg") == ""

    original = tmp_path / "coco_object_0.35_tot.ids"
    original.write_text("000000391895;12 7 99;0 0 0;2 3 4\n\n48;5;0;7\nabc;1 2;0 0;2 3\n")
    table = read_tag_file(str(original))
    assert table == {"391895": TagIds((12, 7, 99), (2, 3, 4)), "48": TagIds((5,), (7,)), "abc": TagIds((1, 2), (2, 3))}
    assert all(isinstance(t, int) for t in table["391895"].ids + table["391895"].positions)
    # by name first, then by the number at the end of the stem
    assert lookup_tags(table, "COCO_val2014_000000391895.jpg") == TagIds((12, 7, 99), (2, 3, 4))
    assert lookup_tags(table, "abc").ids == (1, 2)
    assert lookup_tags(table, "COCO_val2014_000000000048.jpg") == TagIds((5,), (7,))
    assert lookup_tags(table, "COCO_val2014_000000000049.jpg") == "" and lookup_tags(table, "nonumber.jpg") == ""
    both = {"48": "by number", "x48.jpg": "by name"}
    assert lookup_tags(both, "x48.jpg") == "by name" and lookup_tags(both, "y48.png") == "by number"
    assert image_number("COCO_val2014_000000391895.jpg") == "391895" and image_number("a.b.jpg") == ""

    bad = tmp_path / "bad.ids"
    for text, message in [("1;2;3;4\n\n5;6;7\n", "3: expected 4"), ("1;2 x;3;4\n", "1: obj_token_ids"),
                          ("1;2;3;4\n2;2 3;0 0;2\n", "2: expected one obj_pos_id >= 0 per obj_token_id, got 1 for 2"),
                          ("1;2;3;four\n", "1: obj_pos_ids must be")]:
        bad.write_text(text)
        with pytest.raises(DataError, match=f"{bad}:{message}"):
            read_tag_file(str(bad))
    js.write_text(json.dumps({"a.jpg": ["dog", 3]}))
    with pytest.raises(DataError, match="a.jpg"):
        read_tag_file(str(js))
    js.write_text(json.dumps(["a.jpg"]))
    with pytest.raises(DataError, match="expected a JSON object"):
        read_tag_file(str(js))


# ---- 7. region store keys ------------------------------------------------------------------------------------

def test_regions_key_by_name_stem_and_unique_number(tmp_path):
    rng = np.random.default_rng(0)
    ids = ["391895.jpg", "COCO_train2014_000000000009.jpg", "stem_only", "12.jpg", "a_12.png", "nonumber.jpg"]
    records = [RegionRecord(i, 10, 10, np.array([[0, 0, 5, 5]], np.float32),
                            rng.standard_normal((1, 4)).astype(np.float32)) for i in ids]
    RegionStore(tmp_path / "regions").append(records)
    regions = Regions(str(tmp_path / "regions"))
    cases = {
        "391895.jpg": "391895.jpg",  # exact
        "stem_only.jpg": "stem_only",  # without the extension
        "COCO_val2014_000000391895.jpg": "391895.jpg",  # the unique image number
        "9.jpg": "COCO_train2014_000000000009.jpg",
        "000009.png": "COCO_train2014_000000000009.jpg",
        "12.jpg": "12.jpg",  # exact wins over the ambiguous number
        "COCO_val2014_000000000012.jpg": None,  # 12.jpg and a_12.png: ambiguous
        "other.jpg": None,  # no number
        "77.jpg": None,
    }
    for image, key in cases.items():
        assert regions.key(image) == key, image
        assert (image in regions) == (key is not None)
    np.testing.assert_array_equal(regions.get("COCO_val2014_000000391895.jpg").features, records[0].features)


# ---- 8. text --------------------------------------------------------------------------------------------------

def test_char_vocab_with_words():
    texts = ["A man riding a horse.", "Two dogs play in the snow!"]
    tok = WordPieceTokenizer.build_char_vocab(texts, words=True)
    known = [w for t in texts for w in basic_tokenize(t) if len(w) > 1]
    assert [tok.vocab[t] for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    for word in known:
        assert tok.tokenize(word) == [word]
    # an unknown word falls back to its characters (all seen in the texts)
    assert tok.tokenize("horses") == ["horse", "##s"]
    assert tok.tokenize("stow") == ["s", "##t", "##o", "##w"]
    assert tok.tokenize("zebra") == ["[UNK]"]  # 'z' and 'b' never seen
    for text in ("a man riding two horses in the snow", "dogs play in the snow", "the horse is riding a man",
                 "snowman", "in the"):
        ids = tok.encode(text)
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == text
    assert tok.decode(tok.encode("A Man Riding")) == "a man riding"
    assert tok.decode(tok.encode("a dog. a man!")) == "a dog . a man !"  # words and punctuation space-separated
    assert tok.encode("a dog, a man") == tok.encode("a dog") + [tok.unk_token_id] + tok.encode("a man")  # ',' unseen
    without = WordPieceTokenizer.build_char_vocab(texts)  # words=False: characters only
    assert "horse" not in without.vocab and without.tokenize("horse") == ["h", "##o", "##r", "##s", "##e"]


def test_text_encoder_wraps_and_truncates():
    tok = WordPieceTokenizer.build_char_vocab(["a man riding a horse"], words=True)
    encode = TextEncoder(tok, max_len=5)
    ids = encode("a man riding a horse", what="caption")
    assert ids == [tok.cls_token_id, *tok.encode("a man riding"), tok.sep_token_id]
    assert encode.truncated == {"caption": 1}
    assert encode("a man") == [tok.cls_token_id, *tok.encode("a man"), tok.sep_token_id]
    assert encode.truncated == {"caption": 1}


# ---- 9. the exported forward program ------------------------------------------------------------------------

def test_inference_forward_equals_dynamic_mode(lm_folder, tmp_path):
    from paddle_unimo.export import InferenceForward, export_model
    folder, _ = lm_folder
    model = load_pair(UNIMOForVisualEntailment, folder)
    randomize(model.cls_out_0, np.random.default_rng(0))
    randomize(model.cls_out_1, np.random.default_rng(1))
    model.eval()
    out = export_model(model, str(tmp_path / "inference"))
    forward = InferenceForward(out, num_threads=1)
    for seed, valid, extra in ((4, REGION_VALID, 0), (5, [[True, False, False]] * 3, 2)):
        batch = make_batch(seed=seed, valid=valid, extra_pad=extra)
        with paddle.no_grad():
            want = model(**tensors(batch)).numpy()
        got = forward(**{k: v for k, v in batch.items() if k != "token_type_ids"})
        assert got.shape == want.shape == (3, NUM_LABELS)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="understanding model; the CPU kernels run the decoding programs only"):
        export_model(model, str(tmp_path / "kernels"), cpu_kernels=True)
    assert not (tmp_path / "kernels").exists()
