r"""Fine-tune, predict and evaluate any registered task (``tasks/registry.py``).

    python -m tasks.run finetune --task dureader_qg --out out/dureader_qg
    python -m tasks.run finetune --config tasks/configs/dureader_qg_base.yaml --model unimo-text-1.0 \
        --data DuReaderQG --out out/qg -o train.lr=3e-5 -o decode.num_beams=4
    python -m tasks.run predict --task dureader_qg --model out/qg/best --input DuReaderQG/dev.json --out out/qg_pred
    python -m tasks.run evaluate --task dureader_qg --predictions out/qg_pred/predictions.jsonl --out out/qg_pred

``--task NAME`` picks ``tasks/configs/NAME_tiny.yaml`` (``NAME_base.yaml`` with ``--model``); ``--config`` names
any YAML file of the task. ``finetune`` writes its config into ``best/task.yaml``, which ``predict`` with that
folder (or its export) reads when no ``--config`` is given. ``--data DIR`` holds the files named by
``data.train``/``data.dev``. Outputs go to ``--out``: ``metrics.json``, predictions, ``train.log``, VisualDL logs
(``vdl/``), ``checkpoint/`` (exact resume: run the same command again; a folder holding another run's checkpoint is
refused) and ``best/``. ``evaluate`` writes ``OUT/eval/metrics.json`` and touches nothing else.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
from typing import List, Optional

from paddle_unimo import cpu_defaults

cpu_defaults()  # before anything below imports paddle

from tasks.cli import (ROOT, add_common_arguments, add_runtime_argument, blame_overrides, build_model,  # noqa: E402
                       data_path, fingerprint, load_config, longer_table_hint, output_folder, resolve_data_paths,
                       run_command, run_config_of, set_aside_earlier_run, setup_logging, warn_other_prompt,
                       write_run_config)
from tasks.registry import TASKS, get_task, task_of_config  # noqa: E402

logger = logging.getLogger("paddle_unimo")


def default_config(task: str, model: Optional[str]) -> str:
    """A task's YAML when none is given: the tiny preset's, or with a model folder the base one's."""
    return os.path.join(ROOT, "tasks", "configs", f"{task}_{'base' if model else 'tiny'}.yaml")


def resolve_config(args):
    """The task and its typed config: from ``--config``, or the task's default YAML for ``--task``."""
    from paddle_unimo.typed import ConfigError
    path = args.config
    if args.task and args.task not in TASKS:  # before the config: make builds CONFIG from TASK
        raise ConfigError(f"--task: unknown task {args.task!r}; known: {', '.join(sorted(TASKS))}")
    own = path is None and args.command == "predict" and run_config_of(args.model)
    if own:
        path = own  # the settings the model was fine-tuned with
    if path is None:
        if not args.task:
            raise ConfigError("give --task NAME or --config FILE")
        path = default_config(args.task, getattr(args, "model", None))
    if args.task and not os.path.exists(path):
        configs = os.path.join(ROOT, "tasks", "configs")
        own_files = sorted(n for n in os.listdir(configs) if n.startswith(args.task + "_") and n.endswith(".yaml"))
        raise ConfigError(f"{path}: no such config; tasks/configs has {', '.join(own_files) or f'none for {args.task}'}"
                          ": give one with --config (make: CONFIG=file, or SIZE=tiny|base|large)")
    logger.info("config: %s", path)
    name = task_of_config(path)
    if args.task and args.task != name:
        raise ConfigError(f"{path}: task: the config is for {name!r}, not --task {args.task!r}"
                          + (f"; the model was fine-tuned for it: leave --task out (make: TASK={name} or no TASK), "
                             "or give --config FILE to predict with another task's settings" if own else ""))
    task = get_task(name)
    cfg = load_config(path, args.override, task.config_class)
    if getattr(args, "skip_bad", False):
        cfg.data.skip_bad = True
    resolve_data_paths(cfg, args.data)
    if hasattr(cfg.data, "regions"):  # the vision-language tasks' region store
        cfg.data.regions = os.path.abspath(args.regions) if args.regions else cfg.data.regions
    elif args.regions:
        raise ConfigError(f"--regions: task {name!r} reads no image regions")
    return task, cfg, path


