"""The task registry: every task the CLI serves, by name, imported explicitly (no directory scan).

A task is one module in ``tasks/`` exposing ``TASK`` (``tasks/glue.py`` and ``tasks/english_generation.py``: ``TASKS``, several), an object that declares its typed config class
(``config_class``, the YAML files' schema), its reader (``read``), the texts of a character vocabulary
(``texts``), ``bind(model, tokenizer, cfg)`` giving the batches, head/loss, decoding and trainer, its
metric (``metric``, the key that chooses the best checkpoint; ``score``), ``load_model(folder, runtime)`` for a
fine-tuned folder or its export, ``check(cfg, model_config, where)`` for settings that depend on the model, and
``prediction_row(example, prediction)`` for ``predictions.jsonl`` and ``pipeline_example(record, index, cfg)``,
the example of a record given in code (``tasks.pipeline``, ``make serve``). Add a task by writing its module and
listing it below.
"""
from __future__ import annotations

from typing import Dict

from tasks import (advertisegen, coco_caption, dureader_qg, english_generation, flickr30k_retrieval, glue, lcsts_new,
                   snli_ve, vqa)

TASKS: Dict[str, object] = {m.TASK.name: m.TASK for m in (dureader_qg, advertisegen, lcsts_new, coco_caption,
                                                          flickr30k_retrieval, snli_ve, vqa)}
TASKS.update({t.name: t for t in (*glue.TASKS, *english_generation.TASKS)})  # glue_*, cnn_dm, gigaword, squad_qg, coqa


def get_task(name: str):
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name]


def task_of_config(path: str) -> str:
    """The registered task a YAML config names (its ``task`` key); an unknown one is a ConfigError."""
    from paddle_unimo.typed import ConfigError
    from tasks.cli import read_yaml
    name = read_yaml(path).get("task")
    if name not in TASKS:
        raise ConfigError(f"{path}: task: unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    return name
