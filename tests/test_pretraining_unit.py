"""pretraining.py in-process: the objective mixture, corpus checks, the readers, the objective configs and
recompute on the pretraining model (tests/test_pretrain.py runs the whole thing end to end)."""
import json
import os
import time
from collections import Counter

import numpy as np
import paddle
import pytest

from paddle_unimo import UNIMOLMHeadModel, WordPieceTokenizer, get_preset
from paddle_unimo.data.regions import RegionRecord, RegionStore
from paddle_unimo.fileio import DataError
from paddle_unimo.objectives import TextExample
from paddle_unimo.pretraining import (Corpus, CorpusSpec, Mixture, PretrainModel, load_corpus, objective_configs,
                                      read_captions, read_text_lines)
from paddle_unimo.typed import ConfigError

from conftest import assert_same_loss_and_gradients, loss_and_gradients

TOKENIZER = WordPieceTokenizer.build_char_vocab(["a cat on a mat", "a dog", "two birds"])


def text_corpus(name, objectives, ratio, size=10):
    return Corpus(name, "text", objectives, ratio, [TextExample([5 + i, 6 + i], [0, 1]) for i in range(size)])


CORPORA = [text_corpus("a", ["span_mlm", "seq2seq_lm"], 0.6), text_corpus("b", ["span_mlm"], 0.3),
           text_corpus("c", ["seq2seq_lm"], 0.1, size=3)]


def test_every_rank_draws_the_same_objective_and_its_slice_of_one_global_batch():
    ranks = [Mixture(CORPORA, {}, batch_size=4, seed=3, rank=r, world=2) for r in range(2)]
    single = Mixture(CORPORA, {}, batch_size=8, seed=3)
    for micro in range(200):
        drawn = [m(micro) for m in ranks]
        whole = single(micro)
        assert drawn[0]["objective"] == drawn[1]["objective"] == whole["objective"]
        assert drawn[0]["slots"] == [0, 2, 4, 6] and drawn[1]["slots"] == [1, 3, 5, 7]
        merged = [None] * 8
        for d in drawn:
            for slot, example in zip(d["slots"], d["examples"]):
                merged[slot] = example
        assert merged == whole["examples"]  # two processes hold exactly the batch one process would


def test_draws_follow_the_ratios():
    # pair weights: ratio / number of objectives of the corpus -> a.span 0.3, a.seq2seq 0.3, b.span 0.3, c.s2s 0.1
    mixture = Mixture(CORPORA, {}, batch_size=1, seed=0)
    expected = {("a", "span_mlm"): 0.3, ("a", "seq2seq_lm"): 0.3, ("b", "span_mlm"): 0.3, ("c", "seq2seq_lm"): 0.1}
    n = 6000
    counts = Counter()
    for micro in range(n):
        drawn = mixture(micro)
        corpus = next(c.name for c in CORPORA if any(drawn["examples"][0] is item for item in c.items))
        counts[corpus, drawn["objective"]] += 1
    for pair, p in expected.items():
        assert abs(counts[pair] / n - p) < 4 * np.sqrt(p * (1 - p) / n), (pair, counts)
    with pytest.raises(ValueError, match="positive ratio"):
        Mixture([], {}, batch_size=1, seed=0)


GOOD = {"name": "text", "kind": "text", "paths": ["t.txt"], "objectives": ["span_mlm"], "ratio": 0.5}


@pytest.mark.parametrize("change, message", [
    ({"ratio": None}, r"corpus 'text': missing key ratio"),
    ({"paths": None}, r"corpus 'text': missing key paths"),
    ({"kind": "video"}, r"corpus 'text': kind: 'video' is not one of \['text', 'image', 'pair'\]"),
    ({"ratio": -0.5}, r"corpus 'text': ratio: -0.5 is out of range"),
    ({"ratio": "half"}, r"corpus 'text': ratio: expected a number, got 'half'"),
    ({"objectives": ["cmcl"]}, r"corpus 'text': objectives: a text corpus cannot train \['cmcl'\]"),
    ({"regoins": "x"}, r"corpus 'text': unknown key regoins"),
    ({"kind": "pair", "regions": "r"}, r"corpus 'text': missing key captions"),
], ids=["no-ratio", "no-paths", "kind", "negative-ratio", "ratio-not-a-number", "objective", "typo", "pair"])
def test_corpus_specs_are_checked_before_any_file_is_read(tmp_path, change, message):
    spec = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        load_corpus(spec, TOKENIZER, root=str(tmp_path))  # t.txt does not exist: the spec fails first