def data_file(args, cfg, name: str) -> str:
    return data_path(args.data, cfg, name)


def write_skipped(out: str, reports) -> int:
    """Every skipped input line with its reason in ``OUT/skipped.jsonl``; returns how many."""
    from paddle_unimo.fileio import write_jsonl
    skipped = [s for r in reports for s in r.skipped]
    path = os.path.join(out, "skipped.jsonl")
    if skipped:
        write_jsonl(path, skipped)
        logger.warning("skipped %d bad input lines, listed in %s", len(skipped), path)
    elif os.path.exists(path):
        os.remove(path)  # an earlier run's list would contradict this run's count
    return len(skipped)


def finished_metrics(out: str, run_digest: str, step: int):
    """OUT/metrics.json when it was written by this same run (its fingerprint's digest) at this step, else None:
    running a finished command again (nothing left to train) returns its results instead of decoding anew."""
    from paddle_unimo.fileio import read_json
    path = os.path.join(out, "metrics.json")
    if not os.path.isfile(path):
        return None
    metrics = read_json(path, "run metrics")
    return metrics if metrics.get("run") == run_digest and metrics.get("steps") == step else None


def text_targets(runner, examples):
    """The examples as the metrics and predictions.jsonl read them: targets held as token ids (the original
    English TSV) decoded by the runner's tokenizer (``EnglishRunner.text_targets``)."""
    return runner.text_targets(examples) if hasattr(runner, "text_targets") else examples


