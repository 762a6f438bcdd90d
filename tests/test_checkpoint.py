"""Legacy parameter files, the English conversion, and strict loading."""
import json
import math
import os

import numpy as np
import paddle
import pytest
from paddle.base import core

from paddle_unimo import UNIMOLMHeadModel, UNIMOModel, get_preset, masks
from paddle_unimo.checkpoint import CheckpointError, original_to_paddle_name
from paddle_unimo.fileio import DataError
from paddle_unimo.legacy_io import LegacyFormatError, read_dense_tensor

from tools import convert_checkpoint


def save_legacy(array, path, lod=None):
    t = core.DenseTensor()
    t.set(array, core.CPUPlace())
    if lod:
        t.set_recursive_sequence_lengths(lod)
    core.save_dense_tensor(t, str(path))


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64", "int64", "int32", "uint8", "bool"])
def test_legacy_reader_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(0)
    for shape in [(3, 7), (5,), (2, 3, 4), (1,)]:
        a = (rng.standard_normal(shape) * 50).astype(dtype)
        save_legacy(a, tmp_path / "p")
        b = read_dense_tensor(str(tmp_path / "p"))
        assert b.dtype == a.dtype and b.shape == a.shape
        np.testing.assert_array_equal(a, b)


def test_legacy_reader_skips_lod_and_names_bad_files(tmp_path):
    a = np.arange(12, dtype="float32").reshape(6, 2)
    save_legacy(a, tmp_path / "lod", lod=[[2, 4]])
    np.testing.assert_array_equal(read_dense_tensor(str(tmp_path / "lod")), a)
    data = (tmp_path / "lod").read_bytes()
    (tmp_path / "cut").write_bytes(data[:-5])
    with pytest.raises(LegacyFormatError, match="cut"):
        read_dense_tensor(str(tmp_path / "cut"))
    (tmp_path / "text").write_bytes(b"hello, this is not a tensor file")
    with pytest.raises(LegacyFormatError, match="text"):
        read_dense_tensor(str(tmp_path / "text"))


# ---- an original English checkpoint written with the real names, and an independent numpy forward ----

ORIGINAL_CONFIG = {"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
                   "hidden_size": 36, "initializer_range": 0.02, "max_position_embeddings": 40,
                   "num_attention_heads": 4, "num_hidden_layers": 2, "type_vocab_size": 0, "sent_type_vocab_size": 0,
                   "task_type_vocab_size": 0, "vocab_size": 99, "max_img_len": 9, "max_obj_len": 5,
                   "image_class_size": 7, "image_attr_size": 5, "image_embedding_size": 24,
                   "txt_mask_ratio": 0.15, "vl_mask_ratio": 0.15, "overlap_ratio": 0.4, "fusion_method": "mul"}


