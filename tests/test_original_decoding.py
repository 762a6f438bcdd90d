"""The original UNIMO's decoding convention (``convention="original"``): hand-worked examples on a scripted
stepper, word-trigram blocking, the config checks, and beam search on a real tiny model against a brute-force
numpy reference that recomputes every prefix with a full forward pass."""
import json
from types import SimpleNamespace

import numpy as np
import paddle
import pytest

from paddle_unimo import WordPieceTokenizer, masks
from paddle_unimo.decoding_original import extend_words, output_text, repeats_trigram, word_start_table
from paddle_unimo.generation import DecodeConfig, DecodeState, generate
from paddle_unimo.tokenization import GptBpeTokenizer
from paddle_unimo.typed import ConfigError, from_dict

from test_generation import make_model  # the tiny model with a tunable eos bias

UNK, SEP, PAD, CLS, EOS = 0, 1, 2, 3, 4
V = 16
# Scripted vocabulary: 5 'Ġa', 6 'Ġb', 7 'Ġne', 8 'w', 9 'ws', 10 'Ġx', 11 'c', 12 'd', 13 'e', 14 'Ġz', 15 'Ġy'
A, B, NE, W, WS, X, C, D, E, Z, Y = range(5, 16)
WORD_STARTS = np.array([True] * 5 + [True, True, True, False, False, True, False, False, False, True, True])
LOW = -1e4  # a logit whose probability is 0 in float32


def logits_of(probs: dict) -> np.ndarray:
    """(V,) logits whose softmax is ``probs`` (token -> probability; the other tokens get probability 0)."""
    out = np.full(V, LOW, "float32")
    for token, p in probs.items():
        out[token] = np.log(p)
    return out


class ScriptedStepper:
    """A fake model: the logits after a generated prefix are ``script[prefix]`` (``default`` for prefixes the
    script lacks); the KV cache is each row's generated prefix."""
    supports_regions = False

    def __init__(self, script: dict, default: dict = None):
        self.script = {k: logits_of(v) for k, v in script.items()}
        self.default = logits_of(default or {EOS: 1.0})
        self.config = SimpleNamespace(vocab_size=V, pad_token_id=PAD, eos_token_id=EOS, unk_token_id=UNK,
                                      bos_token_id=CLS, max_position_embeddings=100, position_start=0)

    def _logits(self, prefixes):
        return paddle.to_tensor(np.stack([self.script.get(p, self.default) for p in prefixes]))

    def prefill(self, input_ids, token_type_ids, position_ids, attention_mask, **regions):
        n = input_ids.shape[0]
        state = DecodeState([()] * n, position_ids[:, -1:], token_type_ids[:, -1:])
        return self._logits(state.cache), state

    def step(self, tokens, state):
        state.cache = [prefix + (int(t),) for prefix, t in zip(state.cache, tokens.numpy()[:, 0])]
        return self._logits(state.cache)

    @staticmethod
    def select_cache(cache, index):
        return [cache[i] for i in index.numpy().tolist()]


def run(script, default=None, **kwargs):
    """Decodes one source ([5, CLS]: the start token is [CLS]) with the scripted stepper; (ids of the first row up
    to its eos, its score)."""
    ids, scores = generate(None, paddle.to_tensor([[A, CLS]]), stepper=ScriptedStepper(script, default), **kwargs)
    return cut(ids.numpy()[0]), float(scores.numpy()[0, 0])


def cut(row):
    row = [int(t) for t in row]
    return row[:row.index(EOS) + 1] if EOS in row else row


def lp(length, alpha):
    return ((5.0 + length) / 6.0) ** alpha


# ---- the eos ban, the length penalty ------------------------------------------------------------------------

BAN_SCRIPT = {(): {EOS: 0.5, A: 0.3, B: 0.2}, (A,): {EOS: 0.9, C: 0.1}, (B,): {EOS: 0.6, D: 0.4}}


