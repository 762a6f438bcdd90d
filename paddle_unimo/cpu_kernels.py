"""CPU kernels: dropout, LayerNorm, a layer's attention, the residuals, relu and the loss for training, and a
decoding step's attention and its matmuls against packed weights, as C++ operators (``csrc/cpu_kernels.cc``),
compiled on first use by paddle's custom-operator mechanism (``paddle.utils.cpp_extension``) and cached for the
machine.

Why: on CPU, paddle 3.3.1's dropout draws one mt19937 number per element on one thread and keeps a mask for the
backward, and its LayerNorm backward is single-threaded. In a unimo-text-1.0 training step (8 x 128 tokens) the
two took 0.85 s of a 6.7 s step under paddle's profiler; these kernels take a fraction of that
(``make benchmark`` compares the step both ways).

Dropout (``dropout``, paddle's "upscale_in_train": kept elements are divided by 1 - p): element i is kept when
word i % 4 of Philox4x32-10 (Salmon et al., SC 2011) at counter i / 4, under a 64-bit key drawn from paddle's
generator at every call, read as a uniform u = (word >> 8) / 2^24, has u >= p. So ``paddle.seed`` fixes the
masks (the trainer reseeds before every forward, so a resumed run continues exactly) and recompute
(``set_recompute``, which restores paddle's generator) redraws the same keys; the backward applies the forward's
keep bits (one bit an element; paddle keeps a byte). The masks are not paddle's ``F.dropout``'s (another
generator); the rate is the same.

LayerNorm (``LayerNorm``, ``nn.LayerNorm``'s parameters and epsilon): over the last axis, each row's sums in 8
float lanes added in double; its results and gradients equal float64's and paddle's to float rounding (tested).

Attention weights (``softmax_dropout``): ``dropout(softmax(scores * scale + bias))`` in one pass instead of
paddle's scale, add, softmax and dropout (and their four backward ops), with the masks ``dropout`` draws; in
training where ``attention`` does not run (paddle without MKL).

A layer's attention (``attention``, where paddle has MKL): per head ``dropout(softmax(q k^T * scale + bias)) v``
on the linear layers' (B, L, H) outputs, forward and backward, in one kernel. The products are MKL's sgemm on each
head's columns where they lie, one (batch, head) pair a thread, so no head is transposed or copied, and the
dropped-out weights are not kept (the backward makes them again from the softmax and the keep bits). At 8 x 128 a
layer's attention took 6.0 against 9.0-9.6 ms forward and backward (the heads transposed, two batched matmuls and
``softmax_dropout``), with the same values.

Residuals (``LayerNorm.residual``): a post-LN layer's ``norm(x + dropout(h))`` in one pass, forward and backward,
instead of the dropout, the add and the LayerNorm and their three backward ops; the same bits.

Linear layers' biases (``add_bias_``): added in place to the product, where paddle's CPU ``add_`` that broadcasts
a bias over the rows took 5-7x the time (the training forward; wherever no gradient is recorded); with relu
(``linear1``) in the same pass, and relu's gradient by ``relu_grad`` (0.15 against paddle's ~1.5 ms for
(8, 128, 3072)).

The loss (``losses.label_smoothed_cross_entropy``): each row's softmax, label-smoothed cross-entropy and gradient
(``unimo_smoothed_cross_entropy``), 4 against 19-21 ms forward and backward on a step's (256, 18000) logits.

Decoding (``step_attention``, ``step_layer``, ``softmax``, ``pack_weight``, ``packed_linear``;
``generation.ModelStepper``): a step's attention over the cache, for every row and head, is one pass that also
writes the new keys and values into the cache, instead of ~20 paddle ops a layer and two set_value writes (0.13 ms
each for a 24-row step; its dot products eight keys at a time, by a fixed order of sums: 3.7 against 6.1 ms for the
12 layers of a beam-6 step); with packed weights (below) a step's whole layer -- six matmuls, the attention, two
residuals, two LayerNorms and the activation -- is one kernel, not ~11 operators (x1.06-1.10 a step). The search's
passes over a step's scores are one each (``log_softmax``: the log-softmax with the constraints' columns;
``group_top_k``: each source's best candidates; ``generation.Constraints.log_probs``, ``best_candidates``): 0.40
against paddle's 2.6 ms for a beam-6 step's 24 x 18000 scores. The prefill's attention weights are one pass too
(scale, bias and softmax: paddle's scale, broadcasting add and softmax took ~3 ms a layer at 4 x 96 tokens). A
step's gelu takes its erf from MKL's vsErf where paddle ships MKL (glibc's erff took ~13 ms for a beam-6 step's
values on one thread). A step multiplies a few rows (the hypotheses) by every weight of the model, so it
is bound by reading the weights. A plain sgemm, paddle's matmul, packs the weight into MKL's blocked layout at
every call, which with so few rows costs about as much as the product itself; MKL's packed API packs it once but
reads its layout at 4 rows well below the memory's speed. ``pack_weight`` copies a weight once into panels of 64
columns, each panel's rows one after another, and ``packed_linear`` streams each panel once with its columns'
sums in registers (6 rows x 64 columns at a time in AVX-512; 3 x 32 in AVX2, 64 columns up to 4 rows): on the
AVX-512 host the 12 layers' weights of unimo-text-1.0 took 6.9-7.5 against 8.7-9.2 ms at 4 rows, 12.7-13.1
against 13.8-14.5 at 24 and 139-142 against 139-144 at 384 (a prefill's rows), against MKL's packed sgemm; greedy
decoding ran x1.14-1.21 faster, beam 6 x0.99-1.19. In bfloat16 panels (``pack_weight(..., dtype="bfloat16")``,
each weight rounded and widened back to float exactly as it is read, so the products are those of the float
panels of the rounded weights) the 12 layers took 3.4-3.7 against 6.6-7.3 ms at 1-4 rows and 10.0-10.4 against
12.7-13.2 ms at 24, and as long at 96-384 (a stand-alone C++ loop). In int8 panels (``dtype="int8"``: dynamic
quantization, each column's weights and each input row quantized to int8 with a scale of its own, the sums exact in
int32, AVX-512 VNNI's VPDPBUSD or AVX2's VPMADDUBSW) they took 2.8-2.9 against 8.9-9.0 ms at 1-4 rows, 5.2
against 15.0 at 24 and 45 against 149 at 384, with other results (the quantization's, by the rule in
``csrc/cpu_kernels.cc``; a row's result depends on that row alone, the same on every CPU). AVX2 without VNNI has no
exact 8-bit product instruction: its int8 products ran x1.3-2.1 faster than its float32 ones at 1-384 rows;
``dtype="int8_w7"`` (7-bit weights, 63 levels a side; other results, the same on every CPU) x1.9-2.7. In float32 and
bfloat16 every output element is the bias plus its products added in order by fused multiply-adds, so a row's result
does not depend on the other rows, the threads or the instruction set (AVX-512 or AVX2; a CPU without FMA rounds
each product first; ``PADDLE_UNIMO_PANEL_ISA=avx512|avx2|baseline`` picks one the CPU runs, for comparisons). A
packed weight is a copy: the weight's size in memory.

Threads: the loops run on OpenMP threads, on the OpenMP runtime paddle ships for MKL (``libiomp5``, linked in
place of GCC's ``libgomp``), so that they reuse the threads MKL keeps waiting between matmuls: on GCC's own
runtime the two pools fought over the cores and the step ran slower (x0.94-0.96). Where paddle has no
``libiomp5`` they run on one thread. Either way every element, and the order of every sum, is the same.

The training kernels run where a gradient is recorded on float32 CPU tensors in eager mode (dropout and the
attention weights: wherever a layer is in training mode); the decoding kernels where ``generation.ModelStepper``
is asked for them (``batch_stepper``, on float32 CPU models): its prefill and steps. A model's own forward keeps
paddle's ops (its logits equal PaddleNLP's bit for bit). Exported programs use the decoding kernels only when
asked (``export.export_model(..., cpu_kernels=True)``: the panels are then parameters of the programs).
Without a C++ compiler, or with ``PADDLE_UNIMO_CPU_KERNELS=0``, paddle's own ops run (one warning says so);
``PADDLE_UNIMO_REQUIRE_CPU_KERNELS=1`` (CI) makes a failed build an error. The build takes ~25 s once; it is kept
under ``PADDLE_UNIMO_KERNEL_CACHE`` (default ``~/.cache/paddle_unimo/kernels``) per source, compiler flags,
paddle and Python version, behind a file lock (concurrent processes build once).
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import os
import sys
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

SOURCE = Path(__file__).with_name("csrc") / "cpu_kernels.cc"
NAME = "unimo_cpu_kernels"
OPENMP = Path(paddle.__file__).parent / "libs" / "libiomp5.so"  # paddle's (MKL's) OpenMP runtime
MKL = OPENMP.with_name("libmklml_intel.so")  # the MKL paddle's matmuls call: its sgemm (training attention)
# -fno-trapping-math lets branch-free selects vectorise (the softmax's exponential); no result changes.
# -Wno-psabi: GCC's note on passing 32-byte vectors (F32x8) between functions, which are all inlined.
FLAGS = ["-O3", "-fno-trapping-math", "-Wno-psabi", "-fopenmp" if OPENMP.is_file() else "-fopenmp-simd"] + \
    (["-DUNIMO_MKL"] if MKL.is_file() else [])
_LIBS = [f"-l{lib.stem[3:]}" for lib in (OPENMP, MKL) if lib.is_file()]  # -liomp5 -lmklml_intel
LINK = [f"-L{OPENMP.parent}", *_LIBS, f"-Wl,-rpath,{OPENMP.parent}"] if _LIBS else []
log = logging.getLogger(__name__)
_loaded = {}  # "ops": the compiled module, or None where it could not be built


def cache_folder() -> Path:
    """Where this source, flags, paddle and Python build to."""
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), " ".join(FLAGS + LINK).encode(),
                                     paddle.__version__.encode(), sys.version.encode()])).hexdigest()[:16]
    root = os.environ.get("PADDLE_UNIMO_KERNEL_CACHE") or \
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "paddle_unimo" / "kernels"
    return Path(root) / key


@paddle.jit.not_to_static  # called, not converted, where an export traces the kernels into its programs
def kernels():
    """The compiled operators, or None where they are turned off or could not be built (one warning)."""
    if "ops" not in _loaded:
        _loaded["ops"] = _load()
    return _loaded["ops"]


@contextmanager
def paddle_ops():
    """Within it, training runs paddle's own dropout, layer_norm and softmax (comparisons: tests, benchmark)."""
    built = kernels()
    _loaded["ops"] = None
    try:
        yield
    finally:
        _loaded["ops"] = built


