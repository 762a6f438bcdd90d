"""ONNX export (paddle_unimo/onnx_export.py): every converted program returns what the Paddle Inference program
returns on the same feeds, and decoding through the ONNX programs equals dynamic mode (greedy and beam search,
rows finishing at different steps, captioning from regions). The int8 programs (``quantize="int8"``) hold integer
weights, give logits close to the fp32 programs' and decode mostly the same tokens.

Needs onnxruntime (and, for int8, onnxruntime.quantization, which imports ml_dtypes); without them these tests
skip, or fail when PADDLE_UNIMO_REQUIRE_ONNX=1 (CI)."""
import os
import re
import subprocess
import sys

import numpy as np
import paddle
import pytest

from paddle_unimo import get_preset, masks
from paddle_unimo.export import InferenceStepper, Program, export_model
from paddle_unimo.fileio import DataError, read_json
from paddle_unimo.generation import generate
from paddle_unimo.modeling import UNIMOForRetrieval
from paddle_unimo.onnx_export import (OnnxForward, OnnxProgram, OnnxStepper, export_onnx, map_outputs,
                                      program_names)
from paddle_unimo.typed import ConfigError

from tasks.cli import ExportedModel, load_generator
from test_caption_decoding import SEP, start_inputs
from test_export import BEAM, SOURCES, assert_decodes_as_dynamic_mode, left_padded, make_model
from tools import export_model as export_tool

REQUIRE_ONNX = os.environ.get("PADDLE_UNIMO_REQUIRE_ONNX") == "1"


@pytest.fixture(scope="module")
def onnx_runtime():
    """Skips the test when onnxruntime (or paddle2onnx) is not installed, unless CI requires them."""
    for module in ("onnxruntime", "paddle2onnx"):
        try:
            __import__(module)
        except ImportError:
            message = f"{module} is not installed (pip install {module})"
            if REQUIRE_ONNX:
                pytest.fail(message + " and PADDLE_UNIMO_REQUIRE_ONNX=1")
            pytest.skip(message + "; PADDLE_UNIMO_REQUIRE_ONNX=1 makes this a failure")


class RecordingProgram(Program):
    """A Paddle Inference program that keeps a copy of the feeds it was called with (the stepper writes its cache
    buffers in place), each of the kind it was given: Paddle Inference shares a tensor feed's memory and copies an
    array's, and a handle once shared must not be copied into afterwards."""

    def __init__(self, *args):
        super().__init__(*args)
        self.calls = []

    def __call__(self, **feeds):
        self.calls.append({k: v.clone() if isinstance(v, paddle.Tensor) else np.array(v) for k, v in feeds.items()})
        return super().__call__(**feeds)


def test_onnx_outputs_map_to_ours_by_name_or_position():
    ours = ["logits", "k_cache", "v_cache"]
    assert map_outputs(["v_cache", "logits", "k_cache"], ours, "step") == {n: n for n in ours}
    assert map_outputs(["fetch_name_2", "fetch_name_0", "fetch_name_1"], ours, "step") == \
        {"fetch_name_2": "v_cache", "fetch_name_0": "logits", "fetch_name_1": "k_cache"}
    assert map_outputs(["a", "b", "c"], ours, "step") == {"a": "logits", "b": "k_cache", "c": "v_cache"}
    with pytest.raises(ValueError, match="expected 3"):
        map_outputs(["fetch_name_0", "fetch_name_1"], ours, "step")


# (seed, eos bias) of test_export: greedy and beam outputs of its batches end at several different steps
@pytest.fixture(scope="module", params=[(0, 3.0), (0, 4.0)], ids=["eos3", "eos4"])
def converted(request, onnx_runtime, tmp_path_factory):
    model = make_model(*request.param)
    folder = export_model(model, tmp_path_factory.mktemp("export") / "inference")
    with open(os.path.join(folder, "export.json"), "rb") as f:
        manifest_bytes = f.read()
    written = export_onnx(folder)
    return model, folder, written, manifest_bytes


