"""ONNX export of a Paddle Inference export folder, and the stepper that decodes with ONNX Runtime.

``export_onnx(folder)`` converts every program that ``export.json`` of a folder written by
``export.export_model`` lists (``prefill``, ``step``, ``prefill_regions``, or ``forward``; see
``paddle_unimo/export.py``) to ``<name>.onnx`` beside it with paddle2onnx, and writes ``onnx.json``:

* ``paddle2onnx_version``, ``opset`` (the highest default-domain opset of the written models);
* ``programs``: for each program its ``file``, its ``inputs`` as the ONNX graph declares them (name, dtype,
  shape with -1 for a dynamic axis) and ``outputs``, the ONNX output names mapped to the names of
  ``export.json`` (paddle2onnx names them ``fetch_name_<position>``).

``export.json`` itself is left as it is. The ONNX programs take and return exactly what the Paddle programs
do, so ``OnnxStepper(folder)`` is ``export.InferenceStepper`` with ``OnnxProgram`` in place of its Paddle
Inference programs and plugs into ``generation.generate`` the same way::

    from paddle_unimo.onnx_export import OnnxStepper, export_onnx
    export_onnx("OUT/inference")           # or: python -m tools.export_model ... --format onnx
    ids, scores = generate(None, **inputs, stepper=OnnxStepper("OUT/inference"), decode_strategy="beam_search",
                           num_beams=5, max_length=50)

paddle2onnx's optional optimizer step (``optimize_tool``, by default polygraphy, which installs packages
at run time) is not used: the model is converted as it is, and ONNX Runtime optimizes the graph when it
loads it. onnxruntime and paddle2onnx are imported only when these functions are called; a missing one is
an ImportError that says what to install.
"""
from __future__ import annotations

import importlib
import os
import re
from typing import Dict, List

import numpy as np
import paddle

from .export import MANIFEST, InferenceStepper
from .fileio import atomic_write, read_json, write_json

ONNX_MANIFEST = "onnx.json"
OPSET = 17  # paddle2onnx raises it by itself when an operator needs a newer one

# ONNX Runtime's type strings -> numpy dtypes, for the types the exported programs take
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
               "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def require(module: str, purpose: str):
    """``import module``, or an ImportError naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{purpose} needs the {module} package, which is not installed: "
                          f"pip install {module}") from error


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


def export_onnx(folder: str) -> List[str]:
    """Converts every program ``export.json`` of ``folder`` lists to ``<name>.onnx`` and writes ``onnx.json``
    (see the module doc); returns the written paths, ``onnx.json`` last.

    Each file is written to a temporary name and renamed, so a failure leaves no half-written file; a previous
    ``onnx.json`` is removed first, so that one is present only beside a complete conversion."""
    paddle2onnx, onnx = require("paddle2onnx", "ONNX export"), require("onnx", "ONNX export")
    manifest = read_json(os.path.join(folder, MANIFEST), "export manifest")
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
    write_json(info_path, {"paddle2onnx_version": paddle2onnx.__version__, "opset": max(opsets),
                           "programs": programs})
    return written + [info_path]


def _array(value) -> np.ndarray:
    """A numpy view of a CPU paddle tensor (DLPack, no copy), a copy of any other tensor, or ``np.asarray``."""
    if isinstance(value, paddle.Tensor):
        return np.from_dlpack(value) if value.place.is_cpu_place() else value.numpy()
    return np.asarray(value)


class OnnxProgram:
    """One ``<name>.onnx`` of an export folder under ONNX Runtime on CPU, fed and read like ``export.Program``:
    ``inputs`` (the names the graph takes), ``__call__(**feeds) -> {our output name: array}``. Feeds may be numpy
    arrays or paddle tensors (a CPU tensor is read in place, not copied: the decoding caches); each is cast to
    the dtype the graph declares. Feeds the graph does not take are ignored, as ``export.Program`` does."""

    def __init__(self, folder: str, name: str, outputs: List[str], num_threads: int):
        ort = require("onnxruntime", "running an ONNX export")
        path = os.path.join(folder, name + ".onnx")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: convert the export first with "
                                    "paddle_unimo.onnx_export.export_onnx(folder) or "
                                    "`python -m tools.export_model ... --format onnx`")
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # not the warnings about paddle2onnx's unused constants
        self.name = name
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
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


class OnnxStepper(InferenceStepper):
    """``export.InferenceStepper`` running the folder's ``.onnx`` programs with ONNX Runtime
    (``generate(None, ..., stepper=OnnxStepper(folder))``); ``num_threads`` defaults to this process's cores."""

    def __init__(self, folder: str, num_threads: int | None = None):
        super().__init__(folder, num_threads, program_class=OnnxProgram)
