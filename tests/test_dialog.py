"""The original's dialog model (CoQA, ``task_type=dialog``): role and turn embeddings added to the text embeddings
before their LayerNorm, converted from the original's files, new parameters of a pretrained model, fed by the CoQA
batches, and decoded (generated tokens: role 0, turn 0) in dynamic mode and through an export."""
import json

import numpy as np
import paddle
import pytest

from paddle_unimo import UNIMOLMHeadModel, get_preset, masks
from paddle_unimo.export import InferenceStepper, export_model
from paddle_unimo.generation import generate

from test_checkpoint import ORIGINAL_CONFIG, original_params, reference_forward, save_legacy
from test_generation import make_model  # the tiny model with a tunable eos bias
from tools import convert_checkpoint

PAD, SEP, CLS, EOS = 2, 1, 3, 4  # the tiny preset's ids
DIALOG = dict(role_type_size=3, turn_type_size=16)


def dialog_model(seed, eos_bias=0.0, **overrides):
    return make_model(seed, eos_bias, **{**DIALOG, **overrides})


def dialog_sources(seed, batch=3):
    """Sources of 1-3 turns of random tokens, each [SEP]-ended, with the original's role (alternating, the last
    turn 1) and turn ids (counting down to 1); the first token [CLS] takes the first turn's."""
    rng = np.random.default_rng(seed)
    sources, roles, turns = [], [], []
    for _ in range(batch):
        n = int(rng.integers(1, 4))
        ids, role, turn = [CLS], [n % 2], [n]
        for k in range(n):
            tokens = rng.integers(5, 99, rng.integers(2, 5)).tolist() + [SEP]
            ids += tokens
            role += [(n + k) % 2] * len(tokens)
            turn += [n - k] * len(tokens)
        sources.append(ids), roles.append(role), turns.append(turn)
    return sources, roles, turns


def left_padded(sources, roles, turns):
    b = masks.seq2seq_inputs(sources, [[CLS]] * len(sources), PAD, position_start=0, left_pad=True)
    batch = {k: paddle.to_tensor(v) for k, v in b.items() if k != "valid"}
    length = b["input_ids"].shape[1]
    for key, rows in (("role_ids", roles), ("turn_ids", turns)):
        padded = [[0] * (length - len(r) - 1) + r + [0] for r in rows]  # the target [CLS]: role 0, turn 0
        batch[key] = paddle.to_tensor(np.asarray(padded, "int64"))
    return batch


def test_converted_dialog_model_equals_the_original_computation(tmp_path):
    """A CoQA model of the original (its ``role_embedding``/``turn_embedding`` files) converts with the sizes read
    from the files, and computes word + position + role + turn embeddings before the LayerNorm as the original."""
    rng = np.random.default_rng(11)
    params = original_params(ORIGINAL_CONFIG, rng)
    h = ORIGINAL_CONFIG["hidden_size"]
    params["role_embedding"] = (rng.standard_normal((3, h)) * 0.3).astype("float32")
    params["turn_embedding"] = (rng.standard_normal((16, h)) * 0.3).astype("float32")
    folder = tmp_path / "params"
    folder.mkdir()
    for name, array in params.items():
        save_legacy(array, folder / name)
    config = tmp_path / "unimo_tiny_en.json"
    config.write_text(json.dumps(ORIGINAL_CONFIG))
    convert_checkpoint.main(["--params", str(folder), "--config", str(config), "--out", str(tmp_path / "out")])
    model = UNIMOLMHeadModel.from_pretrained(str(tmp_path / "out"))
    assert (model.config.role_type_size, model.config.turn_type_size) == (3, 16)

    ids = rng.integers(5, 99, (2, 7))
    pos = np.stack([masks.block_positions([5, 2], 2)] * 2)
    role = np.array([[1, 2, 2, 0, 0, 0, 0], [0, 2, 1, 1, 0, 0, 0]])
    turn = np.array([[2, 0, 0, 2, 1, 0, 0], [1, 0, 15, 3, 3, 0, 0]])
    attend = masks.may_attend(np.ones((2, 7), bool), np.stack([masks.ranks(5, 2)] * 2))
    none = np.zeros((2, 0, ORIGINAL_CONFIG["image_embedding_size"]))
    expected = reference_forward(params, ORIGINAL_CONFIG, ids, pos, none, np.zeros((2, 0, 5)), attend, role, turn)[0]
    t = paddle.to_tensor
    got = model(t(ids), position_ids=t(pos), attention_mask=t(attend), role_ids=t(role), turn_ids=t(turn))
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-5, rtol=1e-5)
    without = reference_forward(params, ORIGINAL_CONFIG, ids, pos, none, np.zeros((2, 0, 5)), attend)[0]
    assert np.abs(without - expected).max() > 0.1  # the dialog embeddings matter


