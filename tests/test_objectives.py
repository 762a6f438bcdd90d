"""Pretraining objectives: masking statistics over many seeded samples, hand-checked cases, and each loss
training the tiny model."""
import contextlib
import math

import numpy as np
import paddle
import pytest

from paddle_unimo import GptBpeTokenizer, UNIMOLMHeadModel, WordPieceTokenizer, get_preset
from paddle_unimo.data.regions import RegionRecord, collate_regions
from paddle_unimo.losses import label_smoothed_cross_entropy
from paddle_unimo.objectives import OBJECTIVES, get_objective
from paddle_unimo.objectives import cmcl, region, seq2seq_lm, span_mlm
from paddle_unimo.objectives.words import (TextExample, TextSpecials, chinese_word_starts, gpt2_word_starts,
                                           text_example)

from conftest import shared_path

# The tiny preset's ids: [UNK]0 [SEP]1 [PAD]2 [CLS]3 [MASK]4. A larger vocabulary for the statistics, so that a
# "random" replacement almost never equals the original token.
SPECIALS = TextSpecials(cls_id=3, sep_id=1, pad_id=2, mask_id=4, vocab_size=1000, special_ids=frozenset({0}))
TINY_SPECIALS = TextSpecials(cls_id=3, sep_id=1, pad_id=2, mask_id=4, vocab_size=99, special_ids=frozenset({0}))


def synthetic_texts(rng, n, vocab=1000, words=(20, 80)):
    """Texts of 1-3-token words; some hold a [SEP] or [UNK] word inside, which must never be masked."""
    texts = []
    for _ in range(n):
        lengths = rng.choice([1, 1, 1, 2, 3], size=rng.integers(*words))
        ids = rng.integers(5, vocab, size=lengths.sum())
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        if rng.random() < 0.3:
            w = rng.integers(1, len(starts))
            ids[starts[w]:starts[w] + lengths[w]] = rng.choice([0, 1])  # a special word
        texts.append(TextExample(ids.tolist(), starts.tolist()))
    return texts