def finetune(args) -> dict:
    from paddle_unimo.fileio import write_json
    from paddle_unimo.typed import ConfigError
    from tasks.outputs import describe, mean_loss_curve, prediction_rows, warn_repeated_ids, write_predictions
    task, cfg, config_path = resolve_config(args)
    paths = {"train": data_file(args, cfg, cfg.data.train), "dev": data_file(args, cfg, cfg.data.dev)}
    train, train_report = task.read(paths["train"], cfg, role="train")
    dev, dev_report = task.read(paths["dev"], cfg, role="dev")
    warn_repeated_ids(dev, paths["dev"])
    logger.info("train: %d examples from %s; dev: %d from %s", len(train),  # the files a split name resolved to
                getattr(train_report, "path", paths["train"]), len(dev), getattr(dev_report, "path", paths["dev"]))
    extras = []  # e.g. MNLI's mismatched dev set, read now: a bad one fails early
    for name in getattr(task, "extra_dev_files", lambda cfg: [])(cfg):
        path = data_file(args, cfg, name)
        if not os.path.isfile(path):
            from paddle_unimo.fileio import DataError
            raise DataError(f"{path}: file not found (data.extra_dev names it; -o data.extra_dev=[] leaves it out)")
        extras.append((name, task.read(path, cfg, role="dev")[0]))
    if not args.model and not cfg.model.vocab_dir and not task.texts(train, cfg):
        raise ConfigError(f"{paths['train']}: no text to build a vocabulary from: the file holds token ids (the "
                          "original UNIMO TSV of GPT-2 BPE ids), which need MODEL= (a converted English UNIMO "
                          "folder, whose vocabulary they index)")
    model, tokenizer = build_model(args.model, cfg.model, task.texts(train, cfg), task.model_class, task.vocabulary,
                                   **task.model_settings(cfg, train, from_folder=bool(args.model)))
    try:
        blame_overrides(lambda: longer_table_hint(lambda: task.check(cfg, model.config, config_path)), config_path,
                        args.override)
    except ConfigError as e:
        own = None if args.config else run_config_of(args.model)
        if own is None:
            raise
        raise ConfigError(f"{e}; or go on with the settings {args.model} was fine-tuned with: --config {own} "
                          f"(make: CONFIG={own})") from None
    runner = task.bind(model, tokenizer, cfg)
    dev, extras = text_targets(runner, dev), [(name, text_targets(runner, extra)) for name, extra in extras]
    sections = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "task"}
    if hasattr(cfg.data, "regions"):
        paths["regions"] = cfg.data.regions
    run_id = fingerprint({**paths, "model": args.model or f"preset {cfg.model.preset}"}, sections,
                         skip={"data.default_dir", "data.regions",
                               *(f"train.{k}" for k in cfg.train.RESUMABLE_CHANGES)})
    trainer = runner.trainer(train, dev, args.out, run_id)
    as_written = load_config(config_path, args.override, task.config_class)  # data paths not yet resolved
    if args.data:  # predict and evaluate then read the run's dev file by default
        as_written.data.default_dir = os.path.abspath(args.data)
    if args.regions:  # and the run's region store
        as_written.data.regions = os.path.abspath(args.regions)
    save_tokenizer = trainer.save_extra
    origin = args.model or f"preset {cfg.model.preset}"
    trainer.save_extra = lambda folder: (save_tokenizer(folder), write_run_config(folder, as_written, origin))
    if trainer.rank == 0 and (args.no_resume or trainer.check_resumable() is None):
        inputs = [p for p in (args.model, args.data, *paths.values(),
                              *(getattr(cfg.data, k) for k in getattr(cfg.data, "PATHS", ()))) if p]  # may be in OUT
        set_aside_earlier_run(args.out, inputs=inputs)
    state = trainer.train(resume=not args.no_resume)
    if trainer.rank != 0:
        return state  # with several processes, rank 0 alone decodes and writes the outputs
    run_digest = hashlib.sha256(json.dumps(run_id, sort_keys=True).encode()).hexdigest()[:16]
    finished = finished_metrics(args.out, run_digest, state["step"]) if trainer.started_at == state["step"] else None
    if finished is not None:
        logger.info("%s: this run had finished (step %d); its results: %s", args.out, state["step"],
                    os.path.join(args.out, "metrics.json"))
        return finished
    best = task.load_model(os.path.join(args.out, "best"))
    predictions = runner.predict(dev, best)
    metrics = task.score(dev, predictions, train)
    metrics.update(task=task.name, split="dev", steps=state["step"], run=run_digest, best_eval=state["best"],
                   loss_curve=mean_loss_curve(state["history"]),
                   skipped_lines=write_skipped(args.out, [train_report, dev_report]), **runner.report(),
                   predictions=write_predictions(args.out, prediction_rows(dev, predictions, dev_report,
                                                                           task.prediction_row)))
    metrics[f"best_eval_{task.metric}"] = metrics.pop("best_eval")
    metrics["best_step"] = None if state["best"] is None else next(
        (h["step"] for h in state["history"] if h.get(task.metric) == state["best"]), None)
    for name, extra in extras:
        metrics[os.path.splitext(name)[0]] = task.score(extra, runner.predict(extra, best))
    task.write_outputs(args.out, dev, predictions)
    write_json(os.path.join(args.out, "metrics.json"), metrics)
    logger.info("%s dev: %s -> %s", task.name, describe(metrics), os.path.join(args.out, "metrics.json"))
    return metrics