def test_eos_ban_before_min_length_is_before_the_softmax():
    """Before min_length the eos is out of the softmax: 'a' has probability 0.3 / (0.3 + 0.2) = 0.6."""
    ids, score = run(BAN_SCRIPT, convention="original", min_length=1, max_length=5)
    assert ids == [A, EOS]
    np.testing.assert_allclose(score, np.log(0.6) + np.log(0.9), rtol=1e-6)  # greedy: a sum, no length penalty
    ids, score = run(BAN_SCRIPT, convention="original", decode_strategy="beam_search", num_beams=2, min_length=1,
                     max_length=5)
    assert ids == [A, EOS]  # [a, eos] 0.54 and [b, eos] 0.24 fill the beam: both finished
    np.testing.assert_allclose(score, (np.log(0.6) + np.log(0.9)) / lp(2, 1.0), rtol=1e-6)
    # PaddleNLP bans the eos after the log-softmax: 'a' keeps log 0.3; greedy scores are means
    _, score = run(BAN_SCRIPT, min_length=1, max_length=5)
    np.testing.assert_allclose(score, (np.log(0.3) + np.log(0.9)) / 2, rtol=1e-6)
    ids, _ = run(BAN_SCRIPT, convention="original", max_length=5)
    assert ids == [EOS]  # without min_length the eos is the favourite


def test_original_bans_nothing_else():
    script = {(): {UNK: 0.4, CLS: 0.35, A: 0.25}, (UNK,): {CLS: 0.6, EOS: 0.4}, (UNK, CLS): {PAD: 0.7, EOS: 0.3}}
    ids, _ = run(script, convention="original", max_length=5)
    assert ids == [UNK, CLS, PAD, EOS]  # [UNK], [CLS], [PAD] are generated under "original"...
    ids, _ = run(script, max_length=5)
    assert ids[0] == A  # ...never under "paddlenlp"


# SA = log 0.5 + log q = -1.0 for [a, eos]; SB = log 0.45 + log 0.8 + log s = -1.15 for [b, c, eos]
Q = float(np.exp(-1.0 - np.log(0.5)))
S = float(np.exp(-1.15 - np.log(0.45) - np.log(0.8)))
LENGTH_SCRIPT = {(): {A: 0.5, B: 0.45, Z: 0.05}, (A,): {EOS: Q, D: 1 - Q}, (B,): {C: 0.8, E: 0.2},
                 (B, C): {EOS: S, Y: 1 - S}}


def test_length_penalty_counts_the_eos():
    """alpha 1: counting the eos, [a, eos] scores -1.0 / (7/6) = -0.857 > [b, c, eos] -1.15 / (8/6) = -0.8625;
    not counting it (PaddleNLP), [b, c] wins: -1.15 / (7/6) = -0.986 > -1.0 / 1."""
    settings = dict(decode_strategy="beam_search", num_beams=2, length_penalty=1.0, max_length=6)
    ids, score = run(LENGTH_SCRIPT, convention="original", **settings)
    assert ids == [A, EOS]
    np.testing.assert_allclose(score, -1.0 / lp(2, 1.0), rtol=1e-5)
    ids, score = run(LENGTH_SCRIPT, **settings)
    assert ids == [B, C, EOS]
    np.testing.assert_allclose(score, -1.15 / lp(2, 1.0), rtol=1e-5)


def test_a_finished_hypothesis_is_pushed_out_by_better_open_ones():
    """alpha 1. Step 0: [a] -0.36, [eos] log 0.2 / lp(1) = -1.61 (finished, kept with that score). Step 1: [a, b]
    -0.87 / (7/6) = -0.74 and [a, d] -1.27 / (7/6) = -1.09 take both slots: [eos] is gone. Step 2 (max_length 3):
    [a, d, x] (log .7 + 2 log .4) / (8/6) = -1.64 and [a, b, x] -1.66, both below the lost [eos]."""
    script = {(): {A: 0.7, EOS: 0.2, C: 0.1}, (A,): {B: 0.6, D: 0.4},
              (A, B): {X: 0.26, E: 0.22, Y: 0.2, Z: 0.18, C: 0.14}, (A, D): {X: 0.4, E: 0.35, Y: 0.25}}
    ids, scores = generate(None, paddle.to_tensor([[A, CLS]]), stepper=ScriptedStepper(script), max_length=3,
                           convention="original", decode_strategy="beam_search", num_beams=2, length_penalty=1.0,
                           num_return_sequences=2)
    np.testing.assert_array_equal(ids.numpy(), [[A, D, X], [A, B, X]])
    expected = [np.log(0.7) + 2 * np.log(0.4), np.log(0.7) + np.log(0.6) + np.log(0.26)]
    np.testing.assert_allclose(scores.numpy()[:, 0], np.asarray(expected) / lp(3, 1.0), rtol=1e-6)
    assert np.log(0.2) / lp(1, 1.0) > scores.numpy()[0, 0]  # the lost [eos] scored better