def test_every_program_is_converted_and_export_json_is_kept(converted):
    _, folder, written, manifest_bytes = converted
    manifest = read_json(os.path.join(folder, "export.json"))
    names = program_names(manifest)
    assert sorted(names) == ["prefill", "prefill_regions", "step"]
    assert written == [os.path.join(folder, n + ".onnx") for n in names] + [os.path.join(folder, "onnx.json")]
    with open(os.path.join(folder, "export.json"), "rb") as f:
        assert f.read() == manifest_bytes
    info = read_json(os.path.join(folder, "onnx.json"))
    assert info["opset"] >= 17 and set(info["programs"]) == set(names)
    assert info["quantization"] is None and not any(n.endswith(".int8.onnx") for n in os.listdir(folder))
    for name in names:
        entry = info["programs"][name]
        assert [(s["name"], s["dtype"]) for s in entry["inputs"]] == \
            [(s["name"], s["dtype"]) for s in manifest[name]["inputs"]]
        assert sorted(entry["outputs"].values()) == sorted(manifest[name]["outputs"])


def test_onnx_programs_equal_paddle_inference_on_the_same_feeds(converted):
    """The feeds every program gets while decoding (greedy, beam search, captioning), replayed through ONNX."""
    _, folder, _, _ = converted
    stepper = InferenceStepper(folder, 1, program_class=RecordingProgram)
    generate(None, **left_padded(SOURCES), max_length=5, stepper=stepper)
    generate(None, **left_padded(SOURCES[:3]), max_length=5, stepper=stepper, **dict(BEAM, num_beams=3))
    generate(None, **start_inputs(0)[0], max_length=4, eos_token_id=SEP, stepper=stepper)
    manifest = read_json(os.path.join(folder, "export.json"))
    for name, program in stepper.programs.items():
        onnx_program = OnnxProgram(folder, name, manifest[name]["outputs"], 1)
        assert onnx_program.inputs == [s["name"] for s in manifest[name]["inputs"]]
        assert program.calls, f"{name} was never run"
        for feeds in program.calls[:4]:
            want, got = program(**feeds), onnx_program(**feeds)
            assert sorted(got) == sorted(want) == sorted(manifest[name]["outputs"])
            for key in want:
                assert got[key].shape == want[key].shape and got[key].dtype == want[key].dtype
                np.testing.assert_allclose(got[key], want[key], atol=1e-5, err_msg=f"{name}.{key}")


@pytest.mark.parametrize("settings", [dict(), dict(BEAM, num_beams=3), dict(BEAM, num_beams=6)],
                         ids=["greedy", "beam3", "beam6"])
def test_generate_through_onnx_equals_dynamic_mode(converted, settings):
    model, folder, _, _ = converted
    finished = assert_decodes_as_dynamic_mode(model, OnnxStepper(folder), settings)
    assert len(finished) > 1, "the test batch should finish at different steps"


@pytest.mark.parametrize("settings", [dict(), dict(BEAM, num_beams=3)], ids=["greedy", "beam3"])
def test_captioning_through_onnx_equals_dynamic_mode(converted, settings):
    model, folder, _, _ = converted
    stepper = OnnxStepper(folder, num_threads=1)
    assert stepper.supports_regions
    for image_kwargs in (dict(num_valid=(4, 2, 3)), dict(num_valid=(1, 3), num_regions=3)):
        inputs, _ = start_inputs(1, **image_kwargs)
        ref_ids, ref_scores = generate(model, **inputs, max_length=8, eos_token_id=SEP, **settings)
        ids, scores = generate(None, **inputs, max_length=8, eos_token_id=SEP, stepper=stepper, **settings)
        np.testing.assert_array_equal(ids.numpy(), ref_ids.numpy())
        np.testing.assert_allclose(scores.numpy(), ref_scores.numpy(), atol=1e-4)