def _load():
    if os.environ.get("PADDLE_UNIMO_CPU_KERNELS") == "0":
        log.info("PADDLE_UNIMO_CPU_KERNELS=0: training uses paddle's CPU dropout, layer_norm and softmax")
        return None
    folder = cache_folder()
    try:
        return _build_or_import(folder)
    except Exception as e:  # a missing compiler, a failed build: training still runs, on paddle's kernels
        message = (f"could not build the CPU training kernels in {folder} ({type(e).__name__}: {e}); training uses "
                   "paddle's CPU dropout, layer_norm and softmax, 20-40% slower, with other dropout masks. A C++ "
                   "compiler (g++) is needed; PADDLE_UNIMO_CPU_KERNELS=0 silences this")
        if os.environ.get("PADDLE_UNIMO_REQUIRE_CPU_KERNELS") == "1":
            raise RuntimeError(message + " (PADDLE_UNIMO_REQUIRE_CPU_KERNELS=1)") from e
        log.warning(message)
        return None


def _build_or_import(folder: Path):
    from paddle.utils.cpp_extension import load
    from paddle.utils.cpp_extension.extension_utils import _import_module_from_library
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process builds; the others wait and import its build
        if (folder / "built").exists():  # importing the built library directly skips paddle's ~2 s rebuild check
            return _import_module_from_library(NAME, str(folder / NAME))
        log.warning("building the CPU training kernels in %s (once for this machine and paddle, ~25 s)", folder)
        with redirect_stdout(sys.stderr):
            ops = load(NAME, [str(SOURCE)], extra_cxx_cflags=FLAGS, extra_ldflags=LINK, build_directory=str(folder))
        (folder / "built").write_text(str(SOURCE) + "\n")
        return ops