def predict(args) -> dict:
    from paddle_unimo import load_tokenizer
    from paddle_unimo.fileio import write_json
    from paddle_unimo.typed import ConfigError
    from tasks.outputs import describe, prediction_rows, warn_repeated_ids, write_predictions
    task, cfg, config_path = resolve_config(args)
    if not args.model:
        raise ConfigError("predict needs --model (a folder written by finetune, e.g. OUT/best)")
    from paddle_unimo.checkpoint import find_config
    find_config(args.model)  # a missing model says so before the input is read
    path = args.input or data_file(args, cfg, cfg.data.dev)
    examples, report = task.read(path, cfg, need_target=False, role="dev")
    warn_repeated_ids(examples, getattr(report, "path", path))
    logger.info("%d examples from %s", len(examples), getattr(report, "path", path))
    model = task.load_model(args.model, args.runtime)
    try:
        blame_overrides(lambda: task.check(cfg, model.config, config_path), config_path, args.override)
    except ConfigError as e:
        if not config_path.endswith(("_base.yaml", "_large.yaml")):
            raise
        raise ConfigError(f"{e} -- with a model, predict reads the base config; a model fine-tuned from the tiny "
                          f"preset needs SIZE=tiny (--config tasks/configs/{task.name}_tiny.yaml)") from None
    warn_other_prompt(args.model, config_path, cfg)
    runner = task.bind(model, load_tokenizer(args.model), cfg)
    examples = text_targets(runner, examples)
    predictions = runner.predict(examples)
    # an earlier prediction's files (and its eval/) would sit beside this one's: they move to OUT/previous/<time>/
    set_aside_earlier_run(args.out, earlier_prediction(args.out), inputs=[path, args.model])
    before = set(os.listdir(args.out))
    out = write_predictions(args.out, prediction_rows(examples, predictions, report, task.prediction_row))
    task.write_outputs(args.out, examples, predictions)
    result = {"task": task.name, "model": args.model, "config": config_path, "overrides": args.override,
              "input": os.path.abspath(path), "predictions": os.path.abspath(out), "examples": len(examples),
              "skipped_lines": write_skipped(args.out, [report]), "skipped": report.skipped, **runner.report()}
    if getattr(model, "runtime", None):  # an export: which of its programs ran
        result["runtime"] = model.runtime
    result["outputs"] = sorted((set(os.listdir(args.out)) - before) | {"predictions.jsonl", "predictions.txt"})
    if all(e.target is not None and e.target != "" for e in examples):
        result.update(task.score(examples, predictions))
    write_json(os.path.join(args.out, "metrics.json"), result)
    logger.info("%d predictions -> %s %s", len(predictions), out, describe(result))
    return result


def folder_metrics(folder: str) -> Optional[dict]:
    """A folder's metrics.json (an earlier predict's, or a run's), None when it has none it can read."""
    try:
        with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


PREDICT_FILES = ("predictions.jsonl", "predictions.txt", "metrics.json", "skipped.jsonl", "eval")


def earlier_prediction(out: str) -> List[str]:
    """The files of an earlier ``predict`` in ``out``: those its metrics.json lists (``outputs``, with the
    metrics and evaluate's ``eval/``), else (an older predict's, or a fine-tuning run's folder) ``PREDICT_FILES``,
    which this one writes over. Nothing else of the folder: it may be a model's, or hold the data."""
    record = folder_metrics(out)
    listed = record.get("outputs") if record else None
    names = [*listed, "metrics.json", "eval"] if isinstance(listed, list) else PREDICT_FILES
    return [n for n in names if isinstance(n, str) and os.sep not in n and os.path.lexists(os.path.join(out, n))]


def predicted_input(path: str, task) -> Optional[str]:
    """The file ``predict`` read to write the predictions ``path`` (its metrics.json beside them) when it had
    targets (predict scored it: ``metric`` in its metrics), or None; a ``DataError`` when that file had none."""
    from paddle_unimo.fileio import DataError
    folder = os.path.dirname(os.path.abspath(path))
    record = folder_metrics(folder)
    if not record or record.get("task") != task.name:
        return None
    written = record.get("predictions")
    if (isinstance(record.get("input"), str) and isinstance(written, str)
            and os.path.dirname(os.path.abspath(written)) == folder):
        if task.metric not in record:
            raise DataError(f"{path}: predicted for {record['input']}, which holds no targets to score them "
                            "against: the references are REFS= (--references), a file of the same examples with "
                            "their targets")
        logger.info("references: %s, the file predict read for %s", record["input"], path)
        return record["input"]
    return None


