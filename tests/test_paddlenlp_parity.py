"""Our UNIMOLMHeadModel against paddlenlp's on the same random weights, saved by paddlenlp itself.

paddlenlp is needed per test (through the ``paddlenlp`` fixture), so that the tests of our model alone run
without it. Tests that shift the eos bias of the shared models restore it (``eos_bias``).
"""
import contextlib

import numpy as np
import paddle
import pytest

from paddle_unimo import UNIMOConfig, UNIMOLMHeadModel, masks
from paddle_unimo.generation import batch_stepper, generate

from conftest import shared_path

# Fixture vocab ids: [UNK]0 [SEP]1 [PAD]2 [CLS]3 [MASK]4, then 13 CJK characters.
SPECIAL = dict(unk_token_id=0, pad_token_id=2, bos_token_id=3, eos_token_id=4, mask_token_id=4)
CONFIGS = {
    # initializer_range 0.3: larger logits, so that decoding depends on the source and eos biases matter
    "tiny": dict(vocab_size=99, hidden_size=36, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                 initializer_range=0.3),
    "768x2": dict(vocab_size=300, hidden_size=768, num_hidden_layers=2, num_attention_heads=12,
                  intermediate_size=3072),
    "tiny-preln-gelu": dict(vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                            intermediate_size=37, hidden_act="gelu", normalize_before=True, initializer_range=0.3),
}
EXAMPLES = [  # (source, title, target)
    ("欢迎使用百度飞桨", "深度", "学习框架"),
    ("百度", None, "飞桨深度学习框架欢迎使用"),
    ("欢迎使用百度飞桨深度学习框架欢迎使用百度飞桨深度学习框架", "框架", "使用"),
]
TOL = 1e-5


@pytest.fixture(scope="module")
def paddlenlp():
    return pytest.importorskip("paddlenlp.transformers")


@pytest.fixture(scope="module")
def tokenizer(paddlenlp):
    return paddlenlp.UNIMOTokenizer(str(shared_path("unimo_zh_fixture", "vocab.zh.unimo.txt")))


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def models(request, tmp_path_factory, paddlenlp):
    paddle.seed(7)
    ref = paddlenlp.UNIMOLMHeadModel(paddlenlp.UNIMOConfig(**CONFIGS[request.param], **SPECIAL))
    ref.eval()
    folder = tmp_path_factory.mktemp(request.param)
    ref.save_pretrained(str(folder))
    return ref, UNIMOLMHeadModel.from_pretrained(str(folder))


def encode_batch(tokenizer, examples, decoding=False):
    """gen_encode each example, left-padded to one length, as the 千言 baseline batches them."""
    def encode(max_seq_len=64, pad=False):
        return [tokenizer.gen_encode(s, title=t, target=None if decoding else g, max_seq_len=max_seq_len,
                                     max_title_len=8, max_target_len=16, pad_to_max_seq_len=pad,
                                     add_start_token_for_decoding=decoding) for s, t, g in examples]
    encoded = encode()
    lengths = {len(e["input_ids"]) for e in encoded}
    if len(lengths) > 1:
        encoded = encode(max(lengths), pad=True)
    batch = {k: paddle.to_tensor(np.stack([np.asarray(e[k]) for e in encoded]))
             for k in ("input_ids", "token_type_ids", "position_ids")}
    batch["attention_mask"] = paddle.to_tensor(np.stack([e["attention_mask"] for e in encoded])[:, None])
    return batch


@pytest.mark.parametrize("subset", [[0], [1], [2], [0, 1, 2]], ids=["short", "mid", "long", "mixed-batch"])
def test_logits_equal_with_paddlenlp_float_mask(models, tokenizer, subset):
    ref, ours = models
    batch = encode_batch(tokenizer, [EXAMPLES[i] for i in subset])
    expected = ref(**batch).numpy()
    got = ours(**batch).numpy()
    assert np.abs(expected).max() > 0.1  # the comparison is not between two near-zero tensors
    # A left pad's query may attend to nothing: both models then average the pads' values through a softmax of
    # scores - 1e4 in float32, which keeps the scores to ~1e-3 (the float32 spacing at 1e4), so those rows
    # (read by nothing) agree to rounding only; MKL's AVX-512 kernels moved them by 1.3e-4 on "tiny".
    blind = (batch["attention_mask"].numpy()[:, 0] < -1).all(-1)
    np.testing.assert_array_equal(blind, batch["input_ids"].numpy() == SPECIAL["pad_token_id"])  # pads only
    np.testing.assert_allclose(got[~blind], expected[~blind], atol=TOL, rtol=0)
    np.testing.assert_allclose(got[blind], expected[blind], atol=1e-3, rtol=0)


