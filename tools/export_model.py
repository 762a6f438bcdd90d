"""Export a trained model folder for Paddle Inference (CPU, dynamic batch and length).

    python -m tools.export_model --model OUT/best --out OUT/inference [--format paddle|kernels|onnx]
                                 [--precision float32|bfloat16] [--quantize int8|int8_w7]

``--model`` is a paddle_unimo / PaddleNLP-layout folder (config.json + model_state.pdparams, tokenizer files
optional). ``--out`` receives prefill.json/.pdiparams, step.json/.pdiparams, export.json, config.json and the
tokenizer files; ``paddle_unimo.export.InferenceStepper(out)`` decodes with them (see that module's doc). An
understanding model (retrieval, visual entailment, VQA, GLUE; config.json's ``architectures``) gets one
forward.json/.pdiparams instead, run by ``paddle_unimo.export.InferenceForward(out)``.
``--format kernels`` writes the decoding programs on this package's CPU kernels (``paddle_unimo.export``: weights in
panels, a step's layer one operator, the cache written in place): on CPU they decode about as fast as dynamic mode,
with its scores bit for bit, and need ``paddle_unimo``'s operators where they run (``InferenceStepper`` loads them);
``--precision bfloat16`` keeps their weights rounded to bfloat16 (half the memory, faster steps, other scores);
``--quantize int8`` quantizes them, and the inputs of every product, to int8 (a quarter of the memory, about twice
as fast on CPUs with AVX-512 VNNI, other scores); ``--quantize int8_w7`` the same with 7-bit weights, which CPUs
with AVX2 and no VNNI multiply in fewer instructions (there decoding x1.1-1.5 faster than with 8-bit ones; the
scores move ~1.5 times as far).
``--format onnx`` writes the same folder plus ``<program>.onnx`` for each program and ``onnx.json``
(``paddle_unimo.onnx_export``, with paddle2onnx); ``paddle_unimo.onnx_export.OnnxStepper(out)`` decodes with
them under onnxruntime. ``--quantize int8`` with ``--format onnx`` adds ``<program>.int8.onnx``, the int8 dynamic
quantization of each program, which ``OnnxStepper(out)`` then runs (see ``paddle_unimo.onnx_export``).
An existing ``--out`` is replaced only if it is empty or a previous export.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

import paddle_unimo
from paddle_unimo.fileio import atomic_save
from paddle_unimo.tokenization import load_tokenizer


# what a task saves beside the model and a deployment needs: VQA's answers, the run's config (tasks.cli.RUN_CONFIG)
TASK_FILES = ("ans2label.json", "task.yaml")


def load_optional_tokenizer(model_dir: str):
    """The folder's tokenizer, or None for a folder with weights only (the export then has none either).
    A broken tokenizer (e.g. encoder.json without vocab.bpe) is an error, not a silent export without one."""
    names = os.listdir(model_dir)
    if "encoder.json" in names or any(n.endswith("vocab.txt") for n in names):
        return load_tokenizer(model_dir)
    return None


def folder_bytes(path: str) -> int:
    """Bytes on disk, a hard-linked file (the two programs' shared weights) counted once."""
    sizes = {}
    for name in os.listdir(path):
        info = os.stat(os.path.join(path, name))
        sizes[(info.st_dev, info.st_ino)] = info.st_size
    return sum(sizes.values())


def run(argv=None) -> str:
    """Parses the command line and exports; returns the export folder."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model folder (config.json + model_state.pdparams)")
    parser.add_argument("--out", required=True, help="export folder to write")
    parser.add_argument("--format", choices=("paddle", "kernels", "onnx"), default="paddle",
                        help="paddle: Paddle Inference programs of paddle's own operators; kernels: Paddle Inference "
                             "programs on paddle_unimo's CPU kernels (faster on CPU); onnx: the paddle ones and their"
                             " ONNX conversions")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                        help="with --format kernels: the weights' type in the kernels' panels (bfloat16: rounded, "
                             "half the memory, faster decoding steps, slightly different logits)")
    parser.add_argument("--quantize", choices=("int8", "int8_w7"),
                        help="with --format kernels: the kernels' panels in int8, each product's inputs quantized "
                             "at run time (a quarter of the memory, faster decoding, slightly different logits); with "
                             "--format onnx: also int8 ONNX programs (weights 8-bit, activations quantized at run "
                             "time, faster CPU decoding, slightly different logits); int8_w7 (--format kernels): "
                             "7-bit weights, faster than int8 on CPUs with AVX2 and no VNNI")
    args = parser.parse_args(argv)
    if args.precision != "float32" and args.format != "kernels":
        parser.error(f"--precision {args.precision} needs --format kernels (the other programs stay float32)")
    if args.quantize and args.format not in ("kernels", "onnx"):
        parser.error(f"--quantize {args.quantize} needs --format kernels or onnx (Paddle Inference programs on "
                     "paddle's operators stay fp32)")
    if args.quantize == "int8_w7" and args.format != "kernels":
        parser.error("--quantize int8_w7 needs --format kernels (ONNX Runtime's int8 programs: --quantize int8)")
    if args.quantize and args.precision != "float32":
        parser.error(f"--quantize {args.quantize} and --precision {args.precision}: one or the other")
    if args.format == "onnx":  # before the Paddle export, not after it
        from paddle_unimo.onnx_export import require
        require("paddle2onnx", "--format onnx")
        if args.quantize:
            require("onnxruntime.quantization", f"--quantize {args.quantize}")
    from paddle_unimo.checkpoint import load_any  # these import paddle
    from paddle_unimo.export import export_model

    model = load_any(args.model)
    tokenizer = load_optional_tokenizer(args.model)
    kernels = args.format == "kernels"
    out = export_model(model, args.out, tokenizer, cpu_kernels=kernels,
                       panel_dtype=args.quantize if kernels and args.quantize else args.precision)
    for name in TASK_FILES:
        source = os.path.join(args.model, name)
        if os.path.isfile(source):
            atomic_save(os.path.join(out, name), lambda tmp: shutil.copyfile(source, tmp))
    if args.format == "onnx":
        from paddle_unimo.onnx_export import export_onnx
        export_onnx(out, quantize=args.quantize)
    onnx_note = (f", with the ONNX programs{' and their int8 twins' if args.quantize else ''}"
                 if args.format == "onnx" else "")
    print(f"exported {args.model} to {out} ({folder_bytes(out) / 2 ** 20:.1f} MiB, "
          f"{'with' if tokenizer else 'without'} tokenizer{onnx_note})")
    return out


def main(argv=None) -> int:
    paddle_unimo.cpu_defaults()
    from tasks.cli import run_tool
    return run_tool(run, argv)


if __name__ == "__main__":
    sys.exit(main())
