"""Model behaviour beyond the paddlenlp parity: regions, configs, defaults."""
import json

import numpy as np
import paddle
import pytest

from paddle_unimo import PRESETS, UNIMOConfig, UNIMOLMHeadModel, UNIMOModel, get_preset, masks
from paddle_unimo.typed import ConfigError

from conftest import assert_same_loss_and_gradients, loss_and_gradients, shared_path


@pytest.fixture(scope="module")
def tiny():
    paddle.seed(11)
    model = UNIMOModel(get_preset("tiny"))
    model.eval()
    return model


def region_inputs(rng, real, padded, dim=24):
    feats = np.zeros((1, real + padded, dim), "float32")
    locs = np.zeros((1, real + padded, 5), "float32")
    feats[0, :real] = rng.standard_normal((real, dim))
    locs[0, :real] = rng.random((real, 5))
    valid = np.zeros((1, real + padded), bool)
    valid[0, :real] = True
    return feats, locs, valid


@pytest.mark.parametrize("seed", range(4))
def test_region_outputs_do_not_depend_on_padding(tiny, seed):
    rng = np.random.default_rng(seed)
    real = 3 + seed
    ids = paddle.to_tensor(rng.integers(5, 99, (1, 6)))
    caption_rank = masks.ranks(0, 6)[None]
    outputs = []
    for padded in (0, 1, 4, 9):
        feats, locs, valid = region_inputs(np.random.default_rng(seed + 100), real, padded)
        region_rank = np.zeros((1, real + padded), "int64")
        attend = masks.may_attend(np.concatenate([valid, np.ones((1, 6), bool)], 1),
                                  np.concatenate([region_rank, caption_rank], 1))
        t = paddle.to_tensor
        both = tiny(ids, attention_mask=t(attend), region_feats=t(feats), region_locs=t(locs)).numpy()
        image_only = tiny(region_feats=t(feats), region_locs=t(locs), region_valid=t(valid)).numpy()
        defaults = tiny(ids, region_feats=t(feats), region_locs=t(locs), region_valid=t(valid)).numpy()
        outputs.append((np.concatenate([both[:, :real], both[:, real + padded:]], 1), image_only[:, :real],
                        np.concatenate([defaults[:, :real], defaults[:, real + padded:]], 1)))
    for other in outputs[1:]:
        for a, b in zip(outputs[0], other):
            np.testing.assert_allclose(b, a, atol=1e-5, rtol=0)
    # captioning mask: regions never see the caption, so region outputs equal the image-only ones
    np.testing.assert_allclose(outputs[0][0][:, :real], outputs[0][1], atol=1e-5, rtol=0)
    # ... and the bidirectional default lets regions see the text, which changes them
    assert np.abs(outputs[0][2][:, :real] - outputs[0][1]).max() > 1e-3


def test_padding_changes_outputs_without_a_mask(tiny):
    """Guards the test above: unmasked zero regions do change the outputs."""
    rng = np.random.default_rng(0)
    feats, locs, _ = region_inputs(rng, 3, 4)
    t = paddle.to_tensor
    masked = tiny(region_feats=t(feats), region_locs=t(locs), region_valid=t(np.arange(7)[None] < 3)).numpy()
    unmasked = tiny(region_feats=t(feats), region_locs=t(locs)).numpy()
    assert np.abs(masked[:, :3] - unmasked[:, :3]).max() > 1e-3


def test_float_and_bool_masks_mean_the_same(tiny):
    rng = np.random.default_rng(1)
    ids = paddle.to_tensor(rng.integers(5, 99, (2, 7)))
    attend = masks.may_attend(rng.random((2, 7)) > 0.2, np.sort(rng.integers(0, 3, (2, 7)), 1))
    attend[:, :, 0] = True  # every row sees at least one key
    bias = np.where(attend, 0.0, -1e4).astype("float32")[:, None]
    a = tiny(ids, attention_mask=paddle.to_tensor(attend)).numpy()
    b = tiny(ids, attention_mask=paddle.to_tensor(bias)).numpy()
    c = tiny(ids, attention_mask=paddle.to_tensor(attend.astype("int64"))).numpy()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("seed", range(4))
