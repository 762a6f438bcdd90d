"""Exports on the CPU kernels (``export_model(..., cpu_kernels=True)``, ``make export FORMAT=kernels``): their
programs decode exactly as dynamic decoding on the kernels does (``generation.batch_stepper``) -- the same ids and
the same scores, bit for bit -- for text and for captioning; the step writes its keys/values into the buffers fed
to it; the programs share one parameter file; what cannot run them says so. In bfloat16 or int8 (``panel_dtype``)
the panels hold the rounded or quantized weights: the export decodes as the stepper of that type, which decodes as
the float32 panels of the weights they hold."""
import importlib.util
import os

import numpy as np
import paddle
import pytest

from paddle_unimo import UNIMOLMHeadModel, cpu_kernels, get_preset
from paddle_unimo.export import InferenceStepper, export_model
from paddle_unimo.fileio import read_json
from paddle_unimo.generation import ModelStepper, advance, batch_stepper, generate

from test_caption_decoding import SEP, make_model as make_caption_model, start_inputs
from test_cpu_kernels import bfloat16_rounded
from test_export import BEAM, SOURCES, left_padded, make_model
from tools import export_model as export_tool

pytestmark = pytest.mark.skipif(cpu_kernels.kernels() is None, reason="the CPU kernels could not be built here")

SETTINGS = {"greedy": dict(), "beam3": dict(BEAM, num_beams=3), "beam6": dict(BEAM, num_beams=6),
            "sampling": dict(decode_strategy="sampling", seed=7, top_k=5, num_return_sequences=2)}


@pytest.fixture(scope="module", params=[(0, 3.0), (0, 0.0)], ids=["eos3", "long"])
def exported(request, tmp_path_factory):
    model = make_model(*request.param)
    folder = export_model(model, tmp_path_factory.mktemp("export") / "inference", cpu_kernels=True)
    return model, InferenceStepper(folder)


def assert_same_decoding(model, stepper, inputs, **settings):
    """``generate`` through the export gives dynamic decoding's ids and scores on the kernels bit for bit, and
    the ids of the model's own ops."""
    ref_ids, ref_scores = generate(None, **inputs, stepper=batch_stepper(model), **settings)
    ids, scores = generate(None, **inputs, stepper=stepper, **settings)
    np.testing.assert_array_equal(ids.numpy(), ref_ids.numpy())
    np.testing.assert_array_equal(scores.numpy(), ref_scores.numpy())
    np.testing.assert_array_equal(ids.numpy(), generate(model, **inputs, **settings)[0].numpy())


@pytest.mark.parametrize("name", SETTINGS)
def test_kernel_export_decodes_as_dynamic_mode_bit_for_bit(exported, name):
    model, stepper = exported
    for sources in (SOURCES, SOURCES[1:3], SOURCES[2:3]):
        assert_same_decoding(model, stepper, left_padded(sources), max_length=12, **SETTINGS[name])


def test_the_step_writes_its_keys_and_values_into_the_buffers_it_is_fed(exported):
    model, stepper = exported
    b = left_padded(SOURCES)
    args = (b["input_ids"], b["token_type_ids"], b["position_ids"], b["attention_mask"])
    dynamic = batch_stepper(model)
    with paddle.no_grad():
        (ref_logits, ref_state), (logits, state) = dynamic.prefill(*args), stepper.prefill(*args)
        np.testing.assert_array_equal(logits.numpy(), ref_logits.numpy())
        tokens = paddle.argmax(ref_logits, axis=-1, keepdim=True)
        for _ in range(3):  # three steps: slots 0, 1, 2 written in place, the rest still zero
            np.testing.assert_array_equal(advance(stepper, tokens, state).numpy(),
                                          advance(dynamic, tokens, ref_state).numpy())
    assert state.cache.length == 3
    for part in ("generated_k", "generated_v"):
        for mine, ref in zip(getattr(state.cache, part), getattr(ref_state.cache, part)):
            np.testing.assert_array_equal(mine.numpy(), ref.numpy())
            assert np.abs(mine.numpy()[:, :, :3]).min(axis=(0, 1, 3)).max() > 0 and not mine.numpy()[:, :, 3:].any()


