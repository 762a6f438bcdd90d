"""Fine-tune, predict and evaluate the 千言 generation tasks.

    python -m tasks.run finetune --config tasks/configs/dureader_qg_tiny.yaml --out out/dureader_qg
    python -m tasks.run finetune --config tasks/configs/dureader_qg_base.yaml --model unimo-text-1.0 \
        --data DuReaderQG --out out/qg -o train.lr=3e-5 -o decode.num_beams=4
    python -m tasks.run predict --config ... --model out/qg/best --input DuReaderQG/dev.json --out out/qg_pred
    python -m tasks.run evaluate --config ... --predictions out/qg_pred/predictions.jsonl --out out/qg_pred

``--data DIR`` holds ``train.json`` and ``dev.json`` (the official names; ``data.train``/``data.dev`` in the
config). Every run writes into ``--out``: ``metrics.json`` (``bleu4`` is 0-100), the predictions, ``train.log``
and VisualDL logs (``vdl/``), ``checkpoint/`` (exact resume: run the same command again) and ``best/``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import yaml  # noqa: E402

import paddle_unimo  # noqa: E402,F401  (CPU thread settings before paddle loads)
from paddle_unimo.data.seq2seq import Example  # noqa: E402
from paddle_unimo.fileio import atomic_write  # noqa: E402
from paddle_unimo.metrics import build_value_vocabulary  # noqa: E402
from paddle_unimo.training import TrainConfig  # noqa: E402
from tasks.generation import (GenerationTask, build_model, describe, example_texts, get_task,  # noqa: E402
                              mean_loss_curve, score, write_predictions)

logger = logging.getLogger("paddle_unimo")


def apply_overrides(config: dict, overrides) -> dict:
    """``-o section.key=value`` (value parsed as YAML); the key must already exist in the config."""
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        node, parts = config, key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise KeyError(f"override {key!r}: no section {part!r}; sections: {sorted(config)}")
            node = node[part]
        if parts[-1] not in node:
            raise KeyError(f"override {key!r}: unknown key; known: {sorted(node)}")
        node[parts[-1]] = coerce(key, yaml.safe_load(value), node[parts[-1]])
    return config


def coerce(key: str, value, old):
    """Keeps an override the type of the value it replaces (YAML reads ``3e-3`` as a string)."""
    if isinstance(old, float) and not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"override {key!r}: expected a number, got {value!r}") from None
    if isinstance(old, bool):
        ok = isinstance(value, bool)
    elif isinstance(old, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = True
    if not ok:
        raise ValueError(f"override {key!r}: expected {type(old).__name__}, got {value!r}")
    return value


def load_config(path: str, overrides=None) -> dict:
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    return apply_overrides(config, overrides)


def setup_logging(out_dir: str) -> None:
    """INFO to OUT/train.log, and to the console unless paddle/paddlenlp already print there."""
    os.makedirs(out_dir, exist_ok=True)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for old in [h for h in root.handlers if getattr(h, "paddle_unimo_run", False)]:
        root.removeHandler(old)  # a previous run in this process (tests, the demo)
        old.close()
    handler = logging.FileHandler(os.path.join(out_dir, "train.log"), encoding="utf-8")
    handler.paddle_unimo_run = True
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               for h in root.handlers):
        root.addHandler(logging.StreamHandler())
    root.addHandler(handler)


def data_dir(args, config) -> str:
    return args.data or os.path.join(ROOT, config["data"]["default_dir"])


def finetune(args, config) -> dict:
    spec = get_task(config["task"])
    folder = data_dir(args, config)
    train, train_report = GenerationTask.read_file(os.path.join(folder, config["data"]["train"]), spec, config["data"])
    dev, dev_report = GenerationTask.read_file(os.path.join(folder, config["data"]["dev"]), spec, config["data"])
    model, tokenizer = build_model(args.model, config["model"], example_texts(train))
    task = GenerationTask(spec, model, tokenizer, config["data"], config["decode"])
    train_cfg = TrainConfig.from_dict(config["train"])
    trainer = task.trainer(train, dev, train_cfg, args.out, config["eval"].get("max_examples", 0))
    state = trainer.train(resume=not args.no_resume)
    if trainer.rank != 0:
        return state  # with several processes, rank 0 alone decodes and writes the outputs
    best = paddle_unimo.UNIMOLMHeadModel.from_pretrained(os.path.join(args.out, "best"))
    predictions = task.predict(dev, best)
    vocabulary = build_value_vocabulary(e.source for e in train) if spec.name == "advertisegen" else None
    metrics = score(spec.name, dev, predictions, vocabulary)
    metrics.update(task=spec.name, split="dev", steps=state["step"], best_eval_bleu4=state["best"],
                   loss_curve=mean_loss_curve(state["history"]), skipped_lines=len(train_report.skipped) +
                   len(dev_report.skipped), truncated=dict(task.encoder.truncated),
                   predictions=write_predictions(args.out, dev, predictions))
    atomic_write(os.path.join(args.out, "metrics.json"), json.dumps(metrics, ensure_ascii=False, indent=1))
    logger.info("%s dev: %s -> %s", spec.name, describe(metrics), os.path.join(args.out, "metrics.json"))
    return metrics


def predict(args, config) -> dict:
    spec = get_task(config["task"])
    if not args.model:
        raise SystemExit("predict needs --model (a folder written by finetune, e.g. OUT/best)")
    model = paddle_unimo.UNIMOLMHeadModel.from_pretrained(args.model)
    task = GenerationTask(spec, model, paddle_unimo.load_tokenizer(args.model), config["data"], config["decode"])
    path = args.input or os.path.join(data_dir(args, config), config["data"]["dev"])
    examples, report = task.read(path, need_target=False)
    predictions = task.predict(examples)
    out = write_predictions(args.out, examples, predictions)
    result = {"task": spec.name, "input": path, "predictions": out, "skipped_lines": len(report.skipped)}
    if all(e.target for e in examples):
        result.update(score(spec.name, examples, predictions))
    atomic_write(os.path.join(args.out, "metrics.json"), json.dumps(result, ensure_ascii=False, indent=1))
    logger.info("%d predictions -> %s %s", len(predictions), out, describe(result))
    return result


def evaluate(args, config) -> dict:
    """Scores a predictions.jsonl (from predict/finetune) against the targets it carries."""
    spec = get_task(config["task"])
    path = args.predictions or os.path.join(args.out, "predictions.jsonl")
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise SystemExit(f"{path}:{line_no}: malformed JSON ({e.msg})")
    missing = [i for i, r in enumerate(rows, 1) if not r.get("target")]
    if missing:
        raise SystemExit(f"{path}:{missing[0]}: no target to score against ({len(missing)} such lines)")
    examples = [Example(str(r.get("id")), r["source"], r["target"], r.get("title")) for r in rows]
    metrics = score(spec.name, examples, [r["prediction"] for r in rows])
    atomic_write(os.path.join(args.out, "metrics.json"), json.dumps(metrics, ensure_ascii=False, indent=1))
    logger.info("%s: %s", path, describe(metrics))
    return metrics


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["finetune", "predict", "evaluate"])
    parser.add_argument("--config", required=True, help="tasks/configs/<task>_<size>.yaml")
    parser.add_argument("-o", "--override", action="append", help="section.key=value, e.g. train.lr=3e-5")
    parser.add_argument("--model", help="model folder (PaddleNLP layout); default: the config's preset")
    parser.add_argument("--data", help="folder with train.json and dev.json; default: the bundled demo data")
    parser.add_argument("--input", help="predict: the file to generate for (default: the dev file)")
    parser.add_argument("--predictions", help="evaluate: predictions.jsonl (default: OUT/predictions.jsonl)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--skip-bad", action="store_true", help="skip and count bad input lines")
    parser.add_argument("--no-resume", action="store_true", help="ignore OUT/checkpoint and start again")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.override)
    if args.skip_bad:
        config["data"]["skip_bad"] = True
    setup_logging(args.out)
    return {"finetune": finetune, "predict": predict, "evaluate": evaluate}[args.command](args, config)


if __name__ == "__main__":
    main()