def test_last_only_is_the_full_forwards_last_position_and_cache(seed):
    """A decoding's prefill (``last_only``): the last layer computes the last position only, so its output must be
    the full forward's last position and the cache every layer's full keys/values -- with regions, a mask that
    differs per query row or only per key, post-LN and pre-LN."""
    rng = np.random.default_rng(seed)
    paddle.seed(seed)
    model = UNIMOModel(get_preset("tiny", normalize_before=bool(seed % 2)))
    model.eval()
    ids = paddle.to_tensor(rng.integers(5, 99, (2, 7)))
    feats, locs, valid = region_inputs(rng, 3, 1)
    feats, locs, valid = (np.repeat(a, 2, axis=0) for a in (feats, locs, valid))
    attend = masks.may_attend(np.concatenate([valid, rng.random((2, 7)) > 0.2], 1),
                              np.sort(rng.integers(0, 3, (2, 11)), 1))
    attend[:, :, 0] = True
    t = paddle.to_tensor
    with paddle.no_grad():
        for mask in (t(attend), t(attend[:, -1]) if seed < 2 else None):  # per row, per key, default
            kwargs = dict(attention_mask=mask, use_cache=True, region_feats=t(feats), region_locs=t(locs))
            full, full_cache = model(ids, **kwargs)
            last, cache = model(ids, **kwargs, last_only=True)
            assert last.shape == [2, 1, 36]
            np.testing.assert_allclose(last.numpy(), full[:, -1:].numpy(), atol=1e-5, rtol=0)
            assert np.abs(full[:, -1:].numpy() - full[:, -2:-1].numpy()).max() > 1e-3  # not any position
            for (k, v), (full_k, full_v) in zip(cache, full_cache):
                np.testing.assert_array_equal(k.numpy(), full_k.numpy())
                np.testing.assert_array_equal(v.numpy(), full_v.numpy())


def test_lm_loss_ignores_minus_100_and_matches_manual(tiny):
    paddle.seed(3)
    model = UNIMOLMHeadModel(get_preset("tiny"))
    model.eval()
    ids = paddle.to_tensor([[3, 10, 11, 1, 3, 12, 13, 4]])
    labels = np.full((1, 8), -100)
    labels[0, 4:7] = [12, 13, 4]
    loss, logits = model(ids, labels=paddle.to_tensor(labels))
    logp = paddle.nn.functional.log_softmax(logits, -1).numpy()[0]
    manual = -np.mean([logp[4 + i, label] for i, label in enumerate([12, 13, 4])])
    np.testing.assert_allclose(float(loss), manual, rtol=1e-5)


def test_presets_match_the_released_configs():
    for name, file in (("unimo-base-en", "unimo_base_en.json"), ("unimo-large-en", "unimo_large_en.json")):
        assert UNIMOConfig.from_original_json(str(shared_path("unimo_en", file))) == PRESETS[name]
    pnlp = pytest.importorskip("paddlenlp.transformers")
    ref = pnlp.UNIMOConfig()
    ours = PRESETS["unimo-text-1.0"]
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "hidden_act", "max_position_embeddings", "type_vocab_size", "unk_token_id", "pad_token_id",
                "bos_token_id", "eos_token_id", "mask_token_id", "normalize_before"):
        assert getattr(ours, key) == getattr(ref, key), key
    from paddlenlp.transformers.unimo.configuration import UNIMO_PRETRAINED_INIT_CONFIGURATION as INIT
    large = INIT["unimo-text-1.0-large"]
    for key, value in large.items():
        if hasattr(PRESETS["unimo-text-1.0-large"], key):
            assert getattr(PRESETS["unimo-text-1.0-large"], key) == value, key


def test_config_is_strict(tmp_path):
    with pytest.raises(ConfigError, match="unknown key hiden_size"):
        UNIMOConfig.from_dict({"hiden_size": 3})
    with pytest.raises(ConfigError, match="num_hidden_layers"):
        UNIMOConfig(num_hidden_layers="2")
    with pytest.raises(KeyError, match="known"):
        get_preset("unimo-huge")
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"init_args": [{"vocab_size": 50, "hidden_size": 8, "num_attention_heads": 2}],
                                "init_class": "UNIMOLMHeadModel"}))
    cfg = UNIMOConfig.from_file(str(path))
    assert (cfg.vocab_size, cfg.hidden_size) == (50, 8)