def test_kernel_export_manifest_and_one_parameter_file(exported):
    _, stepper = exported
    folder = stepper.folder
    manifest = read_json(os.path.join(folder, "export.json"), "manifest")
    assert manifest["cpu_kernels"] is True and manifest["step"]["outputs"] == ["logits"]
    names = [s["name"] for s in manifest["step"]["inputs"]]
    assert names[:5] == ["tokens", "token_type", "position", "source_bias", "slot"] and "generated_bias" not in names
    assert manifest["step"]["inputs"][4] == {"name": "slot", "shape": [1], "dtype": "int64"}
    prefill, step = (os.path.join(folder, n + ".pdiparams") for n in ("prefill", "step"))
    with open(prefill, "rb") as a, open(step, "rb") as b:
        assert a.read() == b.read()  # the same parameters: the panels, not the layers' own weights, in both


@pytest.mark.parametrize("token_types", [True, False], ids=["chinese", "no_token_types"])
def test_kernel_export_holds_the_panels_not_the_layer_weights(tmp_path, token_types):
    """The layers' (in, out) weights are in none of the kernel export's programs, not even the ones saved unpruned
    (``prefill_regions``; all three for a model without token types, like the English family): each is the plain
    export's size, less those weights, plus the panels (the layers' at 64 columns a panel, and the LM head's); the
    model keeps its weights."""
    model = make_model(0, 0.0)
    if not token_types:
        paddle.seed(0)
        model = UNIMOLMHeadModel(get_preset("tiny", initializer_range=0.3, type_vocab_size=0))
        model.eval()
    layers = [lin.weight for layer in model.unimo.encoder.layers for lin in layer.step_linears()]
    before = [w.numpy().copy() for w in layers]
    plain = export_model(model, tmp_path / "plain")
    kernels = export_model(model, tmp_path / "kern", cpu_kernels=True)
    panel_floats = sum(-(-w.shape[1] // 64) * 64 * w.shape[0] for w in layers)
    head = model.lm_head.decoder_weight
    panel_floats += -(-head.shape[0] // 64) * 64 * head.shape[1]
    moved = 4 * (panel_floats - sum(int(w.numel()) for w in layers))
    for name in ("prefill", "step", "prefill_regions"):
        sizes = [os.path.getsize(os.path.join(folder, name + ".pdiparams")) for folder in (plain, kernels)]
        assert abs(sizes[1] - sizes[0] - moved) < 200 * (len(layers) + 1), name  # each tensor's header in the file
    assert all(np.array_equal(w.numpy(), b) for w, b in zip(layers, before))
    assert_same_decoding(model, InferenceStepper(kernels), left_padded(SOURCES[:3]), max_length=8)


def test_captioning_through_a_kernel_export(tmp_path):
    model = make_caption_model(1, sep_bias=3.0)
    stepper = InferenceStepper(export_model(model, tmp_path / "inference", cpu_kernels=True))
    assert stepper.supports_regions
    for image_kwargs in (dict(num_valid=(4, 2, 3)), dict(num_valid=(1, 3), num_regions=3)):
        inputs, _ = start_inputs(1, **image_kwargs)
        for settings in (dict(), dict(decode_strategy="beam_search", num_beams=3, length_penalty=0.6)):
            assert_same_decoding(model, stepper, inputs, max_length=8, eos_token_id=SEP, **settings)


@pytest.mark.parametrize("options, dtype", [([], "float32"), (["--quantize", "int8"], "int8"),
                                            (["--quantize", "int8_w7"], "int8_w7")])
def test_tool_writes_a_kernel_export(tmp_path, options, dtype):
    model_dir, out = tmp_path / "best", tmp_path / "inference"
    model = make_model(1, 4.0)
    model.save_pretrained(str(model_dir))
    export_tool.main(["--model", str(model_dir), "--out", str(out), "--format", "kernels", *options])
    manifest = read_json(os.path.join(out, "export.json"), "manifest")
    assert manifest["cpu_kernels"] is True and manifest["panel_dtype"] == dtype
    if dtype == "float32":
        assert_same_decoding(model, InferenceStepper(str(out)), left_padded(SOURCES[:2]), max_length=6)
        return
    inputs = left_padded(SOURCES[:2])
    got = generate(None, **inputs, max_length=6, stepper=InferenceStepper(str(out)))
    want = generate(None, **inputs, max_length=6, stepper=ModelStepper(model, True, dtype))
    for mine, ref in zip(got, want):
        np.testing.assert_array_equal(mine.numpy(), ref.numpy())


def test_a_kernel_export_is_refused_where_it_cannot_run(exported, monkeypatch):
    _, stepper = exported
    from paddle_unimo.onnx_export import export_onnx
    with pytest.raises(ValueError, match="cpu_kernels.*ONNX has not"):
        export_onnx(stepper.folder)
    assert not [n for n in os.listdir(stepper.folder) if "onnx" in n]
    if importlib.util.find_spec("onnxruntime") is not None:
        from paddle_unimo.onnx_export import OnnxStepper
        with pytest.raises(FileNotFoundError, match="exported with cpu_kernels, which ONNX has not; export the model "
                                                    "again with --format onnx"):
            OnnxStepper(stepper.folder)
    monkeypatch.setattr(cpu_kernels, "kernels", lambda: None)
    with pytest.raises(RuntimeError, match="exported with cpu_kernels.*could not be built"):
        InferenceStepper(stepper.folder)
    monkeypatch.setenv("PADDLE_UNIMO_CPU_KERNELS", "0")  # turned off, not missing: the message says so
    with pytest.raises(RuntimeError, match="CPU operators, which PADDLE_UNIMO_CPU_KERNELS=0 turns off: unset it"):
        InferenceStepper(stepper.folder)


def test_a_kernel_export_without_the_reordering_table_is_refused(exported, tmp_path):
    """An export on the kernels whose step program has no ``parents`` input (made before beam search reordered
    by that table) is refused with what to do, not run with the wrong operator inputs."""
    import json
    import shutil
    _, stepper = exported
    old = shutil.copytree(stepper.folder, tmp_path / "old")
    manifest = json.loads((old / "export.json").read_text())
    manifest["step"]["inputs"] = [s for s in manifest["step"]["inputs"] if s["name"] != "parents"]
    (old / "export.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="predates the step's 'parents' input.*make export FORMAT=kernels"):
        InferenceStepper(str(old))


def test_bfloat16_panels_decode_as_float_panels_of_the_rounded_weights():
    """``ModelStepper(..., panel_dtype="bfloat16")`` decodes as the float32 panels do once the layers' weights and the
    LM head are rounded to bfloat16: the same ids and scores, bit for bit; on the unrounded model its scores move."""
    model = make_model(0, 3.0)
    b = left_padded(SOURCES)
    half = generate(None, **b, max_length=12, stepper=ModelStepper(model, True, "bfloat16"), **SETTINGS["beam3"])
    full = generate(None, **b, max_length=12, stepper=batch_stepper(model), **SETTINGS["beam3"])
    assert not np.array_equal(half[1].numpy(), full[1].numpy())
    rounded = [lin.weight for layer in model.unimo.encoder.layers for lin in layer.step_linears()]
    for weight in rounded + [model.lm_head.decoder_weight]:
        weight.set_value(bfloat16_rounded(weight.numpy()))
    for name in ("greedy", "beam3"):
        want = generate(None, **b, max_length=12, stepper=batch_stepper(model), **SETTINGS[name])
        got = generate(None, **b, max_length=12, stepper=ModelStepper(model, True, "bfloat16"), **SETTINGS[name])
        for mine, ref in zip(got, want):
            np.testing.assert_array_equal(mine.numpy(), ref.numpy())


@pytest.mark.parametrize("dtype", ["int8", "int8_w7"])
def test_int8_panels_decode_near_the_float_panels(dtype):
    """``ModelStepper(..., panel_dtype="int8")`` (every product of the prefill and the steps by the int8 rule, which
    ``test_cpu_kernels`` checks bit for bit): its logits move from the float32 panels' by the quantization, within
    a few hundredths of their spread, at the prefill and at a step fed the same token; with 7-bit weights
    (``"int8_w7"``) a little further."""
    model = make_model(0, 3.0)
    b = left_padded(SOURCES)
    args = (b["input_ids"], b["token_type_ids"], b["position_ids"], b["attention_mask"])
    steppers = [batch_stepper(model), ModelStepper(model, True, dtype)]
    with paddle.no_grad():
        prefills = [stepper.prefill(*args, max_new_tokens=4) for stepper in steppers]
        tokens = paddle.argmax(prefills[0][0], axis=-1, keepdim=True)
        steps = [stepper.step(tokens, state) for stepper, (_, state) in zip(steppers, prefills)]
    for full, quarter in ((prefills[0][0], prefills[1][0]), (steps[0], steps[1])):
        full, quarter = full.numpy(), quarter.numpy()
        spread = full.max() - full.min()
        assert 0 < np.abs(quarter - full).max() < 0.03 * spread


@pytest.mark.parametrize("dtype", ["bfloat16", "int8", "int8_w7"])
def test_reduced_kernel_export_decodes_as_its_stepper(tmp_path, dtype, capsys):
    """The export in bfloat16 or int8 panels decodes as ``ModelStepper(..., panel_dtype=)``, bit for bit; its
    parameter file is the float32 export's less what the panels save (half their bytes; in int8 a byte a weight, K
    rounded up to 4, and each column's scale and sum, and each panel's levels); the tool refuses the option without
    the kernels (7-bit weights: ONNX too), and both options together."""
    model = make_model(0, 3.0)
    full = export_model(model, tmp_path / "float32", cpu_kernels=True)
    folder = export_model(model, tmp_path / dtype, cpu_kernels=True, panel_dtype=dtype)
    manifest = read_json(os.path.join(folder, "export.json"), "manifest")
    assert manifest["cpu_kernels"] is True and manifest["panel_dtype"] == dtype
    shapes = [lin.weight.shape for layer in model.unimo.encoder.layers for lin in layer.step_linears()] + \
        [model.lm_head.decoder_weight.shape[::-1]]
    panels = [(k, -(-n // 64)) for k, n in shapes]  # (rows, panels) of each weight
    reduced_bytes = (lambda k: 2 * k) if dtype == "bfloat16" else (lambda k: 9 + 4 * -(-k // 4))  # a column's
    saved = sum(count * 64 * (4 * k - reduced_bytes(k)) for k, count in panels)
    size = {f: os.path.getsize(os.path.join(f, "prefill.pdiparams")) for f in (full, folder)}
    assert abs(size[full] - size[folder] - saved) < 200 * len(panels)  # to the per-tensor header
    stepper = InferenceStepper(folder)
    for name in ("greedy", "beam3"):
        inputs = left_padded(SOURCES)
        ref = generate(None, **inputs, max_length=12, stepper=ModelStepper(model, True, dtype), **SETTINGS[name])
        got = generate(None, **inputs, max_length=12, stepper=stepper, **SETTINGS[name])
        for mine, want in zip(got, ref):
            np.testing.assert_array_equal(mine.numpy(), want.numpy())
    with pytest.raises(ValueError, match=f"panel_dtype='{dtype}' needs cpu_kernels=True"):
        export_model(model, tmp_path / "plain", panel_dtype=dtype)
    option = ["--precision", "bfloat16"] if dtype == "bfloat16" else ["--quantize", dtype]
    refusals = [option, ["--precision", "bfloat16", "--quantize", "int8", "--format", "kernels"]]
    if dtype == "int8_w7":
        refusals.append([*option, "--format", "onnx"])
    for refused in refusals:
        with pytest.raises(SystemExit):
            export_tool.run(["--model", "unused", "--out", str(tmp_path / "x"), *refused])
    if dtype == "int8_w7":
        assert "--quantize int8_w7 needs --format kernels" in capsys.readouterr().err