def retrieval_batch(seed, num_valid=(3, 1), length=5):
    """Inputs of the forward program: random regions (some padded) and text ids, the bidirectional mask."""
    rng = np.random.default_rng(seed)
    cfg = get_preset("tiny")
    region_valid = np.arange(3)[None] < np.asarray(num_valid)[:, None]  # (B, R)
    input_ids = rng.integers(5, cfg.vocab_size, (len(num_valid), length))
    input_ids[1, -2:] = cfg.pad_token_id
    keys = np.concatenate([region_valid, input_ids != cfg.pad_token_id], axis=1)
    return dict(input_ids=input_ids, token_type_ids=np.zeros_like(input_ids),
                position_ids=np.tile(np.arange(length), (len(num_valid), 1)),
                attention_mask=masks.may_attend(keys, np.zeros(keys.shape, np.int64)),
                region_feats=rng.normal(size=(len(num_valid), 3, cfg.image_embedding_size)).astype("float32"),
                region_locs=rng.uniform(size=(len(num_valid), 3, 5)).astype("float32"), region_valid=region_valid)


def test_forward_program_of_an_understanding_model(onnx_runtime, tmp_path):
    paddle.seed(3)
    model = UNIMOForRetrieval(get_preset("tiny", initializer_range=0.3))
    model.eval()
    folder = export_model(model, tmp_path / "inference")
    export_onnx(folder)
    onnx_program, program = OnnxProgram(folder, "forward", ["logits"], 1), Program(folder, "forward", ["logits"], 1)
    for seed in (0, 1):
        batch = retrieval_batch(seed)
        with paddle.no_grad():
            want = model(**{k: paddle.to_tensor(v) for k, v in batch.items()}).numpy()
        got = onnx_program(**batch)["logits"]
        assert got.shape == want.shape == (2,)
        np.testing.assert_allclose(got, program(**batch)["logits"], atol=1e-5)
        np.testing.assert_allclose(got, want, atol=1e-5)
        np.testing.assert_array_equal(OnnxForward(folder, num_threads=1)(**batch), got)
        for runtime, name in ((None, "ONNX Runtime, float32 program"), ("paddle", "Paddle Inference")):
            exported = ExportedModel(folder, runtime)  # as predict runs an export, on the runtime it is given
            assert exported.runtime == name
            tensors = {k: paddle.to_tensor(v) for k, v in batch.items()}
            np.testing.assert_allclose(exported(**tensors).numpy(), want, atol=1e-5)


def test_tool_exports_onnx_and_the_stepper_needs_it(onnx_runtime, tmp_path):
    model_dir, out = tmp_path / "best", tmp_path / "inference"
    model = make_model(1, 4.0)
    model.save_pretrained(str(model_dir))
    export_tool.main(["--model", str(model_dir), "--out", str(out)])
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        OnnxStepper(str(out))
    export_tool.main(["--model", str(model_dir), "--out", str(out), "--format", "onnx"])
    assert {"prefill.onnx", "step.onnx", "prefill_regions.onnx", "onnx.json"} <= set(os.listdir(out))
    b = left_padded(SOURCES[:2])
    ids, _ = generate(None, **b, max_length=6, stepper=OnnxStepper(str(out)))
    np.testing.assert_array_equal(ids.numpy(), generate(model, **b, max_length=6)[0].numpy())
    for damaged, stepper, message in ((out / "step.onnx", OnnxStepper, "ONNX Runtime cannot load it"),
                                      (out / "step.pdiparams", InferenceStepper,  # shared with the prefill
                                       ".json/.pdiparams: Paddle Inference cannot load them")):
        kept = damaged.read_bytes()  # a copy cut short: one error naming the file, not the runtime's traceback
        damaged.write_bytes(kept[:len(kept) // 3])
        with pytest.raises(DataError, match=f"{out}.*{re.escape(message)} .*damaged\\? make export"):
            stepper(str(out))
        damaged.write_bytes(kept)


def import_errors(tmp_path, hidden, calls, first="") -> str:
    """Runs each of ``calls`` (statements over ``onnx_export``, ``export_model`` (tools) and ``folder``, a fresh
    export folder) in a new interpreter at the repository root in which the ``hidden`` modules cannot be
    imported, after the statement ``first``; returns its output, each ImportError's message on a line. Checks the
    calls left the folder as it was."""
    folder = export_model(make_model(0, 0.0), tmp_path / "inference")
    before = sorted(os.listdir(folder))
    code = "\n".join(["import sys", *(f"sys.modules[{name!r}] = None" for name in hidden), first,
                      "from paddle_unimo import onnx_export", "from tools import export_model", "folder = sys.argv[1]",
                      *(f"try:\n    {call}\nexcept ImportError as error:\n    print(error)" for call in calls)])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code, folder], cwd=root, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=root), timeout=300)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(folder)) == before
    return result.stdout