# ---- word-trigram blocking ---------------------------------------------------------------------------------

def words_of(tokens):
    words = ()
    for token in tokens:
        words = extend_words(words, token, WORD_STARTS)
    return words


def test_words_span_pieces_and_the_start_token_is_the_first_word():
    assert words_of([CLS, A, NE, W, B]) == ((CLS,), (A,), (NE, W), (B,))
    assert words_of([W, W, A]) == ((W, W), (A,))  # the first token always starts a word


@pytest.mark.parametrize("tokens, blocked", [
    ([CLS, A, B, NE, W, A, B, NE], False),  # (a, b, ne) is not (a, b, ne-w): the word is not complete yet
    ([CLS, A, B, NE, W, A, B, NE, W], True),  # the last piece makes the repeated word trigram (a, b, ne-w)
    ([CLS, A, B, NE, W, A, B, NE, WS], False),  # (a, b, ne-ws): another word
    ([CLS, A, B, NE, A, B, NE, W], False),  # (a, b, ne-w) against the earlier (a, b, ne)
    ([CLS, X, C, D, E, C, D, E], False),  # a token trigram repeated inside one word x-c-d-e-c-d-e
    ([CLS, A, B, A, B, A], True),  # (a, b, a) again
    ([CLS, A, B, CLS, A, B], True),  # the start token is a word of the sequence
    ([CLS, A, B, A], False),  # no more than 3 words before the last: nothing to repeat
])
def test_repeats_trigram(tokens, blocked):
    assert repeats_trigram(words_of(tokens)) == blocked


PIECES = [A, B, NE, W, A, B, NE]  # then W would repeat the word trigram (a, b, ne-w)
PIECE_SCRIPT = {**{tuple(PIECES[:i]): {PIECES[i]: 0.8, Z: 0.2} for i in range(len(PIECES))},
                tuple(PIECES): {W: 0.7, WS: 0.2, EOS: 0.1}}


def test_greedy_blocks_a_repeated_word_trigram_at_its_last_piece():
    ids, score = run(PIECE_SCRIPT, convention="original", trigram_blocking=True, word_starts=WORD_STARTS,
                     max_length=10)
    assert ids == PIECES + [WS, EOS]
    np.testing.assert_allclose(score, 7 * np.log(0.8) + np.log(0.2) + 0.0, rtol=1e-6)
    ids, _ = run(PIECE_SCRIPT, convention="original", max_length=10)
    assert ids == PIECES + [W, EOS]  # without blocking
    # token trigrams (PaddleNLP's no_repeat_ngram_size 3) block (a, b, ne) already, one step earlier
    ids, _ = run(PIECE_SCRIPT, no_repeat_ngram_size=3, max_length=10)
    assert ids[:7] == PIECES[:6] + [Z]


def test_the_start_token_is_a_word_of_the_hypothesis():
    """With the start [CLS] among the words, [a, b, CLS, a] + b repeats ([CLS], a, b)."""
    pieces = [A, B, CLS, A]
    script = {**{tuple(pieces[:i]): {pieces[i]: 0.9, Z: 0.1} for i in range(len(pieces))},
              tuple(pieces): {B: 0.7, C: 0.2, EOS: 0.1}}
    ids, score = run(script, convention="original", trigram_blocking=True, word_starts=WORD_STARTS, max_length=8)
    assert ids == pieces + [C, EOS]
    np.testing.assert_allclose(score, 4 * np.log(0.9) + np.log(0.2), rtol=1e-6)
    ids, score = run(script, convention="original", decode_strategy="beam_search", num_beams=2, length_penalty=0.0,
                     trigram_blocking=True, word_starts=WORD_STARTS, max_length=8)
    assert ids == pieces + [C, EOS]
    np.testing.assert_allclose(score, 4 * np.log(0.9) + np.log(0.2), rtol=1e-6)


