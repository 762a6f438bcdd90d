"""The UNIMO model on paddle.nn: one transformer over image regions and text (UNIMO paper, section 2).

Input layout is ``[regions; text]`` (regions first, as in the original ``'vl'``/``'vol'`` inputs). Regions
are embedded by two projections (2048-d feature, 5-d location) summed and normalised by their own
LayerNorm; text by word + position (+ token type) embeddings and the ``encoder_norm`` LayerNorm.

Parameter names follow PaddleNLP's ``UNIMOLMHeadModel`` so that a ``unimo-text-1.0*`` folder loads
as it is; ``checkpoint.py`` maps the original static-graph names onto them.

Attention masks: ``attention_mask`` is either bool/int ("may attend", built by ``masks.py``) or float
(an additive bias, PaddleNLP's meaning). Shapes (B, Lk) for key padding, (B, Lq, Lk) or (B, 1, Lq, Lk).
``masks.additive_bias`` turns it into an additive bias once, where ``UNIMOModel.forward`` calls the encoder.

Initialisation from scratch follows the original UNIMO (see ``UNIMOPretrainedModel.init_weights``).
"""
from __future__ import annotations

import contextlib
from typing import List, NamedTuple, Optional, Tuple

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from . import masks
from .cpu_kernels import (LayerNorm, PackedWeight, add_bias_, attention, attention_runs, dense, dropout, pack_weight,
                          packed_linear, relu_grad, softmax, softmax_dropout, step_attention, step_layer)
from .config import REGION_LOCATION_SIZE, UNIMOConfig
from .typed import ConfigError

KVCache = List[Tuple[paddle.Tensor, paddle.Tensor]]  # per layer (k, v), each (B, nh, T, hd)


OWN_WEIGHTS = (None,) * 6  # a layer's packed (q, k, v, out, linear1, linear2): none, it multiplies by its own