def test_logits_equal_with_our_mask_rule(models, tokenizer):
    """The same sequences laid out by masks.seq2seq_inputs (right padding, bool mask) give the same
    logits at every real position as paddlenlp on its own left-padded float-mask layout."""
    ref, ours = models
    ref_batch = encode_batch(tokenizer, EXAMPLES)
    ids = ref_batch["input_ids"].numpy()
    types = ref_batch["token_type_ids"].numpy()
    real = ids != SPECIAL["pad_token_id"]
    sources = [row[r & (t == 0)] for row, r, t in zip(ids, real, types)]
    targets = [row[r & (t == 1)] for row, r, t in zip(ids, real, types)]
    batch = masks.seq2seq_inputs(sources, targets, SPECIAL["pad_token_id"], position_start=0)
    np.testing.assert_array_equal(batch["position_ids"][batch["valid"]], ref_batch["position_ids"].numpy()[real])
    got = ours(**{k: paddle.to_tensor(v) for k, v in batch.items() if k != "valid"}).numpy()
    expected = ref(**ref_batch).numpy()
    np.testing.assert_allclose(got[batch["valid"]], expected[real], atol=TOL, rtol=0)


@contextlib.contextmanager
def eos_bias(models, value=None, add=0.0):
    """Sets (or shifts by ``add``) the eos logit bias of every model in ``models``; restores it exactly after,
    so the module-scoped models are the same for every test whatever the order or the outcome."""
    saved = [model.lm_head.decoder_bias.numpy().copy() for model in models]
    try:
        for model, bias in zip(models, saved):
            changed = bias.copy()
            changed[SPECIAL["eos_token_id"]] = (changed[SPECIAL["eos_token_id"]] if value is None else value) + add
            model.lm_head.decoder_bias.set_value(changed)
        yield
    finally:
        for model, bias in zip(models, saved):
            model.lm_head.decoder_bias.set_value(bias)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cached_incremental_decoding_equals_full_forward(name):
    """Our model alone (no paddlenlp needed): cached decoding equals one full forward."""
    paddle.seed(7)
    ours = UNIMOLMHeadModel(UNIMOConfig(**CONFIGS[name], **SPECIAL))
    ours.eval()
    batch = masks.seq2seq_inputs([[3, 5, 6, 7, 8, 1], [3, 9, 1]], [[3, 10, 11, 12, 13], [3, 14, 15, 16, 17]],
                                 SPECIAL["pad_token_id"], position_start=0)
    full = ours(**{k: paddle.to_tensor(v) for k, v in batch.items() if k != "valid"}).numpy()
    # Incremental: each source alone (no padding), then the target one token at a time.
    for b, src_len in enumerate([6, 3]):
        ids = paddle.to_tensor(batch["input_ids"][b:b + 1])
        pos = paddle.to_tensor(batch["position_ids"][b:b + 1])
        types = paddle.to_tensor(batch["token_type_ids"][b:b + 1])
        logits, cache = ours(ids[:, :src_len], types[:, :src_len], pos[:, :src_len], use_cache=True)
        for j in range(src_len, src_len + 5):
            row = paddle.ones([1, j + 1], "bool")
            logits, cache = ours(ids[:, j:j + 1], types[:, j:j + 1], pos[:, j:j + 1], masks.decoding_row(row),
                                 use_cache=True, cache=cache)
            np.testing.assert_allclose(logits.numpy()[0, 0], full[b, j], atol=TOL, rtol=0)


