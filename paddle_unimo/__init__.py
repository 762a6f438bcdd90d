"""paddle_unimo: UNIMO (Li et al., ACL 2021) on PaddlePaddle -- one transformer over text and image regions.

Importing the package changes nothing in the environment and does not import paddle; the model classes are
loaded on first use. Entry points call ``cpu_defaults()`` first, before paddle is imported: paddle's bundled
MKL otherwise runs a slow single-threaded path on AMD CPUs (``tools/benchmark_cpu.py`` measures it).
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Dict

_LAZY = {
    "PRESETS": "config", "UNIMOConfig": "config", "get_preset": "config",
    "UNIMOModel": "modeling", "UNIMOLMHeadModel": "modeling", "UNIMOForMaskedLM": "modeling",
    "UNIMOForConditionalGeneration": "modeling",
    "GptBpeTokenizer": "tokenization", "WordPieceTokenizer": "tokenization", "load_tokenizer": "tokenization",
}
__all__ = ["cpu_count", "cpu_defaults", *_LAZY]


def cpu_count() -> int:
    """The cores this process may run on (its affinity mask where the OS has one), else all of them."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_defaults() -> Dict[str, str]:
    """Sets ``MKL_DEBUG_CPU_TYPE=5`` and ``OMP_NUM_THREADS=<cores>`` unless the user set them; returns what it
    set. Under ``paddle.distributed.launch`` the cores are shared among the node's processes
    (``PADDLE_LOCAL_SIZE``). They only act when set before paddle is imported: a call after that logs a warning
    and sets nothing."""
    local = os.environ.get("PADDLE_LOCAL_SIZE", "1")
    threads = max(1, cpu_count() // max(1, int(local) if local.isdigit() else 1))
    wanted = {"MKL_DEBUG_CPU_TYPE": "5", "OMP_NUM_THREADS": str(threads)}
    missing = {k: v for k, v in wanted.items() if k not in os.environ}
    if not missing:
        return {}
    if "paddle" in sys.modules:
        logging.getLogger(__name__).warning(
            "cpu_defaults() called after paddle was imported: %s not set, CPU matmul may be several times slower",
            ", ".join(sorted(missing)))
        return {}
    os.environ.update(missing)
    return missing


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