def test_missing_packages_are_named_when_used_not_at_import(tmp_path):
    """Runs without onnxruntime: the packages are hidden from a fresh interpreter."""
    lines = import_errors(tmp_path, ("onnxruntime", "paddle2onnx", "onnx"), [
        "onnx_export.OnnxStepper(folder)", "onnx_export.export_onnx(folder)",
        "export_model.run(['--model', folder, '--out', folder, '--format', 'onnx'])"]).strip().splitlines()
    assert len(lines) == 3, lines
    assert "pip install onnxruntime" in lines[0]
    assert "pip install paddle2onnx" in lines[1] and "pip install paddle2onnx" in lines[2]
    # on the command line: one error line and exit status 2, as every user error
    folder = tmp_path / "inference"
    code = ("import sys\nfor name in ('onnxruntime', 'paddle2onnx', 'onnx'):\n    sys.modules[name] = None\n"
            "from tools import export_model\nsys.exit(export_model.main(sys.argv[1:]))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code, "--model", str(folder), "--out", str(tmp_path / "again"),
                             "--format", "onnx"], cwd=root, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=root), timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1 and "pip install paddle2onnx" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


# ---- int8 ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def onnx_quantization(onnx_runtime):
    """Skips the test when onnxruntime.quantization cannot be imported (it needs ml_dtypes), unless CI requires it."""
    try:
        __import__("onnxruntime.quantization")
    except ImportError as error:
        message = f"onnxruntime.quantization cannot be imported ({error})"
        if REQUIRE_ONNX:
            pytest.fail(message + " and PADDLE_UNIMO_REQUIRE_ONNX=1")
        pytest.skip(message + "; PADDLE_UNIMO_REQUIRE_ONNX=1 makes this a failure")


@pytest.fixture(scope="module")
def quantized(onnx_quantization, tmp_path_factory):
    """test_export's tiny model (seed 0, eos bias 4: logits std ~2.3, a median top-1/top-2 gap ~0.5-0.7),
    exported and converted with its int8 programs."""
    model = make_model(0, 4.0)
    folder = export_model(model, tmp_path_factory.mktemp("int8") / "inference")
    return model, folder, export_onnx(folder, quantize="int8")


def matmul_weights(path):
    """(MatMul nodes with a constant weight, the dtypes of the MatMulInteger nodes' weights) of an ONNX file."""
    import onnx
    graph = onnx.load(path).graph
    constants = {i.name: i.data_type for i in graph.initializer}
    constants.update({o: n.attribute[0].t.data_type for n in graph.node if n.op_type == "Constant" for o in n.output})
    fp32 = [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in constants]
    return fp32, [onnx.TensorProto.DataType.Name(constants.get(n.input[1], 0))
                  for n in graph.node if n.op_type == "MatMulInteger"]


def test_int8_programs_are_written_with_integer_weights(quantized):
    model, folder, written = quantized
    names = program_names(read_json(os.path.join(folder, "export.json")))
    assert written == [os.path.join(folder, n + ext) for n in names for ext in (".onnx", ".int8.onnx")] + \
        [os.path.join(folder, "onnx.json")]
    info = read_json(os.path.join(folder, "onnx.json"))
    assert info["quantization"] == "int8" and info["int8_settings"]["weight_type"] == "QUInt8"
    layers = model.config.num_hidden_layers
    for name in names:
        assert info["programs"][name]["int8_file"] == name + ".int8.onnx"
        fp32_file, int8_file = (os.path.join(folder, name + ext) for ext in (".onnx", ".int8.onnx"))
        assert os.path.getsize(int8_file) < 0.75 * os.path.getsize(fp32_file)  # the fp32 embeddings stay
        assert len(matmul_weights(fp32_file)[0]) >= 6 * layers  # fp32 MatMuls of constant weights ...
        left, integer = matmul_weights(int8_file)
        assert left == []  # ... none left: uint8 weights of MatMulIntegers (q, k, v, out, 2 FFN; LM head: 2)
        assert integer == ["UINT8"] * len(integer) and len(integer) >= 6 * layers + 2
    assert len(matmul_weights(os.path.join(folder, "step.int8.onnx"))[1]) == 6 * layers + 2