def evaluate(args) -> dict:
    """Scores a predictions file against the references; writes ``OUT/eval/metrics.json`` only."""
    from paddle_unimo.data.seq2seq import SKIP_HINT
    from paddle_unimo.fileio import DataError, write_json
    from tasks.outputs import describe
    task, cfg, _ = resolve_config(args)
    path = args.predictions or os.path.join(args.out, "predictions.jsonl")
    if not os.path.exists(path) and not os.path.isabs(path) and os.path.exists(os.path.join(args.out, path)):
        path = os.path.join(args.out, path)  # a file predict wrote there, named alone (PRED=vqa_submission.json)
    if not os.path.exists(path):
        raise DataError(f"{path}: no predictions file" + ("" if args.predictions else
                                                          " (make predict, or predict --out, writes it)"))
    references_path = args.references or (not args.data and predicted_input(path, task)) or data_file(
        args, cfg, cfg.data.dev)
    try:
        scores = task.evaluate(path, references_path, cfg)
    except DataError as e:  # a line of the references: skipping it would score a subset, not the fix
        if not str(e).startswith(os.fspath(references_path)) or not str(e).endswith(SKIP_HINT):
            raise
        raise DataError(str(e)[:-len(SKIP_HINT)] + " (a line of the references, which need the targets: REFS=, "
                        "--references, names them)") from None
    metrics = {**scores, "task": task.name, "predictions": path, "references": references_path}
    target = os.path.join(args.out, "eval", "metrics.json")
    write_json(target, metrics)
    logger.info("%s: %s -> %s", path, describe(metrics), target)
    return metrics


COMMANDS = {"finetune": finetune, "predict": predict, "evaluate": evaluate}


def execute(argv=None):
    """Runs the command line ``argv``; returns its result (metrics, state, rows)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=list(COMMANDS))
    parser.add_argument("--task", help=f"a registered task: {', '.join(sorted(TASKS))}")
    parser.add_argument("--config", help="a task YAML (default: tasks/configs/<task>_tiny.yaml, _base with --model; "
                        "predict: the model folder's task.yaml, the settings it was fine-tuned with, where it has one)")
    parser.add_argument("--model", help="model folder (PaddleNLP layout); default: the config's preset")
    parser.add_argument("--data", help="folder with the data.train / data.dev files; default: the bundled demo data")
    parser.add_argument("--input", help="predict: the file to generate for (default: the dev file)")
    parser.add_argument("--predictions", help="evaluate: predictions.jsonl (default: OUT/predictions.jsonl)")
    parser.add_argument("--references", help="evaluate: the reference file (default: --data's dev file; else the "
                        "file predict read for the predictions, named in the metrics.json beside them; else the "
                        "config's dev file)")
    parser.add_argument("--regions", help="vision-language tasks: the region store folder (default: data.regions "
                        "in the data folder)")
    add_runtime_argument(parser)  # predict
    parser.add_argument("--skip-bad", action="store_true", help="skip bad input lines, listed in OUT/skipped.jsonl")
    parser.add_argument("--no-resume", action="store_true", help="ignore OUT/checkpoint and start again (the "
                        "earlier run's files move to OUT/previous/<time>/)")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.runtime and args.command != "predict":
        parser.error(f"--runtime: predict only (an export folder's programs), not {args.command}")

    def command():  # a folder that cannot be written (read-only, full) is one error line, train.log included
        if args.command == "evaluate":  # writes OUT/eval only
            setup_logging(os.path.join(args.out, "eval"))
            return COMMANDS[args.command](args)
        with output_folder(args.out):  # first: a command refused there writes nothing into the running one's log
            setup_logging(args.out)
            return COMMANDS[args.command](args)
    return run_command(command, args.debug)


def main(argv=None) -> int:
    """The console entry point: exit status 0 (a user's error exits with 2, Ctrl-C with 130)."""
    execute(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
