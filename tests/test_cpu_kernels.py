"""The CPU kernels (``paddle_unimo.cpu_kernels``): dropout against a numpy Philox4x32-10 checked on the
published known answers, LayerNorm against float64, the model training through them, and the fallback to paddle's
own ops when they cannot be built; for decoding, the packed matmul and a step's attention against float64.
Without a C++ compiler the kernel tests skip, unless PADDLE_UNIMO_REQUIRE_CPU_KERNELS=1 (CI), where the build
failing fails them."""
import contextlib
import ctypes
import logging
import math
import os
import subprocess
import sys

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from conftest import assert_same_loss_and_gradients, loss_and_gradients
from paddle_unimo import cpu_flags, cpu_kernels, get_preset, masks, modeling
from paddle_unimo.modeling import UNIMOLMHeadModel

M32 = np.uint64(0xFFFFFFFF)


@pytest.fixture(scope="module")
def ops():
    built = cpu_kernels.kernels()  # raises under PADDLE_UNIMO_REQUIRE_CPU_KERNELS=1 when the build fails
    if built is None:
        pytest.skip("the CPU kernels could not be built here (no C++ compiler?)")
    return built


def philox(counter, key):
    """Philox4x32-10 (Salmon et al., SC 2011) of counters (4 uint32 arrays) under a key (2 uint32), in numpy."""
    c0, c1, c2, c3 = (np.asarray(c, np.uint64) for c in counter)
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for round_ in range(10):
        if round_:
            k0, k1 = (k0 + np.uint64(0x9E3779B9)) & M32, (k1 + np.uint64(0xBB67AE85)) & M32
        p0, p1 = np.uint64(0xD2511F53) * c0, np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & M32, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & M32
    return c0, c1, c2, c3


def reference_keep(n: int, p: float, seed: int) -> np.ndarray:
    """The documented rule: element i is kept when u = (word i % 4 of counter i // 4 >> 8) / 2^24 >= p."""
    blocks = np.arange((n + 3) // 4, dtype=np.uint64)
    words = np.stack(philox((blocks & M32, blocks >> np.uint64(32), 0 * blocks, 0 * blocks),
                            (seed & 0xFFFFFFFF, seed >> 32)), axis=1).reshape(-1)[:n]
    return (words >> np.uint64(8)).astype(np.float64) / 2 ** 24 >= np.float32(p)


def test_the_numpy_philox_gives_the_published_known_answers():
    """Random123's kat_vectors for philox4x32 10: counter, key -> output."""
    known = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
             ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
             ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
              (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for counter, key, expected in known:
        assert tuple(int(w[0]) for w in philox([[c] for c in counter], key)) == expected


@pytest.mark.parametrize("n", [1, 31, 33, 1000, 4099, 200_003])  # the last on threads
def test_dropout_keeps_the_documented_elements_and_its_gradient_uses_the_same_mask(ops, n):
    rng = np.random.default_rng(n)
    for p, seed in ((0.1, 12345), (0.5, 2 ** 40 + 7), (0.9, 2 ** 62 - 1), (1.0, 3), (0.0, 9)):
        keep = reference_keep(n, p, seed)
        scale = np.float32(1) / (np.float32(1) - np.float32(p)) if p < 1 else np.float32(0)
        x = paddle.to_tensor(rng.standard_normal(n).astype("float32"), stop_gradient=False)
        out, _ = ops.unimo_dropout(x, p, seed)
        np.testing.assert_array_equal(out.numpy(), np.where(keep, x.numpy() * scale, 0.0))
        upstream = rng.standard_normal(n).astype("float32")
        out.backward(paddle.to_tensor(upstream))
        np.testing.assert_array_equal(x.grad.numpy(), np.where(keep, upstream * scale, 0.0))
        if n >= 1000 and 0 < p < 1:
            assert abs(1 - keep.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)


def test_dropout_draws_its_key_from_paddles_generator(ops):
    """``paddle.seed`` fixes the masks; consecutive calls use other keys; over many calls the rate is p and the
    masks of two calls are independent (their agreement is that of independent draws)."""
    x = paddle.ones([64, 512])
    paddle.seed(7)
    first = [cpu_kernels.dropout(x, 0.1).numpy() for _ in range(20)]
    paddle.seed(7)
    again = [cpu_kernels.dropout(x, 0.1).numpy() for _ in range(20)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    kept = np.stack(first) != 0
    n = kept.size
    assert abs(kept.mean() - 0.9) < 5 * np.sqrt(0.09 / n)
    assert set(np.unique(np.stack(first)).tolist()) == {0.0, np.float32(1) / np.float32(0.9)}
    both = (kept[:-1] & kept[1:]).mean()  # consecutive calls: P(kept in both) = 0.81 if independent
    assert abs(both - 0.81) < 5 * np.sqrt(0.81 * 0.19 / kept[1:].size)
    rows = kept.reshape(-1, 32)  # no pattern within a 32-element mask word
    assert np.abs(rows.mean(axis=0) - 0.9).max() < 5 * np.sqrt(0.09 / rows.shape[0])


def layer_norm_float64(x, weight, bias, upstream, epsilon):
    """LayerNorm over the last axis and its gradients (x, weight, bias), in float64."""
    x, weight, upstream = (np.asarray(a, np.float64) for a in (x, weight, upstream))
    mean = x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + epsilon)
    xhat = (x - mean) * rstd
    g = upstream * weight
    dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    rows = (-1, x.shape[-1])
    return (xhat * weight + bias, dx, (upstream * xhat).reshape(rows).sum(0), upstream.reshape(rows).sum(0))


@pytest.mark.parametrize("seed", range(5))
def test_layer_norm_and_its_gradients_equal_float64_and_paddles(ops, seed):
    rng = np.random.default_rng(seed)
    shape = [(2, 3, 768), (70, 37), (5, 8), (1, 1, 300), (3, 100, 768)][seed]  # the last on threads
    x = rng.standard_normal(shape) * rng.uniform(0.01, 3) + rng.uniform(-50, 50)  # offset rows, small spread
    weight, bias = rng.standard_normal(shape[-1]), rng.standard_normal(shape[-1])
    upstream = rng.standard_normal(shape)
    expected = layer_norm_float64(x, weight, bias, upstream, 1e-5)
    tensors = [paddle.to_tensor(a.astype("float32"), stop_gradient=False) for a in (x, weight, bias)]
    for run in (lambda t: ops.unimo_layer_norm(*t, 1e-5)[0], lambda t: F.layer_norm(t[0], shape[-1:], *t[1:], 1e-5)):
        out = run(tensors)
        out.backward(paddle.to_tensor(upstream.astype("float32")))
        got = [out.numpy()] + [t.grad.numpy() for t in tensors]
        for name, value, reference in zip(("y", "dx", "dweight", "dbias"), got, expected):
            scale = np.abs(reference).max()
            np.testing.assert_allclose(value, reference, atol=2e-5 * scale, rtol=0, err_msg=name)
        for t in tensors:
            t.clear_gradient()


def test_the_kernels_run_on_paddles_openmp_runtime_and_give_the_same_bits_on_any_thread_count(ops):
    """Linked to paddle's libiomp5 (MKL's threads), never GCC's libgomp; dropout, LayerNorm, the attention
    weights and the training attention, forward and backward, and a decoding step's attention, at sizes that run
    threaded: the same bits on one thread as on two and three."""
    if not cpu_kernels.OPENMP.is_file():
        pytest.skip("paddle ships no libiomp5 here: the kernels are built without OpenMP and run on one thread")
    library = next((cpu_kernels.cache_folder() / cpu_kernels.NAME).glob("*.so")).read_bytes()
    assert b"libiomp5.so" in library and b"libgomp" not in library
    omp = ctypes.CDLL(str(cpu_kernels.OPENMP))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 12, 33, 129)).astype("float32")  # 408,672 elements, not a multiple of 32
    h, upstream_h = (rng.standard_normal((4, 100, 768)).astype("float32") for _ in range(2))
    weight, bias = (rng.standard_normal(768).astype("float32") for _ in range(2))
    decoding = [rng.standard_normal(shape).astype("float32") for shape in [(24, 1, 768)] * 3 + [(4, 12, 96, 64)] * 2 +
                [(4, 1, 1, 96)] + [(24, 12, 20, 64)] * 2]  # a beam-6 step's attention (q, k, v, source, generated)

    def run():
        t = paddle.to_tensor(x, stop_gradient=False)
        out, _ = ops.unimo_dropout(t, 0.1, 2 ** 40 + 3)
        out.backward(paddle.to_tensor(x[::-1].copy()))
        tensors = [paddle.to_tensor(a, stop_gradient=False) for a in (h, weight, bias)]
        y = ops.unimo_layer_norm(*tensors, 1e-5)[0]
        y.backward(paddle.to_tensor(upstream_h))
        scores = paddle.to_tensor(x, stop_gradient=False)
        probs = ops.unimo_softmax_dropout(scores, paddle.to_tensor(x[:, :1]), 0.125, 0.1, 77)[0]
        probs.backward(paddle.to_tensor(x[::-1].copy()))
        step = cpu_kernels.step_attention(*(paddle.to_tensor(a) for a in decoding), 19, 0.125)
        qkv = [paddle.to_tensor(a, stop_gradient=False) for a in (h, upstream_h, h[::-1].copy())]
        paddle.seed(9)
        attended = cpu_kernels.attention(*qkv, paddle.to_tensor(x[:4, :1, :1, :100]), 12, 0.125, 0.1)
        attended.backward(paddle.to_tensor(upstream_h))
        return [out.numpy(), t.grad.numpy(), y.numpy(), probs.numpy(), scores.grad.numpy(), step.numpy(),
                attended.numpy()] + [a.grad.numpy() for a in tensors + qkv]

    before = omp.omp_get_max_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            omp.omp_set_num_threads(threads)
            results.append(run())
    finally:
        omp.omp_set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def softmax_dropout_float64(scores, bias, scale, p, seed, upstream):
    """The attention weights' documented rule and their gradient in float64: y = softmax(scores * scale + bias),
    probs = y * keep / (1 - p), keep by ``reference_keep``; d scores = scale * y * (g' - sum(g' * y)), g' the
    upstream gradient through the dropout."""
    v = scores.astype(np.float64) * scale + (0 if bias is None else bias)
    e = np.exp(v - v.max(-1, keepdims=True))
    y = e / e.sum(-1, keepdims=True)
    kept = reference_keep(scores.size, p, seed).reshape(scores.shape) / (1 - np.float64(p)) if p < 1 else 0 * y
    through = upstream * kept
    return y * kept, scale * y * (through - (through * y).sum(-1, keepdims=True))


