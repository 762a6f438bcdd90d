"""CPU benchmark: paddle_unimo against paddlenlp's UNIMOLMHeadModel on the same weights, in one process,
and the effect of the MKL/OpenMP variables that importing paddle_unimo sets.

    python tools/benchmark_cpu.py [--layers 12] [--batch 4] [--src-len 96] [--new-tokens 20]

Prints ratios (paddlenlp time / ours; above 1 means ours is faster), never absolute pass/fail.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MATMUL = """
import time, paddle
a = paddle.randn([2048, 2048]); b = paddle.randn([2048, 2048]); paddle.matmul(a, b)
t = time.perf_counter(); n = 5
for _ in range(n): paddle.matmul(a, b).numpy()
print(2 * 2048 ** 3 * n / (time.perf_counter() - t) / 1e9)
"""


def matmul_gflops(env_overrides: dict) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_DEBUG_CPU_TYPE", "OMP_NUM_THREADS")}
    env.update(env_overrides)
    out = subprocess.run([sys.executable, "-c", MATMUL], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--src-len", type=int, default=96)
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    cores = str(len(os.sched_getaffinity(0)))
    plain = matmul_gflops({})
    tuned = matmul_gflops({"MKL_DEBUG_CPU_TYPE": "5", "OMP_NUM_THREADS": cores})
    print(f"matmul 2048^3 fp32: default {plain:.1f} GFLOP/s, with MKL_DEBUG_CPU_TYPE=5 OMP_NUM_THREADS={cores} "
          f"{tuned:.1f} GFLOP/s -> x{tuned / plain:.2f}")

    import tempfile

    import numpy as np
    import paddle

    import paddle_unimo  # noqa: F401  (sets the variables before paddlenlp imports paddle's kernels)
    from paddle_unimo import UNIMOLMHeadModel
    from paddle_unimo.generation import generate
    from paddlenlp.transformers import UNIMOConfig as RefConfig
    from paddlenlp.transformers import UNIMOLMHeadModel as RefModel

    paddle.seed(0)
    ref = RefModel(RefConfig(num_hidden_layers=args.layers))  # unimo-text-1.0 shape
    ref.eval()
    with tempfile.TemporaryDirectory() as folder:
        ref.save_pretrained(folder)
        ours = UNIMOLMHeadModel.from_pretrained(folder)
    rng = np.random.default_rng(0)
    ids = paddle.to_tensor(rng.integers(5, 17000, (args.batch, args.src_len)))
    ids[:, -1] = 1  # the target's [CLS]: decoding starts here
    # Explicit inputs: paddlenlp's default-position path fails on paddle 3 (expand_as on a shape tensor).
    inputs = dict(input_ids=ids, token_type_ids=paddle.zeros_like(ids),
                  position_ids=paddle.arange(args.src_len).expand([args.batch, args.src_len]),
                  attention_mask=paddle.zeros([args.batch, 1, 1, args.src_len]))
    with paddle.no_grad():
        diff = float((ours(**inputs) - ref(**inputs)).abs().max())
        t_ref = best_of(lambda: ref(**inputs).numpy(), args.repeats)
        t_ours = best_of(lambda: ours(**inputs).numpy(), args.repeats)
    print(f"forward {args.batch}x{args.src_len}, {args.layers} layers x768: paddlenlp {t_ref:.3f}s, ours {t_ours:.3f}s "
          f"-> x{t_ref / t_ours:.2f} (max |logit diff| {diff:.2e})")

    kwargs = dict(max_length=args.new_tokens, min_length=args.new_tokens)
    r_ids = ref.generate(**inputs, decode_strategy="greedy_search", use_fast=False, **kwargs)[0]
    o_ids = generate(ours, **inputs, **kwargs)[0]
    same = bool((r_ids.numpy() == o_ids.numpy()).all())
    t_ref = best_of(lambda: ref.generate(**inputs, decode_strategy="greedy_search", use_fast=False, **kwargs),
                    args.repeats)
    t_ours = best_of(lambda: generate(ours, **inputs, **kwargs), args.repeats)
    tokens = args.batch * args.new_tokens
    print(f"greedy {args.new_tokens} new tokens x {args.batch}: paddlenlp {tokens / t_ref:.1f} tok/s, "
          f"ours {tokens / t_ours:.1f} tok/s -> x{t_ref / t_ours:.2f} (identical ids: {same})")


if __name__ == "__main__":
    main()
