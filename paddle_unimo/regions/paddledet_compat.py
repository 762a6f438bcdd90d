"""Make paddledet 2.6.0 (PaddleDetection) run on paddle 3.x: the one place that patches it.

Paddle 3 returns 0-D tensors where paddle 2.x returned shape-[1] tensors. paddledet 2.6.0 relies on the old
shape in a few lines of its two-stage detector code: a shape-[1] tensor used as a ``range()`` bound
(``TypeError: only 0-dimensional arrays can be converted to Python scalars``) and 0-D tensors collected in a
list that is then ``paddle.concat``-ed (``ValueError: (InvalidArgument) The axis is expected to be in range of
[0, 0)``). Seen with paddledet 2.6.0 on paddle 3.3.1.

How: for each function below we hold the sha256 of its reviewed paddledet 2.6.0 source and the exact lines to
rewrite. ``apply()`` checks the installed version, checks that the source hash matches and that every line to
rewrite occurs exactly once, rewrites those lines, compiles the patched source in the function's own module
namespace and puts it in place of the original (on its class, or in every ppdet module that imported it).
Anything unexpected raises a RuntimeError naming the function and what differs; nothing is patched silently.
Applying twice is a no-op.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import io
import linecache
import sys
import textwrap
from dataclasses import dataclass

PADDLEDET_VERSION = "2.6.0"
_MARK = "__paddle_unimo_compat__"  # set on patched functions; makes apply() idempotent


@dataclass(frozen=True)
class Patch:
    module: str
    qualname: str  # "Class.method" or "function"
    sha256: str  # of inspect.getsource() of the reviewed paddledet 2.6.0 function
    edits: tuple  # ((old line, new line), ...), compared with surrounding whitespace stripped

    @property
    def name(self) -> str:
        return f"{self.module}.{self.qualname}"


# A shape-[1] batch size used as a range() bound becomes a Python int. Where 0-D tensors would be appended to
# a list that is then paddle.concat-ed, 1-element slices keep the shape-[1] tensors of paddle 2.x. On paddle
# 3.3.1, Faster R-CNN inference fails without the RPNHead and get_pred patches and a training step without
# generate_proposal_target's (the other x[0] / bbox_num[i] uses there work with 0-D tensors). RCNNBox's line
# (a branch Faster R-CNN does not take: its RoIs come as a list) and the Libra / Mask R-CNN target functions
# have the same pattern and were patched by reading, not by running them.
_BATCH_SIZE = ("batch_size = paddle.slice(paddle.shape(im_shape), [0], [0], [1])",
               "batch_size = int(im_shape.shape[0])")
_TARGET = "ppdet.modeling.proposal_generator.target"
PATCHES = (
    Patch("ppdet.modeling.proposal_generator.rpn_head", "RPNHead._gen_proposal",
          "75f917e8e335a6b7e1c2958b404ccbdfa4fad20076719485766b1a1fb15f9c32", (
              _BATCH_SIZE,
              ("bs_rois_num_collect.append(paddle.shape(topk_rois)[0])",
               "bs_rois_num_collect.append(paddle.shape(topk_rois)[0:1])"))),
    Patch("ppdet.modeling.layers", "RCNNBox.__call__",
          "9ba740d4ca500ea1aae0cb9bf0f619056e69181a0b67308fb173434576e191c9", (_BATCH_SIZE,)),
    Patch("ppdet.modeling.post_process", "BBoxPostProcess.get_pred",
          "577f30ddbff3a28daa3bdb5d1e1ac8ad24bbeb77fd8c79f2d4f0e662a435e141", (
              ("bbox_num_i = bbox_num[i]", "bbox_num_i = bbox_num[i:i + 1]"),
              ("scale_y, scale_x = scale_factor[i][0], scale_factor[i][1]",
               "scale_y, scale_x = scale_factor[i][0:1], scale_factor[i][1:2]"))),
    Patch(_TARGET, "generate_proposal_target",
          "2f311acb3c1bff464d2c45211c55e0431557f2034bf8cd4191fb17aed27a5aff", (
              ("new_rois_num.append(paddle.shape(sampled_inds)[0])",
               "new_rois_num.append(paddle.shape(sampled_inds)[0:1])"),)),
    Patch(_TARGET, "libra_generate_proposal_target",
          "6c2e7cf1d7f847b2eeff40a4b8c37c8cf889504aff61a4f0f5e40aac511b0744", (
              ("new_rois_num.append(paddle.shape(sampled_inds)[0])",
               "new_rois_num.append(paddle.shape(sampled_inds)[0:1])"),)),
    Patch(_TARGET, "generate_mask_target",
          "4446aaf3ed2b2030f1a58e8c0634410824e78814afc57dacfebae28339146937", (
              ("mask_rois_num.append(paddle.shape(fg_rois)[0])",
               "mask_rois_num.append(paddle.shape(fg_rois)[0:1])"),)),
)


def _import_ppdet():
    """Import ppdet, dropping its import-time "Warning: Unable to use <MOT tracker/metric>" prints (optional
    extras: lap, motmetrics, numba) that region extraction does not use; any other output is passed on."""
    if "ppdet" in sys.modules:
        return sys.modules["ppdet"]
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            return importlib.import_module("ppdet")
    finally:
        sys.stdout.write("".join(line for line in buffer.getvalue().splitlines(keepends=True)
                                 if not line.startswith("Warning: Unable to use ")))


def check_version() -> str:
    try:
        _import_ppdet()
        version = importlib.import_module("ppdet.version").full_version
    except ImportError as err:
        raise RuntimeError("paddledet is not installed: `pip install --no-deps -r requirements-nodeps.txt` "
                           "(see the Makefile's install rule)") from err
    if version != PADDLEDET_VERSION:
        raise RuntimeError(f"paddledet {version} is installed, but paddle_unimo.regions.paddledet_compat was "
                           f"written for paddledet {PADDLEDET_VERSION}; review its patches before changing it")
    return version


def patched_source(patch: Patch, source: str) -> str:
    """The rewritten source, or RuntimeError listing every way ``source`` differs from the reviewed one."""
    problems = []
    digest = hashlib.sha256(source.encode()).hexdigest()
    if digest != patch.sha256:
        problems.append(f"source sha256 {digest[:16]}... is not the reviewed {patch.sha256[:16]}...")
    lines = source.splitlines(keepends=True)
    for old, new in patch.edits:
        hits = [i for i, line in enumerate(lines) if line.strip() == old]
        if len(hits) != 1:
            problems.append(f"line {old!r} occurs {len(hits)} times, expected exactly once")
            continue
        line = lines[hits[0]]
        indent = line[:len(line) - len(line.lstrip())]
        lines[hits[0]] = indent + new + "\n"
    if problems:
        raise RuntimeError(f"paddledet_compat: refusing to patch {patch.name} (paddledet {PADDLEDET_VERSION}): "
                           + "; ".join(problems))
    return "".join(lines)


def _resolve(patch: Patch):
    module = importlib.import_module(patch.module)
    owner_name, _, attr = patch.qualname.rpartition(".")
    owner = getattr(module, owner_name) if owner_name else module
    return module, owner, attr, getattr(owner, attr)


def _compile(patch: Patch, module, source: str, original):
    """Define the patched function in ``module``'s namespace (so it sees the same globals as the original)."""
    code = textwrap.dedent(source)
    filename = f"<paddle_unimo compat: {patch.name}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)  # readable tracebacks
    local = {}
    exec(compile(code, filename, "exec"), module.__dict__, local)  # noqa: S102 -- reviewed source, see docstring
    function = local[original.__name__]
    function.__qualname__ = original.__qualname__
    function.__doc__ = original.__doc__
    setattr(function, _MARK, original)
    return function