@pytest.mark.parametrize("shift", [0.0, 6.0], ids=["no-eos", "early-eos"])
def test_greedy_ids_identical(models, tokenizer, shift):
    ref, ours = models
    with eos_bias(models, add=shift):
        batch = encode_batch(tokenizer, EXAMPLES, decoding=True)
        expected, _ = ref.generate(**batch, max_length=12, min_length=2, decode_strategy="greedy_search",
                                   eos_token_id=SPECIAL["eos_token_id"], use_fast=False)
        for stepper in (None, batch_stepper(ours)):  # the model's weights, the transposed copies
            got, _ = generate(ours, **batch, max_length=12, min_length=2, eos_token_id=SPECIAL["eos_token_id"],
                              stepper=stepper)
            np.testing.assert_array_equal(got.numpy(), expected.numpy())
        if shift:
            assert (got.numpy() == SPECIAL["eos_token_id"]).any()


@pytest.mark.parametrize("settings", [
    dict(num_beams=3, length_penalty=1.2, max_length=10),
    dict(num_beams=6, length_penalty=1.2, max_length=12, min_length=3),  # the 千言 baseline's beam and penalty
    dict(num_beams=4, length_penalty=0.6, max_length=8, early_stopping=True, num_return_sequences=2),
], ids=["beam3", "beam6-min3", "beam4-early-n2"])
@pytest.mark.parametrize("bias", [0.0, 1.0, 2.0, 3.0])
def test_beam_search_ids_identical(models, tokenizer, settings, bias):
    ref, ours = models
    with eos_bias(models, bias):  # shifts the eos logit so that hypotheses finish at different steps
        batch = encode_batch(tokenizer, EXAMPLES, decoding=True)
        expected, expected_scores = ref.generate(**batch, decode_strategy="beam_search", use_fast=False,
                                                 eos_token_id=SPECIAL["eos_token_id"], **settings)
        for stepper in (None, batch_stepper(ours)):  # the model's weights, the transposed copies
            got, scores = generate(ours, **batch, decode_strategy="beam_search", stepper=stepper,
                                   eos_token_id=SPECIAL["eos_token_id"], **settings)
            np.testing.assert_array_equal(got.numpy(), expected.numpy())
            np.testing.assert_allclose(scores.numpy(), expected_scores.numpy(), atol=1e-4, rtol=1e-5)


def test_beam_search_outputs_vary(models, tokenizer):
    """Guards the equality above: across eos biases the outputs differ in length and content."""
    _, ours = models
    batch = encode_batch(tokenizer, EXAMPLES, decoding=True)
    seen = set()
    for bias in (0.0, 1.0, 2.0, 3.0):
        with eos_bias([ours], bias):
            got, _ = generate(ours, **batch, decode_strategy="beam_search", num_beams=3, length_penalty=1.2,
                              max_length=10, eos_token_id=SPECIAL["eos_token_id"])
        seen.update(tuple(row) for row in got.numpy().tolist())
    assert len(seen) >= 4


def test_eos_bias_restores_the_shared_models(models):
    ref, ours = models
    before = [m.lm_head.decoder_bias.numpy().copy() for m in models]
    with pytest.raises(RuntimeError):
        with eos_bias(models, 5.0):
            assert ours.lm_head.decoder_bias.numpy()[SPECIAL["eos_token_id"]] == 5.0
            raise RuntimeError("a failing comparison")
    for model, bias in zip(models, before):
        np.testing.assert_array_equal(model.lm_head.decoder_bias.numpy(), bias)


def rms(x) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