def test_read_text_lines_plain_and_fields(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_bytes("\ufeff  first line \n\n second\r\n".encode("utf-8"))  # BOM, blank line, CRLF
    assert read_text_lines(str(plain)) == ["first line", "second"]
    rows = tmp_path / "rows.jsonl"
    rows.write_text('\ufeff{"q": "why", "a": "because", "n": 3}\n{"q": " ", "a": "so"}\n\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"rows.jsonl:4: expected a JSON object"):
        read_text_lines(str(rows), ["q", "a", "n"])
    rows.write_text('{"q": "why", "a": "because", "n": 3}\n{"q": " ", "a": "so"}\n{"q": "x"\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"rows.jsonl:3: malformed JSON"):
        read_text_lines(str(rows), ["q", "a", "n"])
    rows.write_text('{"q": "why", "a": "because", "n": 3}\n{"q": " ", "a": "so"}\n', encoding="utf-8")
    assert read_text_lines(str(rows), ["q", "a", "n"]) == ["why", "because", "so"]  # blank and non-strings skipped


def test_a_text_corpus_is_read_when_drawn_from_an_index_of_offsets(tmp_path, caplog):
    """load_corpus keeps (offset, line, field) rows, not texts: its items are the text_example of each usable line
    or field, in file order, made when drawn (a line rewritten in place after loading gives its new text); with a
    cache folder the rows are saved once and memory-mapped; a text with no token stands in for by the next one."""
    from paddle_unimo.objectives import text_example
    plain = tmp_path / "plain.txt"
    plain.write_bytes("\ufeff a cat on a mat \n\n\u200b\r\ntwo birds\n".encode("utf-8"))  # BOM, blank, no token
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"q": "a dog", "a": "two cats", "n": 3}\n\n{"q": " ", "a": "a bird"}\n', encoding="utf-8")
    spec = {"name": "text", "kind": "text", "objectives": ["span_mlm"], "ratio": 1.0}
    texts = ["a cat on a mat", "\u200b", "two birds"]
    corpus = load_corpus({**spec, "paths": ["plain.txt"]}, TOKENIZER, str(tmp_path))
    assert len(corpus.items) == 3 and corpus.items.places == range(3)
    with caplog.at_level("WARNING"):
        got = [corpus.items[i] for i in range(3)] + [corpus.items[-3]]
    want = [text_example(texts[i], TOKENIZER) for i in (0, 2, 2, 0)]  # item 1 has no token: item 2 stands in
    assert [(e.token_ids, e.word_starts) for e in got] == [(e.token_ids, e.word_starts) for e in want]
    assert caplog.text.count("plain.txt:3: no token in this text; the next item stands in") == 1  # warned once
    assert corpus.items[np.int64(2)] is not None and corpus.items[-1].token_ids == want[2].token_ids
    with pytest.raises(IndexError):
        corpus.items[3]
    with pytest.raises(TypeError):
        corpus.items[1.5]
    cache = tmp_path / "index"
    (tmp_path / "more.jsonl").write_text('{"a": "a cat on a mat"}\n', encoding="utf-8")
    fields = load_corpus({**spec, "paths": ["rows.jsonl", "more.jsonl"], "fields": ["q", "a"]}, TOKENIZER,
                         str(tmp_path), cache=str(cache))
    assert [fields.items[i].token_ids for i in range(3)] == \
        [text_example(t, TOKENIZER).token_ids for t in ("a dog", "two cats", "a bird")]
    assert fields.items[3].token_ids == text_example("a cat on a mat", TOKENIZER).token_ids  # the second file
    saved = sorted(p.name for p in cache.glob("*.npy"))
    assert len(saved) == 2 and all(n.startswith("lines-") and n.endswith(".npy") for n in saved)
    again = load_corpus({**spec, "paths": ["rows.jsonl"], "fields": ["q", "a"]}, TOKENIZER, str(tmp_path),
                        cache=str(cache))
    assert sorted(p.name for p in cache.glob("*.npy")) == saved  # the saved rows, memory-mapped
    assert [again.items[i].token_ids for i in range(3)] == [fields.items[i].token_ids for i in range(3)]
    for name in saved:  # an index a crash cut short is built anew (a new file: the loaded ones keep their map)
        (cache / "cut").write_bytes(b"\x93NUMPY")
        os.replace(cache / "cut", cache / name)
    with caplog.at_level("WARNING"):
        rebuilt = load_corpus({**spec, "paths": ["rows.jsonl"], "fields": ["q", "a"]}, TOKENIZER, str(tmp_path),
                              cache=str(cache))
    assert "unreadable index" in caplog.text and len(rebuilt.items) == 3
    assert [rebuilt.items[i].token_ids for i in range(3)] == [fields.items[i].token_ids for i in range(3)]
    data = plain.read_bytes()
    plain.write_bytes(data.replace(b"two birds", b"a bird, a"))  # same length: the text is read when drawn, and
    with pytest.raises(DataError, match="plain.txt: changed since this run indexed it"):  # a change is seen
        corpus.items[2]
    (tmp_path / "blank.txt").write_text("\u200b\n\x00\n", encoding="utf-8")
    useless = load_corpus({**spec, "name": "useless", "paths": ["blank.txt"]}, TOKENIZER, str(tmp_path))
    with pytest.raises(DataError, match="corpus 'useless': no item is usable \\(no text has a token\\)"):
        useless.items[0]


def _index_in_a_process(args):
    from paddle_unimo import pretraining
    path, cache, log = args
    index = pretraining._index_lines

    def slow(*a):  # every process would index the file if it did not wait for the one indexing it
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        return index(*a)
    pretraining._index_lines = slow
    return pretraining.line_index(path, (), cache).tolist()


def test_processes_starting_together_index_a_file_once(tmp_path):
    import multiprocessing
    from paddle_unimo.pretraining import line_index
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"line {i}\n" for i in range(500)), encoding="utf-8")
    log = tmp_path / "indexed.log"
    with multiprocessing.get_context("fork").Pool(3) as pool:
        rows = pool.map(_index_in_a_process, [(str(path), str(tmp_path / "index"), str(log))] * 3)
    assert len(log.read_text().split()) == 1  # one process indexed; the others read its rows
    assert rows[0] == rows[1] == rows[2] == line_index(str(path)).tolist() and len(rows[0]) == 500