def _install(patch: Patch, owner, attr: str, original, function) -> None:
    setattr(owner, attr, function)
    if inspect.ismodule(owner):  # `from .target import generate_proposal_target` copied the reference elsewhere
        for name, module in list(sys.modules.items()):
            if name.startswith("ppdet") and module is not None and getattr(module, attr, None) is original:
                setattr(module, attr, function)


def apply_patch(patch: Patch, source: str | None = None) -> bool:
    """Patch one function; False when it already was. ``source`` overrides the installed text (for tests)."""
    module, owner, attr, original = _resolve(patch)
    if getattr(original, _MARK, None) is not None:
        return False
    new_source = patched_source(patch, inspect.getsource(original) if source is None else source)
    _install(patch, owner, attr, original, _compile(patch, module, new_source, original))
    return True


def apply() -> list:
    """Check the paddledet version and patch every function in PATCHES; returns the names patched now.

    All sources are checked before any is replaced, so a mismatch leaves paddledet untouched.
    """
    check_version()
    pending = []
    for patch in PATCHES:
        _, _, _, original = _resolve(patch)
        if getattr(original, _MARK, None) is None:
            patched_source(patch, inspect.getsource(original))
            pending.append(patch)
    return [patch.name for patch in pending if apply_patch(patch)]


def is_applied() -> bool:
    return all(getattr(_resolve(patch)[3], _MARK, None) is not None for patch in PATCHES)