class DecodingCache(NamedTuple):
    """The keys/values one decoding step attends to (``generation``): the source's -- everything the prefill
    encoded -- once per source, shared by that source's ``N / B`` consecutive rows (beams, returned sequences),
    and the generated tokens', one row per hypothesis, in a buffer of ``T`` slots of which ``generated_bias``
    opens the ones written so far. The step's own key/value is attended to besides and returned, not written
    here -- unless ``slot`` is set: then a CPU kernel (``cpu_kernels.step_layer``, or ``step_attention`` where
    the weights are not packed) attends and writes them to that slot, the first not written
    (``generation.ModelStepper``), reading each row's written slots from the rows ``parents`` names (beam search
    reorders hypotheses by that table instead of moving the buffers; None: each row's own). ``*_k``/``*_v`` index
    by layer: a stacked tensor or a per-layer list."""
    source_k: object  # per layer (B, nh, S, hd)
    source_v: object
    source_bias: paddle.Tensor  # (B, 1, 1, S) additive: 0 where the source key may be attended to
    generated_k: object  # per layer (N, nh, T, hd)
    generated_v: object
    generated_bias: Optional[paddle.Tensor]  # (1, 1, 1, T) additive: 0 for the slots written so far; None with slot
    # the slot the step writes its keys/values to (CPU kernel; in an exported program a (1,) int64 tensor), or None
    slot: Optional[int] = None
    parents: Optional[paddle.Tensor] = None  # with slot: (N, T) int64, the row holding each written slot of a row

    def layer(self, i: int) -> "DecodingCache":
        return DecodingCache(self.source_k[i], self.source_v[i], self.source_bias, self.generated_k[i],
                             self.generated_v[i], self.generated_bias, self.slot, self.parents)

    def step_bias(self, num_heads: int):
        """(N, nh, 1, S + T + 1): the additive bias over a step's keys ``[source; generated; own]``, for every row
        and head, built once per step for all layers (``Encoder``): paddle's CPU adds that broadcast are 10-15x
        slower than same-shape ones (0.32 against 0.02 ms for a beam-6 step's source scores)."""
        rows = _dim(self.generated_k[0], 0)
        per_source = self.source_bias.unsqueeze(1).expand([-1, rows // _dim(self.source_k[0], 0), -1, -1, -1])
        generated = self.generated_bias.expand([rows, -1, -1, -1])  # (N, 1, 1, T)
        bias = paddle.concat([per_source.flatten(0, 1), generated, paddle.zeros_like(generated[..., :1])], axis=-1)
        return bias.expand([-1, num_heads, -1, -1])


def packed_layer_weights(encoder: "Encoder", dtype: str = "float32") -> Optional[List[Tuple[PackedWeight, ...]]]:
    """Per layer, the weights of (q, k, v, out, linear1, linear2) in panels of ``dtype``
    (``cpu_kernels.pack_weight``), the ``packed_weights`` of ``UNIMOModel.forward``: a decoding step's matmuls of a
    few rows by every weight read them at the memory's speed, a prefill's at MKL's rate. None where the kernels are
    not there. They are copies, made once (``generation.ModelStepper``)."""
    weights = [tuple(pack_weight(lin.weight, dtype=dtype) for lin in layer.step_linears()) for layer in encoder.layers]
    return None if any(w is None for layer in weights for w in layer) else weights


def log_softmax(logits):
    """log-softmax over the last axis, as ``x - max - log(sum(exp(x - max)))`` (the max held constant: the
    result does not depend on it). paddle 3.3.1's CPU ``F.log_softmax`` kernel is far slower (80 ms against
    0.4 ms forward on (4, 18000), 20 s against 0.13 s forward+backward on (512, 18000)) and off by up to ~90
    where a probability underflows (log-probabilities below about -87); and its ``logsumexp``
    takes 3x this form's time on a beam step's (24, 18000) (6 against 2 ms). Where no gradient is recorded
    the last subtraction is in place (``add_bias``)."""
    shifted = logits - logits.max(axis=-1, keepdim=True).detach()
    return add_bias(shifted, -paddle.log(paddle.exp(shifted).sum(axis=-1, keepdim=True)))


def add_bias(x, bias):
    """``x + bias``, into ``x`` where no gradient is recorded (``x`` must be a fresh result; ``cpu_kernels.add_bias_``):
    paddle's CPU add that broadcasts into a new tensor is 3-7x slower than in place (1.8-2.2 against 0.3-0.7 ms on
    a beam step's (24, 18000) scores; ~15 against ~2 ms for (8, 128, 3072))."""
    return add_bias_(x, bias) if paddle.in_dynamic_mode() and not paddle.is_grad_enabled() else x + bias


def cached_real_tokens(cache: Optional[KVCache], attention_mask):
    """Real tokens in the KV cache, per row: the cached keys some new token may attend to (every cached key
    without a mask). 0 without a cache."""
    if cache is None:
        return 0
    if isinstance(cache, DecodingCache):
        raise ValueError("decoding with a DecodingCache needs explicit position_ids")
    past = cache[0][0].shape[2]
    if attention_mask is None:
        return past
    attend = masks.may_attend_bool(attention_mask)[:, :, :past]  # (B, Lq, past)
    return attend.any(axis=1).astype("int64").sum(axis=-1)


class Dropout(nn.Dropout):
    """``nn.Dropout`` that is the identity outside training and at p = 0 without running a kernel (paddle's runs
    one either way: 0.3 ms a call on CPU, 4% of a greedy decoding's time); in training on CPU the kernel of
    ``cpu_kernels.dropout``."""

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return dropout(x, self.p) if self.axis is None and self.mode == "upscale_in_train" else super().forward(x)


class UNIMOEmbeddings(nn.Layer):
    def __init__(self, config: UNIMOConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        if config.type_vocab_size > 0:
            self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        if config.role_type_size > 0:  # the original's dialog embeddings (role_embedding, turn_embedding)
            self.role_embeddings = nn.Embedding(config.role_type_size, config.hidden_size)
        if config.turn_type_size > 0:
            self.turn_embeddings = nn.Embedding(config.turn_type_size, config.hidden_size)

    def forward(self, input_ids, token_type_ids, position_ids, inputs_embeds=None, role_ids=None, turn_ids=None):
        """Sum of the word, position and (when the model has them) token-type, role and turn embeddings; ids left
        None are 0 (a generated token's role and turn, as in the original's dialog decoding)."""
        x = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        x = x + self.position_embeddings(position_ids)
        for name, ids in (("token_type_embeddings", token_type_ids), ("role_embeddings", role_ids),
                          ("turn_embeddings", turn_ids)):
            if hasattr(self, name):
                x = x + getattr(self, name)(paddle.zeros_like(position_ids) if ids is None else ids)
        return x


class RegionEmbeddings(nn.Layer):
    """image_emb(feature) + image_loc(location), then the visual LayerNorm (``v_pre_encoder``)."""

    def __init__(self, config: UNIMOConfig):
        super().__init__()
        self.image_emb = nn.Linear(config.image_embedding_size, config.hidden_size)
        self.image_loc = nn.Linear(REGION_LOCATION_SIZE, config.hidden_size)
        self.layer_norm = LayerNorm(config.hidden_size)

    def forward(self, region_feats, region_locs):  # (B, R, D), (B, R, 5) -> (B, R, H)
        return self.layer_norm(self.image_emb(region_feats) + self.image_loc(region_locs))


class SelfAttention(nn.Layer):
    def __init__(self, config: UNIMOConfig):
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = h // self.num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(h, h) for _ in range(4))
        self.dropout = Dropout(config.attention_probs_dropout_prob)

    def _heads(self, x):  # (B, L, H) -> (B, nh, L, hd), contiguous (see cpu_kernels.dense)
        return dense(_swap_heads(x.reshape([0, 0, self.num_heads, self.head_dim])))

    def forward(self, x, bias, cache=None, last_only: bool = False, weights: Optional[tuple] = None):
        """``last_only``: the queries of the last position only (``Encoder``), the keys/values of all. ``weights``:
        the layer's packed ones (``EncoderLayer``)."""
        weights = OWN_WEIGHTS if weights is None else weights
        if isinstance(cache, DecodingCache):
            return self._step(x, cache, bias, weights)
        q = _linear(self.q_proj, x[:, -1:] if last_only else x, weights[0])
        k, v = _linear(self.k_proj, x, weights[1]), _linear(self.v_proj, x, weights[2])
        bias = bias[:, :, -1:] if last_only and bias is not None else bias
        if self.training and cache is None and attention_runs(q, bias):  # the heads' attention: one CPU kernel
            out = attention(q, k, v, bias, self.num_heads, self.head_dim ** -0.5, self.dropout.p)
            heads = [0, 0, self.num_heads, self.head_dim]  # the keys/values as views (B, nh, L, hd): no copies
            return _linear(self.out_proj, out, weights[3]), (k.reshape(heads).transpose([0, 2, 1, 3]),
                                                            v.reshape(heads).transpose([0, 2, 1, 3]))
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        if cache is not None:
            k = paddle.concat([cache[0], k], axis=2)  # (B, nh, T + L, hd)
            v = paddle.concat([cache[1], v], axis=2)
        if self.training:  # scale, bias, softmax and dropout: one CPU kernel where it runs (cpu_kernels)
            probs = softmax_dropout(paddle.matmul(q, k, transpose_y=True), bias, self.head_dim ** -0.5,
                                    self.dropout.p)
        elif weights[0] is not None:  # a stepper's prefill, on the CPU kernels: scale, bias, softmax in one pass
            probs = softmax(paddle.matmul(q, k, transpose_y=True), bias, self.head_dim ** -0.5)
        else:
            scores = paddle.matmul(q * self.head_dim ** -0.5, k, transpose_y=True)  # (B, nh, L, T + L)
            probs = self.dropout(F.softmax(scores if bias is None else scores + bias, axis=-1))
        out = _swap_heads(paddle.matmul(probs, v))  # (B, L, nh, hd)
        return _linear(self.out_proj, out.reshape([0, 0, self.num_heads * self.head_dim]), weights[3]), (k, v)

    def _step(self, x, cache: DecodingCache, bias, w: tuple):
        """One new token per row, x (N, 1, H): the output and the token's (k, v), (N, nh, 1, hd) each -- (N, 1, H)
        when the kernel wrote them to ``cache.slot``."""
        q, k, v = (_linear(proj, x, t) for proj, t in zip((self.q_proj, self.k_proj, self.v_proj), w))
        if cache.slot is None:  # (N, 1, H) is (N, nh, 1, hd) in memory
            heads = [0, self.num_heads, 1, self.head_dim]
            q, k, v = q.reshape(heads), k.reshape(heads), v.reshape(heads)
            step = self._decoding_step(q * self.head_dim ** -0.5, k, v, cache, bias)
        else:
            step = step_attention(q, k, v, cache.source_k, cache.source_v, cache.source_bias, cache.generated_k,
                                  cache.generated_v, cache.slot, self.head_dim ** -0.5, cache.parents)
        return _linear(self.out_proj, step, w[3]), (k, v)

    def _decoding_step(self, q, k, v, c: DecodingCache, bias):
        """One new token per row (q, k, v: (N, nh, 1, hd), q scaled) over the source keys -- each source's read
        once for all its rows -- the generated keys and its own: the softmax over ``[source; generated; own]``, the
        keys of the concatenated cache in its order, ``bias`` the step's (``DecodingCache.step_bias``). A source's
        rows meet its keys by a matmul that broadcasts (B, g, nh, 1, hd) over (B, 1, nh, S, hd): no transposes,
        which cost more than the attention's matmuls on CPU. Returns (N, 1, H)."""
        nh, hd = self.num_heads, self.head_dim
        sources, length = _dim(c.source_k, 0), _dim(c.source_k, 2)
        by_source = [sources, -1, nh, 1]  # (N, nh, 1, *) as (B, g, nh, 1, *)
        source = paddle.matmul(q.reshape(by_source + [hd]), c.source_k.unsqueeze(1), transpose_y=True)
        scores = paddle.concat([source.reshape([-1, nh, 1, length]), paddle.matmul(q, c.generated_k, transpose_y=True),
                                paddle.matmul(q, k, transpose_y=True)], axis=-1)  # (N, nh, 1, S + T + 1)
        weights = self.dropout(F.softmax(scores + bias, axis=-1))
        w_source, w_generated, w_own = weights[..., :length], weights[..., length:-1], weights[..., -1:]
        from_source = paddle.matmul(w_source.reshape(by_source + [length]), c.source_v.unsqueeze(1))
        out = from_source.reshape([-1, nh, 1, hd]) + paddle.matmul(w_generated, c.generated_v) + \
            paddle.matmul(w_own, v)  # (N, nh, 1, hd): (N, 1, H) in memory
        return out.reshape([-1, 1, nh * hd])


def _swap_heads(x):
    """(B, L, nh, hd) <-> (B, nh, L, hd), axes 1 and 2 swapped. Eager on CPU a dense result: a reshape when either
    axis has size 1, else a transpose by ``einsum`` (its backward too). ``transpose`` gives a strided view, and the
    copy made of it (``cpu_kernels.dense``, or by the next op) is ~30x slower on CPU (8 ms against 0.3 ms for
    (8, 128, 12, 64); in a 24-row decoding step these copies took 40% of the step). The same values, bit for
    bit."""
    if paddle.in_dynamic_mode() and x.place.is_cpu_place():
        a, b, c, d = x.shape
        return x.reshape([a, c, b, d]) if b == 1 or c == 1 else paddle.einsum("abcd->acbd", x)
    return x.transpose([0, 2, 1, 3])


class _LinearFunction(paddle.autograd.PyLayer):
    """``x @ weight + bias`` (then relu with ``relu``) with the bias gradient as a matmul with ones: paddle's CPU
    sum over the rows (the gradient of a broadcast add) takes ~40 ms for an (8 * 128, 3072) gradient, the matmul
    0.5 ms; the same values. Saves 2 to 40 ms per linear layer and training step at B * L = 1024. The bias is added
    (and relu applied) in place by a kernel (nothing is recorded in a PyLayer's forward; ``cpu_kernels.add_bias_``):
    paddle's CPU broadcasting add into a new tensor takes ~15 ms for (8, 128, 3072), in place ~2 ms, the kernel 0.4
    ms; paddle's relu and its gradient took ~2 ms a layer, the kernels ~0.2 (``cpu_kernels.relu_grad``)."""

    @staticmethod
    def forward(ctx, x, weight, bias, relu: bool = False):
        y = add_bias_(paddle.matmul(x, weight), bias, relu)
        ctx.relu = relu
        ctx.save_for_backward(x, weight, *([y.detach()] if relu else []))  # the output itself would make a cycle
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, *y = ctx.saved_tensor()
        if ctx.relu:
            grad = relu_grad(grad, y[0])
        rows, grad_rows = x.reshape([-1, x.shape[-1]]), grad.reshape([-1, grad.shape[-1]])
        ones = paddle.ones([1, grad_rows.shape[0]], grad.dtype)
        return (paddle.matmul(grad, weight, transpose_y=True), paddle.matmul(rows, grad_rows, transpose_x=True),
                paddle.matmul(ones, grad_rows).reshape([-1]))


_PADDLE_LINEAR = [0]  # > 0 inside ``paddle_linear()``


@contextlib.contextmanager
def paddle_linear():
    """Linear layers by paddle's own ops inside, not ``_LinearFunction``: ``paddle.grad`` towards one input (the
    perturbation of adversarial training) asks a PyLayer for no gradient of the others (the parameters), which
    its backward, computing all three, cannot tell. Graphs recorded inside differentiate as usual otherwise."""
    _PADDLE_LINEAR[0] += 1
    try:
        yield
    finally:
        _PADDLE_LINEAR[0] -= 1


def _linear(layer: nn.Linear, x, packed: Optional[PackedWeight] = None, relu: bool = False):
    """``layer(x)``, then relu with ``relu``: against ``packed``, the weight packed (``packed_layer_weights``), when
    given; by ``_LinearFunction`` when training eagerly on CPU (where mixed precision is never on) and every input
    takes a gradient (a frozen layer keeps paddle's own); where no gradient is recorded, eagerly, the product and
    then the bias added in place (``add_bias_``: the same bits as ``layer(x)``, whose bias add broadcasts into a new
    tensor)."""
    if packed is not None:
        y = packed_linear(x, packed, layer.bias)
        return (F.relu_ if paddle.in_dynamic_mode() else F.relu)(y) if relu else y  # (a program has no in-place)
    if (layer.training and paddle.in_dynamic_mode() and x.place.is_cpu_place() and layer.bias is not None
            and not (x.stop_gradient or layer.weight.stop_gradient or layer.bias.stop_gradient)
            and not _PADDLE_LINEAR[0]):
        return _LinearFunction.apply(x, layer.weight, layer.bias, relu)
    if layer.bias is not None and paddle.in_dynamic_mode() and not paddle.is_grad_enabled():
        return add_bias_(paddle.matmul(x, layer.weight), layer.bias, relu)
    y = layer(x)
    if not relu:
        return y
    # in place on the fresh output, which nothing else reads (its gradient needs only relu's output): paddle's CPU
    # relu into a new (8, 128, 3072) tensor and its gradient took ~20 ms a layer per training step, in place ~6 ms
    return F.relu_(y) if paddle.in_dynamic_mode() else F.relu(y)


def _dim(x, axis: int):
    """``x.shape[axis]``: an int, or in a static program where that axis is dynamic a tensor of its size."""
    size = x.shape[axis]
    return size if size >= 0 else paddle.shape(x)[axis]


class EncoderLayer(nn.Layer):
    """Transformer layer, post-LN (both released families) or pre-LN (``normalize_before``)."""

    def __init__(self, config: UNIMOConfig):
        super().__init__()
        h = config.hidden_size
        self.normalize_before = config.normalize_before
        self.self_attn = SelfAttention(config)
        self.linear1 = nn.Linear(h, config.intermediate_size)
        self.linear2 = nn.Linear(config.intermediate_size, h)
        self.norm1, self.norm2 = LayerNorm(h), LayerNorm(h)
        self.dropout1 = Dropout(config.hidden_dropout_prob)
        self.dropout2 = Dropout(config.hidden_dropout_prob)
        self.activation = getattr(F, config.hidden_act)  # relu is linear1's own (_linear)

    def step_linears(self) -> Tuple[nn.Linear, ...]:
        """The linear layers in the order of their packed weights (``packed_layer_weights``)."""
        attn = self.self_attn
        return attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj, self.linear1, self.linear2

    def forward(self, x, bias, cache=None, last_only: bool = False, weights: Optional[tuple] = None):
        """``last_only``: the output of the last position only (B, 1, H), besides every position's keys/values.
        ``weights``: the packed ones to multiply by (``packed_layer_weights``), inference only; in a step that
        writes its keys/values (``DecodingCache.slot``) the whole layer is one CPU kernel (``step_layer``)."""
        weights = OWN_WEIGHTS if weights is None else weights
        if isinstance(cache, DecodingCache) and cache.slot is not None and weights[0] is not None:
            params = [lin.bias for lin in self.step_linears()] + [self.norm1.weight, self.norm1.bias,
                                                                   self.norm2.weight, self.norm2.bias]
            return step_layer(x, weights, params, cache, self.self_attn.head_dim ** -0.5, self.norm1._epsilon,
                              self.activation is F.gelu, self.normalize_before), None
        h = self.norm1(x) if self.normalize_before else x
        h, kv = self.self_attn(h, bias, cache, last_only, weights)
        x = self._residual(x[:, -1:] if last_only else x, h, self.dropout1, self.norm1)
        h = self.norm2(x) if self.normalize_before else x
        if self.activation is F.relu:
            h = _linear(self.linear1, h, weights[4], relu=True)
        else:
            h = self.activation(_linear(self.linear1, h, weights[4]))
        return self._residual(x, _linear(self.linear2, h, weights[5]), self.dropout2, self.norm2), kv

    def _residual(self, x, h, dropout: "Dropout", norm: LayerNorm):
        """``x + dropout(h)``, then ``norm`` of it after (post-LN): in training one CPU kernel with the norm where
        it runs (``LayerNorm.residual``)."""
        if self.normalize_before:
            return x + dropout(h)
        if dropout.training and dropout.axis is None and dropout.mode == "upscale_in_train":
            return norm.residual(x, h, dropout.p)
        return norm(x + dropout(h))


class Encoder(nn.Layer):
    def __init__(self, config: UNIMOConfig):
        super().__init__()
        self.layers = nn.LayerList([EncoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.recompute = False  # see UNIMOPretrainedModel.set_recompute

    def forward(self, x, bias, cache: Optional[KVCache] = None, last_only: bool = False, packed_weights=None):
        """``last_only``: the last layer computes the output of the last position only, (B, 1, H), and every
        position's keys/values (a decoding's prefill, which predicts from the last position alone).
        ``packed_weights``: see ``UNIMOModel.forward``."""
        if (len(self.layers) and bias is not None and paddle.in_dynamic_mode() and bias.place.is_cpu_place()
                and bias.shape[1] == 1 and bias.shape[2] > 1 and packed_weights is None
                and not (self.training and cache is None and attention_runs(x, bias))):
            # one (B, nh, Lq, Lk) copy for every layer: paddle's CPU add that broadcasts (B, 1, Lq, Lk) over the
            # heads is ~10x slower than a same-shape add (13 ms against 1.3 ms at B = 8, L = 128). The kernels
            # (with packed weights the prefill's softmax, in training the attention) broadcast the bias themselves
            bias = bias.expand([-1, self.layers[0].self_attn.num_heads, -1, -1])
        if isinstance(cache, DecodingCache) and len(self.layers):  # the kernel (slot) reads the source bias alone
            bias = None if cache.slot is not None else cache.step_bias(self.layers[0].self_attn.num_heads)
        if self.recompute and self.training and cache is None and not last_only:
            from paddle.distributed.fleet.utils import recompute
            for layer in self.layers:
                x = recompute(lambda h, layer=layer: layer(h, bias)[0], x)
            return x, []
        new_cache = []
        for i, layer in enumerate(self.layers):
            layer_cache = cache.layer(i) if isinstance(cache, DecodingCache) else None if cache is None else cache[i]
            x, kv = layer(x, bias, layer_cache, last_only and i == len(self.layers) - 1,
                          None if packed_weights is None else packed_weights[i])
            new_cache.append(kv)
        return x, new_cache  # with a DecodingCache: each layer's new (k, v) only


class UNIMOPretrainedModel(nn.Layer):
    """Weight initialisation and the PaddleNLP-layout ``from_pretrained``/``save_pretrained``."""

    base_model_prefix = "unimo"

    def __init__(self, config: UNIMOConfig):
        super().__init__()
        self.config = config

    def init_weights(self, root: Optional[nn.Layer] = None) -> None:
        """From-scratch initialisation of ``root`` (default: the whole model) as the original UNIMO
        (PaddlePaddle/Research NLP/UNIMO, ``src/model/unimo_finetune.py``): every fc and embedding weight is
        fluid's ``TruncatedNormal(scale=initializer_range)``, a normal of std ``initializer_range`` cut at two
        std (``paddle.nn.initializer.TruncatedNormal(0, std, a=-2 std, b=2 std)``), every fc bias 0, every
        LayerNorm scale 1 and bias 0 -- except the LM head's LayerNorm bias (the original's
        ``mask_lm_trans_layer_norm_bias``), which starts at 1.0. PaddleNLP's unimo-text draws an untruncated
        normal instead; a loaded checkpoint overwrites all of it."""
        std = self.config.initializer_range
        truncated = nn.initializer.TruncatedNormal(0.0, std, a=-2.0 * std, b=2.0 * std)
        layers = (self if root is None else root).sublayers(include_self=True)
        for layer in layers:
            if isinstance(layer, (nn.Linear, nn.Embedding)):
                truncated(layer.weight)
            if isinstance(layer, (nn.Linear, nn.LayerNorm)) and layer.bias is not None:
                layer.bias.set_value(paddle.zeros_like(layer.bias))
            if isinstance(layer, nn.LayerNorm) and layer.weight is not None:
                layer.weight.set_value(paddle.ones_like(layer.weight))
        for head in (layer for layer in layers if isinstance(layer, UNIMOLMHead)):
            head.layer_norm.bias.set_value(paddle.ones_like(head.layer_norm.bias))

    def set_recompute(self, flag: bool) -> None:
        """Recompute each encoder layer in the backward pass instead of keeping its activations: less memory,
        about one more forward pass of time, the same loss and gradients. Training only; never with a cache."""
        if not isinstance(flag, bool):
            raise TypeError(f"set_recompute takes true or false, got {flag!r}")
        for layer in self.sublayers(include_self=True):
            if isinstance(layer, Encoder):
                layer.recompute = flag

    @classmethod
    def from_pretrained(cls, path: str, **config_overrides):
        from .checkpoint import load_pretrained
        return load_pretrained(cls, path, **config_overrides)

    def save_pretrained(self, path: str) -> None:
        from .checkpoint import save_pretrained
        save_pretrained(self, path)


class UNIMOModel(UNIMOPretrainedModel):
    """Encoder over ``[regions; text]``. Returns hidden states (B, R + L, H) (and the KV cache)."""

    def __init__(self, config: UNIMOConfig):
        super().__init__(config)
        self.embeddings = UNIMOEmbeddings(config)
        self.encoder_norm = LayerNorm(config.hidden_size)
        self.dropout = Dropout(config.hidden_dropout_prob)
        if config.has_regions:
            self.region_embeddings = RegionEmbeddings(config)
            self.text_pooler = nn.Linear(config.hidden_size, config.hidden_size)
            self.image_pooler = nn.Linear(config.hidden_size, config.hidden_size)
        self.encoder = Encoder(config)
        self.init_weights()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, attention_mask=None,
                use_cache: bool = False, cache: Optional[KVCache] = None, region_feats=None, region_locs=None,
                region_valid=None, inputs_embeds=None, text_delta=None, role_ids=None, turn_ids=None,
                last_only: bool = False, packed_weights=None):
        """
        input_ids       (B, L) int64, or None for image-only input
        position_ids    (B, L) int64; default position_start + index among the row's real (non-pad) tokens,
                        counting the real tokens of the cache (``masks.default_position_ids``; a cache that
                        holds image regions needs explicit positions)
        token_type_ids  (B, L) int64; default 0 (ignored by models without token types)
        attention_mask  see the module docstring; default: bidirectional over non-pad tokens and valid regions
                        (with a cache: every cached key)
        region_feats    (B, R, D) float, zero-padded;  region_locs (B, R, 5);  region_valid (B, R) bool
        cache           KV cache from a previous call; then only new text tokens are given. A ``DecodingCache``
                        (one token per row, explicit positions, no attention_mask: the cache holds the biases)
                        returns each layer's new (k, v) as the cache
        text_delta      (B, L, H) float added to the text's word + position embeddings before their LayerNorm
                        (adversarial training, ``training/adversarial.py``; region perturbations are added to
                        ``region_feats`` by the caller, as the original does)
        role_ids, turn_ids  (B, L) int64 dialog roles and turns (models with ``role_type_size``/``turn_type_size``,
                        CoQA); default 0
        last_only       hidden states of the last position only, (B, 1, H); the last layer computes no others
                        (a decoding's prefill predicts from the last position alone; the cache is complete)
        packed_weights  per layer, copies of its weights in panels (``packed_layer_weights``) that the layers
                        multiply by instead of their own, in inference (``generation.ModelStepper``)
        """
        parts, valid = [], []
        if region_feats is not None:
            parts.append(self.region_embeddings(region_feats, region_locs))
            valid.append(paddle.ones(region_feats.shape[:2], "bool") if region_valid is None
                         else region_valid.astype("bool"))
        if input_ids is not None or inputs_embeds is not None:
            text_valid = (input_ids != self.config.pad_token_id if input_ids is not None
                          else paddle.ones(inputs_embeds.shape[:2], "bool"))
            if position_ids is None:
                position_ids = masks.default_position_ids(text_valid, self.config.position_start,
                                                          cached_real_tokens(cache, attention_mask))
            embedded = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds, role_ids, turn_ids)
            parts.append(self.encoder_norm(embedded if text_delta is None else embedded + text_delta))
            valid.append(text_valid)
        if not parts:
            raise ValueError("UNIMOModel needs input_ids/inputs_embeds, region_feats, or both")
        if attention_mask is None and cache is None:
            keys = paddle.concat(valid, axis=1)
            attention_mask = masks.may_attend(keys, paddle.zeros(keys.shape, "int64"))
        x = self.dropout(paddle.concat(parts, axis=1) if len(parts) > 1 else parts[0])
        hidden, new_cache = self.encoder(x, masks.additive_bias(attention_mask, x.dtype), cache, last_only,
                                         packed_weights)
        return (hidden, new_cache) if use_cache else hidden

    def pooled_outputs(self, hidden, num_regions, has_text: bool = True):
        """ReLU(fc(first token)) of the text (None when ``has_text`` is False: image-only input) and of the image
        stream (its global region feature; None when ``num_regions`` is 0). ``num_regions`` is an int, or an int
        tensor of shape [1] (``paddle.shape(region_feats)[1:2]``, which stays dynamic in an exported program)."""
        text = None
        if has_text:
            first = hidden[:, num_regions] if isinstance(num_regions, int) else \
                paddle.index_select(hidden, num_regions, axis=1).squeeze(1)
            text = F.relu(self.text_pooler(first))
        image = F.relu(self.image_pooler(hidden[:, 0])) if not isinstance(num_regions, int) or num_regions else None
        return text, image


class UNIMOLMHead(nn.Layer):
    """transform -> activation -> LayerNorm -> tied word-embedding projection + bias."""

    def __init__(self, config: UNIMOConfig, embedding_weight):
        super().__init__()
        self.transform = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = getattr(F, config.hidden_act)
        self.layer_norm = LayerNorm(config.hidden_size)
        self.decoder_weight = embedding_weight
        self.decoder_bias = self.create_parameter([config.vocab_size], is_bias=True)

    def forward(self, hidden, masked_positions=None, packed_decoder: Optional[PackedWeight] = None):
        """``packed_decoder``: ``decoder_weight`` packed (``cpu_kernels.pack_weight``), for decoding
        (``generation.ModelStepper``: its prefill and steps)."""
        if masked_positions is not None:  # flat indices into (B * L)
            hidden = paddle.gather(hidden.reshape([-1, hidden.shape[-1]]), masked_positions)
        h = self.layer_norm(self.activation(self.transform(hidden)))
        if packed_decoder is not None:
            return packed_linear(h, packed_decoder, self.decoder_bias)
        return add_bias(paddle.matmul(h, self.decoder_weight, transpose_y=True), self.decoder_bias)


class UNIMOLMHeadModel(UNIMOPretrainedModel):
    """UNIMO with the tied LM head; a drop-in for ``paddlenlp.transformers.UNIMOLMHeadModel``.

    ``forward`` returns logits; ``(loss, logits)`` with ``labels``; ``(logits, cache)`` with ``use_cache``.
    """

    def __init__(self, config: UNIMOConfig):
        super().__init__(config)
        self.unimo = UNIMOModel(config)
        self.lm_head = UNIMOLMHead(config, self.unimo.embeddings.word_embeddings.weight)
        self.init_weights(self.lm_head)  # self.unimo initialised itself

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, attention_mask=None,
                masked_positions=None, use_cache: bool = False, cache: Optional[KVCache] = None, labels=None,
                region_feats=None, region_locs=None, region_valid=None, inputs_embeds=None, text_delta=None,
                role_ids=None, turn_ids=None):
        out = self.unimo(input_ids, token_type_ids, position_ids, attention_mask, use_cache=use_cache, cache=cache,
                         region_feats=region_feats, region_locs=region_locs, region_valid=region_valid,
                         inputs_embeds=inputs_embeds, text_delta=text_delta, role_ids=role_ids, turn_ids=turn_ids)
        hidden, new_cache = out if use_cache else (out, None)
        if region_feats is not None and masked_positions is None:
            hidden = hidden[:, region_feats.shape[1]:]  # logits for the text part only
        logits = self.lm_head(hidden, masked_positions)
        if labels is not None:  # mean over the labelled tokens (paddle's "mean" would count -100 ones too)
            labels = labels.reshape([-1])
            per_token = F.cross_entropy(logits.reshape([-1, self.config.vocab_size]), labels, ignore_index=-100,
                                        reduction="none")
            loss = per_token.sum() / paddle.clip((labels != -100).astype(per_token.dtype).sum(), min=1.0)
            return loss, logits
        return (logits, new_cache) if use_cache else logits

    def generate(self, input_ids, **kwargs):
        from .generation import generate
        return generate(self, input_ids, **kwargs)


UNIMOForMaskedLM = UNIMOForConditionalGeneration = UNIMOLMHeadModel


# ---- understanding heads over [regions; text] (UNIMO paper section 4.1; PaddlePaddle/Research NLP/UNIMO
#      src/finetune/{retrieval,visual_entailment}.py, UNITER model/vqa.py). Head parameters are named after the
#      original's (match_fc, cls_out_w_0 -> cls_out_0.weight, ...) so that checkpoint.py converts a model
#      fine-tuned with the original release; ``head_prefixes`` are the tensors a pretrained model lacks.

class UNIMOPairModel(UNIMOPretrainedModel):
    """UNIMO with a task head on the pooled text and image outputs (the poolers of the English UNIMO, which
    exist in models with region embeddings)."""

    head_prefixes: Tuple[str, ...] = ()

    def __init__(self, config: UNIMOConfig):
        super().__init__(config)
        if not config.has_regions:  # a user's choice of model: one error line on the command line
            raise ConfigError(f"{type(self).__name__} reads the pooled text and image outputs of the English UNIMO, "
                              "which a model without region embeddings (image_embedding_size 0, e.g. unimo-text-1.0 "
                              "or a text-only fine-tuned folder) lacks")
        self.unimo = UNIMOModel(config)
        self.head_dropout = Dropout(config.hidden_dropout_prob)

    def pooled(self, input_ids=None, position_ids=None, attention_mask=None, region_feats=None, region_locs=None,
               region_valid=None, token_type_ids=None, text_delta=None):
        """(pooled text (B, H) or None, pooled image (B, H) or None); either input may be left out."""
        hidden = self.unimo(input_ids, token_type_ids, position_ids, attention_mask, region_feats=region_feats,
                            region_locs=region_locs, region_valid=region_valid, text_delta=text_delta)
        regions = 0 if region_feats is None else paddle.shape(region_feats)[1:2]
        return self.unimo.pooled_outputs(hidden, regions, has_text=input_ids is not None)

    def forward(self, input_ids, position_ids, attention_mask, region_feats, region_locs, region_valid=None,
                token_type_ids=None, text_delta=None):
        return self.head(*self.pooled(input_ids, position_ids, attention_mask, region_feats, region_locs,
                                      region_valid, token_type_ids, text_delta))


class UNIMOForRetrieval(UNIMOPairModel):
    """Image-text matching score (B,) = match_fc(dropout(pooled_text * pooled_image)), the original's fusion "mul".
    ``match_fc`` starts as the original's (``src/finetune/retrieval.py``): a Xavier-uniform weight and a bias
    uniform in [-1, 1] (fluid's ``Xavier()`` and ``UniformInitializer()``), not the truncated normal of the
    other heads."""

    head_prefixes = ("match_fc.",)

    def __init__(self, config: UNIMOConfig):
        super().__init__(config)
        self.match_fc = nn.Linear(config.hidden_size, 1)
        nn.initializer.XavierUniform()(self.match_fc.weight)
        nn.initializer.Uniform(-1.0, 1.0)(self.match_fc.bias)

    def head(self, text, image):
        return self.match_fc(self.head_dropout(text * image)).squeeze(-1)


class UNIMOForVisualEntailment(UNIMOPairModel):
    """Logits (B, num_labels) = cls_out_1(dropout(cls_out_0(pooled_text + pooled_image))), no activation between,
    as the original's visual entailment head."""

    head_prefixes = ("cls_out_0.", "cls_out_1.")
    inner_size = 2048

    def __init__(self, config: UNIMOConfig):
        super().__init__(config)
        if config.num_labels < 1:
            raise ValueError("UNIMOForVisualEntailment needs config.num_labels >= 1 (SNLI-VE: 3)")
        self.cls_out_0 = nn.Linear(config.hidden_size, self.inner_size)
        self.cls_out_1 = nn.Linear(self.inner_size, config.num_labels)
        self.init_weights(self.cls_out_0)
        self.init_weights(self.cls_out_1)

    def head(self, text, image):
        return self.cls_out_1(self.head_dropout(self.cls_out_0(text + image)))


class UNIMOForVQA(UNIMOPairModel):
    """Answer logits (B, num_labels) by UNITER's VQA head, Linear(H, 2H) -> GELU -> LayerNorm -> Linear(2H, A), over
    pooled_text + pooled_image (the pooled pair as the visual entailment head sums it)."""

    head_prefixes = ("vqa_output.",)

    def __init__(self, config: UNIMOConfig):
        super().__init__(config)
        if config.num_labels < 1:
            raise ValueError("UNIMOForVQA needs config.num_labels >= 1 (the answer vocabulary's size)")
        h = config.hidden_size
        self.vqa_output = nn.Sequential(nn.Linear(h, 2 * h), nn.GELU(), LayerNorm(2 * h),
                                        nn.Linear(2 * h, config.num_labels))
        self.init_weights(self.vqa_output)

    def head(self, text, image):
        return self.vqa_output(text + image)


class UNIMOForSequenceClassification(UNIMOPairModel):
    """Text classification (GLUE) as the original's ``classifier.py`` / ``regression.py``: logits (B, num_labels) =
    classifier(dropout(pooled text)); num_labels 1 is a regression (STS-B). The pooled text is the English UNIMO's
    ``pooled_fc_text`` over ``[CLS]``; image regions are not read."""

    head_prefixes = ("classifier.",)

    def __init__(self, config: UNIMOConfig):
        super().__init__(config)
        if config.num_labels < 1:
            raise ValueError("UNIMOForSequenceClassification needs config.num_labels >= 1 (1: regression)")
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights(self.classifier)

    def forward(self, input_ids, position_ids=None, attention_mask=None, token_type_ids=None, text_delta=None):
        text, _ = self.pooled(input_ids, position_ids, attention_mask, token_type_ids=token_type_ids,
                              text_delta=text_delta)
        return self.classifier(self.head_dropout(text))


ARCHITECTURES = {cls.__name__: cls for cls in (UNIMOModel, UNIMOLMHeadModel, UNIMOForRetrieval,
                                               UNIMOForVisualEntailment, UNIMOForVQA, UNIMOForSequenceClassification)}
