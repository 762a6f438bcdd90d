"""Vocabularies learned from a text corpus, for pretraining from scratch (``tools/train_tokenizer.py``).

* ``train_wordpiece``: a WordPiece vocabulary for ``WordPieceTokenizer``, learned by counting (below).
* ``train_sentencepiece``: a SentencePiece BPE or unigram model, trained in-process, wrapped in
  ``SentencePieceTokenizer`` (the ``Tokenizer`` interface of ``paddle_unimo.tokenization``).

Both put the UNIMO special tokens first, at the ids of a vocabulary built from data:
``[UNK]=0, [SEP]=1, [PAD]=2, [CLS]=3, [MASK]=4`` (``tokenization.SPECIAL_TOKENS``).

WordPiece procedure (``wordpiece_vocab``), a frequency count rather than BERT's likelihood-driven merges:

1. ``basic_tokenize`` every line and count the words. CJK characters are words of their own, so a Chinese
   vocabulary is its characters plus frequent pieces of Latin words and numbers.
2. Every character seen at least ``min_char_count`` times enters, most frequent first, each followed by its
   ``##`` continuation form (``cjk_continuations=False`` leaves out ``##`` of CJK characters, which
   ``WordPieceTokenizer.tokenize`` never produces). A vocabulary too small for them is an error.
3. Candidate pieces of 2..``max_piece_len`` characters: the prefixes of every word, and ``##`` + every
   substring that starts after the word's first character, each weighted by the word's count (and by its
   occurrences in the word). Candidates seen at least ``min_piece_count`` times and made of kept characters
   fill the rest of the vocabulary, most frequent first (ties: longer, then alphabetical).

A prefix is never rarer than its extensions, so the chosen prefixes are (up to ties) closed under shortening,
and the characters guarantee that every word (of at most 100 characters) made of kept characters
tokenizes without [UNK].
"""
from __future__ import annotations

import gzip
import heapq
import io
import sys
from collections import Counter
from typing import Dict, Iterable, Iterator, Sequence, Tuple

from .fileio import DataError
from .tokenization import (SPECIAL_TOKENS, SentencePieceTokenizer, Tokenizer, WordPieceTokenizer, _is_cjk,
                           basic_tokenize)

HELD_OUT_EVERY = 100  # every 100th non-empty line is held out of training and measures coverage (1%)