def masked_runs(flags):
    """(start, end) of every maximal run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    return list(zip(edges[::2], edges[1::2]))


def assert_whole_words(flags, word_starts, length):
    """Every run of flagged tokens starts at a word start and ends where the next word starts."""
    bounds = set(word_starts) | {length}
    for begin, end in masked_runs(flags):
        assert begin in bounds and end in bounds, (begin, end, sorted(bounds))


# ---- span MLM ------------------------------------------------------------------------------------------

def test_clipped_geometric_expectation():
    # P(l) = 0.2 * 0.8^(l-1) / Z for l = 1..10, Z = 1 - 0.8^10 = 0.892626; sum_l l P(l) = 3.7971 (SpanBERT: 3.8)
    probs = span_mlm.span_length_probs(0.2, 10)
    z = 1 - 0.8 ** 10
    exact = sum(l * 0.2 * 0.8 ** (l - 1) for l in range(1, 11)) / z
    assert np.allclose(probs, [0.2 * 0.8 ** (l - 1) / z for l in range(1, 11)])
    assert exact == pytest.approx(3.797097, abs=1e-6)


def test_span_mlm_statistics_over_2000_texts():
    rng = np.random.default_rng(0)
    texts = synthetic_texts(rng, 2000)
    cfg = span_mlm.SpanMLMConfig(SPECIALS)
    results = [span_mlm.mask_text(t, cfg, rng) for t in texts]
    special = np.array(sorted(SPECIALS.special_ids))
    maskable = sum(int((~np.isin(t.token_ids, special)).sum()) for t in texts)
    masked = sum(len(r.positions) for r in results)
    assert abs(masked / maskable - 0.15) < 0.006
    # Span lengths: every span but a text's last-sampled one has its drawn length; the number of spans
    # is a stopping time, so (Wald) the sum of drawn lengths over the number of spans estimates the mean.
    spans = [s for r in results for s in r.spans]
    assert all(s[2] == s[3] for r in results for s in r.spans[:-1])
    exact = sum(l * 0.2 * 0.8 ** (l - 1) for l in range(1, 11)) / (1 - 0.8 ** 10)
    assert np.mean([s[3] for s in spans]) == pytest.approx(exact, rel=0.04)
    # 80/10/10 at the token level (a span is replaced as a whole)
    kind = np.concatenate([np.where(r.input_ids[r.positions] == SPECIALS.mask_id, 0,
                                    np.where(r.input_ids[r.positions] == r.labels, 2, 1)) for r in results])
    assert np.bincount(kind, minlength=3) / len(kind) == pytest.approx([0.8, 0.1, 0.1], abs=0.02)
    for t, r in zip(texts, results):
        assert not np.isin(r.labels, special).any()  # no special token is ever masked
        replaced = r.positions[(r.input_ids[r.positions] != r.labels)]
        assert not np.isin(r.input_ids[replaced], list(SPECIALS.special_ids - {SPECIALS.mask_id})).any()
        flags = np.zeros(len(r.input_ids), bool)
        flags[r.positions] = True
        starts = [0] + [s + 1 for s in t.word_starts] + [len(r.input_ids) - 1]
        assert_whole_words(flags, starts, len(r.input_ids))


def test_span_mlm_batch_never_touches_padding_or_specials():
    rng = np.random.default_rng(1)
    texts = synthetic_texts(rng, 400, words=(3, 60))
    cfg = span_mlm.SpanMLMConfig(SPECIALS, max_seq_len=48)
    for i in range(0, len(texts), 50):
        batch = span_mlm.make_batch(texts[i:i + 50], cfg, rng)
        ids, pos = batch["input_ids"], batch["masked_positions"]
        B, L = ids.shape
        valid = batch["attention_mask"][:, 0, :]  # bidirectional: row 0 is the key validity
        assert batch["attention_mask"].shape == (B, L, L) and (batch["attention_mask"] == valid[:, None, :]).all()
        assert valid.reshape(-1)[pos].all()  # never a padded position
        assert not np.isin(batch["labels"], list(SPECIALS.special_ids)).any()
        assert (ids[:, 0] == SPECIALS.cls_id).all() and L <= 48
        lengths = valid.sum(1)
        assert (batch["position_ids"][valid] == np.concatenate([np.arange(n) for n in lengths])).all()
        rows = pos // L
        assert (np.bincount(rows, minlength=B) >= 1).all()  # every text has at least one masked word


def test_word_starts_of_wordpiece_gpt2_and_jieba():
    wp = WordPieceTokenizer.build_char_vocab(["我爱北京天安门 hello"])
    assert wp.tokenize("我爱北京天安门hello") == list("我爱北京天安门h") + ["##e", "##l", "##l", "##o"]
    # jieba: 我 / 爱 / 北京 / 天安门 / hello; "hello" is one word, its ## pieces never start one
    assert chinese_word_starts("我爱北京天安门hello", wp) == [0, 1, 2, 4, 7]
    assert text_example("hello hello", wp).word_starts == [0, 5]
    gpt = GptBpeTokenizer.from_dir(str(shared_path("unimo_en")), prefix="unimo_en.")
    tokens = gpt.tokenize("Hello world, unbelievable tokenization!")
    starts = gpt2_word_starts(tokens, gpt)
    bounds = starts + [len(tokens)]
    words = [gpt.convert_tokens_to_string(tokens[a:b]) for a, b in zip(bounds, bounds[1:])]
    assert words == ["Hello", " world,", " unbelievable", " tokenization!"] and len(tokens) > len(words)


def test_chinese_texts_mask_whole_jieba_words():
    import jieba
    lines = shared_path("lcsts", "sample.tsv").read_text(encoding="utf-8").splitlines()
    texts = [line.split("\t")[1] for line in lines]
    tok = WordPieceTokenizer.build_char_vocab(texts)
    specials = TextSpecials.from_tokenizer(tok)
    cfg = span_mlm.SpanMLMConfig(specials)
    rng = np.random.default_rng(2)
    for text in texts:
        example = text_example(text, tok, chinese=True)
        words = [w for w in jieba.lcut(text) if tok.tokenize(w)]
        assert len(example.word_starts) == len(words) < len(example.token_ids)  # multi-character words exist
        for _ in range(20):
            r = span_mlm.mask_text(example, cfg, rng)
            flags = np.zeros(len(r.input_ids), bool)
            flags[r.positions] = True
            assert_whole_words(flags, [0] + [s + 1 for s in example.word_starts] + [len(r.input_ids) - 1],
                               len(r.input_ids))


# ---- seq2seq LM ----------------------------------------------------------------------------------------

def test_reconstruct_hand_example():
    # text a b c d e f g h (ids 10..17); spans "b c" at 1 and "f g" at 5 move to the target
    source = [3, 10, 13, 14, 17, 1]
    target = [3, 11, 12, 15, 16, 4]
    assert seq2seq_lm.reconstruct(source, target, [(1, 2), (5, 2)]) == list(range(10, 18))


def test_seq2seq_statistics_and_exact_reconstruction_over_2000_texts():
    rng = np.random.default_rng(3)
    texts = synthetic_texts(rng, 2000)
    cfg = seq2seq_lm.Seq2SeqLMConfig(SPECIALS)
    special = list(SPECIALS.special_ids)
    chosen = maskable = 0
    for t in texts:
        enc, spans = seq2seq_lm.corrupt(t, cfg, rng)
        assert enc.source_ids[0] == enc.target_ids[0] == SPECIALS.cls_id
        assert enc.source_ids[-1] == SPECIALS.sep_id and enc.target_ids[-1] == SPECIALS.mask_id
        assert seq2seq_lm.reconstruct(enc.source_ids, enc.target_ids, spans) == t.token_ids
        body = enc.target_ids[1:-1]
        assert not np.isin(body, special).any()
        flags = np.zeros(len(t.token_ids), bool)
        for begin, size in spans:
            assert not flags[begin:begin + size].any()  # no overlap
            flags[begin:begin + size] = True
            words = sum(1 for s in t.word_starts if begin <= s < begin + size)
            assert 1 <= words <= cfg.max_span_words
        assert_whole_words(flags, t.word_starts, len(t.token_ids))
        chosen += len(body)
        maskable += int((~np.isin(t.token_ids, special)).sum())
    assert abs(chosen / maskable - 0.25) < 0.006


def test_seq2seq_batch_predicts_the_next_target_token():
    rng = np.random.default_rng(4)
    cfg = seq2seq_lm.Seq2SeqLMConfig(SPECIALS)
    batch = seq2seq_lm.make_batch(synthetic_texts(rng, 8), cfg, rng)
    flat = batch["input_ids"].reshape(-1)
    assert (flat[batch["masked_positions"] + 1] == batch["labels"]).all()
    assert (batch["token_type_ids"].reshape(-1)[batch["masked_positions"]] == 1).all()
    assert (batch["labels"] == SPECIALS.mask_id).sum() == 8  # one eos per text


# ---- regions -------------------------------------------------------------------------------------------

# Five boxes, anchor A; IoU with A worked out by hand:
#   B [1,1,11,11]:   inter 9*9 = 81, union 100 + 100 - 81 = 119 -> 0.681
#   C [5,0,15,10]:   inter 5*10 = 50, union 150 -> 0.333
#   D [20,20,30,30]: no overlap -> 0
#   E = A but not valid (padding) -> never masked
#   F [2,2,8,8]:     inside A, inter 36, union 100 -> 0.36
BOXES = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10], [2, 2, 8, 8]],
                 np.float32)
VALID = np.array([True, True, True, True, False, True])
ANCHOR_A = np.array([True, False, False, False, False, False])


def test_iou_and_overlap_masking_by_hand():
    assert region.iou(BOXES[:1], BOXES[1:]).ravel() == pytest.approx([81 / 119, 1 / 3, 0, 1, 0.36])
    assert np.flatnonzero(region.overlap_mask(BOXES, ANCHOR_A, VALID, 0.4)).tolist() == [0, 1]  # A, B
    assert np.flatnonzero(region.overlap_mask(BOXES, ANCHOR_A, VALID, 0.3)).tolist() == [0, 1, 2, 5]  # A B C F
    anchor_d = np.array([False, False, False, True, False, False])
    assert np.flatnonzero(region.overlap_mask(BOXES, anchor_d, VALID, 0.3)).tolist() == [3]
    assert not region.overlap_mask(BOXES, ~VALID, VALID, 0.3).any()  # an invalid anchor masks nothing


def random_record(rng, name, num_boxes, dim=24, classes=7):
    xy = rng.uniform(0, 60, size=(num_boxes, 2))
    wh = rng.uniform(5, 40, size=(num_boxes, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    logits = rng.normal(size=(num_boxes, classes))
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    return RegionRecord(name, 100, 100, boxes, rng.normal(size=(num_boxes, dim)).astype(np.float32), probs)


def test_region_masks_never_touch_global_row_or_padding():
    rng = np.random.default_rng(5)
    cfg = region.RegionConfig(max_img_len=11)
    for step in range(50):
        examples = [region.RegionExample(random_record(rng, f"{step}-{i}", int(rng.integers(0, 16))))
                    for i in range(4)]
        examples[0] = region.RegionExample(random_record(rng, f"{step}-0", 6))
        original = collate_regions([e.record for e in examples], 11)
        batch = region.make_batch(examples, cfg, rng)
        masked, valid = batch["region_masked"], batch["region_valid"]
        assert not masked[:, 0].any() and not (masked & ~valid).any()
        assert masked[0].any()  # an image with regions has at least one anchor
        assert (batch["region_feats"][masked] == 0).all()
        kept = ~masked
        kept[:, 0] = False  # row 0, the global mean, is recomputed over the visible regions (tested below)
        assert (batch["region_feats"][kept] == original["region_feats"][kept]).all()
        assert (batch["region_locs"] == original["region_locs"]).all()
        assert (batch["region_targets"] == original["region_feats"][masked]).all()
        assert (batch["region_target_probs"] == original["region_class_probs"][masked]).all()
        assert (np.flatnonzero(masked.reshape(-1)) == batch["region_masked_positions"]).all()
        assert "input_ids" not in batch and batch["attention_mask"].shape[1:] == (valid.shape[1],) * 2


def test_region_with_text_keeps_the_text_visible():
    rng = np.random.default_rng(6)
    cfg = region.RegionConfig(max_img_len=11, specials=TINY_SPECIALS)
    examples = [region.RegionExample(random_record(rng, "a", 8), [10, 11, 12]),
                region.RegionExample(random_record(rng, "b", 3), None)]
    batch = region.make_batch(examples, cfg, rng)
    R = batch["region_feats"].shape[1]
    assert batch["input_ids"].tolist() == [[3, 10, 11, 12, 1], [2, 2, 2, 2, 2]]
    keys = np.concatenate([batch["region_valid"], batch["input_ids"] != 2], axis=1)
    assert batch["attention_mask"].shape == (2, R + 5, R + 5)
    assert (batch["attention_mask"] == keys[:, None, :]).all()


# ---- CMCL ----------------------------------------------------------------------------------------------

def test_cmcl_loss_matches_a_hand_computation():
    # tau = 0.5 and sim = tau * ln(e), so that exp(sim / tau) = e:
    #   row 0: e = [4, 1, 1], positive {0}:    -ln(4 / 6) = ln 1.5
    #   row 1: e = [2, 2, 4], positives {1, 2}: -ln(6 / 8) = ln(4 / 3)
    #   row 2: e = [1, 3, 2], positive {2}:    -ln(2 / 6) = ln 3
    #   mean = (ln 1.5 + ln(4/3) + ln 3) / 3 = ln(6) / 3 = 0.5972532
    e = np.array([[4, 1, 1], [2, 2, 4], [1, 3, 2]], np.float64)
    sim = (0.5 * np.log(e)).astype(np.float32)
    positive = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1]], bool)
    assert float(cmcl.cmcl_loss(sim, positive, 0.5)) == pytest.approx(0.5972532, abs=1e-6)
    # a padded column changes nothing, however large its similarity
    padded = np.concatenate([sim, np.full((3, 1), 0.99, np.float32)], axis=1)
    valid = np.concatenate([np.ones((3, 3), bool), np.zeros((3, 1), bool)], axis=1)
    positive4 = np.concatenate([positive, np.ones((3, 1), bool)], axis=1)
    assert float(cmcl.cmcl_loss(padded, positive4, 0.5, valid)) == pytest.approx(0.5972532, abs=1e-6)


def cmcl_examples(rng):
    return [cmcl.CMCLExample(random_record(rng, "a", 5), [10, 11], positive_texts=[[12, 13, 14]],
                             positive_images=[random_record(rng, "a2", 4)], negative_texts=[[10, 15]]),
            cmcl.CMCLExample(random_record(rng, "b", 7), [20, 21, 22]),
            cmcl.CMCLExample(random_record(rng, "c", 2), [30], negative_texts=[[31], [32, 33]])]


def test_cmcl_batch_layout():
    batch = cmcl.make_batch(cmcl_examples(np.random.default_rng(7)), cmcl.CMCLConfig(TINY_SPECIALS, 11))
    # images: a, b, c, a2; texts: a, b, c, a+, a-, c-1, c-2
    assert batch["region_feats"].shape[0] == 4 and batch["text_input_ids"].shape[0] == 7
    # in-batch negatives are scored in ``loss`` against the anchor texts of every process, not listed here
    assert batch["pair_image"].tolist() == [[0, 0, 3, 0], [1, 0, 0, 0], [2, 2, 2, 0]]
    assert batch["pair_text"].tolist() == [[0, 3, 0, 4], [1, 0, 0, 0], [2, 5, 6, 0]]
    assert batch["pair_positive"].tolist() == [[True, True, True, False], [True, False, False, False],
                                               [True, False, False, False]]
    assert batch["pair_valid"].sum(1).tolist() == [4, 1, 3] and float(batch["tau"]) == pytest.approx(0.1)


def test_cmcl_loss_counts_every_other_anchor_as_a_negative():
    """One process: the loss equals cmcl_loss over the full candidate list with the in-batch negatives."""
    rng = np.random.default_rng(8)
    paddle.seed(2)
    model = UNIMOLMHeadModel(get_preset("tiny", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    model.eval()
    batch = cmcl.make_batch(cmcl_examples(rng), cmcl.CMCLConfig(TINY_SPECIALS, 11))
    pairs, in_batch, negative = cmcl.similarity(model, batch)
    assert negative.numpy().tolist() == (~np.eye(3, dtype=bool)).tolist()  # three images, three texts
    pairs, in_batch = pairs.numpy(), in_batch.numpy()
    rows, positives, valids = [], [], []
    for b in range(3):  # the old layout: the row's candidates, then every other anchor's text
        k = batch["pair_valid"][b].sum()
        others = [j for j in range(3) if j != b]
        rows.append(np.concatenate([pairs[b, :k], in_batch[b, others], np.zeros(4 - k)]))
        positives.append(np.concatenate([batch["pair_positive"][b, :k], [False] * 2, [False] * (4 - k)]))
        valids.append(np.concatenate([[True] * (k + 2), [False] * (4 - k)]))
    expected = float(cmcl.cmcl_loss(np.stack(rows).astype("float32"), np.stack(positives), 0.1, np.stack(valids)))
    assert float(cmcl.loss(model, batch)["loss"]) == pytest.approx(expected, rel=1e-5)


def test_cmcl_in_batch_negatives_skip_anchors_of_the_same_image_or_text():
    """Another caption of the anchor's image (COCO has five), or the anchor's own text for another image (or the
    same pair drawn twice), describes the anchor's image: no in-batch negative. Anchors: 0 (image a, text t),
    1 (image b, text t), 2 (image a, text u), 3 (image d, text v)."""
    rng = np.random.default_rng(9)
    examples = [cmcl.CMCLExample(random_record(rng, "a", 5), [10, 11]),
                cmcl.CMCLExample(random_record(rng, "b", 7), [10, 11]),
                cmcl.CMCLExample(random_record(rng, "a", 3), [30]),
                cmcl.CMCLExample(random_record(rng, "d", 4), [40, 41])]
    paddle.seed(2)
    model = UNIMOLMHeadModel(get_preset("tiny", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    model.eval()
    batch = cmcl.make_batch(examples, cmcl.CMCLConfig(TINY_SPECIALS, 11))
    pairs, in_batch, negative = cmcl.similarity(model, batch)
    allowed = {0: [3], 1: [2, 3], 2: [1, 3], 3: [0, 1, 2]}
    assert [np.flatnonzero(row).tolist() for row in negative.numpy()] == [allowed[b] for b in range(4)]
    pairs, in_batch = pairs.numpy(), in_batch.numpy()
    rows = [np.concatenate([pairs[b, :1], in_batch[b, allowed[b]], np.zeros(3 - len(allowed[b]))]) for b in range(4)]
    valid = [np.arange(4) < 1 + len(allowed[b]) for b in range(4)]
    positive = np.zeros((4, 4), bool)
    positive[:, 0] = True
    expected = float(cmcl.cmcl_loss(np.stack(rows).astype("float32"), positive, 0.1, np.stack(valid)))
    assert float(cmcl.loss(model, batch)["loss"]) == pytest.approx(expected, rel=1e-5)


# ---- losses on the tiny model --------------------------------------------------------------------------

def build_batch(name, rng):
    if name in ("span_mlm", "seq2seq_lm"):
        cfg_type = span_mlm.SpanMLMConfig if name == "span_mlm" else seq2seq_lm.Seq2SeqLMConfig
        texts = synthetic_texts(rng, 6, vocab=99, words=(8, 20))
        return get_objective(name).make_batch(texts, cfg_type(TINY_SPECIALS, max_seq_len=40), rng)
    if name == "region":
        examples = [region.RegionExample(random_record(rng, f"r{i}", 9), [10 + i, 11, 12] if i % 2 else None)
                    for i in range(4)]
        return region.make_batch(examples, region.RegionConfig(11, specials=TINY_SPECIALS), rng)
    return cmcl.make_batch(cmcl_examples(rng), cmcl.CMCLConfig(TINY_SPECIALS, 11), rng)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_loss_trains_the_tiny_model(name):
    paddle.seed(0)
    config = get_preset("tiny", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = UNIMOLMHeadModel(config)
    objective = get_objective(name)
    heads = objective.make_heads(config) if objective.make_heads else None
    params = model.parameters() + (heads.parameters() if heads is not None else [])
    optimizer = paddle.optimizer.AdamW(learning_rate=3e-3, parameters=params)
    batch = build_batch(name, np.random.default_rng(8))
    losses = []
    for _ in range(6):
        out = objective.loss(model, batch, heads)
        assert out["loss"].shape == [] and math.isfinite(float(out["loss"]))
        out["loss"].backward()
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.parameters())
        optimizer.step()
        optimizer.clear_grad()
        losses.append(float(out["loss"]))
    assert losses[-1] < losses[0], losses
    assert objective.count(batch) > 0


def test_registry_fails_loudly():
    assert set(OBJECTIVES) == {"span_mlm", "seq2seq_lm", "region", "cmcl"}
    with pytest.raises(KeyError, match=r"unknown objective 'x'; known: \['cmcl', 'region', 'seq2seq_lm', 'span_mlm'\]"):
        get_objective("x")


def test_region_global_row_is_the_mean_of_visible_regions():
    from paddle_unimo.data.regions import RegionRecord
    from paddle_unimo.objectives import region as region_obj
    rng = np.random.default_rng(0)
    records = []
    for n in (6, 9):
        xy = rng.random((n, 2)) * 50
        boxes = np.concatenate([xy, xy + 10 + rng.random((n, 2)) * 40], axis=1).astype("float32")
        records.append(RegionRecord(f"im{n}", 100, 100, boxes, rng.standard_normal((n, 24)).astype("float32")))
    batch = region_obj.make_batch([region_obj.RegionExample(r) for r in records],
                                  region_obj.RegionConfig(max_img_len=11), rng)
    for b in range(2):
        visible = batch["region_valid"][b] & ~batch["region_masked"][b]
        visible[0] = False
        assert batch["region_masked"][b].any()
        np.testing.assert_allclose(batch["region_feats"][b, 0], batch["region_feats"][b][visible].mean(0), atol=1e-6)


# ---- loss values worked out by hand ----------------------------------------------------------------------

def no_dropout_model(seed):
    paddle.seed(seed)
    model = UNIMOLMHeadModel(get_preset("tiny", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    model.eval()
    return model


class FixedHeads:
    """Region heads that return fixed predictions and keep the hidden rows they were given."""

    def __init__(self, predicted, class_logits):
        self.outputs = (paddle.to_tensor(np.asarray(predicted, np.float32)),
                        paddle.to_tensor(np.asarray(class_logits, np.float32)))

    def __call__(self, hidden):
        self.seen = hidden.numpy()
        return self.outputs


def test_region_losses_match_a_hand_computation():
    # one image, rows: global, r1, r2, padding; r1 and r2 masked. Feature targets (D = 2 here, the heads are
    # fixed) and predictions:
    #   r1: target [1, 3],  predicted [1, 1]  -> squared errors 0, 4
    #   r2: target [2, -2], predicted [0, 0]  -> squared errors 4, 4      feature loss = 12 / 4 = 3
    # class distributions and logits:
    #   r1: p = [0.5, 0.5], logits [0, ln 3] -> softmax [1/4, 3/4] -> -(0.5 ln 1/4 + 0.5 ln 3/4) = 0.5 ln(16/3)
    #   r2: p = [1, 0],     logits [ln 2, ln 2] -> softmax [1/2, 1/2] -> ln 2
    #   class loss = (0.5 ln(16/3) + ln 2) / 2
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(1, 4, 24)).astype(np.float32)
    feats[0, 3] = 0.0
    batch = {"region_feats": feats, "region_locs": rng.random((1, 4, 5)).astype(np.float32),
             "region_valid": np.array([[True, True, True, False]]),
             "region_masked_positions": np.array([1, 2], np.int64),
             "region_targets": np.array([[1, 3], [2, -2]], np.float32),
             "region_target_probs": np.array([[0.5, 0.5], [1.0, 0.0]], np.float32)}
    batch["attention_mask"] = batch["region_valid"][:, None, :].repeat(4, axis=1)
    heads = FixedHeads([[1, 1], [0, 0]], [[0, math.log(3)], [math.log(2), math.log(2)]])
    model = no_dropout_model(1)
    out = region.loss(model, batch, heads)
    class_loss = (0.5 * math.log(16 / 3) + math.log(2)) / 2
    assert out["feature_loss"] == pytest.approx(3.0, rel=1e-6)
    assert out["class_loss"] == pytest.approx(class_loss, rel=1e-6)
    assert float(out["loss"]) == pytest.approx(3.0 + class_loss, rel=1e-6)
    hidden = model.unimo(None, None, None, paddle.to_tensor(batch["attention_mask"]),
                         region_feats=paddle.to_tensor(feats), region_locs=paddle.to_tensor(batch["region_locs"]),
                         region_valid=paddle.to_tensor(batch["region_valid"])).numpy()
    np.testing.assert_allclose(heads.seen, hidden[0, 1:3], atol=1e-6)  # the heads saw rows r1 and r2


def test_region_losses_match_numpy_on_real_heads():
    """make_batch + loss against numpy: the masked rows picked by region_masked (not by flat index), the
    heads' weights applied by hand, mean squared error and soft-label cross-entropy written out."""
    rng = np.random.default_rng(9)
    model = no_dropout_model(4)
    heads = region.RegionHeads(model.config)
    records = [random_record(rng, "a", 9), random_record(rng, "b", 5)]
    examples = [region.RegionExample(records[0], [10, 11]), region.RegionExample(records[1])]
    batch = region.make_batch(examples, region.RegionConfig(11, specials=TINY_SPECIALS), rng)
    out = region.loss(model, batch, heads)
    t = paddle.to_tensor
    hidden = model.unimo(t(batch["input_ids"]), t(batch["token_type_ids"]), t(batch["position_ids"]),
                         t(batch["attention_mask"]), region_feats=t(batch["region_feats"]),
                         region_locs=t(batch["region_locs"]), region_valid=t(batch["region_valid"])).numpy()
    masked = batch["region_masked"]
    h = hidden[:, :masked.shape[1]][masked]  # (M, H)
    original = collate_regions(records, 11)
    predicted = h @ heads.feature.weight.numpy() + heads.feature.bias.numpy()
    feature_loss = np.mean((predicted - original["region_feats"][masked]) ** 2)
    logits = (h @ heads.classifier.weight.numpy() + heads.classifier.bias.numpy()).astype(np.float64)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    class_loss = np.mean(-(original["region_class_probs"][masked] * logp).sum(1))
    assert out["feature_loss"] == pytest.approx(feature_loss, rel=1e-5)
    assert out["class_loss"] == pytest.approx(class_loss, rel=1e-5)
    assert float(out["loss"]) == pytest.approx(feature_loss + class_loss, rel=1e-5)
    assert out["num_masked"] == masked.sum() >= 2