@pytest.mark.parametrize("name", ["768x2", "tiny-preln-gelu"])
def test_training_steps_equal_paddlenlp(name, tokenizer, paddlenlp, tmp_path):
    """Five AdamW steps (the 千言 recipe's settings) with label smoothing on the same weights and batch (dropout off,
    so both are deterministic), ours through its CPU training kernels (``modeling._LinearFunction``,
    ``_swap_heads``) and PaddleNLP through ``nn.Linear``: the first step's gradients are equal, and after five
    steps every parameter of ours equals PaddleNLP's within 2e-5, or is no further from it (root mean square) than
    twice PaddleNLP's own run from starting weights moved by float32 rounding (scaled by 1 + 1e-7): AdamW's steps of
    ~1e-3 whatever a gradient's size amplify rounding, and on an AVX2-only CPU such a start ends up to 1.2e-3 away
    in some weights after five steps (within 2e-5 after one), ours as far (its RMS distance 1.00-1.31x that run's)."""
    import paddle.nn.functional as F

    from paddle_unimo import modeling
    from paddle_unimo.losses import label_smoothed_cross_entropy
    config = dict(CONFIGS[name], **SPECIAL, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    paddle.seed(3)
    ref = paddlenlp.UNIMOLMHeadModel(paddlenlp.UNIMOConfig(**config))
    ref.save_pretrained(str(tmp_path))
    ours = UNIMOLMHeadModel.from_pretrained(str(tmp_path))
    batch = encode_batch(tokenizer, EXAMPLES)
    ids, types = batch["input_ids"].numpy(), batch["token_type_ids"].numpy()
    target = (types[:, :-1] == 1) & (ids[:, 1:] != SPECIAL["pad_token_id"])  # predicts the next target token
    rows, cols = np.nonzero(target)
    positions = paddle.to_tensor(rows * ids.shape[1] + cols)  # flat indices into (B, L)
    labels = paddle.to_tensor(ids[:, 1:][target])
    fast_calls, first_grads = [], {}  # reference? -> the first step's gradients
    original_apply = modeling._LinearFunction.apply
    modeling._LinearFunction.apply = lambda *a: fast_calls.append(1) or original_apply(*a)
    rounded = paddlenlp.UNIMOLMHeadModel(paddlenlp.UNIMOConfig(**config))  # PaddleNLP from a rounding-moved start
    rounded.set_state_dict(ref.state_dict())
    with paddle.no_grad():
        for p in rounded.parameters():
            p.set_value(p * (1 + 1e-7))
    try:
        for model, reference in ((ref, True), (ours, False), (rounded, True)):
            model.train()
            opt = paddle.optimizer.AdamW(1e-3, beta2=0.98, epsilon=1e-6, parameters=model.parameters(),
                                         weight_decay=0.01)  # the fine-tuning recipe's epsilon
            for _ in range(5):
                logits = model(**batch, masked_positions=positions)
                if reference:
                    soft = F.label_smooth(F.one_hot(labels, config["vocab_size"]), epsilon=0.1)
                    loss = F.cross_entropy(logits, soft, soft_label=True).mean()
                else:
                    loss = label_smoothed_cross_entropy(logits, labels, 0.1)
                loss.backward()
                first_grads.setdefault(reference, {n: p.grad.numpy().copy() for n, p in model.named_parameters()})
                opt.step()
                opt.clear_grad()
    finally:
        modeling._LinearFunction.apply = original_apply
    assert len(fast_calls) == 5 * 6 * config["num_hidden_layers"]  # q, k, v, out, linear1, linear2 per layer
    for key, grad in first_grads[True].items():  # Adam is blind to a gradient's scale: compare them first
        np.testing.assert_allclose(first_grads[False][key], grad, atol=1e-6, rtol=1e-4, err_msg=key)
    start = paddle.load(str(tmp_path / "model_state.pdparams"))
    theirs, mine, nearby = ref.state_dict(), ours.state_dict(), rounded.state_dict()
    assert set(mine) == set(theirs)
    moved = 0
    for key, value in theirs.items():
        if key.endswith("k_proj.bias"):
            # its gradient is 0 in exact arithmetic (softmax ignores what a key bias adds to a whole row of
            # scores), so both only move by Adam's rescaling of rounding noise
            assert np.abs(mine[key].numpy() - start[key].numpy()).max() < 1e-4, key
            continue
        ours_off, rounding_off = (rms(other[key].numpy() - value.numpy()) for other in (mine, nearby))
        assert (np.allclose(mine[key].numpy(), value.numpy(), atol=2e-5, rtol=1e-5)
                or ours_off <= 2 * rounding_off), (key, ours_off, rounding_off)
        moved += not np.allclose(value.numpy(), start[key].numpy(), atol=1e-4)
    assert moved > 0.9 * (len(theirs) - config["num_hidden_layers"])  # the steps did train
