"""CPU benchmark: paddle_unimo against paddlenlp's UNIMOLMHeadModel on the same weights, in one process,
and the effect of the MKL/OpenMP variables that importing paddle_unimo sets.

    python tools/benchmark_cpu.py [--layers 12] [--batch 4] [--src-len 96] [--new-tokens 20] [--beams 6]

Measures forward, greedy and beam-search generation (tokens/s) and a training step (AdamW, label smoothing
0.1, batch 8 x 128 tokens with a 32-token target) on the unimo-text-1.0 shape with random weights.

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
    parser.add_argument("--beams", type=int, default=6)
    parser.add_argument("--skip-train", action="store_true")
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

    beam = dict(kwargs, decode_strategy="beam_search", num_beams=args.beams, length_penalty=1.2)
    same = bool((ref.generate(**inputs, use_fast=False, **beam)[0].numpy()
                 == generate(ours, **inputs, **beam)[0].numpy()).all())
    t_ref = best_of(lambda: ref.generate(**inputs, use_fast=False, **beam), 1)
    t_ours = best_of(lambda: generate(ours, **inputs, **beam), 1)
    print(f"beam {args.beams}, {args.new_tokens} new tokens x {args.batch}: paddlenlp {tokens / t_ref:.2f} tok/s, "
          f"ours {tokens / t_ours:.2f} tok/s -> x{t_ref / t_ours:.2f} (identical ids: {same})")
    if not args.skip_train:
        t_ref, t_ours = train_step_times(ref, ours, args.repeats)
        print(f"train step 8x128 (32 target tokens each): paddlenlp {t_ref:.2f}s, ours {t_ours:.2f}s "
              f"-> x{t_ref / t_ours:.2f}")


def train_step_times(ref, ours, repeats: int):
    """One AdamW step on the same seq2seq batch: paddlenlp's recipe (float mask, F.label_smooth + soft-label
    cross-entropy, as the 千言 baseline) against ours (bool mask, logsumexp label smoothing)."""
    import numpy as np
    import paddle
    import paddle.nn.functional as F

    from paddle_unimo.data.seq2seq import Encoded, training_batch
    from paddle_unimo.training import label_smoothed_cross_entropy

    rng = np.random.default_rng(1)
    items = [Encoded(rng.integers(5, 17000, 96).tolist(), rng.integers(5, 17000, 32).tolist()) for _ in range(8)]
    batch = {k: paddle.to_tensor(v) for k, v in training_batch(items, 0, 0).items()}
    float_mask = paddle.where(batch["attention_mask"], paddle.zeros([1]), paddle.full([1], -1e4)).unsqueeze(1)
    vocab = ours.config.vocab_size

    def step_ref(opt):
        logits = ref(batch["input_ids"], batch["token_type_ids"], batch["position_ids"], float_mask,
                     masked_positions=batch["masked_positions"])
        soft = F.label_smooth(F.one_hot(batch["labels"], vocab), epsilon=0.1)
        loss = F.cross_entropy(logits, soft, soft_label=True).mean()
        loss.backward()
        opt.step()
        opt.clear_grad()

    def step_ours(opt):
        logits = ours(batch["input_ids"], batch["token_type_ids"], batch["position_ids"], batch["attention_mask"],
                      masked_positions=batch["masked_positions"])
        label_smoothed_cross_entropy(logits, batch["labels"], 0.1).backward()
        opt.step()
        opt.clear_grad()

    times = []
    for model, fn in ((ref, step_ref), (ours, step_ours)):
        model.train()
        opt = paddle.optimizer.AdamW(5e-5, beta2=0.98, epsilon=1e-6, parameters=model.parameters(),
                                     weight_decay=0.01)
        fn(opt)  # warm-up
        times.append(best_of(lambda: fn(opt), repeats))
    return times


if __name__ == "__main__":
    main()