def test_image_and_pair_corpora_read_the_store_when_drawn(tmp_path, store):
    from paddle_unimo.pretraining import LazyItems
    images = load_corpus({"name": "images", "kind": "image", "regions": str(store.path), "objectives": ["region"],
                          "ratio": 1.0}, TOKENIZER)
    assert isinstance(images.items, LazyItems) and images.items.places == store.ids() == ["cat", "dog"]
    for i, image_id in enumerate(store.ids()):
        np.testing.assert_array_equal(images.items[i].features, store.get(image_id).features)
    rows = [{"image_id": "dog", "caption": "a dog"}, {"image_id": "cat", "caption": "a cat on a mat",
                                                      "negative_texts": [{"text": "a dog on a mat"}]}]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    pairs = load_corpus({"name": "pairs", "kind": "pair", "captions": "captions.jsonl", "regions": str(store.path),
                         "objectives": ["cmcl"], "ratio": 1.0}, TOKENIZER, str(tmp_path))
    assert isinstance(pairs.items, LazyItems) and pairs.items.places.tolist() == \
        [[0, 1, -1], [len(json.dumps(rows[0])) + 1, 2, -1]]  # (offset, line, -1) of each checked row
    example = pairs.items[1]
    assert example.text_ids == TOKENIZER.encode("a cat on a mat") and example.image.image_id == "cat"
    assert example.negative_texts == [TOKENIZER.encode("a dog on a mat")]
    np.testing.assert_array_equal(example.image.features, store.get("cat").features)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("regions")
    records = []
    for name in ("cat", "dog"):
        xy = rng.uniform(0, 40, (3, 2))
        boxes = np.concatenate([xy, xy + 10], axis=1).astype(np.float32)
        records.append(RegionRecord(name, 64, 64, boxes, rng.normal(size=(3, 24)).astype(np.float32)))
    regions = RegionStore(folder)
    regions.append(records)
    return RegionStore(folder)


