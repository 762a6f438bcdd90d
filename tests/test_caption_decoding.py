"""Image-conditioned decoding (captioning, layout [regions; object tags; caption]): the captioning mask, cached
decoding against a full forward recompute, region padding, and the [SEP] eos of the original img2txt task."""
import numpy as np
import paddle
import pytest

from paddle_unimo import UNIMOLMHeadModel, WordPieceTokenizer, get_preset, masks
from paddle_unimo.generation import ModelStepper, advance, generate
from paddle_unimo.modeling import log_softmax

UNK, SEP, PAD, CLS, MASK = 0, 1, 2, 3, 4  # the tiny preset's ids (a char vocabulary's special-token order)
BANNED = [UNK, PAD, CLS]  # never generated
FEAT = 24  # the tiny preset's image_embedding_size


def make_model(seed, sep_bias=0.0, **overrides):
    paddle.seed(seed)
    model = UNIMOLMHeadModel(get_preset("tiny", initializer_range=0.3, hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0, **overrides))
    bias = model.lm_head.decoder_bias.numpy()
    bias[SEP] = sep_bias  # a likelier [SEP] makes captions end at different steps
    model.lm_head.decoder_bias.set_value(bias)
    model.eval()
    return model


def random_images(seed, num_valid=(4, 2, 3), num_regions=4):
    """Region features, locations and validity of a few images; padded regions are zero as in a collated batch."""
    rng = np.random.default_rng(seed)
    valid = np.arange(num_regions)[None] < np.asarray(num_valid)[:, None]  # (B, R)
    feats = rng.normal(size=(len(num_valid), num_regions, FEAT)).astype("float32") * valid[..., None]
    locs = rng.uniform(size=(len(num_valid), num_regions, 5)).astype("float32") * valid[..., None]
    return feats, locs, valid


def random_tags(seed, batch=3):
    rng = np.random.default_rng(seed + 100)
    return [rng.integers(5, 99, rng.integers(1, 5)).tolist() for _ in range(batch)]


def caption_inputs(tags, captions, feats, locs, valid):
    """The generate()/forward keyword arguments of [regions; tags; caption], text padded on the left."""
    b = masks.captioning_inputs(tags, captions, valid, pad_id=PAD, position_start=0, left_pad=True)
    t = paddle.to_tensor
    return dict(input_ids=t(b["input_ids"]), token_type_ids=t(b["token_type_ids"]),
                position_ids=t(b["position_ids"]), attention_mask=t(b["attention_mask"]), region_feats=t(feats),
                region_locs=t(locs), region_valid=t(valid))


def start_inputs(seed, **image_kwargs):
    feats, locs, valid = random_images(seed, **image_kwargs)
    tags = random_tags(seed, len(valid))
    return caption_inputs(tags, [[CLS]] * len(tags), feats, locs, valid), (tags, feats, locs, valid)


def full_forward_logits(model, tags, captions, feats, locs, valid):
    """Next-token logits (B, V) by the whole model, no cache, over [regions; tags; caption so far]."""
    return model(**caption_inputs(tags, captions, feats, locs, valid))[:, -1].numpy()


