"""Decoding invariants on a tiny model: beam-1 = greedy, seeded sampling, constraints."""
import numpy as np
import paddle
import pytest

from paddle_unimo import UNIMOLMHeadModel, cpu_kernels, get_preset, masks
from paddle_unimo.generation import generate
from paddle_unimo.modeling import log_softmax

EOS = 4


def make_model(seed, eos_bias=0.0, **overrides):
    paddle.seed(seed)
    model = UNIMOLMHeadModel(get_preset("tiny", initializer_range=0.3, **overrides))
    bias = model.lm_head.decoder_bias.numpy()
    bias[EOS] = eos_bias
    model.lm_head.decoder_bias.set_value(bias)
    model.eval()
    return model


def decoding_batch(seed, batch=3):
    rng = np.random.default_rng(seed)
    sources = [[3] + rng.integers(5, 99, rng.integers(3, 9)).tolist() + [1] for _ in range(batch)]
    b = masks.seq2seq_inputs(sources, [[3]] * batch, pad_id=2, position_start=0, left_pad=True)
    return {k: paddle.to_tensor(v) for k, v in b.items() if k != "valid"}


@pytest.mark.parametrize("seed", range(6))
def test_beam_search_with_one_beam_equals_greedy(seed):
    model = make_model(seed, eos_bias=float(seed % 3))
    batch = decoding_batch(seed)
    for settings in (dict(max_length=9), dict(max_length=7, min_length=3, length_penalty=1.2)):
        greedy, _ = generate(model, **batch, **{k: v for k, v in settings.items() if k != "length_penalty"})
        beam, _ = generate(model, **batch, decode_strategy="beam_search", num_beams=1, **settings)
        np.testing.assert_array_equal(beam.numpy(), greedy.numpy())


def test_min_and_max_length_hold():
    model = make_model(1, eos_bias=10.0)  # the eos is the favourite at every step
    batch = decoding_batch(1)
    ids, _ = generate(model, **batch, max_length=10, min_length=4)
    np.testing.assert_array_equal(ids.numpy()[:, 4], [EOS] * 3)
    assert not (ids.numpy()[:, :4] == EOS).any()
    ids, _ = generate(make_model(1), **batch, max_length=5, min_length=5)
    assert ids.shape == [3, 5] and not (ids.numpy() == EOS).any()


def test_sampling_is_seeded_and_top_k_1_is_greedy():
    model = make_model(2)
    batch = decoding_batch(2)
    kwargs = dict(decode_strategy="sampling", max_length=8, num_return_sequences=3)
    a, _ = generate(model, **batch, seed=5, **kwargs)
    b, _ = generate(model, **batch, seed=5, **kwargs)
    c, _ = generate(model, **batch, seed=6, **kwargs)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())
    assert a.shape[0] == 9 and len({tuple(r) for r in a.numpy()[:3].tolist()}) > 1  # return sequences differ
    greedy, _ = generate(model, **batch, max_length=8)
    for extra in (dict(top_k=1), dict(top_p=1e-6), dict(temperature=1e-4)):
        sampled, _ = generate(model, **batch, decode_strategy="sampling", max_length=8, seed=0, **extra)
        np.testing.assert_array_equal(sampled.numpy(), greedy.numpy())


def test_sampling_follows_the_distribution():
    """First-token frequencies over many seeded draws match softmax(logits) within sampling error."""
    model = make_model(3)
    batch = {k: v[:1] for k, v in decoding_batch(3, batch=1).items()}
    logits = model(**batch)[:, -1]
    banned = [0, 2, 3]  # [UNK] [PAD] [CLS] are never generated
    logits[:, banned] = -1e9
    probs = paddle.nn.functional.softmax(logits / 2.0, -1).numpy()[0]
    draws, _ = generate(model, **batch, decode_strategy="sampling", max_length=1, temperature=2.0, seed=0,
                        num_return_sequences=4000)
    freq = np.bincount(draws.numpy()[:, 0], minlength=probs.size) / 4000
    assert np.abs(freq - probs).max() < 4 * np.sqrt(probs.max() / 4000)
    top, _ = generate(model, **batch, decode_strategy="sampling", max_length=1, top_k=3, seed=0,
                      num_return_sequences=500)
    assert set(top.numpy()[:, 0]) <= set(np.argsort(-probs)[:3])


