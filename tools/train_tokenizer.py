"""Train a tokenizer vocabulary on a text corpus, for pretraining from scratch.

    python -m tools.train_tokenizer --input corpus.txt [more files] --out vocab_dir --kind wordpiece --vocab-size 8000

Inputs are UTF-8 text files (``.gz`` too), one document or sentence per line; empty lines are skipped. A line
that is not UTF-8 stops the run with its ``file:line`` (``--skip-bad`` skips and counts such lines instead).
Every 100th non-empty line is held out of training; the summary line gives the coverage on them (the share of
their tokens that are not [UNK]).

* ``--kind wordpiece`` (default): a WordPiece vocabulary counted from the corpus
  (``paddle_unimo.tokenization_training.wordpiece_vocab`` documents the procedure). Writes ``vocab.txt``
  (token<TAB>index) and ``tokenizer_config.json``; ``paddle_unimo.load_tokenizer(out)`` loads it.
* ``--kind sentencepiece``: a SentencePiece ``--sp-model-type`` bpe|unigram model. Writes ``spm.model``, a
  ``vocab.txt`` listing its pieces, and ``tokenizer_config.json``; load it with
  ``paddle_unimo.tokenization_training.SentencePieceTokenizer.from_dir(out)``.

Both put [UNK], [SEP], [PAD], [CLS], [MASK] at ids 0..4. The output folder appears only when everything is
written (it is built in a temporary sibling folder, then renamed); an existing one is kept unless --overwrite.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys

import paddle_unimo
from paddle_unimo.fileio import atomic_dir
from paddle_unimo.tokenization_training import (HELD_OUT_EVERY, Corpus, coverage, train_sentencepiece,
                                                train_wordpiece)


@contextlib.contextmanager
def atomic_output_dir(out: str, overwrite: bool = False):
    """``fileio.atomic_dir(out)``, refused up front when ``out`` exists and ``overwrite`` is not set."""
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{os.path.abspath(out)} exists; --overwrite replaces it")
    with atomic_dir(out) as tmp:
        yield tmp


def train(args) -> dict:
    corpus = Corpus(args.input, skip_bad=args.skip_bad, held_out_every=HELD_OUT_EVERY)
    with atomic_output_dir(args.out, args.overwrite) as tmp:
        if args.kind == "wordpiece":
            tokenizer = train_wordpiece(corpus, args.vocab_size, lower=not args.cased,
                                        min_char_count=args.min_char_count, min_piece_count=args.min_piece_count,
                                        max_piece_len=args.max_piece_len,
                                        cjk_continuations=args.cjk_continuations)
        else:
            tokenizer = train_sentencepiece(corpus, args.vocab_size, args.sp_model_type,
                                            args.sp_character_coverage)
        tokenizer.save_pretrained(tmp)
    share, tokens = coverage(tokenizer, corpus.held_out)
    summary = {"out": os.path.abspath(args.out), "kind": args.kind, "lines": corpus.lines,
               "skipped": corpus.skipped, "held_out_lines": len(corpus.held_out), "vocab_size": len(tokenizer.vocab),
               "held_out_tokens": tokens, "coverage": share}
    print(f"read {corpus.lines} lines ({corpus.skipped} non-UTF-8 skipped, {len(corpus.held_out)} held out); "
          f"{args.kind} vocab size {len(tokenizer.vocab)}; coverage "
          + ("n/a (no held-out tokens)" if math.isnan(share) else f"{share:.4f} of {tokens} held-out tokens")
          + f"; wrote {summary['out']}")
    return summary


def run(argv=None) -> dict:
    """Parses the command line and trains; returns the summary (``train``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", nargs="+", required=True, help="text files, one document or sentence per line")
    p.add_argument("--out", required=True, help="output tokenizer folder")
    p.add_argument("--kind", choices=("wordpiece", "sentencepiece"), default="wordpiece")
    p.add_argument("--vocab-size", type=int, default=8000, help="upper bound, special tokens included")
    p.add_argument("--skip-bad", action="store_true", help="skip (and count) lines that are not UTF-8")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    wp = p.add_argument_group("wordpiece")
    wp.add_argument("--min-char-count", type=int, default=1, help="rarer characters are left out ([UNK])")
    wp.add_argument("--min-piece-count", type=int, default=2, help="rarer multi-character pieces are left out")
    wp.add_argument("--max-piece-len", type=int, default=10, help="longest piece, in characters")
    wp.add_argument("--no-cjk-continuations", dest="cjk_continuations", action="store_false",
                    help="no ##X entries for CJK characters X (the tokenizer never produces them)")
    wp.add_argument("--cased", action="store_true", help="keep case (default: lower-case, strip accents)")
    sp = p.add_argument_group("sentencepiece")
    sp.add_argument("--sp-model-type", choices=("unigram", "bpe"), default="unigram")
    sp.add_argument("--sp-character-coverage", type=float, default=0.9995,
                    help="share of the characters the model covers (SentencePiece's; 1.0 for small alphabets)")
    return train(p.parse_args(argv))


def main(argv=None) -> int:
    paddle_unimo.cpu_defaults()
    from tasks.cli import run_tool
    return run_tool(run, argv)


if __name__ == "__main__":
    sys.exit(main())