class Corpus:
    """Non-empty lines of UTF-8 text files (``.gz`` too), stripped; a leading BOM is dropped.

    Iterating yields the training lines (one pass reads the files again); every ``held_out_every``-th
    non-empty line goes to ``held_out`` instead. A line that is not UTF-8 raises ``DataError`` naming
    ``file:line``, or with ``skip_bad`` is skipped and counted in ``skipped``: web-crawled corpora hold a few
    such lines, which is why this reader decodes line by line instead of using ``fileio.read_text_lines``
    (which stops at the first).
    """

    def __init__(self, paths: Sequence[str], skip_bad: bool = False, held_out_every: int = HELD_OUT_EVERY):
        self.paths = list(paths)
        self.skip_bad = skip_bad
        self.held_out_every = held_out_every
        self.lines, self.skipped, self.held_out = 0, 0, []

    def _raw_lines(self, path: str) -> Iterator[bytes]:
        with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
            try:
                yield from f
            except (gzip.BadGzipFile, EOFError) as exc:
                raise DataError(f"{path}: broken gzip file ({exc})") from None

    def _read(self, path: str) -> Iterator[str]:
        for line_no, raw in enumerate(self._raw_lines(path), 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                if not self.skip_bad:
                    raise DataError(f"{path}:{line_no}: not UTF-8 ({exc.reason} at byte {exc.start}); "
                                     "--skip-bad skips such lines") from None
                self.skipped += 1
                continue
            line = (line.lstrip("\ufeff") if line_no == 1 else line).strip()
            if line:
                yield line

    def __iter__(self) -> Iterator[str]:
        self.lines, self.skipped, self.held_out = 0, 0, []
        for path in self.paths:
            for line in self._read(path):
                self.lines += 1
                if self.held_out_every and self.lines % self.held_out_every == 0:
                    self.held_out.append(line)
                else:
                    yield line


# ---- WordPiece ----------------------------------------------------------------------------------------

def count_words(lines: Iterable[str], lower: bool = True) -> Counter:
    counts = Counter()
    for line in lines:
        counts.update(basic_tokenize(line, lower))
    return counts


def _piece_counts(word_counts: Dict[str, int], max_len: int) -> Counter:
    """Prefixes and ``##`` inner/suffix substrings of 2..max_len characters, weighted by word frequency."""
    pieces = Counter()
    for word, n in word_counts.items():
        if len(word) < 2 or len(word) > WordPieceTokenizer.max_chars_per_word:
            continue
        for end in range(2, min(len(word), max_len) + 1):
            pieces[word[:end]] += n
        for start in range(1, len(word) - 1):
            for end in range(start + 2, min(len(word), start + max_len) + 1):
                pieces["##" + word[start:end]] += n
    return pieces


def wordpiece_vocab(word_counts: Dict[str, int], vocab_size: int, min_char_count: int = 1,
                    min_piece_count: int = 2, max_piece_len: int = 10,
                    cjk_continuations: bool = True) -> Dict[str, int]:
    """``token -> id``: the special tokens, the characters (+ ``##``), then the most frequent pieces."""
    chars = Counter()
    for word, n in word_counts.items():
        for ch in word:
            chars[ch] += n
    kept = sorted((c for c, n in chars.items() if n >= min_char_count), key=lambda c: (-chars[c], c))
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for ch in kept:
        vocab.setdefault(ch, len(vocab))
        if cjk_continuations or not _is_cjk(ord(ch)):
            vocab.setdefault("##" + ch, len(vocab))
    if len(vocab) > vocab_size:
        raise DataError(f"the {len(kept)} characters seen at least {min_char_count} times need {len(vocab)} "
                         f"vocabulary entries (with the specials and ## forms), more than --vocab-size "
                         f"{vocab_size}; raise --vocab-size or --min-char-count"
                         + ("" if not cjk_continuations else ", or use --no-cjk-continuations"))
    kept_set = set(kept)
    pieces = _piece_counts(word_counts, max_piece_len)
    candidates = (p for p, n in pieces.items() if n >= min_piece_count and p not in vocab
                  and kept_set.issuperset(p[2:] if p.startswith("##") else p))
    body_len = lambda p: len(p) - 2 * p.startswith("##")  # noqa: E731
    for piece in heapq.nsmallest(vocab_size - len(vocab), candidates, key=lambda p: (-pieces[p], -body_len(p), p)):
        vocab[piece] = len(vocab)
    return vocab


def train_wordpiece(lines: Iterable[str], vocab_size: int, lower: bool = True, **options) -> WordPieceTokenizer:
    """A ``WordPieceTokenizer`` learned from ``lines``; ``options`` go to ``wordpiece_vocab``."""
    word_counts = count_words(lines, lower)
    if not word_counts:
        raise DataError("no words to learn a vocabulary from (empty corpus?)")
    return WordPieceTokenizer(wordpiece_vocab(word_counts, vocab_size, **options), do_lower_case=lower)


# ---- SentencePiece ------------------------------------------------------------------------------------

def train_sentencepiece(lines: Iterable[str], vocab_size: int, model_type: str = "unigram",
                        character_coverage: float = 0.9995) -> SentencePieceTokenizer:
    """A SentencePiece model trained in-process on ``lines``, with the UNIMO specials at ids 0..4.

    SentencePiece requires an unknown piece; it is [UNK] at id 0. Its bos/eos/pad are disabled (-1), and
    [SEP], [PAD], [CLS], [MASK] are user-defined symbols, which SentencePiece places, in order, at the lowest
    free ids: 1, 2, 3, 4. User-defined symbols are never split, so "[MASK]" in a text is one token.
    ``vocab_size`` is an upper bound (``hard_vocab_limit=False``): a small corpus may give fewer pieces.
    SentencePiece keeps every line in memory and leaves out lines longer than 64 KiB (``max_sentence_length``).
    """
    import sentencepiece as spm
    seen, errors = [0], []

    def guarded() -> Iterator[str]:
        try:
            for line in lines:
                seen[0] += 1
                yield line
        except Exception as exc:  # SentencePiece turns it into a RuntimeError; re-raised as it was below
            errors.append(exc)
            raise

    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=guarded(), model_writer=model, vocab_size=vocab_size, model_type=model_type,
            character_coverage=character_coverage, unk_id=0, unk_piece=SPECIAL_TOKENS[0], bos_id=-1, eos_id=-1,
            pad_id=-1, user_defined_symbols=list(SPECIAL_TOKENS[1:]), hard_vocab_limit=False,
            max_sentence_length=1 << 16, minloglevel=2)
    except RuntimeError:
        if errors:
            raise errors[0] from None
        if not seen[0]:
            raise DataError("no lines to train a SentencePiece model on (empty corpus?)") from None
        reason = str(sys.exc_info()[1]).strip().splitlines()[-1]
        raise DataError(f"SentencePiece cannot train a {model_type} vocabulary of {vocab_size} pieces on this corpus "
                        f"({reason}); try another --vocab-size") from None
    tokenizer = SentencePieceTokenizer(model.getvalue())
    first = [tokenizer.sp.id_to_piece(i) for i in range(len(SPECIAL_TOKENS))]
    if first != list(SPECIAL_TOKENS):
        raise RuntimeError(f"sentencepiece put {first} at ids 0..4, not {list(SPECIAL_TOKENS)}")
    return tokenizer


def coverage(tokenizer: Tokenizer, lines: Iterable[str]) -> Tuple[float, int]:
    """(share of the tokens of ``lines`` that are not [UNK], number of tokens); NaN without tokens."""
    total = unknown = 0
    for line in lines:
        ids = tokenizer.encode(line)
        total += len(ids)
        unknown += sum(i == tokenizer.unk_token_id for i in ids)
    return (1.0 - unknown / total if total else float("nan")), total