def test_no_repeat_ngram_blocks_every_repeat():
    model = make_model(4)  # this model repeats itself when left alone
    batch = decoding_batch(4)
    plain, _ = generate(model, **batch, max_length=20)

    def repeats(row, n):
        grams = [tuple(row[i:i + n]) for i in range(len(row) - n + 1)]
        return len(grams) - len(set(grams))

    assert sum(repeats(r, 3) for r in plain.numpy().tolist()) > 0
    for strategy in ("greedy_search", "beam_search"):
        ids, _ = generate(model, **batch, max_length=20, no_repeat_ngram_size=3, decode_strategy=strategy,
                          num_beams=3)
        for row in ids.numpy().tolist():
            row = [t for t in row if t not in (EOS, 2)]
            assert repeats(row, 3) == 0


def test_repetition_penalty_matches_hand_computation():
    model = make_model(9)
    source = [3, 17, 18, 19, 20, 1]
    batch = masks.seq2seq_inputs([source], [[3]], pad_id=2, position_start=0)
    first, _ = generate(model, **{k: paddle.to_tensor(v) for k, v in batch.items() if k != "valid"}, max_length=1)
    ids, _ = generate(model, **{k: paddle.to_tensor(v) for k, v in batch.items() if k != "valid"}, max_length=2,
                      repetition_penalty=3.0)
    t = int(first[0, 0])
    # step 2 by hand: a full forward over source + [CLS, t], then the penalty on t's logit
    full = masks.seq2seq_inputs([source], [[3, t]], pad_id=2, position_start=0)
    logits = model(**{k: paddle.to_tensor(v) for k, v in full.items() if k != "valid"})[0, -1].numpy()
    logits[[0, 2, 3]] = -1e9
    logits[t] = logits[t] / 3.0 if logits[t] > 0 else logits[t] * 3.0
    assert int(ids[0, 1]) == int(np.argmax(logits))
    unpenalised, _ = generate(model, **{k: paddle.to_tensor(v) for k, v in batch.items() if k != "valid"},
                              max_length=2)
    assert int(unpenalised[0, 1]) == t  # this model repeats t without the penalty, so the test can fail


@pytest.mark.parametrize("seed", range(3))
def test_log_softmax_equals_float64(seed):
    """Values and gradients against float64 numpy, on rows with a large spread (log-probabilities below -100,
    where paddle 3.3.1's CPU ``F.log_softmax`` is off by up to ~90) and a row of equal values (no unique max)."""
    paddle.seed(seed)
    x = paddle.concat([paddle.randn([3, 50]) * 30, paddle.full([1, 50], 7.0)])
    x.stop_gradient = False
    w = paddle.randn([4, 50])
    a, wa = x.numpy().astype("float64"), w.numpy().astype("float64")
    shifted = a - a.max(-1, keepdims=True)
    want = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    assert want.min() < -100
    np.testing.assert_allclose(log_softmax(x).numpy(), want, atol=2e-5, rtol=1e-6)
    grad = paddle.grad((log_softmax(x) * w).sum(), x)[0].numpy()
    np.testing.assert_allclose(grad, wa - np.exp(want) * wa.sum(-1, keepdims=True), atol=1e-5)


def test_unknown_strategy_and_arguments_are_refused():
    model = make_model(0)
    batch = decoding_batch(0)
    with pytest.raises(ValueError, match=r"decode_strategy: 'contrastive' is not one of \['greedy_search', "
                                         r"'beam_search', 'sampling'\]"):
        generate(model, **batch, decode_strategy="contrastive")
    with pytest.raises(TypeError, match="num_beam_groups"):
        generate(model, **batch, num_beam_groups=2)


def empty_inputs(batch):
    """Inputs no kernel should see, each with the words its error must contain."""
    ids = batch["input_ids"].numpy()
    all_pad = ids.copy()
    all_pad[1] = 2
    right_padded = masks.seq2seq_inputs([[3, 5, 6, 1], [3, 7, 1]], [[3], [3]], pad_id=2, position_start=0)
    blind = batch["attention_mask"].numpy().copy()
    blind[0, -1] = False
    t = paddle.to_tensor
    return {
        "no rows": (dict(input_ids=t(ids[:0])), "no rows"),
        "no tokens": (dict(input_ids=t(ids[:, :0])), "length 0"),
        "a row of pads": (dict(input_ids=t(all_pad)), r"rows \[1\] of input_ids hold only pad"),
        "right padding": (dict(input_ids=t(right_padded["input_ids"])), "pad sources on the left"),
        "mask of another length": (dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"][:, :, 1:]),
                                   "does not fit"),
        "a blind last token": (dict(input_ids=batch["input_ids"], attention_mask=t(blind)), "attend to no key"),
    }