class RecordingOnnxProgram(OnnxProgram):
    """An ONNX program that keeps a copy of the feeds it was called with (the stepper writes its buffers in place)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def __call__(self, **feeds):
        self.calls.append({k: v.clone() if isinstance(v, paddle.Tensor) else np.array(v) for k, v in feeds.items()})
        return super().__call__(**feeds)


def test_int8_outputs_are_close_to_fp32_on_the_same_feeds(quantized):
    """Relative error ||int8 - fp32|| / ||fp32|| of each program's outputs over the feeds of greedy, beam and
    captioning decodings; measured on this model: logits 0.016 (step), 0.019 (prefill), 0.034 (prefill_regions),
    keys/values 0.010-0.017, the same top-1 token in every row; the step program of another seed's model: 1.35.
    Zero would mean the fp32 programs ran."""
    _, folder, _ = quantized
    fp32 = OnnxStepper(folder, 1, int8=False)
    recording = InferenceStepper(folder, 1, program_class=RecordingOnnxProgram)
    assert not fp32.int8 and all(p.path.endswith(n + ".onnx") for n, p in recording.programs.items())
    generate(None, **left_padded(SOURCES), max_length=5, stepper=recording)
    generate(None, **left_padded(SOURCES[:3]), max_length=5, stepper=recording, **dict(BEAM, num_beams=3))
    generate(None, **start_inputs(0)[0], max_length=4, eos_token_id=SEP, stepper=recording)
    manifest = read_json(os.path.join(folder, "export.json"))
    for name, program in recording.programs.items():
        int8 = OnnxProgram(folder, name, manifest[name]["outputs"], 1, int8=True)
        assert int8.path.endswith(name + ".int8.onnx") and program.calls
        for key in manifest[name]["outputs"]:
            want = [fp32.programs[name](**feeds)[key] for feeds in program.calls]
            got = [int8(**feeds)[key] for feeds in program.calls]
            assert [g.shape for g in got] == [w.shape for w in want]
            error = np.linalg.norm(np.concatenate([(g - w).ravel() for g, w in zip(got, want)]))
            relative = error / np.linalg.norm(np.concatenate([w.ravel() for w in want]))
            assert 1e-4 < relative < 0.05, f"{name}.{key}: relative error {relative:.4f}"
            if key == "logits":
                same = np.concatenate([g.argmax(-1) == w.argmax(-1) for g, w in zip(got, want)])
                assert same.mean() >= 0.9, f"{name}: top-1 token of {same.mean():.0%} of the rows"


@pytest.mark.parametrize("settings,least", [(dict(), 0.9), (dict(BEAM, num_beams=3), 0.75)], ids=["greedy", "beam3"])
def test_generate_through_int8_mostly_agrees_with_fp32(quantized, settings, least):
    """Equal tokens (at the same positions, -1 after a row's end) of int8 and fp32 decodings of three batches;
    measured: all of them greedy, 95% with beam 3; 27% greedy with the int8 step program of another seed's model."""
    _, folder, _ = quantized
    int8, fp32 = OnnxStepper(folder), OnnxStepper(folder, int8=False)
    assert int8.int8 and all(p.path.endswith(".int8.onnx") for p in int8.programs.values())
    equal = []
    for sources in (SOURCES, SOURCES[1:3], SOURCES[2:3]):
        b = left_padded(sources)
        want = generate(None, **b, max_length=12, stepper=fp32, **settings)[0].numpy()
        got = generate(None, **b, max_length=12, stepper=int8, **settings)[0].numpy()
        width = max(want.shape[1], got.shape[1])  # rows end at eos, padded after it
        pad = lambda ids: np.pad(ids, ((0, 0), (0, width - ids.shape[1])), constant_values=-1)  # noqa: E731
        equal.append((pad(got) == pad(want)).ravel())
    assert np.concatenate(equal).mean() >= least


def test_tool_exports_int8_only_with_onnx(onnx_quantization, tmp_path, capsys):
    model_dir, out = tmp_path / "best", tmp_path / "inference"
    model = make_model(0, 4.0)
    model.save_pretrained(str(model_dir))
    for bad in (["--quantize", "int8"], ["--format", "paddle", "--quantize", "int8"], ["--format", "onnx",
                                                                                      "--quantize", "int4"]):
        with pytest.raises(SystemExit) as exit_info:
            export_tool.main(["--model", str(model_dir), "--out", str(out), *bad])
        assert exit_info.value.code == 2 and not out.exists()
    assert "--quantize int8 needs --format kernels or onnx" in capsys.readouterr().err
    export_tool.main(["--model", str(model_dir), "--out", str(out), "--format", "onnx", "--quantize", "int8"])
    assert {"prefill.int8.onnx", "step.int8.onnx", "prefill_regions.int8.onnx"} <= set(os.listdir(out))
    stepper = OnnxStepper(str(out))
    assert stepper.int8
    b = left_padded(SOURCES[:2])
    ids, _ = generate(None, **b, max_length=6, stepper=stepper)
    assert ids.shape == generate(model, **b, max_length=6)[0].shape
    # converting again without int8 removes the int8 files; the stepper follows onnx.json
    with pytest.raises(ValueError, match="allowed"):
        export_onnx(str(out), quantize="int4")
    export_onnx(str(out))
    assert not [n for n in os.listdir(out) if n.endswith(".int8.onnx")]
    assert read_json(os.path.join(out, "onnx.json"))["quantization"] is None
    assert not OnnxStepper(str(out)).int8
    with pytest.raises(FileNotFoundError, match="quantize='int8'"):
        OnnxStepper(str(out), int8=True)


def test_missing_quantization_package_is_named_before_anything_is_written(onnx_runtime, tmp_path):
    """onnxruntime.quantization imports ml_dtypes, which the onnxruntime wheel does not install: hidden here."""
    first = ("try:\n    import onnxruntime.quantization\n    print('SKIP: onnxruntime.quantization imports without "
             "ml_dtypes')\n    sys.exit(0)\nexcept ImportError:\n    pass")
    out = import_errors(tmp_path, ["ml_dtypes"], [
        "onnx_export.export_onnx(folder, quantize='int8')",
        "export_model.run(['--model', folder, '--out', folder, '--format', 'onnx', '--quantize', 'int8'])"], first)
    if out.startswith("SKIP"):
        pytest.skip(out.strip())
    lines = out.strip().splitlines()
    assert len(lines) == 2 and all("pip install ml_dtypes" in line for line in lines), out


def test_runtime_chooses_the_programs_of_a_converted_export(quantized, tmp_path):
    """An export converted with int8 programs decodes in int8 by default; ``runtime`` runs its float32 ONNX
    programs or its Paddle programs instead (both: dynamic mode's ids), and is refused where it cannot apply."""
    model, folder, _ = quantized
    default, onnx_fp32, inference = (load_generator(folder, r) for r in (None, "onnx_fp32", "paddle"))
    assert isinstance(default, OnnxStepper) and default.int8
    assert isinstance(onnx_fp32, OnnxStepper) and not onnx_fp32.int8
    assert (default.runtime, onnx_fp32.runtime) == ("ONNX Runtime, int8 programs", "ONNX Runtime, float32 programs")
    assert not isinstance(inference, OnnxStepper) and isinstance(inference, InferenceStepper)
    assert load_generator(folder, "onnx").int8
    for stepper in (onnx_fp32, inference):
        assert_decodes_as_dynamic_mode(model, stepper, {})
    plain = export_model(model, tmp_path / "inference")
    with pytest.raises(ConfigError, match="has no ONNX programs.*FORMAT=onnx"):
        load_generator(plain, "onnx_fp32")
    assert type(load_generator(plain, "paddle")) is InferenceStepper
    with pytest.raises(ConfigError, match="'gpu': allowed paddle, onnx, onnx_fp32"):
        load_generator(folder, "gpu")
    model.save_pretrained(str(tmp_path / "best"))
    with pytest.raises(ConfigError, match="not an export"):
        load_generator(str(tmp_path / "best"), "paddle")