def test_missing_dialog_ids_are_role_and_turn_zero():
    model = dialog_model(0)
    rng = np.random.default_rng(0)
    ids = paddle.to_tensor(rng.integers(5, 99, (2, 6)))
    role, turn = paddle.to_tensor(rng.integers(0, 3, (2, 6))), paddle.to_tensor(rng.integers(0, 16, (2, 6)))
    zeros = paddle.zeros_like(ids)
    np.testing.assert_array_equal(model(ids).numpy(), model(ids, role_ids=zeros, turn_ids=zeros).numpy())
    emb = model.unimo.embeddings
    pos = paddle.to_tensor(np.tile(np.arange(6), (2, 1)))
    want = (emb.word_embeddings.weight.numpy()[ids.numpy()] + emb.position_embeddings.weight.numpy()[pos.numpy()]
            + emb.token_type_embeddings.weight.numpy()[0] + emb.role_embeddings.weight.numpy()[role.numpy()]
            + emb.turn_embeddings.weight.numpy()[turn.numpy()])
    np.testing.assert_allclose(emb(ids, None, pos, role_ids=role, turn_ids=turn).numpy(), want, atol=1e-6)


def test_a_pretrained_folder_gains_new_dialog_embeddings(tmp_path, caplog):
    paddle.seed(1)
    plain = UNIMOLMHeadModel(get_preset("tiny"))
    plain.save_pretrained(str(tmp_path / "pretrained"))
    with caplog.at_level("INFO"):
        model = UNIMOLMHeadModel.from_pretrained(str(tmp_path / "pretrained"), **DIALOG)
    assert "no dialog embeddings in this folder" in caplog.text
    ours, theirs = model.state_dict(), plain.state_dict()
    assert sorted(set(ours) - set(theirs)) == ["unimo.embeddings.role_embeddings.weight",
                                               "unimo.embeddings.turn_embeddings.weight"]
    for key, value in theirs.items():
        np.testing.assert_array_equal(ours[key].numpy(), value.numpy())
    assert ours["unimo.embeddings.turn_embeddings.weight"].shape == [16, plain.config.hidden_size]
    assert float(ours["unimo.embeddings.role_embeddings.weight"].abs().max()) > 0  # initialised, not zero
    model.save_pretrained(str(tmp_path / "coqa"))
    again = UNIMOLMHeadModel.from_pretrained(str(tmp_path / "coqa"))
    assert again.config.role_type_size == 3
    np.testing.assert_array_equal(again.unimo.embeddings.role_embeddings.weight.numpy(),
                                  model.unimo.embeddings.role_embeddings.weight.numpy())
    with pytest.raises(Exception, match="unexpected"):  # a dialog folder does not load into a plain model
        UNIMOLMHeadModel.from_pretrained(str(tmp_path / "coqa"), role_type_size=0, turn_type_size=0)


def reference_greedy(model, source, role, turn, max_length):
    """Greedy decoding recomputing [source; CLS; generated] by full forward passes, generated tokens with role 0
    and turn 0 as the original's dialog decoding."""
    out = []
    for _ in range(max_length):
        b = masks.seq2seq_inputs([source], [[CLS] + out], PAD, position_start=0)
        extra = [0] * (len(out) + 1)
        with paddle.no_grad():
            logits = model(**{k: paddle.to_tensor(v) for k, v in b.items() if k != "valid"},
                           role_ids=paddle.to_tensor([role + extra]), turn_ids=paddle.to_tensor([turn + extra]))
        token = int(np.argmax(logits.numpy()[0, -1]))
        out.append(token)
        if token == EOS:
            break
    return out


@pytest.mark.parametrize("seed", range(3))
def test_dialog_greedy_decoding_equals_full_recomputation(seed):
    model = dialog_model(seed, eos_bias=2.0)
    sources, roles, turns = dialog_sources(seed)
    batch = left_padded(sources, roles, turns)
    ids, _ = generate(model, **batch, max_length=8, convention="original")  # bans nothing: a plain argmax
    for row, source, role, turn in zip(ids.numpy().tolist(), sources, roles, turns):
        want = reference_greedy(model, source, role, turn, 8)
        assert row == want + [PAD] * (len(row) - len(want))
    plain, _ = generate(model, **{k: v for k, v in batch.items() if k not in ("role_ids", "turn_ids")},
                        max_length=8, convention="original")
    assert not np.array_equal(plain.numpy(), ids.numpy())  # the roles and turns change the output