@pytest.mark.parametrize("shape, bias_shape, p", [
    ((8, 12, 33, 129), (8, 1, 33, 129), 0.1),  # threaded; the bias broadcast over the heads; rows of 129
    ((2, 3, 5, 7), (2, 3, 5, 7), 0.5), ((2, 3, 5, 40), (1, 1, 1, 40), 0.9), ((1, 2, 4, 32), (2, 1, 4, 32), 0.0),
    ((3, 2, 1, 16), None, 1.0), ((2, 4, 6, 64), (2, 4, 1, 64), 0.2)])
def test_softmax_dropout_equals_the_rule_in_float64_with_the_documented_masks(ops, shape, bias_shape, p):
    rng = np.random.default_rng(len(shape) + shape[-1])
    scores = (rng.standard_normal(shape) * 20).astype("float32")
    bias = None if bias_shape is None else \
        np.where(rng.random(bias_shape) < 0.3, -1e4, rng.standard_normal(bias_shape)).astype("float32")
    if bias_shape == (2, 1, 4, 32):  # a batch of 1 against a bias of 2: not broadcastable
        with pytest.raises(OSError, match=r"does not broadcast to the scores on axis 0 \(2 against 1\)"):
            ops.unimo_softmax_dropout(paddle.to_tensor(scores), paddle.to_tensor(bias), 0.125, p, 5)
        bias = bias[:1]
    upstream = rng.standard_normal(shape).astype("float32")
    seed = 2 ** 40 + shape[-1]
    t = paddle.to_tensor(scores, stop_gradient=False)
    bias_t = paddle.to_tensor(bias if bias is not None else np.zeros((1, 1, 1, shape[-1]), "float32"))
    probs, y, _ = ops.unimo_softmax_dropout(t, bias_t, 0.125, p, seed)
    probs.backward(paddle.to_tensor(upstream))
    expected, expected_grad = softmax_dropout_float64(scores, bias, 0.125, p, seed, upstream.astype(np.float64))
    np.testing.assert_array_equal(probs.numpy() == 0, expected == 0)  # the same elements dropped
    np.testing.assert_allclose(y.numpy().sum(-1), 1, atol=1e-6)
    np.testing.assert_allclose(probs.numpy(), expected, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(t.grad.numpy(), expected_grad, rtol=0,
                               atol=1e-6 * max(1, np.abs(expected_grad).max()))


def test_softmax_dropout_draws_the_masks_dropout_draws_and_falls_back_to_paddles_ops(ops):
    """Under the same generator state the fused attention weights drop what ``dropout`` of the softmax drops;
    a float64 bias (not the kernel's) or no kernels: paddle's softmax and ``dropout``, the same values."""
    rng = np.random.default_rng(3)
    scores = paddle.to_tensor(rng.standard_normal((4, 2, 8, 24)).astype("float32"))
    bias = paddle.to_tensor(np.where(rng.random((4, 1, 8, 24)) < 0.2, -1e4, 0).astype("float32"))
    paddle.seed(21)
    fused = cpu_kernels.softmax_dropout(scores, bias, 0.5, 0.3).numpy()
    paddle.seed(21)
    unfused = cpu_kernels.dropout(F.softmax(scores * 0.5 + bias, axis=-1), 0.3).numpy()
    live = np.broadcast_to(bias.numpy() == 0, fused.shape)  # paddle's softmax gives masked keys e^-64, ours 0
    np.testing.assert_array_equal((fused == 0)[live], (unfused == 0)[live])
    np.testing.assert_allclose(fused, unfused, rtol=2e-6, atol=1e-7)
    paddle.seed(21)
    wide = cpu_kernels.softmax_dropout(scores, bias.astype("float64"), 0.5, 0.3).numpy()  # not the kernel's type
    paddle.seed(21)
    np.testing.assert_array_equal(wide, cpu_kernels.dropout(F.softmax(scores * 0.5 + bias.astype("float64"), -1),
                                                            0.3).numpy())
    with cpu_kernels.paddle_ops():
        paddle.seed(21)
        without = cpu_kernels.softmax_dropout(scores, bias, 0.5, 0.3).numpy()
    paddle.seed(21)
    np.testing.assert_array_equal(without, F.dropout(F.softmax(scores * 0.5 + bias, -1), 0.3, training=True).numpy())


def attention_float64(q, k, v, bias, heads, scale, p, seed, upstream):
    """Multi-head attention by the documented rule in float64 -- per head ``softmax_dropout_float64`` of q k^T,
    times v -- and the gradients of q, k and v from ``upstream`` (B, Lq, H)."""
    def split(x):  # (B, L, H) -> (B, heads, L, hd)
        return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(0, 2, 1, 3).astype(np.float64)

    def join(x):
        return x.transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1)
    qh, kh, vh, gh = split(q), split(k), split(v), split(upstream)
    scores = qh @ kh.transpose(0, 1, 3, 2)
    probs, _ = softmax_dropout_float64(scores, bias, scale, p, seed, np.zeros_like(scores))
    _, dscores = softmax_dropout_float64(scores, bias, scale, p, seed, gh @ vh.transpose(0, 1, 3, 2))
    return (join(probs @ vh), join(dscores @ kh), join(dscores.transpose(0, 1, 3, 2) @ qh),
            join(probs.transpose(0, 1, 3, 2) @ gh))


@pytest.mark.parametrize("batch, queries, keys, heads, hd, bias_shape, p", [
    (8, 64, 64, 12, 64, None, 0.1),  # threaded; the heads of unimo-text-1.0
    (2, 5, 7, 3, 4, (2, 1, 5, 7), 0.5), (3, 6, 6, 2, 8, (1, 1, 1, 6), 0.0), (2, 4, 33, 1, 16, (2, 1, 1, 33), 0.2),
    (1, 3, 40, 4, 2, (1, 4, 3, 40), 1.0), (2, 9, 9, 2, 3, (2, 2, 1, 9), 0.9)])