@pytest.mark.parametrize("case", ["no rows", "no tokens", "a row of pads", "right padding", "mask of another length",
                                  "a blind last token"])
def test_inputs_no_kernel_should_see_are_refused(case):
    model = make_model(0)
    inputs, message = empty_inputs(decoding_batch(0))[case]
    for strategy in ("greedy_search", "beam_search"):
        with pytest.raises(ValueError, match=message):
            generate(model, **inputs, decode_strategy=strategy, num_beams=2, max_length=3)


def test_paddlenlp_shared_row_float_mask_decodes_as_the_bool_key_mask():
    """PaddleNLP's default mask form, float (B, 1, 1, L) with -1e4 at pads, decodes exactly as the bool (B, L)
    key validity and as no mask (bidirectional over the non-pad tokens)."""
    model = make_model(5)
    batch = decoding_batch(5)
    valid = batch["input_ids"] != 2
    additive = ((~valid).astype("float32") * -1e4).unsqueeze([1, 2])
    outputs = [generate(model, batch["input_ids"], batch["token_type_ids"], batch["position_ids"], mask,
                        max_length=6, decode_strategy="beam_search", num_beams=3)[0].numpy()
               for mask in (additive, valid, None)]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[0], outputs[2])


def test_step_cache_reads_each_source_once_and_moves_only_generated_keys():
    """The decoding cache never copies a source per row: expanding into beams and reordering them keep the
    prefill's tensors (the same objects), move only the written generated slots (rows within their source), refuse
    a row that would change source, and grow the buffer when a decoding outlasts it."""
    from paddle_unimo.generation import ModelStepper
    model = make_model(0)
    batch = decoding_batch(0, batch=2)
    stepper = ModelStepper(model)
    with paddle.no_grad():
        _, state = stepper.prefill(batch["input_ids"], batch["token_type_ids"], batch["position_ids"],
                                   batch["attention_mask"])
    cache = state.cache
    source = list(cache.source_k)
    cache.select(paddle.to_tensor([0, 0, 0, 1, 1, 1]))
    assert cache.rows == 6 and all(a is b for a, b in zip(cache.source_k, source))
    rng = np.random.default_rng(0)
    stacked = lambda buffers: np.stack([b.numpy() for b in buffers])  # (layers, N, nh, T, hd)
    shape = [len(cache.generated_k)] + cache.generated_k[0].shape[:2] + [1, cache.generated_k[0].shape[3]]
    written = [rng.standard_normal(shape).astype("float32") for _ in range(3)]
    for w in written:
        cache.write(paddle.to_tensor(w), paddle.to_tensor(-w))
    order = [2, 0, 1, 3, 5, 4]
    cache.select(paddle.to_tensor(order))
    want = np.concatenate(written, axis=3)[:, order]
    np.testing.assert_array_equal(stacked(cache.generated_k)[:, :, :, :3], want)
    np.testing.assert_array_equal(stacked(cache.generated_v)[:, :, :, :3], -want)
    assert not stacked(cache.generated_k)[:, :, :, 3:].any()  # unwritten slots untouched
    assert all(a is b for a, b in zip(cache.source_k, source))
    with pytest.raises(ValueError, match="mix the hypotheses of 2 sources"):
        cache.select(paddle.to_tensor([0, 1, 2, 3, 4, 0]))  # row 5 (source 1) would read row 0 (source 0)
    slots = cache.generated_k[0].shape[2]
    for _ in range(slots):
        cache.write(paddle.to_tensor(written[0]), [paddle.to_tensor(w) for w in written[0]])  # stacked or a list
    assert cache.length == slots + 3 and all(b.shape[2] == 2 * slots for b in cache.generated_k + cache.generated_v)
    np.testing.assert_array_equal(stacked(cache.generated_k)[:, :, :, :3], want)
    np.testing.assert_array_equal(stacked(cache.generated_v)[:, :, :, 3:slots + 3], np.repeat(written[0], slots, 3))


