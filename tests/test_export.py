"""Paddle Inference export: the exported prefill/step programs decode exactly like the dynamic model."""
import os

import numpy as np
import paddle
import pytest

from paddle_unimo import UNIMOLMHeadModel, WordPieceTokenizer, get_preset, load_tokenizer, masks
from paddle_unimo.export import InferenceStepper, export_model
from paddle_unimo.generation import generate

from conftest import assert_exported_step_matches
from tools import export_model as export_tool

PAD, CLS, EOS = 2, 3, 4  # the tiny preset's ids
SOURCES = [[CLS, 10, 11, 12, 1], [CLS, 20, 1], [CLS, 30, 31, 32, 33, 34, 35, 1], [CLS, 40, 41, 1],
           [CLS, 50, 51, 52, 53, 54, 55, 56, 57, 58, 1]]


def make_model(seed, eos_bias):
    paddle.seed(seed)
    model = UNIMOLMHeadModel(get_preset("tiny", initializer_range=0.3))
    bias = model.lm_head.decoder_bias.numpy()
    bias[EOS] = eos_bias  # a likelier eos makes rows finish at different steps
    model.lm_head.decoder_bias.set_value(bias)
    model.eval()
    return model


def left_padded(sources):
    batch = masks.seq2seq_inputs(sources, [[CLS]] * len(sources), PAD, position_start=0, left_pad=True)
    return {k: paddle.to_tensor(v) for k, v in batch.items() if k != "valid"}


def finish_steps(ids):
    return {int(np.argmax(row == EOS)) if (row == EOS).any() else -1 for row in ids}


def assert_decodes_as_dynamic_mode(model, stepper, settings) -> set:
    """``generate`` through ``stepper`` gives dynamic mode's ids (and scores) on three batches of SOURCES; returns
    the steps at which the rows finished."""
    finished = set()
    for sources in (SOURCES, SOURCES[1:3], SOURCES[2:3]):
        b = left_padded(sources)
        ref_ids, ref_scores = generate(model, **b, max_length=12, **settings)
        ids, scores = generate(None, **b, max_length=12, stepper=stepper, **settings)
        np.testing.assert_array_equal(ids.numpy(), ref_ids.numpy())
        np.testing.assert_allclose(scores.numpy(), ref_scores.numpy(), atol=1e-4)
        finished |= finish_steps(ref_ids.numpy())
    return finished


# (seed, eos bias): with 3.0 and 4.0 greedy and beam outputs of this batch end at several different steps
@pytest.fixture(scope="module", params=[(0, 3.0), (0, 4.0), (0, 0.0)], ids=["eos3", "eos4", "long"])
def exported(request, tmp_path_factory):
    model = make_model(*request.param)
    folder = export_model(model, tmp_path_factory.mktemp("export") / "inference")
    return model, InferenceStepper(folder)


def additive(mask):
    """PaddleNLP's float mask (N, 1, L, L) from a bool one."""
    return paddle.where(mask, paddle.zeros([1]), paddle.full([1], -1e4)).unsqueeze(1)


def mask_forms(b):
    """Every mask form the dynamic model accepts, for the batch ``b``: its seq2seq mask as bool (N, L, L),
    (N, 1, L, L), int and PaddleNLP's float (N, 1, L, L); the key validity as bool (N, L) and as PaddleNLP's
    default float (N, 1, 1, L)."""
    valid = b["input_ids"] != PAD
    return {"bool": b["attention_mask"], "bool4": b["attention_mask"].unsqueeze(1),
            "int": b["attention_mask"].astype("int64"), "float": additive(b["attention_mask"]),
            "keys_bool": valid, "keys_float": ((~valid).astype("float32") * -1e4).unsqueeze([1, 2]), "none": None}


@pytest.mark.parametrize("mask_form", ["bool", "bool4", "int", "float", "keys_bool", "keys_float", "none"])
def test_prefill_and_step_match_dynamic_mode(exported, mask_form):
    model, stepper = exported
    b = left_padded(SOURCES)
    mask = mask_forms(b)[mask_form]
    args = (b["input_ids"], b["token_type_ids"], b["position_ids"], mask)
    state = assert_exported_step_matches(model, stepper, args)
    # the source's keys as the prefill left them, the step's in the first generated slot
    assert len(state.cache.source_k) == 2 and state.cache.source_k[0].shape == [len(SOURCES), 4, b["input_ids"].shape[1], 9]
    assert state.cache.length == 1 and len(state.cache.generated_k) == 2
    assert state.cache.generated_k[0].shape[0] == len(SOURCES)


BEAM = dict(decode_strategy="beam_search", length_penalty=1.2, min_length=2)