def test_attention_equals_the_rule_in_float64_with_the_documented_masks(ops, batch, queries, keys, heads, hd,
                                                                        bias_shape, p):
    """``attention`` (``unimo_attention``) on the heads' columns of (B, L, heads * hd), forward and backward:
    biases broadcast over each axis, more keys than queries, one head, p of 0 and 1."""
    rng = np.random.default_rng(queries * keys + heads)
    q, v, upstream = (rng.standard_normal((batch, n, heads * hd)).astype("float32") * 2
                      for n in (queries, keys, queries))
    k = rng.standard_normal((batch, keys, heads * hd)).astype("float32") * 2
    bias = None if bias_shape is None else \
        np.where(rng.random(bias_shape) < 0.3, -1e4, rng.standard_normal(bias_shape)).astype("float32")
    tensors = [paddle.to_tensor(a, stop_gradient=False) for a in (q, k, v)]
    paddle.seed(31)
    seed = cpu_kernels._key()  # the key attention draws next under this generator state
    paddle.seed(31)
    out = cpu_kernels.attention(*tensors, None if bias is None else paddle.to_tensor(bias), heads, hd ** -0.5, p)
    out.backward(paddle.to_tensor(upstream))
    expected = attention_float64(q, k, v, bias, heads, hd ** -0.5, p, seed, upstream.astype(np.float64))
    for got, want in zip([out] + [t.grad for t in tensors], expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=2e-5 * max(1, np.abs(want).max()))


def test_attention_gives_the_unfused_heads_values_and_refuses_shapes_that_do_not_fit(ops):
    """Under the same generator state ``attention`` gives what the heads transposed, their scores and
    ``softmax_dropout`` and the weighted sum give (the same masks), forward and backward; wrong shapes are
    refused by name."""
    rng = np.random.default_rng(8)
    q, k, v, upstream = (rng.standard_normal((2, 16, 24)).astype("float32") for _ in range(4))
    bias = np.where(rng.random((2, 1, 16, 16)) < 0.25, -1e4, 0).astype("float32")
    runs = []
    for fused in (True, False):
        tensors = [paddle.to_tensor(a, stop_gradient=False) for a in (q, k, v)]
        paddle.seed(4)
        if fused:
            out = cpu_kernels.attention(*tensors, paddle.to_tensor(bias), 3, 0.25, 0.4)
        else:
            qh, kh, vh = (t.reshape([2, 16, 3, 8]).transpose([0, 2, 1, 3]) for t in tensors)
            probs = cpu_kernels.softmax_dropout(paddle.matmul(qh, kh, transpose_y=True), paddle.to_tensor(bias),
                                                0.25, 0.4)
            out = paddle.matmul(probs, vh).transpose([0, 2, 1, 3]).reshape([2, 16, 24])
        out.backward(paddle.to_tensor(upstream))
        runs.append([out.numpy()] + [t.grad.numpy() for t in tensors])
    for fused, unfused in zip(*runs):
        np.testing.assert_allclose(fused, unfused, rtol=1e-5, atol=1e-6)
    assert (runs[0][0] != runs[1][0]).sum() < runs[0][0].size  # and not vacuously: values there to compare
    t = paddle.to_tensor(q)
    with pytest.raises(OSError, match="do not split into 5 heads"):
        cpu_kernels.attention(t, t, t, None, 5, 0.25, 0.1)
    with pytest.raises(OSError, match=r"does not broadcast to the scores \(2, 3, 16, 16\)"):
        cpu_kernels.attention(t, t, t, paddle.to_tensor(bias[:, :, :4]), 3, 0.25, 0.1)
    with pytest.raises(OSError, match="q \\(B, Lq, H\\) and k, v \\(B, Lk, H\\) are needed"):
        cpu_kernels.attention(t, t, t[:, :, :12], None, 3, 0.25, 0.1)
    with pytest.raises(ValueError, match="dropout rate must be in"):
        cpu_kernels.attention(t, t, t, None, 3, 0.25, 1.5)


def test_relu_with_the_bias_and_its_gradient_give_paddles_bits(ops):
    """``add_bias_(..., relu=True)`` is paddle's add and relu bit for bit, ``relu_grad`` paddle's relu gradient;
    threaded and not, with the fallbacks where the kernel does not fit."""
    rng = np.random.default_rng(5)
    for shape in [(3, 7, 40), (8, 128, 3072)]:
        x, upstream = (rng.standard_normal(shape).astype("float32") for _ in range(2))
        x[0, 0, :4] = [0.0, -0.0, np.nan, -np.inf]
        bias = rng.standard_normal(shape[-1]).astype("float32")
        want = paddle.to_tensor(x, stop_gradient=False)
        y = F.relu(want + paddle.to_tensor(bias))
        y.backward(paddle.to_tensor(upstream))
        got = cpu_kernels.add_bias_(paddle.to_tensor(x), paddle.to_tensor(bias), relu=True)
        np.testing.assert_array_equal(got.numpy(), y.numpy())
        np.testing.assert_array_equal(cpu_kernels.relu_grad(paddle.to_tensor(upstream), got).numpy(),
                                      want.grad.numpy())
    x = paddle.to_tensor(rng.standard_normal((4, 6)).astype("float32"))
    column = paddle.to_tensor(rng.standard_normal((4, 1)).astype("float32"))  # not (N,): paddle's add_ and relu_
    np.testing.assert_array_equal(cpu_kernels.add_bias_(x.clone(), column, relu=True).numpy(),
                                  F.relu(x + column).numpy())


@pytest.mark.parametrize("shape, p", [((8, 128, 768), 0.1), ((3, 5, 40), 0.5), ((2, 7), 1.0)])
def test_the_residual_layer_norm_gives_the_dropout_add_and_layer_norm_bits(ops, shape, p):
    """``LayerNorm.residual`` (``unimo_residual_layer_norm``) is ``dropout``, paddle's add and the LayerNorm
    kernel bit for bit, forward and backward, under the same generator state; at p = 0 it draws no key."""
    rng = np.random.default_rng(shape[-1])
    x, h, upstream = (rng.standard_normal(shape).astype("float32") for _ in range(3))
    norm = cpu_kernels.LayerNorm(shape[-1])
    norm.weight.set_value(paddle.to_tensor(rng.standard_normal(shape[-1]).astype("float32")))
    norm.bias.set_value(paddle.to_tensor(rng.standard_normal(shape[-1]).astype("float32")))
    runs = []
    for fused in (True, False):
        xt, ht = (paddle.to_tensor(a, stop_gradient=False) for a in (x, h))
        paddle.seed(13)
        y = norm.residual(xt, ht, p) if fused else norm(xt + cpu_kernels.dropout(ht, p))
        y.backward(paddle.to_tensor(upstream))
        runs.append([y.numpy(), xt.grad.numpy(), ht.grad.numpy(), norm.weight.grad.numpy(), norm.bias.grad.numpy()])
        norm.clear_gradients()
    for fused, unfused in zip(*runs):
        np.testing.assert_array_equal(fused, unfused)
    assert (runs[0][2] == 0).mean() == pytest.approx(p, abs=0.02 if np.prod(shape) > 1000 else 1.0)
    paddle.seed(13)
    norm.residual(paddle.to_tensor(x), paddle.to_tensor(h), 0.0)
    after = paddle.rand([4]).numpy()
    paddle.seed(13)
    np.testing.assert_array_equal(after, paddle.rand([4]).numpy())


def test_a_training_forward_without_backward_keeps_no_graph_alive(ops):
    """A linear layer with relu keeps its output for the backward without a reference cycle: an output nothing
    refers to is freed at once (with the output itself saved it never was, and every training forward run
    without a backward kept its whole graph)."""
    import weakref
    layer = paddle.nn.Linear(8, 16)
    layer.train()
    x = paddle.randn([4, 8])
    x.stop_gradient = False
    for relu in (False, True):
        y = modeling._linear(layer, x, relu=relu)
        assert not y.stop_gradient
        ref = weakref.ref(y)
        del y
        assert ref() is None


def tiny_batch():
    batch = masks.seq2seq_inputs([[3, 10, 11, 1], [3, 12, 1]], [[3, 20, 21, 4], [3, 22, 4]], 2, 0)
    labels = np.where(batch["token_type_ids"] == 1, np.roll(batch["input_ids"], -1, axis=1), -100)
    return {k: paddle.to_tensor(v) for k, v in batch.items() if k != "valid"}, paddle.to_tensor(labels)


def loss_and_grads(model):
    """(loss, gradients) of one forward and backward on ``tiny_batch``; the gradients are cleared after."""
    batch, labels = tiny_batch()
    loss, _ = model(**batch, labels=labels)
    loss.backward()
    result = loss_and_gradients(loss, model)
    model.clear_gradients()
    return result


