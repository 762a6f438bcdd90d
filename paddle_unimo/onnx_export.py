"""ONNX export of a Paddle Inference export folder, and the stepper that decodes with ONNX Runtime.

``export_onnx(folder)`` converts every program that ``export.json`` of a folder written by
``export.export_model`` lists (``prefill``, ``step``, ``prefill_regions``, or ``forward``; see
``paddle_unimo/export.py``) to ``<name>.onnx`` beside it with paddle2onnx, and writes ``onnx.json``:

* ``paddle2onnx_version``, ``opset`` (the highest default-domain opset of the written models);
* ``quantization``: null, or ``"int8"`` when the int8 programs below were written, with ``int8_settings``;
* ``programs``: for each program its ``file``, its ``inputs`` as the ONNX graph declares them (name, dtype,
  shape with -1 for a dynamic axis) and ``outputs``, the ONNX output names mapped to the names of
  ``export.json`` (paddle2onnx names them ``fetch_name_<position>``); with int8, ``int8_file``.

``export_onnx(folder, quantize="int8")`` also writes ``<name>.int8.onnx`` for each program (the fp32 files stay):
ONNX Runtime's dynamic quantization (``onnxruntime.quantization.quantize_dynamic``; see
https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html) of every MatMul with a constant
weight, i.e. every linear layer and the tied LM head: weights uint8 per output channel, activations uint8
quantized at run time per tensor, integer matmuls. The attention products (both sides activations), the
embeddings and the layer norms stay fp32. A decoding step of a few rows reads all the weights once, so reading
a quarter of the bytes is what makes it faster. The logits differ slightly from fp32, so the ids may too: on the
千言 demo's trained tiny models 0-4 of 40 predictions per task changed and BLEU-4 moved by up to 0.9. uint8
weights rather than int8: on x86 without VNNI the u8 x s8 kernel (VPMADDUBSW) can saturate, the u8 x u8 one
cannot, and per-channel uint8 changed the fewest predictions of the int8/uint8, per-tensor/per-channel choices.
paddle2onnx writes the weights as Constant nodes and the LM head's weight as a Transpose of the word
embeddings, which ``quantize_dynamic`` does not see as weights, so each program is first folded into
initializers by ONNX Runtime's basic graph optimizations (what ``quant_pre_process`` does).

``export.json`` itself is left as it is. The ONNX programs take and return exactly what the Paddle programs
do, so ``OnnxStepper(folder)`` is ``export.InferenceStepper`` with ``OnnxProgram`` in place of its Paddle
Inference programs and plugs into ``generation.generate`` the same way; it runs the int8 programs when
``onnx.json`` says they were written (``OnnxStepper(folder, int8=False)``: the fp32 ones); ``OnnxForward(folder)``
is ``export.InferenceForward`` (an understanding model's ``forward`` program) on ONNX Runtime alike. Decoding::

    from paddle_unimo.onnx_export import OnnxStepper, export_onnx
    export_onnx("OUT/inference")           # or: python -m tools.export_model ... --format onnx [--quantize int8]
    ids, scores = generate(None, **inputs, stepper=OnnxStepper("OUT/inference"), decode_strategy="beam_search",
                           num_beams=5, max_length=50)

paddle2onnx's optional optimizer step (``optimize_tool``, by default polygraphy, which installs packages
at run time) is not used: the model is converted as it is, and ONNX Runtime optimizes the graph when it
loads it. onnxruntime, its quantization tool and paddle2onnx are imported only when these functions are called;
a missing one is an ImportError that says what to install.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import re
import tempfile
from typing import Dict, List

import numpy as np
import paddle

from .export import CPU_KERNELS, MANIFEST, InferenceForward, InferenceStepper
from .fileio import DataError, atomic_save, atomic_write, first_line, read_json, write_json
from .typed import MissingPackage

ONNX_MANIFEST = "onnx.json"
OPSET = 17  # paddle2onnx raises it by itself when an operator needs a newer one
QUANTIZATIONS = ("int8",)
INT8_SUFFIX = ".int8.onnx"
INT8_SETTINGS = {"method": "onnxruntime.quantization.quantize_dynamic", "op_types": ["MatMul"],
                 "weight_type": "QUInt8", "per_channel": True, "activations": "uint8, dynamic, per tensor"}

# ONNX Runtime's type strings -> numpy dtypes, for the types the exported programs take
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
               "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def require(module: str, purpose: str):
    """``import module``, or an ImportError naming the package to install: the module's own, or the one it
    failed to import (``onnxruntime.quantization`` needs ``ml_dtypes``, which onnxruntime does not install)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = (error.name or module).split(".")[0]
        if missing == module.split(".")[0]:
            raise MissingPackage(f"{purpose} needs the {missing} package, which is not installed: "
                                 f"pip install {missing}") from error
        raise MissingPackage(f"{purpose} needs {module}, which needs the {missing} package, which is not "
                             f"installed: pip install {missing}") from error


