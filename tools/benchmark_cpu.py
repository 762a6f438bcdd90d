"""CPU benchmark: paddle_unimo against paddlenlp's UNIMOLMHeadModel on the same weights, in one process,
and the effect of the MKL/OpenMP variables that ``paddle_unimo.cpu_defaults()`` sets.

    python -m tools.benchmark_cpu [--layers 12] [--batch 4] [--src-len 96] [--new-tokens 20] [--beams 6]

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

import paddle_unimo

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


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--src-len", type=int, default=96)
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--beams", type=int, default=6)
    parser.add_argument("--skip-train", action="store_true")
    return parser.parse_args(argv)


def report_matmul() -> None:
    """Matmul speed in fresh processes, without and with the variables of ``cpu_defaults``."""
    cores = str(paddle_unimo.cpu_count())
    plain = matmul_gflops({})
    tuned = matmul_gflops({"MKL_DEBUG_CPU_TYPE": "5", "OMP_NUM_THREADS": cores})
    print(f"matmul 2048^3 fp32: default {plain:.1f} GFLOP/s, with MKL_DEBUG_CPU_TYPE=5 OMP_NUM_THREADS={cores} "
          f"{tuned:.1f} GFLOP/s -> x{tuned / plain:.2f}")


def build_models(layers: int):
    """paddlenlp's model (unimo-text-1.0 shape, random weights) and ours loaded from its saved folder."""
    import tempfile

    import paddle
    from paddlenlp.transformers import UNIMOConfig as RefConfig
    from paddlenlp.transformers import UNIMOLMHeadModel as RefModel

    from paddle_unimo import UNIMOLMHeadModel

    paddle.seed(0)
    ref = RefModel(RefConfig(num_hidden_layers=layers))
    ref.eval()
    with tempfile.TemporaryDirectory() as folder:
        ref.save_pretrained(folder)
        ours = UNIMOLMHeadModel.from_pretrained(folder)
    return ref, ours


def make_inputs(batch: int, src_len: int) -> dict:
    import numpy as np
    import paddle

    rng = np.random.default_rng(0)
    ids = paddle.to_tensor(rng.integers(5, 17000, (batch, src_len)))
    ids[:, -1] = 1  # the target's [CLS]: decoding starts here
    # Explicit inputs: paddlenlp's default-position path fails on paddle 3 (expand_as on a shape tensor).
    return dict(input_ids=ids, token_type_ids=paddle.zeros_like(ids),
                position_ids=paddle.arange(src_len).expand([batch, src_len]),
                attention_mask=paddle.zeros([batch, 1, 1, src_len]))


def report_forward(ref, ours, inputs, args) -> None:
    import paddle

    with paddle.no_grad():
        diff = float((ours(**inputs) - ref(**inputs)).abs().max())
        t_ref = best_of(lambda: ref(**inputs).numpy(), args.repeats)
        t_ours = best_of(lambda: ours(**inputs).numpy(), args.repeats)
    print(f"forward {args.batch}x{args.src_len}, {args.layers} layers x768: paddlenlp {t_ref:.3f}s, ours {t_ours:.3f}s "
          f"-> x{t_ref / t_ours:.2f} (max |logit diff| {diff:.2e})")


def report_decoding(ref, ours, inputs, args) -> None:
    """Greedy and beam search: tokens/s of both, and whether they chose the same ids."""
    from paddle_unimo.generation import generate

    tokens = args.batch * args.new_tokens
    greedy = dict(max_length=args.new_tokens, min_length=args.new_tokens)
    beam = dict(greedy, decode_strategy="beam_search", num_beams=args.beams, length_penalty=1.2)
    for name, kwargs, repeats in ((f"greedy {args.new_tokens}", greedy, args.repeats),
                                  (f"beam {args.beams}, {args.new_tokens}", beam, 1)):
        ref_kwargs = {"decode_strategy": "greedy_search", **kwargs, "use_fast": False}
        same = bool((ref.generate(**inputs, **ref_kwargs)[0].numpy()
                     == generate(ours, **inputs, **kwargs)[0].numpy()).all())
        t_ref = best_of(lambda: ref.generate(**inputs, **ref_kwargs), repeats)
        t_ours = best_of(lambda: generate(ours, **inputs, **kwargs), repeats)
        print(f"{name} new tokens x {args.batch}: paddlenlp {tokens / t_ref:.2f} tok/s, "
              f"ours {tokens / t_ours:.2f} tok/s -> x{t_ref / t_ours:.2f} (identical ids: {same})")


def main(argv=None) -> int:
    paddle_unimo.cpu_defaults()
    args = parse_args(argv)
    report_matmul()
    ref, ours = build_models(args.layers)
    inputs = make_inputs(args.batch, args.src_len)
    report_forward(ref, ours, inputs, args)
    report_decoding(ref, ours, inputs, args)
    if not args.skip_train:
        t_ref, t_ours = train_step_times(ref, ours, args.repeats)
        print(f"train step 8x128 (32 target tokens each): paddlenlp {t_ref:.2f}s, ours {t_ours:.2f}s "
              f"-> x{t_ref / t_ours:.2f}")
    return 0


def train_step_times(ref, ours, repeats: int):
    """One AdamW step on the same seq2seq batch: paddlenlp's recipe (float mask, F.label_smooth + soft-label
    cross-entropy, as the 千言 baseline) against ours (bool mask, logsumexp label smoothing)."""
    import numpy as np
    import paddle
    import paddle.nn.functional as F

    from paddle_unimo.data.seq2seq import Encoded, training_batch
    from paddle_unimo.losses import label_smoothed_cross_entropy

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
    sys.exit(main())
