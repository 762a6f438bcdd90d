"""paddle_unimo: UNIMO (Li et al., ACL 2021) on PaddlePaddle -- one transformer over text and image regions.

Importing the package before paddle sets ``MKL_DEBUG_CPU_TYPE=5`` and ``OMP_NUM_THREADS=<cores>`` unless
the user set them: paddle's bundled MKL otherwise runs a slow single-threaded path on AMD CPUs
(``tools/benchmark_cpu.py`` measures the difference).
"""
import os
import sys

if "paddle" not in sys.modules:
    os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")
    os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))

from .config import PRESETS, UNIMOConfig, get_preset  # noqa: E402
from .modeling import (UNIMOForConditionalGeneration, UNIMOForMaskedLM, UNIMOLMHeadModel,  # noqa: E402
                       UNIMOModel)
from .tokenization import GptBpeTokenizer, WordPieceTokenizer, load_tokenizer  # noqa: E402

__all__ = ["PRESETS", "UNIMOConfig", "get_preset", "UNIMOModel", "UNIMOLMHeadModel", "UNIMOForMaskedLM",
           "UNIMOForConditionalGeneration", "GptBpeTokenizer", "WordPieceTokenizer", "load_tokenizer"]