def program_names(manifest: dict) -> List[str]:
    """The programs an ``export.json`` lists: its entries with inputs and outputs (not e.g. paddle_version)."""
    return [name for name, entry in manifest.items()
            if isinstance(entry, dict) and "inputs" in entry and "outputs" in entry]


def map_outputs(found: List[str], expected: List[str], program: str) -> Dict[str, str]:
    """ONNX output name -> our name (``export.json``'s). Names that are already ours map to themselves;
    paddle2onnx's ``fetch_name_<i>`` map by the position in their name; any other names by their position in
    the graph, which is the order of the program's outputs."""
    if len(found) != len(expected):
        raise ValueError(f"{program}: the ONNX model has outputs {found}, expected {len(expected)}: {expected}")
    if sorted(found) == sorted(expected):
        return {name: name for name in found}
    positions = [re.fullmatch(r"fetch_name_(\d+)", name) for name in found]
    if all(positions) and sorted(int(m.group(1)) for m in positions) == list(range(len(expected))):
        return {name: expected[int(m.group(1))] for name, m in zip(found, positions)}
    return dict(zip(found, expected))


def _describe(value_info, onnx) -> dict:
    """An ONNX graph input -> {name, dtype, shape (-1: dynamic)}, as ``export.json`` describes its inputs."""
    tensor = value_info.type.tensor_type
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
    shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    return {"name": value_info.name, "dtype": dtype, "shape": shape}


def _convert(paddle2onnx, folder: str, name: str) -> bytes:
    """One program of the folder as a serialized ONNX model."""
    model_file, params_file = (os.path.join(folder, name + ext) for ext in (".json", ".pdiparams"))
    for path in (model_file, params_file):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: {folder} lists program {name!r} in {MANIFEST} without it")
    try:
        # save_file=None returns the bytes and skips the optimize_tool step
        model = paddle2onnx.export(model_file, params_file, save_file=None, opset_version=OPSET,
                                   enable_onnx_checker=True, optimize_tool="None")
    except UnboundLocalError:  # paddle2onnx 2.1 logs a failed conversion, then returns an unset variable
        model = None
    if not isinstance(model, bytes) or not model:
        raise RuntimeError(f"paddle2onnx could not convert {model_file} (its log above says why)")
    return model


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization logs each tensor it leaves alone at INFO on the root logger: WARNING meanwhile."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(source: str, target: str) -> None:
    """``source`` (an fp32 ONNX program) -> ``target``, its int8 twin (``INT8_SETTINGS``, see the module doc).

    The constants are first folded into initializers by ONNX Runtime's basic optimizations, marked as
    pre-processed as ``quant_pre_process`` marks them; a program in which nothing was quantized is an error."""
    onnx, ort = require("onnx", "int8 quantization"), require("onnxruntime", "int8 quantization")
    quantization = require("onnxruntime.quantization", "int8 quantization")
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(target))) as scratch:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = os.path.join(scratch, "folded.onnx")
        options.log_severity_level = 3  # not the warnings about paddle2onnx's unused constants
        ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        folded = onnx.load(options.optimized_model_filepath)
        onnx.helper.set_model_props(folded, {"onnx.quant.pre_process": "onnxruntime.quant"})

        def write(path):
            with _quiet_root_logger():
                quantization.quantize_dynamic(folded, path, op_types_to_quantize=INT8_SETTINGS["op_types"],
                                              per_channel=INT8_SETTINGS["per_channel"],
                                              weight_type=quantization.QuantType.QUInt8)
            quantized = onnx.load(path, load_external_data=False)
            if not any(node.op_type == "MatMulInteger" for node in quantized.graph.node):
                raise RuntimeError(f"quantizing {source} changed no MatMul: it has no constant weights")
        atomic_save(target, write)