def ops_for(x):
    """The kernels when ``x`` is an eager float32 CPU tensor and they could be built, else None."""
    if paddle.in_dynamic_mode() and x.place.is_cpu_place() and x.dtype == paddle.float32:
        return kernels()
    return None


def dense(x):
    """``x`` materialised: paddle 3's transposes are strided views, which the kernels cannot read, and a batched
    matmul reading one runs 2x (training shapes) to 35x (one decoding step) slower on CPU than on a contiguous copy
    (``x`` itself when it is one). Static programs (an export) have no strided views, and no ``contiguous``: ``x``
    as it is."""
    return x.contiguous() if paddle.in_dynamic_mode() else x


def _key() -> int:
    """A dropout key (64 bits) drawn from paddle's generator."""
    high, low = paddle.randint(0, 2 ** 31 - 1, [2]).tolist()
    return (high << 31) | low


def dropout(x, p: float):
    """Training-mode dropout of ``x`` (paddle's "upscale_in_train"): by the kernel where it runs, else by
    paddle's ``F.dropout``."""
    ops = ops_for(x)
    if ops is None or not 0.0 <= p <= 1.0:  # paddle's own error for a bad p
        return F.dropout(x, p, training=True)
    return ops.unimo_dropout(x.contiguous(), float(p), _key())[0]  # contiguous(): x if it is


