"""CPU cost of retrieval evaluation (tasks/flickr30k_retrieval.py): full cross-encoder scoring against the
two-stage mode (rank by the cosine of separately pooled text and image, re-score the top k), random weights.

    python -m tools.benchmark_retrieval [--preset unimo-base-en] [--layers 12] [--images 20] [--captions 100]
        [--regions 36] [--text-len 20] [--k 5]

Prints pairs/s of the cross-encoder, the seconds of each mode, their ratio (full / two-stage) and the
projected full-scoring time of the Flickr30k test split (1,000 images x 5,000 captions = 5 M pairs), all in
one process on the same model and inputs. Also checks that two-stage scoring with k = all the images and
captions gives the full matrix exactly.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np

import paddle_unimo


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="unimo-base-en")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--captions", type=int, default=100)
    p.add_argument("--regions", type=int, default=36, help="boxes per image (plus the global feature)")
    p.add_argument("--text-len", type=int, default=20, help="caption words")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--batch", type=int, default=96)
    return p.parse_args(argv)


def build(args, folder: str):
    """A random model, a word tokenizer, a region store and caption examples (5 per image, cycling)."""
    import paddle
    from paddle_unimo import WordPieceTokenizer, get_preset
    from paddle_unimo.data.regions import RegionRecord, RegionStore
    from paddle_unimo.modeling import UNIMOForRetrieval
    from tasks.cli import load_config
    from tasks.flickr30k_retrieval import TASK
    from tasks.vision_language import VLExample

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(200)]
    tokenizer = WordPieceTokenizer.build_char_vocab([" ".join(words)], words=True)
    base = get_preset(args.preset)
    paddle.seed(0)
    model = UNIMOForRetrieval(base.replace(num_hidden_layers=args.layers, vocab_size=tokenizer.vocab_size,
                                           pad_token_id=tokenizer.pad_token_id, hidden_dropout_prob=0.0,
                                           attention_probs_dropout_prob=0.0))
    model.eval()
    store = RegionStore(folder)
    dim, n = base.image_embedding_size, args.regions
    xy = rng.uniform(0, 300, (args.images, n, 2)).astype(np.float32)
    store.append([RegionRecord(f"{i}.jpg", 640, 480, np.concatenate([xy[i], xy[i] + 50], axis=1),
                               rng.normal(size=(n, dim)).astype(np.float32)) for i in range(args.images)])
    examples = [VLExample(str(c), f"{c % args.images}.jpg", " ".join(rng.choice(words, args.text_len)))
                for c in range(args.captions)]
    cfg = load_config("tasks/configs/flickr30k_retrieval_tiny.yaml",
                      [f"data.max_img_len={n + 1}", f"data.max_text_len={args.text_len + 2}",
                       f"eval.batch_size={args.batch}"], TASK.config_class)
    cfg.data.regions = folder
    return TASK.bind(model, tokenizer, cfg), examples


def main(argv=None) -> int:
    paddle_unimo.cpu_defaults()
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        runner, examples = build(args, folder)
        runner.score_matrix(examples[:4])  # warm-up: weight packing, allocator
        start = time.perf_counter()
        full = runner.score_matrix(examples)
        full_s = time.perf_counter() - start
        pairs_per_s = runner.throughput["pairs_per_s"]
        runner.cfg.eval.two_stage_k = args.k
        start = time.perf_counter()
        runner.score_matrix(examples)
        two_s, two_pairs = time.perf_counter() - start, runner.throughput["pairs"]
        runner.cfg.eval.two_stage_k = max(args.images, args.captions)
        same = bool(np.array_equal(runner.score_matrix(examples), full))
    print(f"{args.preset} ({args.layers} layers), {args.images} images x {args.captions} captions, "
          f"{args.regions + 1} regions, {args.text_len + 2} tokens, CPU threads {paddle_unimo.cpu_count()}")
    print(f"full scoring       {full.size:7d} pairs {full_s:8.2f} s  {pairs_per_s:8.1f} pairs/s")
    print(f"two-stage k={args.k:<4d}   {two_pairs:7d} pairs {two_s:8.2f} s  ratio full/two-stage x{full_s / two_s:.2f}")
    print(f"two-stage k=all equals full scoring: {same}")
    print(f"Flickr30k test (5,000,000 pairs) at this rate: {5e6 / pairs_per_s / 3600:.1f} h full scoring")
    return 0


if __name__ == "__main__":
    sys.exit(main())