@pytest.mark.parametrize("settings", [dict(), dict(BEAM, num_beams=3), dict(BEAM, num_beams=6),
                                      dict(decode_strategy="sampling", seed=7, top_k=5, num_return_sequences=2)],
                         ids=["greedy", "beam3", "beam6", "sampling"])
def test_generate_through_the_export_equals_dynamic_mode(exported, settings):
    model, stepper = exported
    finished = assert_decodes_as_dynamic_mode(model, stepper, settings)
    if settings.get("decode_strategy") != "sampling" and model.lm_head.decoder_bias.numpy()[EOS] > 0:
        assert len(finished) > 1, "the test batch should finish at different steps"


def test_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    model = make_model(0, 0.0)
    previous = export_model(model, tmp_path / "inference")
    before = {n: os.path.getmtime(os.path.join(previous, n)) for n in os.listdir(previous)}

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(paddle.jit, "save", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(model, tmp_path / "fresh")
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(model, tmp_path / "inference")
    assert sorted(os.listdir(tmp_path)) == ["inference"]  # no temporary folder, no half export
    assert {n: os.path.getmtime(os.path.join(previous, n)) for n in os.listdir(previous)} == before


def test_export_refuses_to_replace_a_folder_that_is_not_an_export(tmp_path):
    model_dir = tmp_path / "best"
    make_model(0, 0.0).save_pretrained(str(model_dir))
    with pytest.raises(FileExistsError, match="refusing"):
        export_model(make_model(0, 0.0), model_dir)
    assert sorted(os.listdir(model_dir)) == ["config.json", "model_state.pdparams"]


def test_tool_exports_a_model_folder_with_its_tokenizer(tmp_path):
    model_dir, out = tmp_path / "best", tmp_path / "inference"
    model = make_model(1, 4.0)
    model.save_pretrained(str(model_dir))
    WordPieceTokenizer.build_char_vocab(["abc"]).save_pretrained(str(model_dir))
    export_tool.main(["--model", str(model_dir), "--out", str(out)])
    assert {"prefill.json", "prefill.pdiparams", "step.json", "step.pdiparams", "config.json",
            "vocab.txt"} <= set(os.listdir(out))
    assert load_tokenizer(str(out)).vocab == load_tokenizer(str(model_dir)).vocab
    b = left_padded(SOURCES[:2])
    ids, _ = generate(None, **b, max_length=6, stepper=InferenceStepper(str(out)))
    np.testing.assert_array_equal(ids.numpy(), generate(model, **b, max_length=6)[0].numpy())


@pytest.mark.parametrize("mask_form", ["bool4", "keys_bool", "keys_float"])
def test_generate_through_the_export_takes_every_mask_form(exported, mask_form):
    model, stepper = exported
    b = left_padded(SOURCES[:3])
    mask = mask_forms(b)[mask_form]
    inputs = dict(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], position_ids=b["position_ids"],
                  attention_mask=mask)
    ref_ids, _ = generate(model, **inputs, max_length=8, **dict(BEAM, num_beams=3))
    ids, _ = generate(None, **inputs, max_length=8, stepper=stepper, **dict(BEAM, num_beams=3))
    np.testing.assert_array_equal(ids.numpy(), ref_ids.numpy())
    if mask_form.startswith("keys"):  # key validity = no mask: bidirectional over the non-pad tokens
        none_ids, _ = generate(None, **{**inputs, "attention_mask": None}, max_length=8, stepper=stepper,
                               **dict(BEAM, num_beams=3))
        np.testing.assert_array_equal(ids.numpy(), none_ids.numpy())


@pytest.mark.parametrize("case", ["no rows", "no tokens", "a row of pads"])
def test_exported_stepper_refuses_empty_inputs(exported, case):
    """Paddle Inference crashes the process on empty inputs: they are refused before they reach it."""
    _, stepper = exported
    b = left_padded(SOURCES[:2])
    ids, types, pos = (b[k].numpy() for k in ("input_ids", "token_type_ids", "position_ids"))
    pads = ids.copy()
    pads[0] = PAD
    select = {"no rows": (slice(0, 0), slice(None)), "no tokens": (slice(None), slice(0, 0)),
              "a row of pads": (slice(None), slice(None))}[case]
    ids = pads if case == "a row of pads" else ids
    args = [paddle.to_tensor(x[select]) for x in (ids, types, pos)]
    message = {"no rows": "no rows", "no tokens": "length 0", "a row of pads": "only pad"}[case]
    with pytest.raises(ValueError, match=message):
        stepper.prefill(*args, None)
    with pytest.raises(ValueError, match=message):
        generate(None, *args, stepper=stepper, max_length=3)