def test_inputs_embeds_equal_input_ids_and_default_positions_skip_left_padding(tiny):
    ids = paddle.to_tensor([[2, 2, 3, 10, 11, 1], [3, 12, 13, 14, 15, 1]])  # pad id 2, left padding
    by_ids = tiny(ids).numpy()
    explicit = tiny(ids, position_ids=paddle.to_tensor([[0, 0, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5]])).numpy()
    np.testing.assert_array_equal(by_ids, explicit)
    second = tiny(inputs_embeds=tiny.embeddings.word_embeddings(ids[1:])).numpy()
    np.testing.assert_allclose(second, by_ids[1:], atol=1e-6, rtol=0)


def test_default_positions_make_right_and_left_padding_equal(tiny):
    """The same sequences, right- or left-padded, without position_ids: equal hidden states at real tokens."""
    rows = [[3, 10, 11, 12, 13, 1], [3, 14, 1], [3, 15, 16, 1]]
    right = masks.pad_batch([np.asarray(r) for r in rows], 2)
    left = masks.pad_batch([np.asarray(r) for r in rows], 2, left=True)
    by_right, by_left = tiny(paddle.to_tensor(right)).numpy(), tiny(paddle.to_tensor(left)).numpy()
    real_right, real_left = right != 2, left != 2
    assert real_right.sum() < real_right.size  # both layouts are padded
    np.testing.assert_allclose(by_right[real_right], by_left[real_left], atol=1e-5, rtol=0)
    alone = tiny(paddle.to_tensor([rows[1]])).numpy()[0]  # the second row without any padding
    np.testing.assert_allclose(by_right[1, :3], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("left", [True, False], ids=["left-padded", "right-padded"])
def test_default_positions_with_a_cache_count_only_real_tokens(tiny, left):
    """A padded prefix is cached, then two tokens follow without position_ids: they must sit right after the
    prefix's real tokens, as in one unpadded forward."""
    prefix, rest = [3, 10, 11, 12], [13, 14]
    padded = masks.pad_batch([np.asarray(prefix)], 2, length=7, left=left)
    full = tiny(paddle.to_tensor([prefix + rest])).numpy()[0]
    _, cache = tiny(paddle.to_tensor(padded), use_cache=True)
    keys = np.concatenate([padded != 2, np.ones((1, 2), bool)], axis=1)  # (1, 9): pads never attended
    hidden = tiny(paddle.to_tensor([rest]), attention_mask=paddle.to_tensor(keys), cache=cache).numpy()[0]
    np.testing.assert_allclose(hidden, full[len(prefix):], atol=1e-4, rtol=0)  # old default: off by 3 places


def test_paddlenlp_shared_row_float_mask_equals_key_validity(tiny):
    """PaddleNLP's default mask: float (B, 1, 1, L), -1e4 at pads; the same as our bool (B, L)."""
    ids = paddle.to_tensor([[2, 2, 3, 10, 11, 1], [3, 12, 13, 14, 15, 1]])
    valid = ids != 2
    additive = ((~valid).astype("float32") * -1e4).unsqueeze([1, 2])
    np.testing.assert_array_equal(tiny(ids, attention_mask=additive).numpy(),
                                  tiny(ids, attention_mask=valid).numpy())


def test_from_scratch_initialisation_is_the_original_truncated_normal():
    paddle.seed(0)
    config = get_preset("tiny", vocab_size=2000, hidden_size=240, num_attention_heads=4, intermediate_size=480)
    model = UNIMOLMHeadModel(config)
    std = config.initializer_range
    # a normal cut at two std has std = std * sqrt(1 - 2 * 2 phi(2) / (2 Phi(2) - 1)) = 0.8796 std
    truncated_std = std * np.sqrt(1 - 4 * np.exp(-2) / np.sqrt(2 * np.pi) / 0.9544997)
    for name, param in model.named_parameters():
        value = param.numpy()
        if name.endswith(("embeddings.weight", "proj.weight", "linear1.weight", "linear2.weight",
                          "transform.weight", "image_emb.weight", "image_loc.weight", "pooler.weight")):
            assert np.abs(value).max() <= 2 * std + 1e-7, name
            if value.size > 100_000:
                assert abs(value.std() - truncated_std) < 0.02 * truncated_std, (name, value.std())
                assert abs(value.mean()) < 0.01 * std, name
        elif name == "lm_head.layer_norm.bias":
            np.testing.assert_array_equal(value, np.ones(config.hidden_size))  # mask_lm_trans_layer_norm_bias
        elif name.endswith(("norm.weight", "norm1.weight", "norm2.weight")):
            np.testing.assert_array_equal(value, 1.0, err_msg=name)
        elif name.endswith("bias"):
            np.testing.assert_array_equal(value, 0.0, err_msg=name)
    big = model.unimo.embeddings.word_embeddings.weight.numpy()
    assert big.size == 480_000 and abs(big.std() - truncated_std) < 0.01 * truncated_std


def test_recompute_gives_the_same_loss_and_gradients():
    runs = []
    for recompute in (False, True):
        paddle.seed(5)
        model = UNIMOLMHeadModel(get_preset("tiny", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
        model.train()
        model.set_recompute(recompute)
        assert model.unimo.encoder.recompute is recompute
        batch = masks.seq2seq_inputs([[3, 10, 11, 1], [3, 12, 1]], [[3, 20, 21, 4], [3, 22, 4]], 2, 0)
        labels = np.where(batch["token_type_ids"] == 1, np.roll(batch["input_ids"], -1, axis=1), -100)
        loss, _ = model(**{k: paddle.to_tensor(v) for k, v in batch.items() if k != "valid"},
                        labels=paddle.to_tensor(labels))
        loss.backward()
        runs.append(loss_and_gradients(loss, model))
    assert_same_loss_and_gradients(*runs)
    with pytest.raises(TypeError, match="true or false"):
        model.set_recompute("yes")


@pytest.mark.parametrize("seed", range(3))
def test_training_kernels_equal_paddles_own(seed):
    """``_swap_heads`` (a dense einsum transpose) equals ``transpose`` bit for bit, forward and backward;
    ``_linear`` in training equals ``nn.Linear`` in value and gradients, and a frozen layer keeps ``nn.Linear``."""
    from paddle_unimo import modeling
    rng = np.random.default_rng(seed)
    x = paddle.to_tensor(rng.standard_normal((3, 7, 4, 5)).astype("float32"), stop_gradient=False)
    upstream = paddle.to_tensor(rng.standard_normal((3, 4, 7, 5)).astype("float32"))
    results = []
    for swap in (modeling._swap_heads, lambda t: t.transpose([0, 2, 1, 3])):
        out = swap(x)
        (out * upstream).sum().backward()
        results.append((out.numpy(), x.grad.numpy().copy()))
        x.clear_gradient()
    for got, expected in zip(*results):
        np.testing.assert_array_equal(got, expected)

    paddle.seed(seed)
    layer = paddle.nn.Linear(6, 9)
    layer.train()
    h = paddle.to_tensor(rng.standard_normal((2, 5, 6)).astype("float32"), stop_gradient=False)
    upstream = paddle.to_tensor(rng.standard_normal((2, 5, 9)).astype("float32"))
    runs = []
    for forward in (lambda: modeling._linear(layer, h), lambda: layer(h)):
        out = forward()
        (out * upstream).sum().backward()
        runs.append([out.numpy(), h.grad.numpy().copy(), layer.weight.grad.numpy().copy(),
                     layer.bias.grad.numpy().copy()])
        for t in (h, layer.weight, layer.bias):
            t.clear_gradient()
    assert np.abs(runs[0][3]).max() > 0.5  # a real bias gradient
    for got, expected in zip(*runs):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    layer.weight.stop_gradient = True
    calls = []
    original = modeling._LinearFunction.apply
    modeling._LinearFunction.apply = lambda *a: calls.append(1) or original(*a)
    try:
        modeling._linear(layer, h).sum().backward()
    finally:
        modeling._LinearFunction.apply = original
    assert calls == [] and not layer.weight.grad.numpy().any() and layer.bias.grad.numpy().any()