def softmax_dropout(scores, bias, scale: float, p: float):
    """Training-mode attention weights ``dropout(softmax(scores * scale + bias), p)`` over the last axis, for
    scores (B, heads, queries, keys) and an additive float32 bias that broadcasts to them (or None), in one pass
    (``unimo_softmax_dropout``; the softmax's exponentials by a polynomial within ~2 float ulps). The masks are
    those ``dropout`` draws for the softmax under the same generator state. Where the kernels do not run, or for a
    bias of another type, paddle's ops."""
    ops = ops_for(scores)
    if ops is None or not 0.0 <= p <= 1.0 or (bias is not None and bias.dtype != paddle.float32):
        scores = scores * scale if bias is None else scores * scale + bias
        return dropout(F.softmax(scores, axis=-1), p)
    if bias is None:
        bias = paddle.zeros([1, 1, 1, scores.shape[-1]], scores.dtype)
    return ops.unimo_softmax_dropout(scores.contiguous(), bias.contiguous(), float(scale), float(p), _key())[0]


def attention_runs(x, bias) -> bool:
    """Whether ``attention`` runs for eager float32 CPU tensors like ``x`` and this bias (float32 without a
    gradient, or None): the kernels are built, with paddle's MKL."""
    ops = ops_for(x)
    return (ops is not None and hasattr(ops, "unimo_attention")
            and (bias is None or (bias.dtype == paddle.float32 and bias.stop_gradient)))