def test_the_model_trains_through_the_kernels_as_through_paddles_ops(ops, monkeypatch):
    """Without dropout, a training forward and backward through the kernels (every LayerNorm, the attention)
    equals paddle's own ops'; with dropout, every dropout runs a kernel (the residuals' with their LayerNorms),
    and inference runs none."""
    calls = []
    for name in ("unimo_layer_norm", "unimo_dropout", "unimo_attention", "unimo_residual_layer_norm"):
        monkeypatch.setattr(ops, name, lambda *a, _f=getattr(ops, name), _n=name: calls.append(_n) or _f(*a))
    runs = []
    for context in (contextlib.nullcontext, cpu_kernels.paddle_ops):
        with context():
            paddle.seed(2)
            model = UNIMOLMHeadModel(get_preset("tiny", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
            model.train()
            runs.append(loss_and_grads(model))
    layers = get_preset("tiny").num_hidden_layers
    assert calls.count("unimo_layer_norm") == 2 * layers + 2 and "unimo_dropout" not in calls  # + embeddings, head
    assert calls.count("unimo_attention") == layers
    assert_same_loss_and_gradients(*runs)

    calls.clear()
    paddle.seed(2)
    model = UNIMOLMHeadModel(get_preset("tiny"))
    model.train()
    paddle.seed(11)
    first = loss_and_grads(model)
    assert calls.count("unimo_dropout") == 1  # the embeddings'; the two residuals' are their LayerNorms'
    assert calls.count("unimo_residual_layer_norm") == 2 * layers and calls.count("unimo_attention") == layers
    paddle.seed(11)
    assert loss_and_grads(model)[0] == first[0]  # the same seed, the same masks
    model.eval()
    calls.clear()
    with paddle.no_grad():
        model(**tiny_batch()[0])
    assert calls == []


def test_without_kernels_training_uses_paddles_ops_and_says_why(monkeypatch, caplog, tmp_path):
    def fail(folder):
        raise OSError("g++: not found")
    monkeypatch.setattr(cpu_kernels, "_build_or_import", fail)
    monkeypatch.setenv("PADDLE_UNIMO_KERNEL_CACHE", str(tmp_path))
    monkeypatch.delenv("PADDLE_UNIMO_REQUIRE_CPU_KERNELS", raising=False)
    monkeypatch.delenv("PADDLE_UNIMO_CPU_KERNELS", raising=False)  # a run with the kernels turned off
    with caplog.at_level(logging.WARNING, logger="paddle_unimo.cpu_kernels"):
        assert cpu_kernels._load() is None
    assert "g++: not found" in caplog.text and str(tmp_path) in caplog.text
    monkeypatch.setenv("PADDLE_UNIMO_REQUIRE_CPU_KERNELS", "1")
    with pytest.raises(RuntimeError, match="g\\+\\+: not found"):
        cpu_kernels._load()
    monkeypatch.setenv("PADDLE_UNIMO_CPU_KERNELS", "0")
    assert cpu_kernels._load() is None  # turned off: nothing is built

    paddle.seed(4)
    x = paddle.ones([4000])
    with cpu_kernels.paddle_ops():
        dropped = cpu_kernels.dropout(x, 0.25).numpy()
    paddle.seed(4)
    np.testing.assert_array_equal(dropped, F.dropout(x, 0.25, training=True).numpy())  # paddle's own


def fused_sums_float64(x, weight, bias):
    """The rule of the panels' products: each element is the bias plus its K products added in order, each addition
    a fused multiply-add: in float64, where a product of two float32 is exact, each sum rounded to float32 (the fused
    result except where the float64 sum falls on a float32 rounding tie, which these tests' values do not)."""
    y = np.broadcast_to(bias, (x.shape[0], weight.shape[1])).astype("float32")
    for i in range(weight.shape[0]):
        y = (y.astype("float64") + x[:, i:i + 1].astype("float64") * weight[i].astype("float64")).astype("float32")
    return y


def cpu_has_fma() -> bool:
    return {"avx2", "fma"} <= cpu_flags()


@pytest.mark.parametrize("k, n", [(40, 24), (768, 3072), (33, 1000)])
def test_packed_linear_equals_float64_at_any_number_of_rows(ops, k, n):
    """x @ W + b against W in panels (as nn.Linear keeps it, or transposed as a tied embedding) equals the float64
    product at row counts that fill 1 to 6 rows of registers and past a prefill's, with the input's leading shape
    kept (no rows: an empty result); every row's values are the same bits whatever the other rows; the packed weight
    is a copy (later changes to the weight do not reach it); a wrong width is an error."""
    rng = np.random.default_rng(k)
    weight, bias = rng.standard_normal((k, n)).astype("float32"), rng.standard_normal(n).astype("float32")
    for transposed in (False, True):
        source = paddle.to_tensor(weight.T.copy() if transposed else weight)
        packed = cpu_kernels.pack_weight(source, transposed=transposed)
        assert (packed.k, packed.n) == (k, n)
        source.set_value(np.zeros_like(source.numpy()))
        x = rng.standard_normal((389, 1, k)).astype("float32")
        alone = cpu_kernels.packed_linear(paddle.to_tensor(x[:1]), packed, paddle.to_tensor(bias)).numpy()
        for rows in (1, 2, 3, 4, 5, 7, 24, 100, 389):
            got = cpu_kernels.packed_linear(paddle.to_tensor(x[:rows]), packed, paddle.to_tensor(bias)).numpy()
            assert got.shape == (rows, 1, n)
            want = x[:rows].astype("float64") @ weight.astype("float64") + bias
            np.testing.assert_allclose(got, want, atol=2e-6 * np.sqrt(k) * np.abs(want).max(), rtol=0)
            np.testing.assert_array_equal(got[:1], alone)
            last = cpu_kernels.packed_linear(paddle.to_tensor(x[rows - 1:rows]), packed, paddle.to_tensor(bias))
            np.testing.assert_array_equal(got[rows - 1:], last.numpy())
    assert cpu_kernels.packed_linear(paddle.zeros([0, k]), packed, paddle.to_tensor(bias)).shape == [0, n]
    with pytest.raises(ValueError, match=f"x has {k + 1} features, the packed weight takes {k}"):
        cpu_kernels.packed_linear(paddle.ones([2, k + 1]), packed, paddle.to_tensor(bias))
    with pytest.raises(OSError, match=f"the panels of a \\({k}, {n + 64}\\) weight are needed"):
        ops.unimo_packed_linear(paddle.ones([2, k]), packed.packed, paddle.ones([n + 64]), n + 64)


def bfloat16_rounded(x):
    """float32 values rounded to bfloat16 (to nearest, ties to even) on their bits, as float32."""
    bits = x.astype("float32").view(np.uint32).astype(np.uint64)
    return (((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)


@pytest.mark.parametrize("k, n", [(40, 24), (768, 3072), (33, 1000)])
def test_bfloat16_panels_are_the_float_products_of_the_rounded_weights(ops, k, n):
    """Panels in bfloat16 hold each weight rounded to nearest, ties to even (exact ties among them), in half the
    bytes, and their products are the float32 panels' of the rounded weights, bit for bit, at 1 to 389 rows, also
    transposed (a tied embedding); an unknown panel type is an error."""
    rng = np.random.default_rng(k + 1)
    weight, bias = rng.standard_normal((k, n)).astype("float32"), paddle.to_tensor(rng.standard_normal(n), "float32")
    ties = weight.view(np.uint32)
    ties[::7] = (ties[::7] & 0xFFFF0000) | 0x8000  # halfway between two bfloat16 values: to the even one
    assert (bfloat16_rounded(weight) != weight).mean() > 0.99
    for transposed in (False, True):
        source = paddle.to_tensor(weight.T.copy() if transposed else weight)
        half = cpu_kernels.pack_weight(source, transposed=transposed, dtype="bfloat16")
        rounded = paddle.to_tensor(bfloat16_rounded(weight.T if transposed else weight))
        full = cpu_kernels.pack_weight(rounded, transposed=transposed)
        assert half.packed.dtype == paddle.bfloat16 and (half.k, half.n) == (k, n)
        np.testing.assert_array_equal(half.packed.astype("float32").numpy(), full.packed.numpy())
        x = rng.standard_normal((389, k)).astype("float32")
        for rows in (1, 3, 4, 7, 24, 389):
            rows_in = paddle.to_tensor(x[:rows])
            np.testing.assert_array_equal(cpu_kernels.packed_linear(rows_in, half, bias).numpy(),
                                          cpu_kernels.packed_linear(rows_in, full, bias).numpy())
    with pytest.raises(ValueError, match="dtype 'float16'; allowed: float32, bfloat16, int8"):
        cpu_kernels.pack_weight(paddle.to_tensor(weight), dtype="float16")


@pytest.mark.skipif(not cpu_has_fma(), reason="the panels' products use fused multiply-adds on CPUs with AVX2 and FMA")
def test_packed_linear_adds_the_products_in_order_by_fused_multiply_adds(ops):
    """Each element of a panels' product is the bias plus its products added in order by fused multiply-adds: the
    same bits as that rule in float64, at row counts on every register block and for a partial last panel."""
    rng = np.random.default_rng(3)
    k, n = 48, 150
    weight, bias = rng.standard_normal((k, n)).astype("float32"), rng.standard_normal(n).astype("float32")
    packed = cpu_kernels.pack_weight(paddle.to_tensor(weight))
    np.testing.assert_array_equal(packed.packed.numpy()[-1, :, n % 64:], 0)  # the last panel's padding
    for rows in (1, 2, 3, 4, 6, 13):
        x = rng.standard_normal((rows, k)).astype("float32")
        got = cpu_kernels.packed_linear(paddle.to_tensor(x), packed, paddle.to_tensor(bias)).numpy()
        np.testing.assert_array_equal(got, fused_sums_float64(x, weight, bias))


INT8_LEVELS = {"int8": 127, "int8_w7": 63}  # the weights' levels a side of each int8 panel dtype


def int8_quantized(a, axis: int, levels: int = 127):
    """The int8 panels' rule for the rows (``axis=1``) or columns (``axis=0``) of ``a``: ``q = round(a * (L / m))``
    (float32 operations; to nearest, ties to even, within +-L) and the scale ``m / L``, with m the largest
    magnitude (zeros for a row or column of zeros), L 127 (rows; int8 weights) or 63 (int8_w7 weights)."""
    largest = np.abs(a).max(axis=axis, keepdims=True).astype("float32")
    some = largest > 0
    inverse = np.where(some, np.float32(levels) / np.where(some, largest, 1), 0).astype("float32")
    q = np.clip(np.rint((a * inverse).astype("float32")), -levels, levels).astype(np.int64)
    return q, np.where(some, largest / np.float32(levels), 0).astype("float32")


def int8_product(x, weight, bias, dtype: str = "int8"):
    """x (rows, K) @ weight (K, N) + bias by int8 panels of ``dtype``: ``fma(float(q_x @ q_w), s_x * s_w, bias)``,
    the sums exact, the fused multiply-add in float64 rounded to float32 (as ``fused_sums_float64``)."""
    (qx, sx), (qw, sw) = int8_quantized(x, 1), int8_quantized(weight, 0, INT8_LEVELS[dtype])
    sums = (qx @ qw).astype("float32")  # exact in int64, then rounded once
    return (sums.astype("float64") * (sx * sw).astype("float64") + bias.astype("float64")).astype("float32")


@pytest.mark.parametrize("dtype", sorted(INT8_LEVELS))
@pytest.mark.parametrize("k, n", [(40, 24), (768, 3072), (33, 1000)])
def test_int8_panels_follow_the_dynamic_quantization_rule(ops, k, n, dtype):
    """Panels in int8 hold, per panel of 64 columns, their scales (float32), the sums of their quantized weights
    (int32) and a row whose first byte is the weights' levels L (127 for int8, 63 for int8_w7), then the quantized
    weights in groups of 4 rows, each column's 4 bytes together (zeros past K and past N; exact ties to even; a
    column of zeros), a quarter of the float panels' bytes; their products are the int8 rule's bits
    (``int8_product``: each row quantized with its own scale, so a row of zeros gives the bias) at 1 to 389 rows,
    also transposed (a tied embedding), and where inputs and weights reach their largest magnitudes together (the
    16-bit pair sums of AVX2's VPMADDUBSW at their bound); a row's result does not depend on the other rows. A
    panel whose levels byte is neither is refused, and so are panels with the 8 header rows of earlier versions."""
    levels = INT8_LEVELS[dtype]
    rng = np.random.default_rng(k + 2)
    weight, bias = rng.standard_normal((k, n)).astype("float32"), rng.standard_normal(n).astype("float32")
    weight[:, 1] = 0.0
    weight[:, 2] = np.where(np.arange(k) == 0, levels, np.arange(k) % 9 - 3.5)  # scale 1: exact ties
    weight[:, 3], weight[:, 4] = 0.5, -2.0  # every q_w at +L, at -L
    q, scale = int8_quantized(weight, 0, levels)
    assert scale[0, 2] == 1.0 and (q[1:, 2] % 2 == 0).all() and not q[:, 1].any()
    assert (q[:, 3] == levels).all() and (q[:, 4] == -levels).all() and np.abs(q).max() == levels
    count, groups = -(-n // 64), -(-k // 4)
    padded = np.zeros((4 * groups, count * 64), np.int64)
    padded[:k, :n] = q
    for transposed in (False, True):
        source = paddle.to_tensor(weight.T.copy() if transposed else weight)
        quarter = cpu_kernels.pack_weight(source, transposed=transposed, dtype=dtype)
        assert quarter.packed.dtype == paddle.int8 and quarter.packed.shape == [count, 9 + 4 * groups, 64]
        panels = quarter.packed.numpy()
        header = panels[:, :8].copy().reshape(count, 2, 256)
        np.testing.assert_array_equal(header[:, 0].copy().view("float32").reshape(-1)[:n], scale[0])
        np.testing.assert_array_equal(header[:, 1].copy().view("int32").reshape(-1)[:n], q.sum(axis=0))
        np.testing.assert_array_equal(panels[:, 8], np.eye(1, 64, dtype=np.int8)[[0] * count] * levels)
        body = panels[:, 9:].reshape(count, groups, 64, 4).transpose(1, 3, 0, 2).reshape(4 * groups, count * 64)
        np.testing.assert_array_equal(body, padded)
        x = rng.standard_normal((389, k)).astype("float32")
        x[1] = 0.0
        x[2], x[3] = 3.0, -3.0  # every q_x at +127, at -127
        want = int8_product(x, weight, bias, dtype)
        np.testing.assert_array_equal(want[1], bias)
        for rows in (1, 3, 4, 7, 24, 389):
            got = cpu_kernels.packed_linear(paddle.to_tensor(x[:rows]), quarter, paddle.to_tensor(bias)).numpy()
            np.testing.assert_array_equal(got, want[:rows], err_msg=f"{rows} rows")
    for bad, error in ((np.delete(panels, 8, axis=1), "9 header rows: an export from a version with 8 must be made"),
                       (panels.copy(), f"int8 panel {count - 1} holds weight levels 100, not 127 or 63")):
        bad[-1, 8, 0] = 100
        with pytest.raises(OSError, match=error):
            cpu_kernels.packed_linear(paddle.to_tensor(x[:2]), quarter._replace(packed=paddle.to_tensor(bad)),
                                      paddle.to_tensor(bias))


PANEL_ROWS = (13, 5, 10, 8, 9, 3, 2)  # AVX2's blocks of 6, 1; 5; 6, 4; 6, 2; 6, 3 rows, then up to 4 at once
PANEL_SCRIPT = f"""
import sys
import numpy as np
import paddle
from paddle_unimo import cpu_kernels
rng = np.random.default_rng(5)
x, w, b = (rng.standard_normal(s).astype("float32") for s in ((13, 200), (200, 150), (150,)))
np.save(sys.argv[1], np.concatenate([
    cpu_kernels.packed_linear(paddle.to_tensor(x[:rows]), cpu_kernels.pack_weight(paddle.to_tensor(w), dtype=dtype),
                              paddle.to_tensor(b)).numpy() for dtype in ("float32", "bfloat16", "int8", "int8_w7")
    for rows in {PANEL_ROWS}]))
"""


@pytest.mark.skipif(not cpu_has_fma(), reason="needs a CPU with AVX2 and FMA")
def test_panel_products_give_the_same_bits_on_every_instruction_set(ops, tmp_path):
    """The panels' products in AVX2 (up to 6 rows x 16 columns of sums at a time; up to 4 rows, 64 columns) give
    the AVX-512 kernel's bits (6 x 64), both the in-order fused rule; the baseline's (CPUs without FMA) are the
    in-order rule with every product rounded; bfloat16 panels give each rule on the rounded weights; int8 and
    int8_w7 panels (AVX-512 VNNI, AVX2 with and without VPSIGNB, the plain loop) the int8 rule's bits everywhere;
    an instruction set the CPU does not run is an error naming it (``PADDLE_UNIMO_PANEL_ISA``, read once per
    process: each in its own)."""
    rng = np.random.default_rng(5)
    x, w, b = (rng.standard_normal(s).astype("float32") for s in ((13, 200), (200, 150), (150,)))

    def unfused(weight):
        y = np.broadcast_to(b, (13, 150)).astype("float32")
        for i in range(200):
            y = y + x[:, i:i + 1] * weight[i]  # float32: the product rounded, then the sum
        return y
    fused = [fused_sums_float64(x, weight, b) for weight in (w, bfloat16_rounded(w))]
    rounded = [unfused(weight) for weight in (w, bfloat16_rounded(w))]
    int8 = [int8_product(x, w, b, dtype) for dtype in ("int8", "int8_w7")]  # exact sums: the same bits everywhere
    want = {isa: np.concatenate([y[:rows] for y in (*by_dtype, *int8) for rows in PANEL_ROWS])
            for isa, by_dtype in (("avx2", fused), ("baseline", rounded))}
    if {"avx512f", "avx512bw"} <= cpu_flags():
        want["avx512"] = want["avx2"]
    for isa, expected in want.items():
        out = tmp_path / f"{isa}.npy"
        done = subprocess.run([sys.executable, "-c", PANEL_SCRIPT, str(out)], capture_output=True, text=True,
                              env={**os.environ, "PADDLE_UNIMO_PANEL_ISA": isa})
        assert done.returncode == 0, done.stderr[-2000:]
        np.testing.assert_array_equal(np.load(out), expected, err_msg=isa)
    done = subprocess.run([sys.executable, "-c", PANEL_SCRIPT, str(tmp_path / "no.npy")], capture_output=True,
                          text=True, env={**os.environ, "PADDLE_UNIMO_PANEL_ISA": "sse4"})
    assert done.returncode != 0 and "PADDLE_UNIMO_PANEL_ISA=sse4 is not one this CPU runs: " in done.stderr


def step_attention_float64(q, k, v, source_k, source_v, source_bias, generated_k, generated_v, length, scale):
    """The rule of ``cpu_kernels.step_attention`` in float64: row r of source r // (N / B) over [its source's keys
    (plus their bias); its first ``length`` generated keys; its own], softmax(q . key * scale), the weighted sum
    of the values."""
    rows, heads, hd = generated_k.shape[0], generated_k.shape[1], generated_k.shape[3]
    per_source = rows // source_k.shape[0]
    q, k, v = (a.reshape(rows, heads, 1, hd).astype(np.float64) for a in (q, k, v))
    source = np.repeat(np.arange(source_k.shape[0]), per_source)
    keys = np.concatenate([source_k[source], generated_k[:, :, :length], k], axis=2)
    values = np.concatenate([source_v[source], generated_v[:, :, :length], v], axis=2)
    bias = np.concatenate([source_bias[source], np.zeros((rows, 1, 1, length + 1))], axis=-1)
    scores = q @ keys.transpose(0, 1, 3, 2) * scale + bias
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return ((e / e.sum(-1, keepdims=True)) @ values).reshape(rows, 1, heads * hd)


def step_attention_inputs(rng, sources, per_source, heads, S, slots, hd):
    """Random q, k, v (rows, 1, heads * hd), source keys/values, a source bias masking ~30% of the keys and
    generated buffers, for ``step_attention``."""
    rows = sources * per_source
    q, k, v = (rng.standard_normal((rows, 1, heads * hd)).astype("float32") for _ in range(3))
    source_k, source_v = (rng.standard_normal((sources, heads, S, hd)).astype("float32") for _ in range(2))
    source_bias = np.where(rng.uniform(size=(sources, 1, 1, S)) < 0.3, masks.MASKED_BIAS, 0.0).astype("float32")
    generated_k, generated_v = (rng.standard_normal((rows, heads, slots, hd)).astype("float32") for _ in range(2))
    return q, k, v, source_k, source_v, source_bias, generated_k, generated_v


@pytest.mark.parametrize("sources, per_source, heads, S, slots, hd, length", [  # the last runs threaded
    (1, 1, 2, 5, 4, 8, 0), (2, 3, 2, 7, 6, 8, 5), (3, 4, 3, 9, 8, 5, 2), (4, 6, 12, 96, 20, 64, 19)])
def test_step_attention_equals_the_rule_in_float64_and_writes_the_slot(ops, sources, per_source, heads, S, slots, hd,
                                                                       length):
    """A decoding step's attention by the kernel equals the float64 rule, with masked source keys (the additive
    mask bias); the new keys/values land in slot ``length`` of the generated buffers, every other slot unchanged."""
    rng = np.random.default_rng(S)
    rows = sources * per_source
    q, k, v, source_k, source_v, source_bias, generated_k, generated_v = step_attention_inputs(
        rng, sources, per_source, heads, S, slots, hd)
    source_bias[..., 0] = 0.0  # every source keeps a key
    buffers = [paddle.to_tensor(a) for a in (generated_k, generated_v)]
    got = cpu_kernels.step_attention(*(paddle.to_tensor(a) for a in (q, k, v, source_k, source_v, source_bias)),
                                     *buffers, length, hd ** -0.5).numpy()
    want = step_attention_float64(q, k, v, source_k, source_v, source_bias, generated_k, generated_v, length,
                                  hd ** -0.5)
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), rtol=0)
    for buffer, before, new in zip(buffers, (generated_k, generated_v), (k, v)):
        after = buffer.numpy()
        np.testing.assert_array_equal(after[:, :, length], new.reshape(rows, heads, hd))
        np.testing.assert_array_equal(np.delete(after, length, axis=2), np.delete(before, length, axis=2))


F32 = np.float32


def exp_non_positive(x):
    """``ExpNonPositive`` of csrc/cpu_kernels.cc in float32, operation by operation: x = n ln 2 + r, Cephes'
    polynomial for e^r, 2^n by the exponent bits, 0 below -87."""
    clamped = np.maximum(x, F32(-87))
    n = (clamped * F32(1.44269504088896341) - F32(0.5)).astype(np.int32)  # truncation toward zero, as C's
    r = (clamped - n.astype(F32) * F32(0.693359375)) + n.astype(F32) * F32(2.12194440e-4)
    poly = F32(1.9875691500e-4)
    for coefficient in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
        poly = poly * r + F32(coefficient)
    two_n = (((n + 127) << 23) & -(x >= F32(-87)).astype(np.int32)).view(F32)
    return ((poly * r * r + r) + F32(1)) * two_n


def lane_sum(terms):
    """``LaneSum`` over the last axis: 8 float32 lanes over the whole groups of 8, then in double the rest in
    order and the lanes."""
    whole = terms.shape[-1] // 8 * 8
    lanes = np.zeros(terms.shape[:-1] + (8,), F32)
    for j in range(0, whole, 8):
        lanes = lanes + terms[..., j:j + 8]
    total = np.zeros(terms.shape[:-1])
    for j in range(whole, terms.shape[-1]):
        total = total + terms[..., j].astype(np.float64)
    for lane in range(8):
        total = total + lanes[..., lane].astype(np.float64)
    return total


def dots_float32(q, keys):
    """``Dots``: q (..., hd) against keys (..., n, hd): 8 float32 lanes (lane l over d = l mod 8, in order, each
    product rounded), added as ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))."""
    products = q[..., None, :] * keys
    lanes = np.zeros(products.shape[:-1] + (8,), F32)
    for d in range(0, products.shape[-1], 8):
        chunk = products[..., d:d + 8]
        lanes[..., :chunk.shape[-1]] = lanes[..., :chunk.shape[-1]] + chunk
    l = [lanes[..., i] for i in range(8)]
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))


def step_attention_float32(q, k, v, source_k, source_v, source_bias, generated_k, generated_v, length, scale,
                           parents):
    """The rule of ``cpu_kernels.step_attention`` in float32 as the kernel computes it, for bit equality: row r's
    generated slot t read from row parents[r, t]; the scores by ``dots_float32`` (scaled, then the source's bias
    added), the softmax by ``exp_non_positive`` and ``lane_sum``, the weights times the values summed in the keys'
    order."""
    rows, heads, hd = generated_k.shape[0], generated_k.shape[1], generated_k.shape[3]
    slots = np.arange(generated_k.shape[2])
    generated_k, generated_v = (g[parents[:, None, :], np.arange(heads)[None, :, None], slots] for g in
                                (generated_k, generated_v))
    source = np.repeat(np.arange(source_k.shape[0]), rows // source_k.shape[0])
    q, k, v = (a.reshape(rows, heads, 1, hd) for a in (q, k, v))
    keys = np.concatenate([source_k[source], generated_k[:, :, :length], k], axis=2)
    values = np.concatenate([source_v[source], generated_v[:, :, :length], v], axis=2)
    scores = dots_float32(q[:, :, 0], keys) * F32(scale)
    scores[..., :source_k.shape[2]] = scores[..., :source_k.shape[2]] + source_bias[source][:, :, 0]
    e = exp_non_positive(scores - scores.max(-1, keepdims=True))
    weights = e * (1.0 / lane_sum(e)).astype(F32)[..., None]
    out = np.zeros((rows, heads, hd), F32)
    for j in range(keys.shape[2]):
        out = out + weights[..., j:j + 1] * values[:, :, j]
    return out.reshape(rows, 1, heads * hd)


@pytest.mark.parametrize("sources, per_source, heads, S, slots, hd, length", [
    (1, 1, 2, 5, 4, 8, 0), (2, 3, 2, 13, 6, 36, 5), (3, 2, 3, 9, 8, 5, 7), (4, 6, 12, 96, 20, 64, 19),
    (1, 2, 1, 17, 3, 70, 1)])
def test_step_attention_follows_its_float32_rule_bit_for_bit(ops, sources, per_source, heads, S, slots, hd,
                                                             length):
    """The kernel's step attention is its documented float32 rule exactly (eight keys' dot products at a time with
    a fixed order of sums, the weighted sum 32 columns at a time, the tails past multiples of 8 keys, 8 and 32
    columns; the generated slots read from the rows the reordering table names), on any number of threads: the
    same bits as the NumPy model of it; the new key/value land in each row's own slot."""
    rng = np.random.default_rng(hd)
    rows = sources * per_source
    q, k, v, source_k, source_v, source_bias, generated_k, generated_v = step_attention_inputs(
        rng, sources, per_source, heads, S, slots, hd)
    parents = rng.integers(0, rows, (rows, slots))
    buffers = [paddle.to_tensor(a) for a in (generated_k, generated_v)]
    got = cpu_kernels.step_attention(*(paddle.to_tensor(a) for a in (q, k, v, source_k, source_v, source_bias)),
                                     *buffers, length, hd ** -0.5, paddle.to_tensor(parents)).numpy()
    want = step_attention_float32(q, k, v, source_k, source_v, source_bias, generated_k, generated_v, length,
                                  hd ** -0.5, parents)
    np.testing.assert_array_equal(got, want)
    own = cpu_kernels.step_attention(*(paddle.to_tensor(a) for a in (q, k, v, source_k, source_v, source_bias,
                                                                     generated_k, generated_v)), length, hd ** -0.5)
    np.testing.assert_array_equal(own.numpy(), step_attention_float32(
        q, k, v, source_k, source_v, source_bias, generated_k, generated_v, length, hd ** -0.5,
        np.repeat(np.arange(rows)[:, None], slots, axis=1)))
    assert not np.array_equal(own.numpy(), got) or (parents[:, :length] == np.arange(rows)[:, None]).all()
    for buffer, new in zip(buffers, (k, v)):
        np.testing.assert_array_equal(buffer.numpy()[:, :, length], new.reshape(rows, heads, hd))


@pytest.mark.parametrize("rows, vocab", [(24, 18000), (3, 7), (5, 99)])  # the first runs threaded
def test_log_softmax_with_columns_equals_float64(ops, rows, vocab):
    """``cpu_kernels.log_softmax``: ``log_softmax(x + before) + after``, a row's banned entries (before = NEVER)
    out of the softmax, within a float rounding of float64; and exactly ((x + before) - max) - lse + after in
    float32 with one lse a row (read where the row's maximum is), close to float64's log-sum-exp."""
    rng = np.random.default_rng(vocab)
    x = (rng.standard_normal((rows, vocab)) * 8).astype("float32")
    before = np.where(rng.random(vocab) < 0.2, -1e9, 0.0).astype("float32")
    after = np.where(rng.random(vocab) < 0.2, -1e9, 0.0).astype("float32")
    before[0] = after[0] = 0.0
    top = np.where((before == 0) & (after == 0), np.arange(vocab), 0)[rng.integers(0, vocab, rows)]
    x[np.arange(rows), top] = x.max(-1) + 0.5  # each row's maximum where no column adds: there out = -lse
    got = cpu_kernels.log_softmax(*(paddle.to_tensor(a) for a in (x, before, after))).numpy()
    y = x.astype(np.float64) + before
    lse = np.log(np.exp(y - y.max(-1, keepdims=True)).sum(-1))
    np.testing.assert_allclose(got, y - y.max(-1, keepdims=True) - lse[:, None] + after, rtol=1e-6, atol=1e-5)
    kernel_lse = -got[np.arange(rows), top]
    np.testing.assert_allclose(kernel_lse, lse, rtol=0, atol=2e-5)
    shifted = (x + before) - (x + before).max(-1, keepdims=True)
    np.testing.assert_array_equal(got, (shifted - kernel_lse[:, None]) + after)
    with pytest.raises(OSError, match="two columns of vocab values"):
        cpu_kernels.log_softmax(paddle.to_tensor(x), paddle.zeros([vocab + 1]), paddle.zeros([vocab]))


def top_k_numpy(x, bias, groups, k):
    """The k best of x + bias[:, None] per group of rows laid end to end: NaN first, then larger values, equal
    ones by index."""
    values = (x + bias[:, None]).reshape(groups, -1)
    index = np.arange(values.shape[1])
    order = [np.lexsort((index, -np.nan_to_num(row, nan=0.0), ~np.isnan(row)))[:k] for row in values]
    return np.stack([row[o] for row, o in zip(values, order)]), np.stack(order)


@pytest.mark.parametrize("groups, per_group, vocab, k", [(4, 6, 18000, 12), (2, 3, 5, 15), (3, 1, 40, 1),
                                                         (1, 4, 9, 8)])
def test_group_top_k_equals_a_sort(ops, groups, per_group, vocab, k):
    """``cpu_kernels.group_top_k``: each group's k best of x + bias over its rows laid end to end, best first,
    equal values by index (many ties drawn from a few values), NaN above every number -- exactly a stable sort's;
    and paddle's topk's values where there are no ties."""
    rng = np.random.default_rng(vocab + k)
    rows = groups * per_group
    x = rng.integers(-3, 3, (rows, vocab)).astype("float32")  # ties everywhere
    x[rng.random(x.shape) < 0.01] = np.nan
    bias = rng.integers(-2, 2, rows).astype("float32")
    values, indices = cpu_kernels.group_top_k(paddle.to_tensor(x), paddle.to_tensor(bias), groups, k)
    want_values, want_indices = top_k_numpy(x, bias, groups, k)
    np.testing.assert_array_equal(values.numpy(), want_values)
    np.testing.assert_array_equal(indices.numpy(), want_indices)
    x = rng.standard_normal((rows, vocab)).astype("float32")
    bias = rng.standard_normal(rows).astype("float32")
    values, indices = cpu_kernels.group_top_k(paddle.to_tensor(x), paddle.to_tensor(bias), groups, k)
    reference = paddle.topk(paddle.to_tensor((x + bias[:, None]).reshape(groups, -1)), k, axis=1)
    np.testing.assert_array_equal(values.numpy(), reference[0].numpy())
    np.testing.assert_array_equal(indices.numpy(), reference[1].numpy())


def test_group_top_k_refuses_bad_groups_and_k(ops):
    x, bias = paddle.zeros([6, 5]), paddle.zeros([6])
    with pytest.raises(OSError, match="6 rows do not split into 4 groups"):
        cpu_kernels.group_top_k(x, bias, 4, 2)
    with pytest.raises(OSError, match="k = 16 is not in \\[1, 15\\]"):
        cpu_kernels.group_top_k(x, bias, 2, 16)
    with pytest.raises(OSError, match="a bias a row"):
        cpu_kernels.group_top_k(x, paddle.zeros([5]), 2, 2)


def test_step_attention_refuses_a_slot_past_the_buffers_and_mismatched_shapes(ops):
    """Paddle raises the kernel's checks as OSError, with their message."""
    z = lambda *shape: paddle.zeros(shape)
    with pytest.raises(OSError, match="slot 3 is not in the generated buffers' 3 slots"):
        cpu_kernels.step_attention(z(2, 1, 8), z(2, 1, 8), z(2, 1, 8), z(1, 2, 5, 4), z(1, 2, 5, 4), z(1, 1, 1, 5),
                                   z(2, 2, 3, 4), z(2, 2, 3, 4), 3, 0.5)
    with pytest.raises(OSError, match="slot 0 of row 1 names row 2, not one of the 2 rows"):
        cpu_kernels.step_attention(z(2, 1, 8), z(2, 1, 8), z(2, 1, 8), z(1, 2, 5, 4), z(1, 2, 5, 4), z(1, 1, 1, 5),
                                   z(2, 2, 3, 4), z(2, 2, 3, 4), 1, 0.5, paddle.to_tensor([[0, 0, 0], [2, 0, 0]]))
    with pytest.raises(OSError, match="rows \\* heads \\* head_dim = 16 values"):
        cpu_kernels.step_attention(z(3, 1, 8), z(3, 1, 8), z(3, 1, 8), z(1, 2, 5, 4), z(1, 2, 5, 4), z(1, 1, 1, 5),
                                   z(2, 2, 3, 4), z(2, 2, 3, 4), 0, 0.5)


@pytest.mark.parametrize("shape, bias_shape", [
    ((8, 12, 33, 129), (8, 1, 33, 129)), ((4, 12, 1, 96), (4, 1, 1, 96)), ((2, 3, 5, 7), (2, 3, 5, 7)),
    ((3, 2, 1, 16), None)])  # the first runs threaded
def test_inference_softmax_equals_the_rule_in_float64(ops, shape, bias_shape):
    """``cpu_kernels.softmax`` (a prefill's attention weights on the kernels): softmax(scores * scale + bias) over
    the last axis, the bias broadcast, masked keys 0; within float rounding of float64 and of paddle's softmax."""
    rng = np.random.default_rng(shape[-1])
    scores = (rng.standard_normal(shape) * 20).astype("float32")
    bias = None if bias_shape is None else \
        np.where(rng.random(bias_shape) < 0.3, masks.MASKED_BIAS, rng.standard_normal(bias_shape)).astype("float32")
    got = cpu_kernels.softmax(paddle.to_tensor(scores), None if bias is None else paddle.to_tensor(bias), 0.125)
    want, _ = softmax_dropout_float64(scores, bias, 0.125, 0.0, 0, np.zeros(shape))
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-6, atol=1e-7)
    paddles = F.softmax(paddle.to_tensor(scores) * 0.125 + (0 if bias is None else paddle.to_tensor(bias)), -1)
    np.testing.assert_allclose(got.numpy(), paddles.numpy(), rtol=2e-6, atol=1e-7)
    with pytest.raises(OSError, match="does not broadcast to the scores on axis 2"):
        cpu_kernels.softmax(paddle.to_tensor(scores), paddle.zeros([1, 1, shape[2] + 1, shape[3]]), 0.125)


def layer_step_float64(x, weights, params, cache, length, scale, epsilon, gelu, normalize_before):
    """The rule of ``cpu_kernels.step_layer`` in float64: ``EncoderLayer``'s forward for one new token a row in
    inference, its attention by ``step_attention_float64``."""
    x = x.astype(np.float64)
    b, (w1, c1, w2, c2) = params[:6], params[6:]

    def norm(z, w, c):
        return (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + epsilon) * w + c

    def act(z):
        return 0.5 * z * (1 + np.vectorize(math.erf)(z / np.sqrt(2))) if gelu else np.maximum(z, 0)
    h = norm(x, w1, c1) if normalize_before else x
    q, k, v = (h @ weights[i] + b[i] for i in range(3))
    y = x + step_attention_float64(q, k, v, *cache, length, scale) @ weights[3] + b[3]
    if normalize_before:
        return y + act(norm(y, w2, c2) @ weights[4] + b[4]) @ weights[5] + b[5], (k, v)
    y = norm(y, w1, c1)
    return norm(y + act(y @ weights[4] + b[4]) @ weights[5] + b[5], w2, c2), (k, v)


@pytest.mark.parametrize("gelu, normalize_before", [(False, False), (True, False), (False, True), (True, True)])
def test_step_layer_equals_the_layer_in_float64_and_writes_the_slot(ops, gelu, normalize_before):
    """A decoding step through one layer in one kernel (post-LN and pre-LN, relu and gelu, at 1 and 3 rows a
    source) equals the layer's rule in float64; the step's key/value land in the slot, the other slots unchanged;
    a wrong number of parameters is refused."""
    from paddle_unimo.modeling import DecodingCache
    hidden, inner, heads, S, slots, length = 32, 80, 4, 9, 6, 2
    for sources, per_source in ((2, 1), (3, 3)):
        rng = np.random.default_rng(10 * sources + gelu + 2 * normalize_before)
        rows = sources * per_source
        x = rng.standard_normal((rows, 1, hidden)).astype("float32")
        shapes = [(hidden, hidden)] * 4 + [(hidden, inner), (inner, hidden)]
        weights = [(rng.standard_normal(s) / np.sqrt(s[0])).astype("float32") for s in shapes]
        params = [rng.standard_normal(s[1]).astype("float32") * 0.5 for s in shapes] + \
            [rng.uniform(0.5, 1.5, hidden).astype("float32") if i % 2 == 0 else
             rng.standard_normal(hidden).astype("float32") * 0.3 for i in range(4)]
        source = [rng.standard_normal((sources, heads, S, hidden // heads)).astype("float32") for _ in range(2)]
        source_bias = np.where(rng.uniform(size=(sources, 1, 1, S)) < 0.3, masks.MASKED_BIAS, 0.0).astype("float32")
        source_bias[..., 0] = 0.0
        generated = [rng.standard_normal((rows, heads, slots, hidden // heads)).astype("float32") for _ in range(2)]
        buffers = [paddle.to_tensor(a) for a in generated]
        cache = DecodingCache(*(paddle.to_tensor(a) for a in source), paddle.to_tensor(source_bias), *buffers,
                              paddle.zeros([1, 1, 1, slots]), slot=length)
        packed = [cpu_kernels.pack_weight(paddle.to_tensor(w)) for w in weights]
        got = cpu_kernels.step_layer(paddle.to_tensor(x), packed, [paddle.to_tensor(p) for p in params], cache, 0.5,
                                     1e-5, gelu, normalize_before).numpy()
        want, (k, v) = layer_step_float64(x, weights, params, source + [source_bias] + generated, length, 0.5, 1e-5,
                                          gelu, normalize_before)
        np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(want).max(), rtol=0)
        for buffer, before, new in zip(buffers, generated, (k, v)):
            after = buffer.numpy()
            np.testing.assert_allclose(after[:, :, length], new.reshape(after[:, :, length].shape), atol=1e-5)
            np.testing.assert_array_equal(np.delete(after, length, axis=2), np.delete(before, length, axis=2))
    with pytest.raises(OSError, match="6 packed weights and 10 parameters are needed, got 6 and 9"):
        cpu_kernels.step_layer(paddle.to_tensor(x), packed, [paddle.to_tensor(p) for p in params[:9]], cache, 0.5,
                               1e-5, gelu, normalize_before)
    with pytest.raises(ValueError, match="do not fit a layer of width 32 and feed-forward width 80"):
        cpu_kernels.step_layer(paddle.to_tensor(x), packed[:4] + packed[5:] + packed[4:5],
                               [paddle.to_tensor(p) for p in params], cache, 0.5, 1e-5, gelu, normalize_before)


def test_add_bias_in_place_gives_paddles_sums_and_falls_back_where_the_kernel_does_not_fit(ops):
    """``cpu_kernels.add_bias_``: x += bias into x itself, the same bits as paddle's add, at sizes on one thread and
    threaded; a bias that is not x's last axis, another dtype or a strided x: paddle's add_, the same values."""
    rng = np.random.default_rng(8)
    for shape in ((3, 5), (8, 128, 3072), (2, 7, 33)):
        x = rng.standard_normal(shape).astype("float32")
        bias = rng.standard_normal(shape[-1]).astype("float32")
        t = paddle.to_tensor(x)
        out = cpu_kernels.add_bias_(t, paddle.to_tensor(bias))
        np.testing.assert_array_equal(t.numpy(), (paddle.to_tensor(x) + paddle.to_tensor(bias)).numpy())
        assert out is t
    x = rng.standard_normal((4, 6)).astype("float32")
    for bias in (rng.standard_normal((4, 1)).astype("float32"), rng.standard_normal(6).astype("float64")):
        t = paddle.to_tensor(x)
        np.testing.assert_array_equal(cpu_kernels.add_bias_(t, paddle.to_tensor(bias)).numpy(),
                                      (paddle.to_tensor(x) + paddle.to_tensor(bias)).numpy())
    base = paddle.to_tensor(x)
    strided = base.transpose([1, 0])  # (6, 4), a view of base where paddle makes one: added where it lies
    cpu_kernels.add_bias_(strided, paddle.arange(4, dtype="float32"))
    np.testing.assert_array_equal(strided.numpy(), x.T + np.arange(4, dtype="float32"))
    with pytest.raises(OSError, match="a bias of 6 values is needed, got 5"):
        ops.unimo_add_bias(paddle.to_tensor(x), paddle.ones([5]), False)