def test_generate_refuses_dialog_ids_the_model_lacks():
    model = dialog_model(0, role_type_size=0)
    sources, roles, turns = dialog_sources(0)
    batch = left_padded(sources, roles, turns)
    with pytest.raises(ValueError, match="no role embeddings"):
        generate(model, **batch, max_length=3)
    batch.pop("role_ids")
    generate(model, **batch, max_length=3)  # turn ids alone are fine
    batch["turn_ids"] = batch["turn_ids"][:, 1:]
    with pytest.raises(ValueError, match="turn_ids shape"):
        generate(model, **batch, max_length=3)


@pytest.mark.parametrize("cpu_kernels", [False, True], ids=["paddle", "kernels"])
@pytest.mark.parametrize("settings", [dict(), dict(decode_strategy="beam_search", num_beams=3, min_length=2)],
                         ids=["greedy", "beam3"])
def test_an_exported_dialog_model_decodes_as_dynamic_mode(tmp_path, settings, cpu_kernels):
    model = dialog_model(4, eos_bias=2.0)
    stepper = InferenceStepper(export_model(model, tmp_path / "inference", cpu_kernels=cpu_kernels))
    sources, roles, turns = dialog_sources(4, batch=4)
    batch = left_padded(sources, roles, turns)
    ref_ids, ref_scores = generate(model, **batch, max_length=9, **settings)
    ids, scores = generate(None, **batch, max_length=9, stepper=stepper, **settings)
    np.testing.assert_array_equal(ids.numpy(), ref_ids.numpy())
    np.testing.assert_allclose(scores.numpy(), ref_scores.numpy(), atol=1e-4)
    inputs = json.loads((tmp_path / "inference" / "export.json").read_text())["prefill"]["inputs"]
    assert [i["name"] for i in inputs][-2:] == ["role_ids", "turn_ids"]


def test_coqa_batches_carry_roles_and_turns_into_the_loss():
    """The CoQA task builds a dialog model and its training batches' role/turn ids reach the embeddings: the
    runner's loss equals the model's own on the batch, and differs when the ids are dropped."""
    from paddle_unimo.data.english_seq2seq import EnglishExample
    from paddle_unimo.losses import label_smoothed_cross_entropy
    from tasks.english_generation import EnglishGenerationConfig, EnglishRunner
    from tasks.registry import get_task
    from tasks.cli import build_model
    task = get_task("coqa")
    cfg = EnglishGenerationConfig(task="coqa")
    cfg.data.max_src_len, cfg.data.max_tgt_len = 64, 16
    examples = [EnglishExample("s_1", "what color ? [SEP] white [SEP] where ?", "in a barn", knowledge="a cat in a barn",
                               dialog=True),
                EnglishExample("s_2", "who ?", "the cat", knowledge="a cat in a barn", dialog=True)]
    settings = task.model_settings(cfg, examples, from_folder=False)
    assert settings == DIALOG
    model, tokenizer = build_model(None, cfg.model, task.texts(examples), task.model_class, task.vocabulary, **settings)
    runner = EnglishRunner(task, model, tokenizer, cfg)
    batch = runner.make_batch(runner.encoder.encode_all(examples))
    assert batch["role_ids"][0].max() == 2 and batch["turn_ids"][0].max() == 3
    tensors = {k: paddle.to_tensor(v) for k, v in batch.items()}
    model.eval()
    loss = float(runner.loss(model, tensors)["loss"])
    args = [tensors[k] for k in ("input_ids", "token_type_ids", "position_ids", "attention_mask")]
    direct = label_smoothed_cross_entropy(model(*args, masked_positions=tensors["masked_positions"],
                                                role_ids=tensors["role_ids"], turn_ids=tensors["turn_ids"]),
                                          tensors["labels"], cfg.train.label_smoothing)
    plain = label_smoothed_cross_entropy(model(*args, masked_positions=tensors["masked_positions"]),
                                         tensors["labels"], cfg.train.label_smoothing)
    assert loss == pytest.approx(float(direct), abs=1e-6) and abs(loss - float(plain)) > 1e-4