def attention(q, k, v, bias, heads: int, scale: float, p: float):
    """Training attention in one kernel (``unimo_attention``) where ``attention_runs``: q (B, Lq, H) and k, v
    (B, Lk, H), the linear layers' outputs with the heads' features side by side, and an additive bias
    broadcasting to (B, heads, Lq, Lk) or None; per head ``dropout(softmax(q k^T * scale + bias), p) v``, the
    heads side by side again, (B, Lq, H). The products run on the heads' columns where they are (MKL's sgemm), so
    no head is transposed or copied, forward or backward; the probabilities and masks are ``softmax_dropout``'s
    of the scores (B, heads, Lq, Lk) under the same generator state."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"attention: the dropout rate must be in [0, 1], got {p}")
    if bias is None:
        bias = paddle.zeros([1, 1, 1, k.shape[1]], q.dtype)
    return kernels().unimo_attention(q.contiguous(), k.contiguous(), v.contiguous(), bias.contiguous(), int(heads),
                                     float(scale), float(p), _key())[0]


def add_bias_(x, bias, relu: bool = False):
    """``x += bias`` in place, for a fresh result ``x`` (..., N) and ``bias`` (N,), then with ``relu`` relu in
    place: by the kernel where it runs (paddle's CPU ``add_`` that broadcasts took 5-7x its time: 2.1 against 0.4
    ms for (8, 128, 3072), 0.55 against 0.08 ms for (8, 128, 768), with OpenMP on two cores), else by paddle's
    ``add_`` and ``relu_``; the same values."""
    ops = ops_for(x)
    if ops is None or bias.dtype != x.dtype or list(bias.shape) != [x.shape[-1]] or not x.is_contiguous():
        x = x.add_(bias)
        return F.relu_(x) if relu else x
    ops.unimo_add_bias(x, bias, bool(relu))
    return x


def relu_grad(grad, y):
    """relu's backward from its output ``y``: ``grad`` where ``y > 0``, else 0 (a new tensor); by the kernel where
    it runs (paddle's relu gradient took ~1.5 ms for (8, 128, 3072), the kernel ~0.15)."""
    ops = ops_for(grad)
    if ops is None or y.dtype != grad.dtype or y.shape != grad.shape:
        return grad * (y > 0).astype(grad.dtype)
    return ops.unimo_relu_backward(y.contiguous(), grad.contiguous())


def softmax(scores, bias, scale: float):
    """Inference attention weights ``softmax(scores * scale + bias)`` over the last axis in one pass
    (``unimo_softmax``: ``softmax_dropout``'s softmax, without dropout or gradient), for float32 scores (B, heads,
    queries, keys) and a bias that broadcasts to them, or None."""
    if bias is None:
        bias = paddle.zeros([1, 1, 1, scores.shape[-1]], scores.dtype)
    return kernels().unimo_softmax(dense(scores), dense(bias), float(scale))


class PackedWeight(NamedTuple):
    """A (K, N) weight in panels (``pack_weight``), for ``packed_linear``."""
    packed: paddle.Tensor  # (ceil(N / 64), K, 64) float32 or bfloat16, (ceil(N / 64), 9 + 4 * ceil(K / 4), 64) int8:
    # the panels, the last one's columns past N zero (an int8 panel: its columns' scales and sums, its weight
    # levels, then the weights)
    k: int  # input features
    n: int  # output features


PANEL_DTYPES = ("float32", "bfloat16", "int8", "int8_w7")


def pack_weight(weight, transposed: bool = False, dtype: str = "float32") -> Optional[PackedWeight]:
    """A copy of ``weight`` (K, N) -- (N, K) with ``transposed``, as a tied embedding -- in panels of 64 columns,
    or None where the kernels are not there. ``dtype="bfloat16"``: each weight rounded to bfloat16 (to nearest,
    ties to even), half the bytes; the products are then those of the float32 panels of the rounded weights, bit
    for bit, and a few rows' (a decoding step's) take about half the time. ``dtype="int8"``: dynamic quantization,
    a quarter of the bytes: each column's weights quantized to int8 by a scale of its own (``max |w| / 127``), and
    at every product each input row by its own; the int32 sums scaled back to float32 (``csrc/cpu_kernels.cc``
    gives the rule; every CPU the same bits). With AVX-512 VNNI a product takes about a third of the float32 panels'
    time at any number of rows, with AVX2 alone a half to four fifths; below AVX2 a plain loop runs, slower.
    ``dtype="int8_w7"``: the same with 7-bit weights (``max |w| / 63``; the logits move ~1.5 times as far), whose
    products AVX2 takes in fewer instructions: x1.4-1.5 faster than 8-bit ones there at 24-384 rows, as fast
    elsewhere."""
    if dtype not in PANEL_DTYPES:
        raise ValueError(f"pack_weight: dtype {dtype!r}; allowed: {', '.join(PANEL_DTYPES)}")
    ops = ops_for(weight)
    if ops is None:
        return None
    k, n = weight.shape[::-1] if transposed else weight.shape
    with paddle.no_grad():
        return PackedWeight(ops.unimo_pack_weight(weight.contiguous(), transposed, dtype), k, n)


def packed_linear(x, weight: PackedWeight, bias):
    """``x @ W + bias`` for ``x`` (..., K), ``W`` packed (``pack_weight``) and ``bias`` (N,), without gradients."""
    if x.shape[-1] != weight.k:
        raise ValueError(f"packed_linear: x has {x.shape[-1]} features, the packed weight takes {weight.k}")
    return kernels().unimo_packed_linear(dense(x), weight.packed, bias, weight.n)


def own_rows(rows: int, slots: int) -> np.ndarray:
    """The (rows, slots) int64 table of a cache whose rows hold their own generated slots (``step_attention``'s
    ``parents`` where no hypothesis was reordered; ``generation.StepCache``'s after a resolve)."""
    return np.repeat(np.arange(rows, dtype="int64")[:, None], slots, axis=1)


def _parents(parents, generated_k) -> paddle.Tensor:
    """``parents`` as given, or ``own_rows`` of the generated buffers (N, heads, T, head_dim)."""
    return paddle.to_tensor(own_rows(generated_k.shape[0], generated_k.shape[2])) if parents is None else parents


def step_attention(q, k, v, source_k, source_v, source_bias, generated_k, generated_v, length: int, scale: float,
                   parents=None):
    """A decoding step's attention for rows of one new token, q, k, v (N, 1, H): each row over its source's keys
    (``source_k``/``source_v`` (B, heads, S, head_dim), N / B consecutive rows per source, ``source_bias``
    (B, 1, 1, S) additive), its ``length`` generated keys (``generated_k``/``generated_v`` (N, heads, T,
    head_dim)) and its own, by softmax(q . key * scale); returns (N, 1, H). k and v are then written in place
    to slot ``length`` of the generated buffers, in row r's own. ``parents`` (N, T) int64: the row whose buffers
    hold each written slot of row r (beam search's reordering; None: ``own_rows``). Inference only; float32 CPU
    tensors."""
    return kernels().unimo_step_attention(q.contiguous(), k.contiguous(), v.contiguous(), source_k, source_v,
                                          source_bias, generated_k, generated_v, _parents(parents, generated_k),
                                          int(length), float(scale))[0]


def log_softmax(x, before, after):
    """``log_softmax(x + before) + after`` over the last axis of a decoding step's scores ``x`` (rows, V), with
    ``before``/``after`` (V,) added to every row: one pass (``unimo_log_softmax``) in place of paddle's add, max,
    subtract, exp, sum, log and two adds. Float32 CPU tensors (``ops_for``), no gradient."""
    return kernels().unimo_log_softmax(x.contiguous(), before, after)


def group_top_k(x, bias, groups: int, k: int):
    """The ``k`` largest of ``x[r, j] + bias[r]`` (``x`` (rows, V), ``bias`` (rows,)) over each of ``groups``
    groups of consecutive rows laid end to end, best first: (values (groups, k), indices (groups, k) into
    (rows / groups) * V); of equal values the smaller index first, NaN above every number. One pass
    (``unimo_group_top_k``) in place of paddle's broadcasting add and ``topk``. Float32 CPU tensors."""
    return tuple(kernels().unimo_group_top_k(x.contiguous(), bias, int(groups), int(k)))


def step_layer(x, packed, params, cache, scale: float, epsilon: float, gelu: bool, normalize_before: bool):
    """A decoding step through one transformer layer in one kernel (``unimo_step_layer``), inference only: x
    (N, 1, H) one new token a row; ``packed`` the layer's six weights (q, k, v, out, linear1, linear2) packed;
    ``params`` their biases, then the two LayerNorms' weights and biases; ``cache`` the layer's
    ``modeling.DecodingCache`` with ``slot`` set (an int, or a (1,) int64 tensor: in an exported program), to which
    the step's key and value are written, and ``parents`` (as by ``step_attention``; None: ``own_rows``). Returns
    the layer's output (N, 1, H)."""
    hidden, inner = x.shape[-1], params[4].shape[0]
    shapes = [(w.k, w.n) for w in packed]
    if shapes != [(hidden, hidden)] * 4 + [(hidden, inner), (inner, hidden)]:
        raise ValueError(f"step_layer: packed weights of (in, out) {shapes} do not fit a layer of width {hidden} "
                         f"and feed-forward width {inner}")
    return kernels().unimo_step_layer(dense(x), [w.packed for w in packed], list(params), cache.source_k,
                                      cache.source_v, cache.source_bias, cache.generated_k, cache.generated_v,
                                      _parents(cache.parents, cache.generated_k),
                                      slot_tensor(cache.slot) if isinstance(cache.slot, int) else cache.slot,
                                      float(scale), float(epsilon), bool(gelu), bool(normalize_before))[0]


@functools.lru_cache(maxsize=None)
def slot_tensor(slot: int) -> paddle.Tensor:
    """``step_layer``'s slot input, (1,) int64, made once per slot (a decoding's steps take the same few)."""
    return paddle.to_tensor([slot], "int64")


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` (the same parameters, names and epsilon) whose forward runs the kernel where a gradient is
    recorded on float32 CPU tensors, paddle's ``layer_norm`` elsewhere."""

    def _kernels(self, x):
        if (paddle.is_grad_enabled() and self.weight is not None and self.bias is not None
                and len(self._normalized_shape) == 1
                and not (x.stop_gradient and self.weight.stop_gradient and self.bias.stop_gradient)):
            return ops_for(x)
        return None

    def forward(self, x):
        ops = self._kernels(x)
        if ops is not None:
            return ops.unimo_layer_norm(x.contiguous(), self.weight, self.bias, float(self._epsilon))[0]
        return super().forward(x)

    def residual(self, x, h, p: float):
        """Training's ``self(x + dropout(h, p))`` (a post-LN layer's residual; no key drawn at p = 0, as
        ``modeling.Dropout``): one kernel (``unimo_residual_layer_norm``, ``dropout``'s masks, the same bits) where
        this LayerNorm's runs, instead of the dropout, the add and the LayerNorm and their three backward ops."""
        ops = self._kernels(x)
        if ops is None or p == 0 or not 0 < p <= 1 or h.shape != x.shape or h.dtype != x.dtype:
            return self(x + (dropout(h, p) if p else h))
        return ops.unimo_residual_layer_norm(x.contiguous(), h.contiguous(), self.weight, self.bias, float(p), _key(),
                                             float(self._epsilon))[0]
