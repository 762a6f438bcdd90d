"""paddle_unimo: UNIMO (Li et al., ACL 2021) on PaddlePaddle -- one transformer over text and image regions.

Importing the package changes nothing in the environment and does not import paddle; the model classes are
loaded on first use. Entry points call ``cpu_defaults()`` first, before paddle is imported: paddle's bundled
MKL otherwise runs a slow single-threaded path on AMD CPUs (``tools/benchmark_cpu.py`` measures it), and glibc
would hand the memory of every freed tensor back to the system (``keep_freed_memory``).
"""
from __future__ import annotations

import ctypes
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
__all__ = ["cpu_count", "cpu_defaults", "cpu_flags", "keep_freed_memory", "mkl_cpu_type", *_LAZY]


def cpu_count() -> int:
    """The cores this process may run on (its affinity mask where the OS has one), else all of them."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# The instruction-set flags of MKL's AVX-512 (Skylake server) kernels.
_AVX512 = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset:
    """The first processor's instruction-set flags from ``cpuinfo``; empty where there is no such file."""
    try:
        with open(cpuinfo) as lines:
            for line in lines:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def mkl_cpu_type(flags: frozenset) -> str:
    """The ``MKL_DEBUG_CPU_TYPE`` for a CPU with these flags: "7" (MKL's AVX-512 kernels) where it has AVX-512
    F/CD/BW/DQ/VL, else "5" (AVX2). Paddle's MKL (2019) runs its generic kernels on AMD CPUs unless told; on
    Intel CPUs these are the kernels it picks itself."""
    return "7" if _AVX512 <= flags else "5"


# glibc's mallopt parameters (malloc.h) and the values keep_freed_memory gives them.
_KEEP_FREED = ((-3, 1 << 30), (-1, 1 << 30), (-2, 64 << 20))  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, M_TOP_PAD
_MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory() -> bool:
    """Has glibc keep freed memory for the next allocations (``mallopt``: blocks up to 1 GiB from the heap, not
    mmap; up to 1 GiB of free heap kept; the heap grown 64 MiB at a time), unless the user set glibc's own
    ``MALLOC_*_`` variables; True where it did. By default glibc maps every tensor above a few MB afresh and
    unmaps it when freed, so each new activation or gradient pays one page fault per 4 KiB: ~38k faults in a
    unimo-text-1.0 training step (8 x 128 tokens), ~1.7 us each on the benchmark host (``make benchmark``), none
    after this call. The process keeps its peak memory instead of returning it between steps."""
    if any(v in os.environ for v in _MALLOC_VARIABLES) or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's C library
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return all([mallopt(param, value) == 1 for param, value in _KEEP_FREED])


def cpu_defaults() -> Dict[str, str]:
    """Sets ``MKL_DEBUG_CPU_TYPE`` (``mkl_cpu_type``: 7 with AVX-512, else 5) and ``OMP_NUM_THREADS=<cores>``
    unless the user set them, and calls ``keep_freed_memory``; returns the variables it set. Under
    ``paddle.distributed.launch`` the cores are shared among the node's processes (``PADDLE_LOCAL_SIZE``). The
    variables only act when set before paddle is imported: a call after that logs a warning and sets nothing."""
    keep_freed_memory()
    local = os.environ.get("PADDLE_LOCAL_SIZE", "1")
    threads = max(1, cpu_count() // max(1, int(local) if local.isdigit() else 1))
    wanted = {"MKL_DEBUG_CPU_TYPE": mkl_cpu_type(cpu_flags()), "OMP_NUM_THREADS": str(threads)}
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