def export_onnx(folder: str, quantize: str | None = None) -> List[str]:
    """Converts every program ``export.json`` of ``folder`` lists to ``<name>.onnx`` and, with
    ``quantize="int8"``, to ``<name>.int8.onnx`` too; writes ``onnx.json`` (see the module doc). Returns the
    written paths, ``onnx.json`` last.

    Each file is written to a temporary name and renamed, so a failure leaves no half-written file; a previous
    ``onnx.json`` is removed first, so that one is present only beside a complete conversion, and previous int8
    files are removed by a conversion without int8."""
    if quantize not in (None, *QUANTIZATIONS):
        raise ValueError(f"quantize={quantize!r}; allowed: None, {', '.join(map(repr, QUANTIZATIONS))}")
    paddle2onnx, onnx = require("paddle2onnx", "ONNX export"), require("onnx", "ONNX export")
    if quantize:  # before converting anything
        ort = require("onnxruntime", "int8 quantization")
        require("onnxruntime.quantization", "int8 quantization")
    manifest = read_json(os.path.join(folder, MANIFEST), "export manifest")
    if manifest.get(CPU_KERNELS):
        raise ValueError(f"{folder} was exported with cpu_kernels: its programs run paddle_unimo's CPU operators, "
                         "which ONNX has not; convert an export without them (export_model(..., cpu_kernels=False),"
                         " make export FORMAT=onnx)")
    names = program_names(manifest)
    if not names:
        raise ValueError(f"{os.path.join(folder, MANIFEST)} lists no programs")
    info_path = os.path.join(folder, ONNX_MANIFEST)
    if os.path.exists(info_path):
        os.remove(info_path)
    programs, opsets, written = {}, [], []
    for name in names:
        data = _convert(paddle2onnx, folder, name)
        model = onnx.load_from_string(data)
        inputs = [_describe(v, onnx) for v in model.graph.input]
        unknown = {s["name"] for s in inputs} - {s["name"] for s in manifest[name]["inputs"]}
        if unknown:
            raise ValueError(f"{name}: the ONNX model takes inputs {sorted(unknown)} that {MANIFEST} does not list")
        outputs = map_outputs([v.name for v in model.graph.output], manifest[name]["outputs"], name)
        opsets += [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
        path = os.path.join(folder, name + ".onnx")
        atomic_write(path, data)
        written.append(path)
        programs[name] = {"file": name + ".onnx", "inputs": inputs, "outputs": outputs}
        int8_path = os.path.join(folder, name + INT8_SUFFIX)
        if quantize == "int8":
            quantize_int8(path, int8_path)
            written.append(int8_path)
            programs[name]["int8_file"] = name + INT8_SUFFIX
        elif os.path.exists(int8_path):
            os.remove(int8_path)
    info = {"paddle2onnx_version": paddle2onnx.__version__, "opset": max(opsets), "quantization": quantize}
    if quantize:
        info["int8_settings"] = {**INT8_SETTINGS, "onnxruntime_version": ort.__version__}
    write_json(info_path, {**info, "programs": programs})
    return written + [info_path]


def _array(value) -> np.ndarray:
    """A numpy view of a CPU paddle tensor (DLPack, no copy), a copy of any other tensor, or ``np.asarray``."""
    if isinstance(value, paddle.Tensor):
        return np.from_dlpack(value) if value.place.is_cpu_place() else value.numpy()
    return np.asarray(value)


class OnnxProgram:
    """One ``<name>.onnx`` (``int8``: ``<name>.int8.onnx``) of an export folder under ONNX Runtime on CPU, fed
    and read like ``export.Program``: ``inputs`` (the names the graph takes), ``__call__(**feeds) -> {our output
    name: array}``. Feeds may be numpy arrays or paddle tensors (a CPU tensor is read in place, not copied: the
    decoding caches); each is cast to the dtype the graph declares. Feeds the graph does not take are ignored,
    as ``export.Program`` does.

    The session's threads do not spin-wait for work after a run: between two steps the decoding's own paddle
    ops run on the same cores. Spinning made int8 decoding up to 2x slower while other work shared the cores,
    and was at best ~10% faster on a quiet machine (2 cores)."""

    def __init__(self, folder: str, name: str, outputs: List[str], num_threads: int, int8: bool = False):
        ort = require("onnxruntime", "running an ONNX export")
        path = os.path.join(folder, name + (INT8_SUFFIX if int8 else ".onnx"))
        if not os.path.isfile(path):
            if read_json(os.path.join(folder, MANIFEST), "export manifest").get(CPU_KERNELS):
                raise FileNotFoundError(f"{path} not found: {folder} was exported with cpu_kernels, which ONNX has "
                                        "not; export the model again with --format onnx (make export FORMAT=onnx)")
            how = (", quantize='int8') or `python -m tools.export_model ... --format onnx --quantize int8`" if int8
                   else ") or `python -m tools.export_model ... --format onnx`")
            raise FileNotFoundError(f"{path} not found: convert the export first with "
                                    f"paddle_unimo.onnx_export.export_onnx(folder{how}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # not the warnings about paddle2onnx's unused constants
        self.name, self.path = name, path
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # a file cut short, or not ONNX
            raise DataError(f"{path}: ONNX Runtime cannot load it ({type(e).__name__}: {first_line(e)}); damaged? "
                            "make export FORMAT=onnx writes it again") from e
        graph_inputs = self.session.get_inputs()
        self.inputs = [i.name for i in graph_inputs]
        self.dtypes = {i.name: _ORT_DTYPES.get(i.type) for i in graph_inputs}
        unsupported = [f"{i.name}: {i.type}" for i in graph_inputs if self.dtypes[i.name] is None]
        if unsupported:
            raise ValueError(f"{path}: inputs of unsupported types {unsupported}")
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.outputs = map_outputs(self.output_names, list(outputs), name)

    def __call__(self, **feeds) -> Dict[str, np.ndarray]:
        arrays = {}
        for name in self.inputs:
            if name not in feeds:
                raise KeyError(f"{self.name}: input {name!r} not given (have {sorted(feeds)})")
            arrays[name] = np.ascontiguousarray(_array(feeds[name]), dtype=self.dtypes[name])
        results = self.session.run(self.output_names, arrays)
        return {self.outputs[theirs]: value for theirs, value in zip(self.output_names, results)}


def is_converted(folder: str) -> bool:
    """Whether the export ``folder`` was converted to ONNX (``export_onnx`` wrote its ``onnx.json``)."""
    return os.path.isfile(os.path.join(folder, ONNX_MANIFEST))


def quantization_of(folder: str) -> str | None:
    """What ``onnx.json`` of ``folder`` says its conversion added (``"int8"``), None without one."""
    path = os.path.join(folder, ONNX_MANIFEST)
    return read_json(path, "ONNX manifest").get("quantization") if is_converted(folder) else None


class OnnxStepper(InferenceStepper):
    """``export.InferenceStepper`` running the folder's ONNX programs with ONNX Runtime
    (``generate(None, ..., stepper=OnnxStepper(folder))``); ``num_threads`` defaults to this process's cores.
    ``int8``: None runs the int8 programs when ``onnx.json`` lists them, else the fp32 ones; True or False
    chooses (True without int8 programs: FileNotFoundError)."""

    def __init__(self, folder: str, num_threads: int | None = None, int8: bool | None = None):
        self.int8 = quantization_of(folder) == "int8" if int8 is None else bool(int8)
        super().__init__(folder, num_threads, program_class=functools.partial(OnnxProgram, int8=self.int8))


class OnnxForward(InferenceForward):
    """``export.InferenceForward`` running the folder's ``forward.onnx`` (an understanding model's) with ONNX
    Runtime; ``int8`` as for ``OnnxStepper``."""

    def __init__(self, folder: str, num_threads: int | None = None, int8: bool | None = None):
        self.int8 = quantization_of(folder) == "int8" if int8 is None else bool(int8)
        super().__init__(folder, num_threads, program_class=functools.partial(OnnxProgram, int8=self.int8))