@pytest.mark.parametrize("line, message", [
    ('{"image_id": "cat", "caption": "a cat"', r"captions.jsonl:3: malformed JSON"),
    ('{"image_id": "cat"}', r"captions.jsonl:3: missing key 'caption'"),
    ('{"image_id": "cow", "caption": "a cow"}', r"captions.jsonl:3: image id 'cow' is not in region store"),
    ('{"image_id": "cat", "caption": "a", "negative_texts": ["a dog"]}',
     r"captions.jsonl:3: negative_texts must be a list of \{'text': \.\.\.\} objects"),
    ('{"image_id": "cat", "caption": "a", "positive_texts": [{"text": "a dog", "source": "retrieved"}]}',
     r"captions.jsonl:3: positive_texts holds captions of other images retrieved by TF-IDF, .* rebuild"),
    ('{"image_id": "cat", "caption": "   "}', r"captions.jsonl:3: caption '   ' has no token"),
    ('{"image_id": "cat", "caption": "a", "negative_texts": [{"text": 5}]}', r"captions.jsonl:3: text 5 is not a "
     "string"),
    ('{"image_id": "cat", "caption": "a", "positive_images": [{"image_id": "cow"}]}',
     r"captions.jsonl:3: image id 'cow' is not in region store"),
    ('{"image_id": "cat", "caption": "a", "positive_texts": [{"text": null}]}',
     r"captions.jsonl:3: text None is not a string"),
    ('{"image_id": "cat", "caption": null}', r"captions.jsonl:3: text None is not a string"),
    ('{"image_id": ["cat"], "caption": "a"}', r"captions.jsonl:3: image id \['cat'\] is not a string"),
], ids=["json", "key", "image", "list", "old-retrieved", "empty", "text-type", "positive-image", "null-text",
        "null-caption", "list-id"])
def test_read_captions_errors_name_file_and_line(tmp_path, store, line, message):
    good = {"image_id": "cat", "caption": "a cat on a mat", "positive_images": [{"image_id": "dog"}]}
    path = tmp_path / "captions.jsonl"
    path.write_text(f"\ufeff{json.dumps(good)}\n\n{line}\n", encoding="utf-8")  # line 2 blank, line 3 bad
    with pytest.raises(DataError, match=message):
        read_captions(str(path), store, TOKENIZER)
    path.write_text(f"\ufeff{json.dumps(good)}\n", encoding="utf-8")
    (example,) = read_captions(str(path), store, TOKENIZER)
    assert example.text_ids == TOKENIZER.encode("a cat on a mat")
    assert [r.image_id for r in (example.image, *example.positive_images)] == ["cat", "dog"]


def objective_config(preset, overrides=None):
    names = ["region", "cmcl", "span_mlm"]
    return objective_configs(names, overrides or {}, TOKENIZER, get_preset(preset))