def test_a_token_trigram_inside_a_word_is_not_blocked():
    pieces = [X, C, D, E, C, D, E]
    script = {tuple(pieces[:i]): {pieces[i]: 0.8, Z: 0.2} for i in range(len(pieces))}
    ids, _ = run(script, convention="original", trigram_blocking=True, word_starts=WORD_STARTS, max_length=10)
    assert ids == pieces + [EOS]
    ids, _ = run(script, no_repeat_ngram_size=3, max_length=10)
    assert ids[6] == Z  # the token trigram (c, d, e) is blocked by token n-grams


ABAB = {(): {A: 0.9, Z: 0.1}, (A,): {B: 0.9, Z: 0.1}, (A, B): {A: 0.9, Z: 0.1}, (A, B, A): {B: 0.9, Z: 0.1},
        (A, B, A, B): {A: 0.6, EOS: 0.3, Z: 0.1}}


def test_beam_search_penalises_blocked_candidates():
    """num_beams 2, alpha 0 (scores are sums): at step 4 the top-2 candidates of [a, b, a, b] are 'a' (blocked:
    (a, b, a) again) and the eos; [a, b, a, b, eos] and [z, eos] then fill the beam."""
    settings = dict(convention="original", decode_strategy="beam_search", num_beams=2, length_penalty=0.0,
                    max_length=5)
    ids, score = run(ABAB, trigram_blocking=True, word_starts=WORD_STARTS, **settings)
    assert ids == [A, B, A, B, EOS]
    np.testing.assert_allclose(score, 4 * np.log(0.9) + np.log(0.3), rtol=1e-6)
    ids, score = run(ABAB, **settings)
    assert ids == [A, B, A, B, A]  # unblocked, the beam stops open at max_length
    np.testing.assert_allclose(score, 4 * np.log(0.9) + np.log(0.6), rtol=1e-6)


def test_one_beam_takes_the_blocked_candidate_with_the_penalty():
    """The original checks only the num_beams top candidates of a beam: with one beam the blocked 'a' is the only
    candidate, taken with -65000 added to its score; greedy search takes the best unblocked token instead."""
    ids, score = run(ABAB, convention="original", decode_strategy="beam_search", num_beams=1, length_penalty=0.0,
                     max_length=5, trigram_blocking=True, word_starts=WORD_STARTS)
    assert ids == [A, B, A, B, A]
    np.testing.assert_allclose(score, 4 * np.log(0.9) + np.log(0.6) - 65000.0, atol=1e-2)
    ids, score = run(ABAB, convention="original", max_length=5, trigram_blocking=True, word_starts=WORD_STARTS)
    assert ids == [A, B, A, B, EOS]


# ---- settings ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings, message", [
    (dict(convention="original", decode_strategy="sampling"), "decode_strategy: 'sampling' is not part of"),
    (dict(convention="original", repetition_penalty=1.2), "repetition_penalty: 1.2 is not part of"),
    (dict(convention="original", no_repeat_ngram_size=3), "no_repeat_ngram_size: 3 is not part of"),
    (dict(convention="original", decode_strategy="beam_search", num_beams=2, early_stopping=True),
     "early_stopping: True is not part of"),
    (dict(trigram_blocking=True, word_starts=WORD_STARTS), "set convention 'original'"),
    (dict(convention="fairseq"), r"convention: 'fairseq' is not one of \['paddlenlp', 'original'\]"),
    (dict(convention="original", trigram_blocking=True), "trigram_blocking needs word_starts"),
    (dict(convention="original", trigram_blocking=True, word_starts=WORD_STARTS[:-1]),
     r"word_starts has shape \[15\]; want \(16,\)"),
])
def test_settings_the_convention_lacks_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        run(BAN_SCRIPT, max_length=3, **settings)


def test_decode_section_takes_the_convention():
    cfg = from_dict(DecodeConfig, {"convention": "original", "trigram_blocking": True, "num_beams": 5,
                                   "decode_strategy": "beam_search"}, "task.yaml: decode")
    assert (cfg.convention, cfg.trigram_blocking) == ("original", True)
    with pytest.raises(ConfigError, match="task.yaml: decode.trigram_blocking: expected true or false"):
        from_dict(DecodeConfig, {"trigram_blocking": "yes"}, "task.yaml: decode")