def original_encoder_shapes(cfg):
    """Shapes of the original static-graph encoder parameters (embeddings, layers, pooled heads), [in, out]."""
    h, v, d = cfg["hidden_size"], cfg["vocab_size"], cfg["image_embedding_size"]
    shapes = {"word_embedding": (v, h), "pos_embedding": (cfg["max_position_embeddings"], h),
              "pre_encoder_layer_norm_scale": (h,), "pre_encoder_layer_norm_bias": (h,),
              "image_emb.w_0": (d, h), "image_emb.b_0": (h,), "image_loc.w_0": (5, h), "image_loc.b_0": (h,),
              "v_pre_encoder_layer_norm_scale": (h,), "v_pre_encoder_layer_norm_bias": (h,),
              "pooled_fc_text.w_0": (h, h), "pooled_fc_text.b_0": (h,),
              "pooled_fc_image.w_0": (h, h), "pooled_fc_image.b_0": (h,)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder_layer_{i}_"
        for part in ("query", "key", "value", "output"):
            shapes[f"{p}multi_head_att_{part}_fc.w_0"] = (h, h)
            shapes[f"{p}multi_head_att_{part}_fc.b_0"] = (h,)
        shapes.update({f"{p}ffn_fc_0.w_0": (h, 4 * h), f"{p}ffn_fc_0.b_0": (4 * h,), f"{p}ffn_fc_1.w_0": (4 * h, h),
                       f"{p}ffn_fc_1.b_0": (h,)})
        for norm in ("post_att", "post_ffn"):
            shapes[f"{p}{norm}_layer_norm_scale"] = (h,)
            shapes[f"{p}{norm}_layer_norm_bias"] = (h,)
    return shapes


def original_params(cfg, rng):
    h, v = cfg["hidden_size"], cfg["vocab_size"]
    shapes = {**original_encoder_shapes(cfg),
              "mask_lm_trans_fc.w_0": (h, h), "mask_lm_trans_fc.b_0": (h,),
              "mask_lm_trans_layer_norm_scale": (h,), "mask_lm_trans_layer_norm_bias": (h,),
              "mask_lm_out_fc.b_0": (v,)}
    return {n: (rng.standard_normal(s) * (0.3 if "scale" not in n else 0.1) + ("scale" in n)).astype("float32")
            for n, s in shapes.items()}


def reference_forward(P, cfg, ids, pos, feats, locs, may_attend, role=None, turn=None):
    """The original static-graph computation in float64 numpy, read off by parameter name; ``role``/``turn`` ids
    add a dialog model's ``role_embedding``/``turn_embedding`` (task_type=dialog)."""
    P = {k: v.astype("float64") for k, v in P.items()}
    gelu = np.vectorize(lambda x: 0.5 * x * (1 + math.erf(x / math.sqrt(2))))

    def ln(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * P[name + "_scale"] + P[name + "_bias"]

    def fc(x, name, act=None):
        y = x @ P[name + ".w_0"] + P[name + ".b_0"]
        return act(y) if act else y

    embedded = P["word_embedding"][ids] + P["pos_embedding"][pos]
    for name, which in (("role_embedding", role), ("turn_embedding", turn)):
        if which is not None:
            embedded = embedded + P[name][which]
    text = ln(embedded, "pre_encoder_layer_norm")
    vis = ln(fc(feats, "image_emb") + fc(locs, "image_loc"), "v_pre_encoder_layer_norm")
    x = np.concatenate([vis, text], axis=1)
    bias = (may_attend.astype("float64") - 1) * 1e4
    nh = cfg["num_attention_heads"]
    hd = cfg["hidden_size"] // nh
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder_layer_{i}_"
        split = lambda t: t.reshape(t.shape[0], t.shape[1], nh, hd).transpose(0, 2, 1, 3)  # noqa: E731
        q, k, v = (split(fc(x, f"{p}multi_head_att_{n}_fc")) for n in ("query", "key", "value"))
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + bias[:, None]
        w = np.exp(s - s.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        att = (w @ v).transpose(0, 2, 1, 3).reshape(x.shape)
        x = ln(x + fc(att, f"{p}multi_head_att_output_fc"), f"{p}post_att_layer_norm")
        x = ln(x + fc(fc(x, f"{p}ffn_fc_0", gelu), f"{p}ffn_fc_1"), f"{p}post_ffn_layer_norm")
    r = feats.shape[1]
    h = ln(fc(x[:, r:], "mask_lm_trans_fc", gelu), "mask_lm_trans_layer_norm")
    logits = h @ P["word_embedding"].T + P["mask_lm_out_fc.b_0"]
    relu = lambda t: np.maximum(t, 0)  # noqa: E731
    return logits, fc(x[:, r], "pooled_fc_text", relu), fc(x[:, 0], "pooled_fc_image", relu)


@pytest.fixture()
def original_checkpoint(tmp_path):
    rng = np.random.default_rng(3)
    params = original_params(ORIGINAL_CONFIG, rng)
    folder = tmp_path / "params"
    folder.mkdir()
    for name, array in params.items():
        save_legacy(array, folder / name)
    for extra in ("word_embedding_moment1_0", "learning_rate_0", "@LR_DECAY_COUNTER@"):
        save_legacy(np.zeros(2, "float32"), folder / extra)
    config = tmp_path / "unimo_tiny_en.json"
    config.write_text(json.dumps(ORIGINAL_CONFIG))
    return params, folder, config


def test_converted_model_equals_original_computation(original_checkpoint, tmp_path):
    params, folder, config = original_checkpoint
    out = tmp_path / "converted"
    convert_checkpoint.main(["--params", str(folder), "--config", str(config), "--out", str(out)])
    model = UNIMOLMHeadModel.from_pretrained(str(out))
    assert model.config.position_start == 2 and model.config.type_vocab_size == 0
    assert model.config.intermediate_size == 4 * 36

    rng = np.random.default_rng(5)
    ids = rng.integers(5, 99, (2, 6))
    regions = 4
    feats = rng.standard_normal((2, regions, 24)).astype("float32")
    locs = rng.random((2, regions, 5)).astype("float32")
    src = 3
    pos = np.concatenate([masks.block_positions([src, 6 - src], 2)[None]] * 2)
    rank = np.concatenate([np.zeros((2, regions), "int64"), np.stack([masks.ranks(src, 6 - src)] * 2)], axis=1)
    valid = np.ones_like(rank, bool)
    valid[1, 3] = False  # one padded region
    attend = masks.may_attend(valid, rank)

    expected = reference_forward(params, ORIGINAL_CONFIG, ids, pos, feats, locs, attend)
    t = paddle.to_tensor
    logits = model(t(ids), position_ids=t(pos), attention_mask=t(attend), region_feats=t(feats),
                   region_locs=t(locs))
    hidden = model.unimo(t(ids), position_ids=t(pos), attention_mask=t(attend), region_feats=t(feats),
                         region_locs=t(locs))
    text_pooled, image_pooled = model.unimo.pooled_outputs(hidden, regions)
    for got, want in zip((logits, text_pooled, image_pooled), expected):
        np.testing.assert_allclose(got.numpy(), want, atol=2e-5, rtol=1e-5)


def test_conversion_refuses_unknown_and_missing_files(original_checkpoint, tmp_path):
    params, folder, config = original_checkpoint
    save_legacy(np.zeros((36, 3), "float32"), folder / "my_head_fc.w_0")  # a head the original code never had
    with pytest.raises(CheckpointError, match="my_head_fc.w_0"):
        convert_checkpoint.run(["--params", str(folder), "--config", str(config), "--out", str(tmp_path / "a")])
    os.remove(folder / "encoder_layer_1_ffn_fc_0.b_0")
    os.remove(folder / "image_loc.w_0")
    with pytest.raises(CheckpointError) as err:
        convert_checkpoint.run(["--params", str(folder), "--config", str(config), "--out", str(tmp_path / "b"),
                                 "--allow-unused", "my_head_.*"])
    assert "unimo.encoder.layers.1.linear1.bias" in str(err.value)
    assert "unimo.region_embeddings.image_loc.weight" in str(err.value)
    assert not (tmp_path / "b" / "model_state.pdparams").exists()


def test_a_wrongly_shaped_file_is_named_by_its_original_name(original_checkpoint, tmp_path):
    """E.g. the large model's files with the base config: the error names each tensor and the file it came from."""
    params, folder, config = original_checkpoint
    save_legacy(np.zeros((99, 40), "float32"), folder / "word_embedding")
    with pytest.raises(CheckpointError) as err:
        convert_checkpoint.run(["--params", str(folder), "--config", str(config), "--out", str(tmp_path / "a")])
    assert ("unimo.embeddings.word_embeddings.weight (file word_embedding): checkpoint [99, 40] vs model [99, 36]"
            in str(err.value)), str(err.value)


def test_allow_unused_leaves_a_named_head_out_and_errors_are_one_line(original_checkpoint, tmp_path, capsys):
    params, folder, config = original_checkpoint
    save_legacy(np.ones((36, 3), "float32"), folder / "cls_out_3_w")  # a GLUE head beside the LM head
    save_legacy(np.ones(3, "float32"), folder / "cls_out_3_b")
    args = ["--params", str(folder), "--config", str(config)]
    with pytest.raises(CheckpointError, match="lm_head"):  # a classifier has no LM head
        convert_checkpoint.run(args + ["--out", str(tmp_path / "a")])
    model = convert_checkpoint.run(args + ["--out", str(tmp_path / "b"), "--allow-unused", "cls_out_.*"])
    assert type(model) is UNIMOLMHeadModel
    np.testing.assert_array_equal(model.unimo.embeddings.word_embeddings.weight.numpy(), params["word_embedding"])
    assert "left out 5 files" in capsys.readouterr().out  # 3 optimizer files and the head's 2

    # the command line: a user's error is one line and exit status 2, and a bad --dict-dir writes nothing
    with pytest.raises(SystemExit) as exit_info:
        convert_checkpoint.main(args + ["--out", str(tmp_path / "c"), "--dict-dir", str(tmp_path / "no_dict")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no_dict" in err and "unimo_en.vocab.txt" in err and "\n" not in err
    assert not (tmp_path / "c").exists()
    # a folder that holds something (another model) is never written into
    with pytest.raises(FileExistsError, match="exists and is not empty: converting into it would mix"):
        convert_checkpoint.run(args + ["--out", str(tmp_path / "b"), "--allow-unused", "cls_out_.*"])


def test_a_dictionary_larger_than_the_models_vocabulary_is_refused(original_checkpoint, tmp_path):
    from conftest import shared_path
    from paddle_unimo.fileio import DataError
    params, folder, config = original_checkpoint
    with pytest.raises(DataError, match=r"unimo_en: 50265 tokens, but .* has vocab_size 99: the dictionary of another"):
        convert_checkpoint.run(["--params", str(folder), "--config", str(config), "--out", str(tmp_path / "a"),
                                "--dict-dir", str(shared_path("unimo_en"))])
    assert not (tmp_path / "a").exists()


def test_name_map_covers_every_parameter_once():
    cfg = get_preset("unimo-large-en")
    names = original_params({**ORIGINAL_CONFIG, "num_hidden_layers": cfg.num_hidden_layers}, np.random.default_rng(0))
    mapped = [original_to_paddle_name(n) for n in names]
    expected = {k for k in UNIMOLMHeadModel(get_preset("tiny", num_hidden_layers=24)).state_dict()
                if k != "lm_head.decoder_weight" and "token_type" not in k}
    assert len(set(mapped)) == len(mapped) and set(mapped) == expected


def test_strict_loading_lists_every_problem(tmp_path):
    paddle.seed(1)
    model = UNIMOLMHeadModel(get_preset("tiny"))
    model.save_pretrained(str(tmp_path))
    state = paddle.load(str(tmp_path / "model_state.pdparams"))
    del state["unimo.encoder.layers.0.norm1.weight"]
    state["unimo.extra.weight"] = paddle.zeros([3])
    state["lm_head.decoder_bias"] = paddle.zeros([98])
    paddle.save(state, str(tmp_path / "model_state.pdparams"))
    with pytest.raises(CheckpointError) as err:
        UNIMOLMHeadModel.from_pretrained(str(tmp_path))
    message = str(err.value)
    for part in ("missing (1)", "unimo.encoder.layers.0.norm1.weight", "unexpected (1)", "unimo.extra.weight",
                 "wrong shape (1)", "lm_head.decoder_bias: checkpoint [98] vs model [99]"):
        assert part in message


def test_untied_lm_head_is_refused(tmp_path):
    UNIMOLMHeadModel(get_preset("tiny")).save_pretrained(str(tmp_path))
    state = paddle.load(str(tmp_path / "model_state.pdparams"))
    state["lm_head.decoder_weight"] = state["lm_head.decoder_weight"] + 1.0
    paddle.save(state, str(tmp_path / "model_state.pdparams"))
    with pytest.raises(CheckpointError, match="untied"):
        UNIMOLMHeadModel.from_pretrained(str(tmp_path))


def test_an_export_folder_is_refused_as_a_checkpoint(tmp_path):
    from paddle_unimo.export import export_model
    export_model(UNIMOLMHeadModel(get_preset("tiny")), str(tmp_path / "inference"))
    with pytest.raises(CheckpointError, match="is an export .*exported from"):
        UNIMOModel.from_pretrained(str(tmp_path / "inference"))


def test_save_load_round_trip_and_base_model_from_lm_folder(tmp_path):
    paddle.seed(2)
    model = UNIMOLMHeadModel(get_preset("tiny"))
    model.eval()
    model.save_pretrained(str(tmp_path))
    again = UNIMOLMHeadModel.from_pretrained(str(tmp_path))
    ids = paddle.to_tensor([[3, 10, 11, 12, 1]])
    np.testing.assert_array_equal(again(ids).numpy(), model(ids).numpy())
    base = UNIMOModel.from_pretrained(str(tmp_path))
    np.testing.assert_array_equal(base(ids).numpy(), model.unimo(ids).numpy())
    weights = tmp_path / "model_state.pdparams"  # a copy cut short (a full disk, an interrupted transfer)
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(DataError, match=f"^{weights}: not a readable paddle state file, truncated or damaged"):
        UNIMOLMHeadModel.from_pretrained(str(tmp_path))


@pytest.mark.parametrize("start", [0, 2])
def test_a_longer_position_table_is_grown_from_the_trained_rows(tmp_path, start):
    """unimo-text counts positions from 0, the English UNIMO from 2 (RoBERTa's offset): the new rows repeat the
    trained ones from there; the trained rows, and so every output on inputs that fit the old table, are
    unchanged; a smaller table is refused."""
    paddle.seed(3)
    model = UNIMOLMHeadModel(get_preset("tiny", max_position_embeddings=40, position_start=start))
    model.eval()
    model.save_pretrained(str(tmp_path))
    grown = UNIMOLMHeadModel.from_pretrained(str(tmp_path), max_position_embeddings=100)
    old = model.unimo.embeddings.position_embeddings.weight.numpy()
    new = grown.unimo.embeddings.position_embeddings.weight.numpy()
    assert new.shape == (100, 36) and grown.config.max_position_embeddings == 100
    np.testing.assert_array_equal(new[:40], old)
    period = 40 - start
    for row in range(40, 100):
        np.testing.assert_array_equal(new[row], old[start + (row - start) % period], err_msg=str(row))
    np.testing.assert_array_equal(new[40 + period - 1], old[39])  # one whole repetition, then from the start
    np.testing.assert_array_equal(new[40 + period], old[start])
    ids = paddle.to_tensor([[3, 10, 11, 12, 1, 5, 6]])
    np.testing.assert_array_equal(grown(ids).numpy(), model(ids).numpy())
    positions = paddle.to_tensor([[start + 60 + i for i in range(7)]])  # beyond the old table: now they embed
    out = grown(ids, position_ids=positions).numpy()
    assert np.isfinite(out).all() and not np.allclose(out, grown(ids).numpy())
    with pytest.raises(CheckpointError, match="max_position_embeddings 30 is below the checkpoint's 40"):
        UNIMOLMHeadModel.from_pretrained(str(tmp_path), max_position_embeddings=30)


def small_roberta(folder, type_vocab_size: int, seed: int):
    """A random PaddleNLP RobertaModel (64 positions, UNIMO's layer-norm epsilon) saved in ``folder``."""
    pnlp = pytest.importorskip("paddlenlp.transformers")
    paddle.seed(seed)
    ref = pnlp.RobertaModel(pnlp.RobertaConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=4, intermediate_size=37,
                                               max_position_embeddings=64, type_vocab_size=type_vocab_size,
                                               pad_token_id=1, layer_norm_eps=1e-5))
    ref.eval()
    ref.save_pretrained(str(folder))
    return ref


def test_init_from_a_roberta_checkpoint(tmp_path):
    from paddle_unimo.checkpoint import init_from_roberta
    ref = small_roberta(tmp_path, type_vocab_size=2, seed=4)
    model, fresh = init_from_roberta(str(tmp_path), image_embedding_size=24, image_class_size=7, max_img_len=11)
    model.eval()
    assert model.config.position_start == 2 and model.config.type_vocab_size == 2
    assert "unimo.region_embeddings.image_emb.weight" in fresh and "lm_head.transform.weight" in fresh
    assert not any(k.startswith("unimo.encoder.layers") for k in fresh)
    ids = paddle.to_tensor([[0, 5, 6, 7, 8, 2], [0, 9, 10, 2, 1, 1]])
    expected = ref(ids)[0].numpy()  # RoBERTa numbers positions from pad + 1 and masks its padding
    real = ids.numpy() != 1
    positions = paddle.to_tensor(np.where(real, np.cumsum(real, axis=1) + 1, 1))  # right padding: explicit
    got = model.unimo(ids, position_ids=positions).numpy()
    np.testing.assert_allclose(got[real], expected[real], atol=1e-5, rtol=0)
    grown, _ = init_from_roberta(str(tmp_path), image_embedding_size=24, image_class_size=7, max_img_len=11,
                                 max_position_embeddings=100)  # RoBERTa's positions from 2: rows 64.. copy 2..
    grown.eval()
    table = grown.unimo.embeddings.position_embeddings.weight.numpy()
    trained = model.unimo.embeddings.position_embeddings.weight.numpy()
    np.testing.assert_array_equal(table[:64], trained)
    np.testing.assert_array_equal(table[64:100], trained[2:38])
    np.testing.assert_allclose(grown.unimo(ids, position_ids=positions).numpy()[real], expected[real], atol=1e-5,
                               rtol=0)


def test_roberta_s_one_token_type_folds_into_the_positions(tmp_path):
    """RoBERTa's type_vocab_size 1 (as roberta-base): the model takes no token types, as the English UNIMO, and gives
    RoBERTa's outputs; the seq2seq objective's target type 1 then reads nothing (it used to index a missing row)."""
    from paddle_unimo.checkpoint import init_from_roberta
    ref = small_roberta(tmp_path, type_vocab_size=1, seed=5)
    model, _ = init_from_roberta(str(tmp_path), image_embedding_size=24, image_class_size=7, max_img_len=11,
                                 max_position_embeddings=80)
    model.eval()
    assert model.config.type_vocab_size == 0 and "token_type" not in " ".join(model.state_dict())
    ids = paddle.to_tensor([[0, 5, 6, 7, 8, 2], [0, 9, 10, 2, 1, 1]])
    real = ids.numpy() != 1
    positions = paddle.to_tensor(np.where(real, np.cumsum(real, axis=1) + 1, 1))
    expected = ref(ids)[0].numpy()
    for types in (paddle.zeros_like(ids), paddle.ones_like(ids)):
        got = model.unimo(ids, types, position_ids=positions).numpy()
        np.testing.assert_allclose(got[real], expected[real], atol=1e-5, rtol=0)
    table = model.unimo.embeddings.position_embeddings.weight.numpy()
    folded = ref.embeddings.position_embeddings.weight.numpy() + ref.embeddings.token_type_embeddings.weight.numpy()[0]
    np.testing.assert_allclose(table[:64], folded, atol=1e-7, rtol=0)
    np.testing.assert_allclose(table[64:80], folded[2:18], atol=1e-7, rtol=0)  # grown rows copy folded ones
    weights = tmp_path / "model_state.pdparams"  # a bfloat16 checkpoint: numpy holds its bit patterns as uint16
    paddle.save({k: v.astype("bfloat16") for k, v in paddle.load(str(weights)).items()}, str(weights))
    half, _ = init_from_roberta(str(tmp_path), image_embedding_size=24, image_class_size=7, max_img_len=11)
    position, kind = (w.astype("bfloat16").astype("float32").numpy()
                      for w in (ref.embeddings.position_embeddings.weight, ref.embeddings.token_type_embeddings.weight))
    np.testing.assert_array_equal(half.unimo.embeddings.position_embeddings.weight.numpy(), position + kind[0])


def test_failed_save_keeps_the_previous_weights(tmp_path, monkeypatch):
    from paddle_unimo import checkpoint
    model = UNIMOModel(get_preset("tiny"))
    model.save_pretrained(str(tmp_path))
    before = (tmp_path / checkpoint.WEIGHTS_NAME).read_bytes()
    real_save = paddle.save

    def failing_save(obj, path, *args, **kwargs):
        real_save(obj, path, *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(paddle, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(str(tmp_path))
    assert (tmp_path / checkpoint.WEIGHTS_NAME).read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["config.json", checkpoint.WEIGHTS_NAME]  # no temporary file left