def test_region_overlap_comes_from_the_model_and_pretraining_keeps_101_rows():
    large, base = objective_config("unimo-large-en"), objective_config("unimo-base-en")
    assert large["region"].overlap_ratio == 0.3 and base["region"].overlap_ratio == 0.4
    assert get_preset("unimo-base-en").max_img_len == 37
    assert base["region"].max_img_len == base["cmcl"].max_img_len == 101  # not the preset's 37
    assert base["region"].position_start == base["span_mlm"].position_start == 2
    custom = objective_config("unimo-large-en", {"region": {"overlap_ratio": 0.5, "max_img_len": 11}})
    assert (custom["region"].overlap_ratio, custom["region"].max_img_len) == (0.5, 11)
    # 150 boxes keep the global row and the first 100 of them
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 50, (150, 2))
    record = RegionRecord("big", 100, 100, np.concatenate([xy, xy + 20], 1).astype(np.float32),
                          rng.normal(size=(150, 8)).astype(np.float32))
    from paddle_unimo.objectives import get_objective, region
    batch = get_objective("region").make_batch([region.RegionExample(record)], base["region"], rng)
    assert batch["region_feats"].shape == (1, 101, 8) and batch["region_valid"].all()


def test_objective_config_values_are_checked():
    with pytest.raises(ConfigError, match=r"objectives.region: unknown key overlap"):
        objective_config("tiny", {"region": {"overlap": 0.3}})
    with pytest.raises(ConfigError, match=r"objectives.region.mask_ratio: expected a number, got 'many'"):
        objective_config("tiny", {"region": {"mask_ratio": "many"}})
    with pytest.raises(ConfigError, match=r"objectives.cmcl.tau: 0.0 is out of range"):
        objective_config("unimo-base-en", {"cmcl": {"tau": 0}})
    with pytest.raises(ConfigError, match=r"objectives: unknown objective 'spanmlm'; known: .*span_mlm"):
        objective_config("tiny", {"spanmlm": {"mask_ratio": 0.2}})
    for name, key, value in (("span_mlm", "geometric_p", 0), ("span_mlm", "mask_ratio", 1.5),
                             ("span_mlm", "max_seq_len", 2), ("seq2seq_lm", "target_ratio", 0)):
        with pytest.raises(ConfigError, match=rf"objectives.{name}.{key}: {value}.* is out of range"):
            objective_configs([name], {name: {key: value}}, TOKENIZER, get_preset("tiny"))
    with pytest.raises(ConfigError, match=r"objectives.span_mlm.position_start: set from the model"):
        objective_configs(["span_mlm"], {"span_mlm": {"position_start": 2}}, TOKENIZER, get_preset("tiny"))
    with pytest.raises(ConfigError, match=r"objectives.region.max_seq_len: 512 is above the model's 128 position "
                                          r"embeddings \(allowed: <= 128\)"):
        objective_config("tiny")  # every objective's text must fit the position table


def test_pretrain_model_recompute_gives_the_same_loss_and_gradients():
    from paddle_unimo.objectives import span_mlm
    configs = objective_configs(["span_mlm"], {"span_mlm": {"max_seq_len": 32}}, TOKENIZER,
                                get_preset("tiny", vocab_size=TOKENIZER.vocab_size))
    texts = [TextExample(list(range(10, 22)), list(range(0, 12, 2))) for _ in range(3)]
    batch = {**span_mlm.make_batch(texts, configs["span_mlm"], np.random.default_rng(0)), "objective": "span_mlm"}
    runs = []
    for recompute in (False, True):
        paddle.seed(2)
        model = UNIMOLMHeadModel(get_preset("tiny", vocab_size=TOKENIZER.vocab_size, hidden_dropout_prob=0.0,
                                            attention_probs_dropout_prob=0.0))
        pretrain = PretrainModel(model, ["span_mlm"])
        pretrain.train()
        pretrain.set_recompute(recompute)
        assert model.unimo.encoder.recompute is recompute
        loss = pretrain(batch)["loss"]
        loss.backward()
        runs.append(loss_and_gradients(loss, pretrain))
    assert_same_loss_and_gradients(*runs)


