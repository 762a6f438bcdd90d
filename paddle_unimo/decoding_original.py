"""The original UNIMO's decoding convention (``generate(..., convention="original")``; PaddlePaddle/Research
NLP/UNIMO ``src/finetune/seq2seq.py`` ``fast_decode`` and ``src/finetune/trigram_blocking.py``): the eos banned
before ``min_length`` on the logits, beams that keep finished hypotheses with the GNMT length penalty counting the
eos, and word-level trigram blocking. ``paddle_unimo.generation`` explains both conventions side by side and
dispatches here. ``output_text``: the text seq2seq.py writes for a decoded sequence.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import paddle

from .generation import _pad_rows, advance, select_rows
from .modeling import log_softmax

EOS_BAN = -1e18  # added to the eos logit before min_length (seq2seq.py ``neg_inf``)
BLOCKED = -65000.0  # added to a blocked candidate's score (trigram_blocking.py ``_BLOCKING_DELTA``)


def output_text(tokenizer, ids) -> str:
    """The text of generated ids (cut before the eos) as seq2seq.py writes it: [CLS], [MASK], [PAD] and [UNK]
    removed (``remove_special_tokens``; a generated [SEP] stays, as its literal text), then white space collapsed
    (``re.sub('\\s+', ' ', ...)``; the ends are stripped here, which no metric sees)."""
    drop = {tokenizer.cls_token_id, tokenizer.mask_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id}
    return " ".join(tokenizer.decode([i for i in ids if i not in drop], skip_special_tokens=False).split())


def word_start_table(tokenizer, vocab_size: int | None = None) -> np.ndarray:
    """(V,) bool: which ids start a word, for ``trigram_blocking``. GPT-2 BPE: a token whose decoded text starts
    with a space (trigram_blocking.py ``_build_id2is_full_token``): a GPT-2 piece beginning with the space byte's
    character 'Ġ'; the other tokens ([CLS], [SEP], [MASK], madeupword0000, ...) decode to themselves, so they
    continue the word before them; SentencePiece: a piece beginning with '▁', and the special tokens; WordPiece:
    a token not beginning with '##'. ``vocab_size`` (e.g. the model's, when larger than the tokenizer's) pads the
    table with True; ids the tokenizer lacks are word starts."""
    size = max(tokenizer.vocab_size, vocab_size or 0)
    table = np.ones(size, bool)
    family = getattr(tokenizer, "family", "wordpiece")
    special = {"[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"}
    space = tokenizer.byte_encoder[ord(" ")] if family == "gpt2_bpe" else "\u2581"
    for token, index in tokenizer.vocab.items():
        if family == "gpt2_bpe":
            piece = tokenizer.decoder.get(int(token), "") if token.isdigit() else token
            table[index] = piece.startswith(space)
        elif family == "sentencepiece":
            table[index] = token.startswith(space) or token in special
        else:
            table[index] = not token.startswith("##")
    return table


def extend_words(words: tuple, token: int, word_starts: np.ndarray) -> tuple:
    """The words (a tuple of token-id tuples) after ``token``: a new word when it starts one (or is the first
    token), else the last word extended (trigram_blocking.py ``_sub_token_id2full_tokens``)."""
    if not words or word_starts[token]:
        return words + ((int(token),),)
    return words[:-1] + (words[-1] + (int(token),),)


def repeats_trigram(words: tuple) -> bool:
    """True when the last three words (the last one possibly incomplete) equal three consecutive words that end
    before the last word; never with 3 words or fewer (trigram_blocking.py ``blocking_forward``)."""
    if len(words) <= 3:
        return False
    last = words[-3:]
    return any(words[end - 3:end] == last for end in range(3, len(words)))


def original_logprobs(logits, eos: int, step: int, min_length: int) -> np.ndarray:
    """(N, V) float32 log-probabilities: before ``min_length`` tokens the eos logit gets -1e18 *before* the
    log-softmax, so it is out of the softmax (seq2seq.py ``revised_logits``); no other token is banned."""
    logits = logits.astype("float32")
    if step < min_length:
        ban = np.zeros(logits.shape[-1], "float32")
        ban[eos] = EOS_BAN
        logits = logits + paddle.to_tensor(ban)
    return log_softmax(logits).numpy()


@dataclass
class Hypothesis:
    """One slot of an "original" beam."""
    tokens: list  # generated ids; ends with the eos when finished
    total: float  # sum of the tokens' log-probabilities (+ BLOCKED per blocked token taken)
    score: float  # total / lp(len(tokens)); fixed once finished
    words: tuple  # the words of [start] + tokens (for trigram blocking)
    row: int  # the decoding row whose cache holds the prefix before the last token
    finished: bool = False


def _candidates(hyps, logp: np.ndarray, step: int, opts: dict) -> list:
    """(score, slot, rank, Hypothesis) of one source: each open slot's top num_beams tokens, each finished slot
    itself; ``logp`` (num_beams, V) holds the slots' rows."""
    k, penalty = opts["num_beams"], ((5.0 + step + 1) / 6.0) ** opts["length_penalty"]
    out = []
    for slot, hyp in enumerate(hyps):
        if hyp.finished:
            out.append((hyp.score, slot, 0, hyp))
            continue
        top = np.argpartition(-logp[slot], k - 1)[:k] if k < logp.shape[1] else np.arange(logp.shape[1])
        top = top[np.argsort(-logp[slot][top], kind="stable")]  # (k,) the beam's top-k, best first
        for rank, token in enumerate(top.tolist()):
            words = extend_words(hyp.words, token, opts["word_starts"]) if opts["blocking"] else ()
            blocked = opts["blocking"] and repeats_trigram(words)
            total = hyp.total + float(logp[slot, token]) + (BLOCKED if blocked else 0.0)
            out.append((total / penalty, slot, rank, Hypothesis(hyp.tokens + [token], total, total / penalty, words,
                                                               hyp.row, token == opts["eos"])))
    return out