def test_captioning_mask_equals_hand_built_example():
    """2 valid regions + 1 padded region, 2 object tags, 3 caption tokens."""
    b = masks.captioning_inputs([[11, 12]], [[CLS, 21, 22]], [[True, True, False]], pad_id=PAD, position_start=0)
    expected = np.array([  # keys: r0 r1 r2(pad) | tag0 tag1 | cap0 cap1 cap2
        [1, 1, 0, 1, 1, 0, 0, 0],  # r0
        [1, 1, 0, 1, 1, 0, 0, 0],  # r1
        [1, 1, 0, 1, 1, 0, 0, 0],  # r2 (padded query: its output is never used)
        [1, 1, 0, 1, 1, 0, 0, 0],  # tag0
        [1, 1, 0, 1, 1, 0, 0, 0],  # tag1
        [1, 1, 0, 1, 1, 1, 0, 0],  # cap0
        [1, 1, 0, 1, 1, 1, 1, 0],  # cap1
        [1, 1, 0, 1, 1, 1, 1, 1],  # cap2
    ], bool)
    assert b["attention_mask"].dtype == bool and b["attention_mask"].shape == (1, 8, 8)
    np.testing.assert_array_equal(b["attention_mask"][0], expected)
    np.testing.assert_array_equal(b["input_ids"][0], [11, 12, CLS, 21, 22])
    np.testing.assert_array_equal(b["position_ids"][0], [0, 1, 0, 1, 2])  # tags and caption each restart
    np.testing.assert_array_equal(b["token_type_ids"][0], [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(b["valid"][0], [1, 1, 0, 1, 1, 1, 1, 1])


def original_img2txt_mask(image_mask, obj_mask, token_lens, max_len):
    """The original reader's training ``input_mask`` (PaddlePaddle/Research NLP/UNIMO, ``img2txt_reader.py``):
    outer product of the region, tag and token masks, the caption block replaced by ``tril``, and the
    [regions; tags] rows blind to the caption."""
    token_mask = np.arange(max_len)[None] < np.asarray(token_lens)[:, None]
    m = np.concatenate([image_mask, obj_mask, token_mask], axis=1).astype(float)
    m = m[:, :, None] * m[:, None, :]
    ctx = image_mask.shape[1] + obj_mask.shape[1]
    for b, n in enumerate(token_lens):
        m[b, ctx:, ctx:] = 0
        m[b, ctx:ctx + n, ctx:ctx + n] = np.tril(np.ones((n, n)))
    m[:, :ctx, ctx:] = 0
    return m.astype(bool)


def test_captioning_mask_equals_original_reader_on_real_rows():
    """Right padding as in the original: on the rows of real positions our mask equals the original's, key by
    key (the original pads tags and caption as two blocks, we pad the text as one, so keys are matched by
    what they are), and no row sees a padded region or pad token."""
    tags, caps = [[11, 12, 13], [14]], [[CLS, 21, 22, 23], [CLS, 24]]
    region_valid = np.array([[True, True, True], [True, False, False]])
    b = masks.captioning_inputs(tags, caps, region_valid, pad_id=PAD, position_start=2)
    original = original_img2txt_mask(region_valid, np.array([[1, 1, 1], [1, 0, 0]], bool), [4, 2], 4)
    for row in range(2):
        nt, nc = len(tags[row]), len(caps[row])
        ours = np.r_[0:3, 3:3 + nt, 3 + nt:3 + nt + nc]  # regions, tags, caption in our layout
        theirs = np.r_[0:3, 3:3 + nt, 6:6 + nc]  # ... and in the original's (3 tag slots, then the caption)
        real = np.r_[np.flatnonzero(region_valid[row]), 3:3 + nt + nc]  # indices into ours / theirs
        np.testing.assert_array_equal(b["attention_mask"][row][np.ix_(ours[real], ours)],
                                      original[row][np.ix_(theirs[real], theirs)])
        assert not b["attention_mask"][row][:, ~b["valid"][row]].any()
    np.testing.assert_array_equal(b["position_ids"][1], [2, 2, 3, 0, 0, 0, 0])  # restarts at 2; pads 0


def unfinished_before(ids, eos):
    """(B, T) bool: the row had not produced the eos before step t (so step t's token is a real prediction)."""
    ended = np.cumsum(ids == eos, axis=1) > 0
    return ~np.concatenate([np.zeros((len(ids), 1), bool), ended[:, :-1]], axis=1)


# (seed, [SEP] bias): greedy captions of these end at steps [7, -, 3], [-, 2, 7], [5, -, 0], [0, 6, 1], never
@pytest.mark.parametrize("seed,sep_bias", [(0, 6.0), (1, 3.0), (4, 6.0), (3, 7.0), (2, 0.0)])
def test_cached_greedy_equals_full_forward_recompute(seed, sep_bias):
    """At every step the cached logits equal a full forward (no cache) over [regions; tags; caption so far]
    with the captioning mask, and the generated token is the argmax of those logits after the banned tokens."""
    model = make_model(seed, sep_bias=sep_bias)
    inputs, (tags, feats, locs, valid) = start_inputs(seed)
    ids, _ = generate(model, **inputs, max_length=8, eos_token_id=SEP)
    ids = ids.numpy()
    live = unfinished_before(ids, SEP)
    stepper = ModelStepper(model)
    with paddle.no_grad():
        logits, state = stepper.prefill(*(inputs[k] for k in ("input_ids", "token_type_ids", "position_ids",
                                                              "attention_mask")),
                                        inputs["region_feats"], inputs["region_locs"], inputs["region_valid"])
        bias = state.cache.source_bias.numpy()  # (B, 1, 1, R + L): 0 where the key may be seen
        assert bias.shape == (3, 1, 1, 4 + inputs["input_ids"].shape[1])
        np.testing.assert_array_equal(bias[:, 0, 0, :4] == 0, valid)  # region validity first
        for t in range(ids.shape[1]):
            rows = np.flatnonzero(live[:, t])
            captions = [[CLS] + ids[b, :t].tolist() for b in rows]
            ref = full_forward_logits(model, [tags[b] for b in rows], captions, feats[rows], locs[rows], valid[rows])
            np.testing.assert_allclose(logits.numpy()[rows], ref, atol=1e-5)
            ref[:, BANNED] = -1e9
            np.testing.assert_array_equal(ids[rows, t], ref.argmax(-1))
            logits = advance(stepper, paddle.to_tensor(ids[:, t:t + 1]), state)


# (seed, [SEP] bias): hypotheses of these end at several steps (seed 2: none ends)
@pytest.mark.parametrize("seed,sep_bias", [(0, 6.0), (1, 3.0), (4, 5.0), (3, 6.0), (2, 0.0)])
def test_beam_search_scores_equal_recomputed_log_probs(seed, sep_bias):
    """Beam search on images: 1 beam equals greedy; with 3 beams every returned hypothesis' score is the
    full-forward sum of its token log-probs (the [SEP] included when it ends with one) over
    ((length + 5) / 6) ** length_penalty."""
    model = make_model(seed, sep_bias=sep_bias)
    inputs, (tags, feats, locs, valid) = start_inputs(seed)
    greedy, _ = generate(model, **inputs, max_length=7, eos_token_id=SEP)
    one, _ = generate(model, **inputs, max_length=7, eos_token_id=SEP, decode_strategy="beam_search", num_beams=1)
    np.testing.assert_array_equal(one.numpy(), greedy.numpy())
    ids, scores = generate(model, **inputs, max_length=7, eos_token_id=SEP, decode_strategy="beam_search",
                           num_beams=3, num_return_sequences=3, length_penalty=0.6)
    assert ids.shape[0] == 9
    for row, (hyp, score) in enumerate(zip(ids.numpy().tolist(), scores.numpy()[:, 0])):
        b = row // 3
        ends = SEP in hyp
        tokens = hyp[:hyp.index(SEP)] if ends else hyp
        assert PAD not in tokens
        total = 0.0
        for t, token in enumerate(tokens + [SEP] * ends):
            ref = full_forward_logits(model, [tags[b]], [[CLS] + tokens[:t]], feats[b:b + 1], locs[b:b + 1],
                                      valid[b:b + 1])
            ref[:, BANNED] = -1e9
            total += float(log_softmax(paddle.to_tensor(ref))[0, token])
        assert score == pytest.approx(total / ((len(tokens) + 5) / 6) ** 0.6, rel=1e-4, abs=1e-5)
    for b in range(3):
        assert len({tuple(r) for r in ids.numpy()[3 * b:3 * b + 3].tolist()}) == 3  # a source's hypotheses differ


def test_regions_matter_and_padded_regions_do_not():
    """New region features change some caption; an extra padded region (random features, region_valid False)
    changes nothing, for greedy and beam search."""
    changed = False
    for seed in range(4):
        model = make_model(seed, sep_bias=1.0)
        inputs, (tags, feats, locs, valid) = start_inputs(seed)
        kwargs = dict(max_length=8, eos_token_id=SEP)
        ids, _ = generate(model, **inputs, **kwargs)
        other = caption_inputs(tags, [[CLS]] * 3, random_images(seed + 50)[0], locs, valid)
        changed |= not np.array_equal(generate(model, **other, **kwargs)[0].numpy(), ids.numpy())
        rng = np.random.default_rng(seed)
        padded = [np.concatenate([x, rng.normal(size=x[:, :1].shape).astype(x.dtype)], axis=1) for x in (feats, locs)]
        padded_valid = np.concatenate([valid, np.zeros((3, 1), bool)], axis=1)
        with_pad = caption_inputs(tags, [[CLS]] * 3, *padded, padded_valid)
        np.testing.assert_array_equal(generate(model, **with_pad, **kwargs)[0].numpy(), ids.numpy())
        beam = dict(kwargs, decode_strategy="beam_search", num_beams=3, num_return_sequences=2)
        np.testing.assert_array_equal(generate(model, **with_pad, **beam)[0].numpy(),
                                      generate(model, **inputs, **beam)[0].numpy())
    assert changed


def test_decoding_stops_at_sep_as_the_original_img2txt():
    tokenizer = WordPieceTokenizer.build_char_vocab(["a man riding a horse"])
    assert (tokenizer.sep_token_id, tokenizer.pad_token_id, tokenizer.cls_token_id) == (SEP, PAD, CLS)
    model = make_model(1, sep_bias=8.0)  # [SEP] is the favourite at every step
    inputs, _ = start_inputs(1)
    for strategy in ("greedy_search", "beam_search"):
        ids, _ = generate(model, **inputs, max_length=6, min_length=2, eos_token_id=tokenizer.sep_token_id,
                          decode_strategy=strategy, num_beams=3)
        ids = ids.numpy()
        assert (ids[:, 2] == SEP).all() and not (ids[:, :2] == SEP).any()
        assert (ids[:, 3:] == PAD).all()
    ids, _ = generate(model, **inputs, max_length=6, min_length=2)  # the default eos ([MASK]) does not stop it
    assert ids.shape == [3, 6] and (ids.numpy()[:, 2:] == SEP).all()


def test_region_inputs_are_refused_where_they_cannot_be_decoded():
    model = make_model(0)
    inputs, _ = start_inputs(0)

    class TextOnlyStepper:  # like the exported Paddle Inference stepper
        config = model.config

    with pytest.raises(ValueError, match="TextOnlyStepper decodes text only"):
        generate(None, **inputs, stepper=TextOnlyStepper(), max_length=3)
    with pytest.raises(ValueError, match="decodes text only"):
        generate(make_model(0, image_embedding_size=0), **inputs, max_length=3)
    text_mask = inputs["attention_mask"][:, 4:, 4:]
    with pytest.raises(ValueError, match=r"Lk must be R \+ L = "):
        generate(model, **dict(inputs, attention_mask=text_mask), max_length=3)
    with pytest.raises(ValueError, match="needs its attention_mask"):
        generate(model, **dict(inputs, attention_mask=None), max_length=3)
    with pytest.raises(ValueError, match="region shapes"):
        generate(model, **dict(inputs, region_locs=inputs["region_locs"][:, :, :4]), max_length=3)