def test_step_bias_is_each_rows_source_then_generated_then_own():
    """DecodingCache.step_bias: row n (of source n // g) and every head see its source's key bias, the generated
    slots' bias, and 0 for its own key -- the one bias all layers of a step add to [source; generated; own]."""
    from paddle_unimo.modeling import DecodingCache
    rng = np.random.default_rng(0)
    sources, per_source, heads, length, slots = 3, 4, 5, 7, 6
    source_bias = np.where(rng.random((sources, 1, 1, length)) < 0.3, -1e4, 0.0).astype("float32")
    generated_bias = np.where(np.arange(slots) < 2, 0.0, -1e4).astype("float32").reshape(1, 1, 1, slots)
    keys = [paddle.zeros([sources, heads, length, 2])]
    generated = [paddle.zeros([sources * per_source, heads, slots, 2])]
    cache = DecodingCache(keys, keys, paddle.to_tensor(source_bias), generated, generated,
                          paddle.to_tensor(generated_bias))
    got = cache.step_bias(heads).numpy()
    assert got.shape == (sources * per_source, heads, 1, length + slots + 1)
    for row in range(sources * per_source):
        want = np.concatenate([source_bias[row // per_source, 0, 0], generated_bias[0, 0, 0], [0.0]])
        for head in range(heads):
            np.testing.assert_array_equal(got[row, head, 0], want)


def caption_batch(seed, batch=3, regions=4):
    """generate() inputs of [regions; [CLS]] with some padded regions (the tiny preset's 24-d features)."""
    rng = np.random.default_rng(seed)
    valid = np.arange(regions)[None] < rng.integers(1, regions + 1, batch)[:, None]
    b = masks.captioning_inputs([[]] * batch, [[3]] * batch, valid, pad_id=2, position_start=0, left_pad=True)
    inputs = {k: paddle.to_tensor(b[k]) for k in ("input_ids", "token_type_ids", "position_ids", "attention_mask")}
    return dict(inputs, region_feats=paddle.to_tensor(rng.normal(size=(batch, regions, 24)).astype("float32")),
                region_locs=paddle.to_tensor(rng.uniform(size=(batch, regions, 5)).astype("float32")),
                region_valid=paddle.to_tensor(valid))


@pytest.mark.parametrize("seed, overrides", [(0, {}), (1, {}), (2, {"hidden_act": "gelu"}),
                                             (3, {"normalize_before": True})])
def test_packed_step_weights_decode_as_the_model(seed, overrides):
    """ModelStepper(cpu_kernels=True), what ``make predict`` decodes with on CPU (the prefill and every step's
    layers on packed weights, the steps' layers each one kernel): the same ids as the model's own weights and the
    scores within float rounding, for every strategy, with and without regions, post-LN and pre-LN, relu and gelu
    -- and the packed copies are what it reads (zeroing them changes the output)."""
    from paddle_unimo.generation import ModelStepper, batch_stepper
    model = make_model(seed, eos_bias=float(seed % 3), **overrides)
    stepper = batch_stepper(model)
    if stepper.weights is None:
        assert cpu_kernels.kernels() is None
        pytest.skip("no packed weights here: the CPU kernels are not built")
    assert len(stepper.weights) == model.config.num_hidden_layers and stepper.head is not None
    for batch in (decoding_batch(seed), caption_batch(seed)):
        for settings in (dict(max_length=9), dict(decode_strategy="beam_search", num_beams=3, max_length=8),
                         dict(decode_strategy="beam_search", num_beams=4, max_length=7, num_return_sequences=2,
                              length_penalty=1.2), dict(decode_strategy="sampling", top_k=5, seed=seed,
                                                        max_length=8)):
            want, want_scores = generate(model, **batch, **settings)
            got, scores = generate(model, **batch, stepper=stepper, **settings)
            np.testing.assert_array_equal(got.numpy(), want.numpy())
            np.testing.assert_allclose(scores.numpy(), want_scores.numpy(), atol=1e-5, rtol=1e-5)
    batch = decoding_batch(seed)
    want, want_scores = generate(model, **batch, max_length=9)
    for part in ("weights", "head"):  # packed zeros in their place
        zeroed = ModelStepper(model, cpu_kernels=True)
        if part == "weights":
            zeroed.weights = [tuple(cpu_kernels.pack_weight(paddle.zeros_like(lin.weight))
                                    for lin in layer.step_linears()) for layer in model.unimo.encoder.layers]
        else:
            zeroed.head = cpu_kernels.pack_weight(paddle.zeros_like(model.lm_head.decoder_weight), transposed=True)
        got, scores = generate(model, **batch, stepper=zeroed, max_length=9)
        assert not np.allclose(scores.numpy(), want_scores.numpy(), atol=1e-3), part


def test_the_stepper_takes_what_kernels_there_are(monkeypatch):
    """Without packed weights the steps still run the attention kernel, on the layers' own weights; without the
    kernels, paddle's ops (the cache written by ``StepCache.write``). Same ids either way, and a model in training
    mode never takes the kernel's attention (it has no dropout)."""
    from paddle_unimo import modeling
    from paddle_unimo.generation import ModelStepper, batch_stepper
    if cpu_kernels.kernels() is None:
        pytest.skip("the CPU kernels could not be built here (no C++ compiler?)")
    model = make_model(5, eos_bias=1.0)
    batch = decoding_batch(5)
    settings = [dict(max_length=9), dict(decode_strategy="beam_search", num_beams=3, max_length=8)]
    want = [generate(model, **batch, **kw)[0].numpy() for kw in settings]
    with monkeypatch.context() as patch:
        patch.setattr(modeling, "pack_weight", lambda *args, **kwargs: None)
        patch.setattr(cpu_kernels, "pack_weight", lambda *args, **kwargs: None)
        stepper = batch_stepper(model)
        assert stepper.kernels and stepper.weights is None and stepper.head is None
        for kw, ids in zip(settings, want):
            np.testing.assert_array_equal(generate(model, **batch, stepper=stepper, **kw)[0].numpy(), ids)
    with cpu_kernels.paddle_ops():
        stepper = batch_stepper(model)
        assert not stepper.kernels and stepper.weights is None
        for kw, ids in zip(settings, want):
            np.testing.assert_array_equal(generate(model, **batch, stepper=stepper, **kw)[0].numpy(), ids)
    stepper = ModelStepper(model, cpu_kernels=True)
    logits, state = stepper.prefill(**batch, max_new_tokens=4)

    def refuse(*args):
        raise AssertionError("the kernel's attention ran in training mode")
    monkeypatch.setattr(modeling, "step_attention", refuse)
    monkeypatch.setattr(modeling, "step_layer", refuse)
    model.train()
    with paddle.no_grad():
        stepper.step(logits.argmax(-1, keepdim=True), state)
    model.eval()
    assert state.cache.length == 1 and np.abs(state.cache.generated_k[0].numpy()[:, :, 0]).sum() > 0


def test_packed_step_weights_refuse_changed_weights():
    """The copies are a snapshot: after an optimizer step (which paddle does not count as an in-place change) or a
    set_value, decoding with the old stepper raises; a new stepper decodes the new weights."""
    from paddle_unimo.generation import ModelStepper
    model = make_model(3)
    batch = decoding_batch(3)
    stepper = ModelStepper(model, cpu_kernels=True)
    if stepper.weights is None:
        pytest.skip("no packed weights here: the CPU kernels are not built")
    generate(model, **batch, max_length=5, stepper=stepper)
    model.train()
    optimizer = paddle.optimizer.AdamW(1e-3, parameters=model.parameters())
    model(**batch).mean().backward()
    optimizer.step()
    with pytest.raises(ValueError, match="weights changed"):
        generate(model, **batch, max_length=5, stepper=stepper)
    fresh = ModelStepper(model, cpu_kernels=True)
    want, _ = generate(model, **batch, max_length=5)
    np.testing.assert_array_equal(generate(model, **batch, max_length=5, stepper=fresh)[0].numpy(), want.numpy())
    for weight in (model.unimo.encoder.layers[1].linear2.weight, model.lm_head.decoder_weight):  # the LM head's too
        fresh = ModelStepper(model, cpu_kernels=True)
        weight.set_value(weight.numpy() * 1.01)
        with pytest.raises(ValueError, match="weights changed"):
            generate(model, **batch, max_length=5, stepper=fresh)


@pytest.mark.parametrize("seed", range(4))
def test_search_kernels_decode_as_paddles_ops(monkeypatch, seed):
    """The search's passes on the CPU kernels (``cpu_kernels.log_softmax``: the log-softmax with the banned and
    eos columns; ``group_top_k``: each source's candidates) give the ids paddle's ops give, and the scores within
    float rounding, under every constraint (min_length, the repetition penalty, the n-gram ban), beam and
    greedy."""
    from paddle_unimo import generation
    if cpu_kernels.kernels() is None:
        pytest.skip("the CPU kernels could not be built here (no C++ compiler?)")
    model = make_model(seed, eos_bias=float(seed % 3))
    batch = decoding_batch(seed)
    stepper = generation.batch_stepper(model)
    settings = [dict(decode_strategy="beam_search", num_beams=3, max_length=8),
                dict(decode_strategy="beam_search", num_beams=4, max_length=7, min_length=3, length_penalty=1.2,
                     num_return_sequences=2),
                dict(decode_strategy="beam_search", num_beams=3, max_length=9, repetition_penalty=1.3,
                     no_repeat_ngram_size=2), dict(max_length=9, min_length=2)]
    calls = []
    with monkeypatch.context() as patch:
        for name in ("log_softmax", "group_top_k"):
            kernel = getattr(cpu_kernels, name)
            patch.setattr(cpu_kernels, name, lambda *a, kernel=kernel, name=name: calls.append(name) or kernel(*a))
        got = [generate(model, **batch, stepper=stepper, **kw) for kw in settings]
    assert calls.count("log_softmax") > calls.count("group_top_k") > 3 * 6  # greedy: log-probabilities only

    class PaddleSearch:  # the kernels' module, but the search sees no kernels
        ops_for = staticmethod(lambda x: None)

        def __getattr__(self, name):
            return getattr(cpu_kernels, name)
    monkeypatch.setattr(generation, "kernels", PaddleSearch())
    for kw, (ids, scores) in zip(settings, got):
        want, want_scores = generate(model, **batch, stepper=stepper, **kw)
        np.testing.assert_array_equal(ids.numpy(), want.numpy())
        np.testing.assert_allclose(scores.numpy(), want_scores.numpy(), atol=1e-5, rtol=1e-5)


def test_step_cache_reorders_kernel_steps_by_its_table():
    """Once steps write their own slots (``model_cache(in_place=True)``, the CPU kernels), reordering hypotheses
    moves the table of the rows holding each slot (``parents``), not the buffers; read through it, every row sees
    its hypothesis's keys/values in order. A change in the number of rows resolves the buffers through the table
    (then each row holds its own)."""
    from paddle_unimo.generation import StepCache
    rng = np.random.default_rng(0)
    source = [paddle.to_tensor(rng.standard_normal((2, 3, 5, 4)).astype("float32"))]
    cache = StepCache(source, source, paddle.ones([2, 5], "bool"), 4)
    cache.select(np.repeat([0, 1], 3))  # 3 hypotheses a source, before any step

    def read(table):  # each row's written slots, through the table
        return [b.numpy()[table[:, None, :cache.length], np.arange(3)[None, :, None], np.arange(cache.length)]
                for b in cache.generated_k + cache.generated_v]
    hypotheses = [np.zeros((6, 3, 0, 4), "float32") for _ in range(2)]  # what each row's hypothesis holds
    for order in ([2, 0, 1, 4, 5, 3], [1, 1, 0, 5, 3, 3]):
        step = cache.model_cache(in_place=True)
        for buffer, held in zip((step.generated_k[0], step.generated_v[0]), range(2)):
            new = rng.standard_normal((6, 3, 4)).astype("float32")
            buffer[:, :, cache.length - 1] = paddle.to_tensor(new)  # as the kernel writes: each row its own slot
            hypotheses[held] = np.concatenate([hypotheses[held], new[:, :, None]], axis=2)
        before = [b.numpy().copy() for b in cache.generated_k + cache.generated_v]
        cache.select(np.array(order))
        hypotheses = [h[order] for h in hypotheses]
        for got, want in zip(read(cache.parents), hypotheses):
            np.testing.assert_array_equal(got, want)
        for unmoved, earlier in zip(cache.generated_k + cache.generated_v, before):
            np.testing.assert_array_equal(unmoved.numpy(), earlier)
    assert not (cache.parents[:, :2] == np.arange(6)[:, None]).all()
    cache.select(np.array([0, 2, 3, 4]))  # 2 hypotheses a source now
    own = np.repeat(np.arange(4)[:, None], 4, axis=1)
    np.testing.assert_array_equal(cache.parents, own)
    for got, want in zip(read(own), hypotheses):
        np.testing.assert_array_equal(got, want[[0, 2, 3, 4]])
    assert not any(b.numpy()[:, :, 2:].any() for b in cache.generated_k + cache.generated_v)