def _select(hyps, logp: np.ndarray, step: int, opts: dict) -> list:
    """The next beam of one source: the num_beams best candidates by normalised score (ties: the earlier slot,
    then the better rank), in slot order then rank order, as Paddle's ``beam_search`` op lays them out."""
    items = _candidates(hyps, logp, step, opts)
    best = sorted(range(len(items)), key=lambda i: -items[i][0])[:opts["num_beams"]]  # stable: ties keep order
    return [items[i][3] for i in sorted(best, key=lambda i: items[i][1:3])]


def original_beam_search(stepper, logits, state, start: np.ndarray, opts: dict, max_length: int, num_return: int,
                         pad: int):
    """Beam search of the original UNIMO (see the module docstring); ``start`` (B,) the start tokens."""
    batch, k = logits.shape[0], opts["num_beams"]
    rows = paddle.arange(batch).repeat_interleave(k)
    state, logits = select_rows(stepper, state, rows), paddle.index_select(logits, rows)
    beams = [[Hypothesis([], 0.0, 0.0, ((int(s),),), b * k)] for b, s in enumerate(start)]  # one slot at first
    for t in range(max_length):
        logp = original_logprobs(logits, opts["eos"], t, opts["min_length"])  # (B * k, V)
        for b, hyps in enumerate(beams):
            if any(not h.finished for h in hyps):
                beams[b] = _select(hyps, logp[b * k:(b + 1) * k], t, opts)
        if all(h.finished for hyps in beams for h in hyps) or t == max_length - 1:
            break
        sources, tokens = np.arange(batch * k), np.full(batch * k, pad, "int64")  # (B * k,) each
        for b, hyps in enumerate(beams):
            for j, hyp in enumerate(hyps):
                sources[b * k + j], tokens[b * k + j], hyp.row = hyp.row, hyp.tokens[-1], b * k + j
        state = select_rows(stepper, state, paddle.to_tensor(sources))
        logits = advance(stepper, paddle.to_tensor(tokens[:, None]), state)
    best = [h for hyps in beams for h in sorted(hyps, key=lambda h: -h.score)[:num_return]]
    ids = _pad_rows([h.tokens for h in best], pad, opts["eos"], max_length, close_with_eos=False)
    return ids, np.asarray([[h.score] for h in best], "float32")


def _best_unblocked(logp: np.ndarray, words: tuple, word_starts) -> int:
    """The most probable token of ``logp`` (V,) that does not repeat a word trigram (any, without blocking)."""
    token = int(np.argmax(logp))
    if word_starts is None:
        return token
    row = logp.copy()
    for _ in range(row.size):
        if not repeats_trigram(extend_words(words, token, word_starts)):
            return token
        row[token] = -np.inf
        token = int(np.argmax(row))
    return int(np.argmax(logp))  # every token blocked: take the most probable anyway


def original_greedy(stepper, logits, state, start: np.ndarray, opts: dict, max_length: int, pad: int):
    """Greedy search under "original": eos ban before min_length, word-trigram blocking, no length penalty;
    scores are sums of log-probabilities."""
    n = logits.shape[0]
    word_starts = opts["word_starts"] if opts["blocking"] else None
    words = [((int(s),),) for s in start]
    finished, total = np.zeros(n, bool), np.zeros(n, "float64")
    generated = np.zeros((n, 0), "int64")
    for t in range(max_length):
        logp = original_logprobs(logits, opts["eos"], t, opts["min_length"])  # (n, V)
        token = np.asarray([pad if finished[i] else _best_unblocked(logp[i], words[i], word_starts)
                            for i in range(n)], "int64")
        total += np.where(finished, 0.0, logp[np.arange(n), token])
        if word_starts is not None:
            words = [w if finished[i] else extend_words(w, token[i], word_starts) for i, w in enumerate(words)]
        generated = np.concatenate([generated, token[:, None]], axis=1)
        finished |= token == opts["eos"]
        if finished.all() or t == max_length - 1:
            break
        logits = advance(stepper, paddle.to_tensor(token[:, None]), state)
    return generated, total.astype("float32")[:, None]


def check_word_starts(word_starts, vocab_size: int, where: str = "generate()") -> np.ndarray:
    """``word_starts`` as a (V,) bool array; a ValueError when missing or of another size."""
    if word_starts is None:
        raise ValueError(f"{where}: trigram_blocking needs word_starts, the (vocab_size,) bool table of word-starting "
                         "ids (generation.word_start_table(tokenizer, vocab_size))")
    table = np.asarray(word_starts.numpy() if isinstance(word_starts, paddle.Tensor) else word_starts)
    if table.shape != (vocab_size,):
        raise ValueError(f"{where}: word_starts has shape {list(table.shape)}; want ({vocab_size},), one flag per "
                         "vocabulary id")
    return table.astype(bool)