def test_a_region_store_of_another_width_than_the_model_is_refused_up_front(store):
    """Before any step: a corpus whose store holds 24-d features and a model taking other ones (or none)."""
    from types import SimpleNamespace

    from tasks.pretrain import check_region_stores
    cfg = SimpleNamespace(corpora=[CorpusSpec("text", "text", ["span_mlm"], 1.0, paths=["a.txt"]),
                                   CorpusSpec("images", "image", ["region"], 1.0, regions=store.path)])
    check_region_stores(cfg, get_preset("tiny", image_embedding_size=24), "cfg.yaml")
    with pytest.raises(ConfigError, match=r"cfg.yaml: corpus 'images': the region store .* holds 24-d features but "
                                          r"the model takes 16-d ones"):
        check_region_stores(cfg, get_preset("tiny", image_embedding_size=16), "cfg.yaml")
    with pytest.raises(ConfigError, match="the model has no region embeddings"):
        check_region_stores(cfg, get_preset("tiny", image_embedding_size=0), "cfg.yaml")


# ---- the text objectives on image-text pairs --------------------------------------------------------------

def pair_texts(store, captions=("a cat on a mat", "two birds")):
    from paddle_unimo.objectives import text_example
    texts = [text_example(c, TOKENIZER) for c in captions]
    return texts, [TextExample(t.token_ids, t.word_starts, image=store.get(i)) for t, i in zip(texts, ("cat", "dog"))]