def test_word_start_table_of_wordpiece_and_gpt2(tmp_path):
    vocab = {t: i for i, t in enumerate(["[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]", "new", "##er", "york"])}
    np.testing.assert_array_equal(word_start_table(WordPieceTokenizer(vocab)), [1, 1, 1, 1, 1, 1, 0, 1])
    encoder = {"Ġnew": 0, "Ġy": 1, "ork": 2, "new": 3, "Ċ": 4}
    (tmp_path / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\nĠ n\nĠn e\nĠne w\nĠ y\no r\nor k\n", encoding="utf-8")
    lines = ["[CLS]", "[PAD]", "[SEP]", "[UNK]", "0", "1", "2", "3", "4", "[MASK]"]
    (tmp_path / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer = GptBpeTokenizer.from_dir(str(tmp_path))
    assert tokenizer.tokenize(" new york") == ["0", "1", "2"]  # 'Ġnew' 'Ġy' 'ork'
    table = word_start_table(tokenizer, vocab_size=12)
    # the special tokens decode to themselves, not to a space-led text: they start no word, as in the original
    np.testing.assert_array_equal(table, [0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1])


def test_output_text_is_what_the_original_seq2seq_writes():
    """seq2seq.py: [CLS]/[MASK]/[PAD]/[UNK] removed, a generated [SEP] kept as its text, white space collapsed."""
    from conftest import shared_path
    tok = GptBpeTokenizer.from_dir(str(shared_path("unimo_en")), prefix="unimo_en.")
    ids = (tok.encode(" The  cat") + [tok.unk_token_id, tok.sep_token_id] + tok.encode("\n sat") +
           [tok.cls_token_id, tok.pad_token_id, tok.mask_token_id])
    assert output_text(tok, ids) == "The cat[SEP] sat"
    assert tok.decode(ids) == " The  cat\n sat"  # the tokenizer's own decoding drops every special token


def test_word_start_table_of_the_english_vocabulary_is_the_originals():
    """Every id of unimo_en.vocab.txt: a word start exactly when its decoded text starts with a space
    (trigram_blocking.py ``_build_id2is_full_token`` with ``decode_token``)."""
    from conftest import shared_path
    tok = GptBpeTokenizer.from_dir(str(shared_path("unimo_en")), prefix="unimo_en.")
    expected = [tok.convert_tokens_to_string([tok.inv_vocab[i]]).startswith(" ") for i in range(tok.vocab_size)]
    table = word_start_table(tok)
    np.testing.assert_array_equal(table, expected)
    assert table.sum() > 10000 and not table[[tok.cls_token_id, tok.sep_token_id, tok.mask_token_id]].any()


# ---- a real tiny model against a brute-force reference ------------------------------------------------------

def full_logits(model, source, prefix) -> np.ndarray:
    """(V,) logits after [source; CLS; prefix] by one full forward pass (no cache)."""
    batch = masks.seq2seq_inputs([source], [[CLS] + list(prefix)], pad_id=PAD, position_start=0)
    with paddle.no_grad():
        return model(**{k: paddle.to_tensor(v) for k, v in batch.items() if k != "valid"})[0, -1].numpy()


def reference_blocked(tokens, word_starts) -> bool:
    """trigram_blocking.py's rule, written out on strings as the original does."""
    words = []
    for token in tokens:
        if word_starts[token] or not words:
            words.append([token])
        else:
            words[-1].append(token)
    words = ["-".join(map(str, w)) for w in words]
    if len(words) <= 3:
        return False
    earlier = {"_".join(words[end - 3:end]) for end in range(3, len(words))}
    return "_".join(words[-3:]) in earlier


def reference_beam_search(model, source, num_beams, max_length, min_length, alpha, word_starts=None):
    """The original's rules in numpy, each prefix recomputed: (tokens, normalised score) of the best hypothesis."""
    beam = [(0.0, [], 0.0, False)]  # (normalised score, tokens, sum, finished)
    for t in range(max_length):
        if all(finished for *_, finished in beam):
            break
        items = []
        for score, tokens, total, finished in beam:
            if finished:
                items.append((score, tokens, total, True))
                continue
            logits = full_logits(model, source, tokens).astype("float64")
            if t < min_length:
                logits[EOS] += -1e18
            logp = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
            for token in np.argsort(-logp, kind="stable")[:num_beams].tolist():
                blocked = word_starts is not None and reference_blocked([CLS] + tokens + [token], word_starts)
                new_total = total + logp[token] + (-65000.0 if blocked else 0.0)
                items.append((new_total / ((5.0 + t + 1) / 6.0) ** alpha, tokens + [token], new_total, token == EOS))
        beam = sorted(items, key=lambda item: -item[0])[:num_beams]
    return max(beam, key=lambda item: item[0])[:2][::-1]


def sources_of(seed, batch=2):
    rng = np.random.default_rng(seed)
    return [[CLS] + rng.integers(5, 99, rng.integers(3, 8)).tolist() + [SEP] for _ in range(batch)]


@pytest.mark.parametrize("seed", range(4))
def test_beam_search_equals_brute_force_reference(seed):
    model = make_model(seed, eos_bias=1.0 + seed % 3)
    sources = sources_of(seed)
    batch = masks.seq2seq_inputs(sources, [[CLS]] * len(sources), pad_id=PAD, position_start=0, left_pad=True)
    inputs = {k: paddle.to_tensor(v) for k, v in batch.items() if k != "valid"}
    word_starts = np.random.default_rng(seed).random(model.config.vocab_size) < 0.9
    for num_beams, max_length, min_length, alpha, blocking in [(2, 7, 2, 1.2, True), (3, 8, 0, 0.6, True),
                                                               (3, 6, 3, 1.0, False)]:
        ids, scores = generate(model, **inputs, convention="original", decode_strategy="beam_search",
                               num_beams=num_beams, max_length=max_length, min_length=min_length,
                               length_penalty=alpha, trigram_blocking=blocking,
                               word_starts=word_starts if blocking else None)
        for b, source in enumerate(sources):
            tokens, score = reference_beam_search(model, source, num_beams, max_length, min_length, alpha,
                                                  word_starts if blocking else None)
            row = [t for t in ids.numpy()[b].tolist() if t != PAD]
            assert row == tokens, (num_beams, max_length, min_length, alpha, blocking)
            np.testing.assert_allclose(float(scores.numpy()[b, 0]), score, rtol=1e-5, atol=1e-4)


def test_blocking_changes_real_decoding():
    """Guards the comparison above: with these word tables blocking changes some beam search outputs."""
    changed = 0
    for seed in range(4):
        model = make_model(seed, eos_bias=1.0 + seed % 3)
        sources = sources_of(seed)
        batch = masks.seq2seq_inputs(sources, [[CLS]] * len(sources), pad_id=PAD, position_start=0, left_pad=True)
        inputs = {k: paddle.to_tensor(v) for k, v in batch.items() if k != "valid"}
        word_starts = np.random.default_rng(seed).random(model.config.vocab_size) < 0.9
        settings = dict(convention="original", decode_strategy="beam_search", num_beams=2, max_length=7,
                        min_length=2, length_penalty=1.2)
        plain, _ = generate(model, **inputs, **settings)
        blocked, _ = generate(model, **inputs, **settings, trigram_blocking=True, word_starts=word_starts)
        changed += not np.array_equal(plain.numpy(), blocked.numpy())
    assert changed >= 2


@pytest.mark.parametrize("seed", range(3))
def test_one_beam_equals_greedy_without_blocking(seed):
    model = make_model(seed, eos_bias=2.0)
    sources = sources_of(seed, batch=3)
    batch = masks.seq2seq_inputs(sources, [[CLS]] * 3, pad_id=PAD, position_start=0, left_pad=True)
    inputs = {k: paddle.to_tensor(v) for k, v in batch.items() if k != "valid"}
    greedy, _ = generate(model, **inputs, convention="original", max_length=8, min_length=2)
    beam, _ = generate(model, **inputs, convention="original", decode_strategy="beam_search", num_beams=1,
                       max_length=8, min_length=2, length_penalty=1.3)
    np.testing.assert_array_equal(beam.numpy(), greedy.numpy())