def layer_norm(x, weight, bias, eps=1e-5):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def test_span_mlm_loss_matches_numpy():
    """The LM head written out in numpy (transform, ReLU, LayerNorm, tied embedding + bias), then the mean
    cross-entropy over the masked tokens and the accuracy."""
    rng = np.random.default_rng(11)
    model = no_dropout_model(6)
    batch = span_mlm.make_batch(synthetic_texts(rng, 4, vocab=99, words=(6, 12)),
                                span_mlm.SpanMLMConfig(TINY_SPECIALS, max_seq_len=40), rng)
    out = span_mlm.loss(model, batch)
    t = paddle.to_tensor
    hidden = model.unimo(t(batch["input_ids"]), t(batch["token_type_ids"]), t(batch["position_ids"]),
                         t(batch["attention_mask"])).numpy()
    h = hidden.reshape(-1, hidden.shape[-1])[batch["masked_positions"]].astype(np.float64)
    head = model.lm_head
    x = np.maximum(h @ head.transform.weight.numpy() + head.transform.bias.numpy(), 0.0)
    x = layer_norm(x, head.layer_norm.weight.numpy(), head.layer_norm.bias.numpy())
    logits = x @ model.unimo.embeddings.word_embeddings.weight.numpy().T + head.decoder_bias.numpy()
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    labels = batch["labels"]
    expected = np.mean(lse - logits[np.arange(len(labels)), labels])
    assert float(out["loss"]) == pytest.approx(expected, rel=1e-5)
    assert out["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == labels))
    assert out["num_predicted"] == len(labels) >= 4


def test_label_smoothed_cross_entropy_by_hand():
    # logits [0, ln 3]: p = [1/4, 3/4]. Label 1: NLL = ln(4/3); mean_v(-log p_v) = (ln 4 + ln(4/3)) / 2.
    # epsilon 0.1: 0.9 ln(4/3) + 0.1 (ln 4 + ln(4/3)) / 2
    logits = paddle.to_tensor([[0.0, math.log(3)]])
    labels = paddle.to_tensor([1])
    assert float(label_smoothed_cross_entropy(logits, labels)) == pytest.approx(math.log(4 / 3), rel=1e-6)
    smoothed = 0.9 * math.log(4 / 3) + 0.1 * (math.log(4) + math.log(4 / 3)) / 2
    assert float(label_smoothed_cross_entropy(logits, labels, 0.1)) == pytest.approx(smoothed, rel=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_label_smoothed_cross_entropy_and_its_gradient_equal_float64(seed):
    """The loss and its written-out gradient against the float64 formula: 3 rows of 7 (one row's logits far from 0,
    labels at the edges too), epsilon 0 and 0.1, an upstream gradient other than 1."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 7)) * 4
    x[1] += 50.0
    labels = np.array([0, 6, rng.integers(7)])
    for epsilon in (0.0, 0.1):
        logp = x - x.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        target = np.full_like(x, epsilon / 7)
        target[np.arange(3), labels] += 1 - epsilon
        want_loss = -(target * logp).sum(-1).mean()
        want_grad = 2.5 * (np.exp(logp) - target) / 3
        logits = paddle.to_tensor(x.astype("float32"), stop_gradient=False)
        loss = label_smoothed_cross_entropy(logits, paddle.to_tensor(labels), epsilon)
        (2.5 * loss).backward()
        assert float(loss) == pytest.approx(want_loss, rel=1e-6)
        np.testing.assert_allclose(logits.grad.numpy(), want_grad, rtol=1e-5, atol=1e-7)


def test_label_smoothed_cross_entropy_runs_the_cpu_kernel_as_the_written_out_gradient():
    """At a training step's size (threaded) the CPU kernel (``unimo_smoothed_cross_entropy``) gives the loss and
    gradient of the written-out PyLayer on paddle's ops, and the float64 formula; a label outside the vocabulary is
    refused by row."""
    from paddle_unimo import cpu_kernels
    if cpu_kernels.kernels() is None:
        pytest.skip("the CPU kernels could not be built here (no C++ compiler?)")
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((64, 3001)) * 3).astype("float32")
    labels = rng.integers(0, 3001, 64)
    labels[:2] = [0, 3000]
    runs = []
    for context in (contextlib.nullcontext, cpu_kernels.paddle_ops):
        with context():
            logits = paddle.to_tensor(x, stop_gradient=False)
            loss = label_smoothed_cross_entropy(logits, paddle.to_tensor(labels), 0.1)
            (3.0 * loss).backward()
            runs.append((float(loss), logits.grad.numpy()))
    logp = x.astype(np.float64) - x.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    target = np.full_like(logp, 0.1 / 3001)
    target[np.arange(64), labels] += 0.9
    for loss, grad in runs:
        assert loss == pytest.approx(-(target * logp).sum(-1).mean(), rel=1e-6)
        np.testing.assert_allclose(grad, 3.0 * (np.exp(logp) - target) / 64, rtol=1e-5, atol=1e-9)
    bad = labels.copy()
    bad[5] = 3001
    with pytest.raises(OSError, match="label 3001 of row 5 is not in the vocabulary of 3001"):
        label_smoothed_cross_entropy(paddle.to_tensor(x), paddle.to_tensor(bad), 0.1)


def test_objectives_never_import_the_training_package():
    import pathlib
    import re
    folder = pathlib.Path(region.__file__).parent
    for path in folder.glob("*.py"):
        assert not re.search(r"^\s*(from|import)\s+(\.\.training|paddle_unimo\.training)", path.read_text(), re.M), path