@pytest.mark.parametrize("name", ["span_mlm", "seq2seq_lm"])
def test_a_caption_is_learned_given_its_image(store, name):
    """A pair's caption: the same masking or corruption as the text alone (same generator), in the layout
    ``[regions; text]``: the text keeps its own mask among its tokens and sees every valid region; the regions see
    each other and the text's rank-0 tokens (all of an MLM text, a seq2seq source, never a target); the loss is
    the LM head's cross-entropy at the text rows of the joint sequence, and it depends on the image."""
    from paddle_unimo.losses import label_smoothed_cross_entropy
    from paddle_unimo.objectives import get_objective
    cfg = get_preset("tiny", vocab_size=TOKENIZER.vocab_size, pad_token_id=TOKENIZER.pad_token_id,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    objective = get_objective(name)
    config = objective_configs([name], {name: {"max_img_len": 4, "max_seq_len": 64}}, TOKENIZER, cfg)[name]
    texts, pairs = pair_texts(store)
    alone = objective.make_batch(texts, config, np.random.default_rng(3))
    batch = objective.make_batch(pairs, config, np.random.default_rng(3))
    for key in ("input_ids", "token_type_ids", "position_ids", "labels"):
        np.testing.assert_array_equal(batch[key], alone[key], err_msg=key)
    R, L = batch["region_feats"].shape[1], alone["input_ids"].shape[1]
    assert R == 4 and batch["attention_mask"].shape == (2, R + L, R + L) and batch["region_valid"].all()
    joint = np.concatenate([np.full((2, R), -1), batch["input_ids"]], axis=1).reshape(-1)
    assert (joint[batch["masked_positions"]] == alone["input_ids"].reshape(-1)[alone["masked_positions"]]).all()
    mask = batch["attention_mask"]
    np.testing.assert_array_equal(mask[:, R:, R:], alone["attention_mask"])  # the text's own rule
    text_valid = alone["attention_mask"].any(axis=1)  # keys some token attends: the real tokens
    for b in range(2):
        assert mask[b, :, :R].all()  # every row sees every region (all valid here)
        seen_by_regions = mask[b, :R, R:]
        assert (seen_by_regions == seen_by_regions[0]).all()
        expected = text_valid[b] if name == "span_mlm" else alone["attention_mask"][b, 0]  # [CLS]: the source
        np.testing.assert_array_equal(seen_by_regions[0], expected)
    assert name == "span_mlm" or not mask[:, :R, R:].all()  # a seq2seq target is hidden from the regions

    paddle.seed(0)
    model = UNIMOLMHeadModel(cfg)
    model.eval()
    t = {k: paddle.to_tensor(v) for k, v in batch.items()}
    hidden = model.unimo(t["input_ids"], t["token_type_ids"], t["position_ids"], t["attention_mask"],
                         region_feats=t["region_feats"], region_locs=t["region_locs"], region_valid=t["region_valid"])
    rows = hidden.numpy()[:, R:].reshape(-1, hidden.shape[-1])[alone["masked_positions"]]
    logits = model.lm_head(paddle.to_tensor(rows))
    expected = float(label_smoothed_cross_entropy(logits, paddle.to_tensor(alone["labels"])))
    assert float(objective.loss(model, batch)["loss"]) == pytest.approx(expected, rel=1e-6)
    swapped = paddle.to_tensor(batch["region_feats"][::-1].copy())  # the captions with each other's image
    other = model.unimo(t["input_ids"], t["token_type_ids"], t["position_ids"], t["attention_mask"],
                        region_feats=swapped, region_locs=t["region_locs"], region_valid=t["region_valid"])
    assert np.abs(other.numpy()[:, R:] - hidden.numpy()[:, R:]).max() > 1e-2  # the text reads the image
    with pytest.raises(ValueError, match="mixes texts with an image and texts without one"):
        objective.make_batch([pairs[0], texts[1]], config, np.random.default_rng(3))


def test_a_pair_corpus_trains_the_text_objectives(tmp_path, store):
    """A pair corpus may list span_mlm and seq2seq_lm beside region and cmcl: their examples are the caption with
    its word starts and its image; a micro-batch of each trains the pretraining model."""
    from paddle_unimo.objectives import text_example
    from paddle_unimo.pretraining import objective_example
    rows = [{"image_id": "cat", "caption": "a cat on a mat"}, {"image_id": "dog", "caption": "a dog"}]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    names = ["region", "cmcl", "span_mlm", "seq2seq_lm"]
    corpus = load_corpus({"name": "pairs", "kind": "pair", "captions": "captions.jsonl", "regions": str(store.path),
                          "objectives": names, "ratio": 1.0}, TOKENIZER, str(tmp_path))
    example = objective_example(corpus, "span_mlm", corpus.items[0])
    caption = text_example("a cat on a mat", TOKENIZER)
    assert (example.token_ids, example.word_starts, example.image.image_id) == \
        (caption.token_ids, caption.word_starts, "cat")
    cfg = get_preset("tiny", vocab_size=TOKENIZER.vocab_size, pad_token_id=TOKENIZER.pad_token_id)
    overrides = {n: {"max_img_len": 4, "max_seq_len": 64} for n in names}
    mixture = Mixture([corpus], objective_configs(names, overrides, TOKENIZER, cfg), batch_size=2, seed=0)
    paddle.seed(0)
    model = PretrainModel(UNIMOLMHeadModel(cfg), names)
    seen = set()
    for micro in range(40):
        drawn = mixture(micro)
        if drawn["objective"] in seen:
            continue
        seen.add(drawn["objective"])
        out = model(mixture.make_batch(drawn))
        counted = {"span_mlm": "num_predicted", "seq2seq_lm": "num_predicted", "region": "num_masked",
                   "cmcl": "num_pairs"}[drawn["objective"]]  # the objective's own loss ran
        assert np.isfinite(float(out["loss"])) and out[counted] > 0
    assert seen == set(names)
    with pytest.raises(ConfigError, match="a image corpus cannot train"):
        CorpusSpec.validate(CorpusSpec("i", "image", ["span_mlm"], 1.0, regions="r"), "corpus 'i':")


def test_the_mini_corpus_made_again_leaves_its_files_as_they_are(tmp_path, capsys):
    """make pretrain makes the mini corpus before each run: made again, its files keep their times, so a run
    reading them (another make pretrain into the same folder) is not stopped as if its corpus had changed."""
    from tasks import pretrain_mini
    pretrain_mini.main(["--out", str(tmp_path), "--images", "6"])
    stamps = {p: os.stat(p).st_mtime_ns for p in map(str, tmp_path.rglob("*")) if os.path.isfile(p)}
    pretrain_mini.main(["--out", str(tmp_path), "--images", "6"])
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps and len(stamps) >= 3
