"""CMCL augmentation: the caption parser on hand-checked captions, one-slot rewrites, the paraphrase TSV
reader, TF-IDF and region-label retrieval, and tools/build_cmcl_data.py end to end.

../shared/data holds no image captions (SOURCES.md lists text and QA sets only), so the captions are
COCO-style ones written here: people, animals, vehicles, food, indoor and outdoor scenes. Each entry is
(caption, objects, attributes as (value, object), relation triples), checked by hand against the parser's
documented rules (nearest-object attachment, "of" hands the subject to its head, "and" shares a relation).
"""
import json
import random

import numpy as np
import pytest

from paddle_unimo import WordPieceTokenizer
from paddle_unimo.augment import lexicon as lx
from paddle_unimo.augment import records, retrieval, rewrite
from paddle_unimo.augment.scene_graph import noun_lemma, parse, tokenize
from paddle_unimo.data.regions import RegionRecord, RegionStore
from paddle_unimo.fileio import DataError
from paddle_unimo.objectives import cmcl
from paddle_unimo.objectives.words import TextSpecials

from tools import build_cmcl_data

CAPTIONS = [
    ("a young man riding a red bike down a city street", ["man", "bike", "street"],
     [("young", "man"), ("red", "bike")], [("man", "riding", "bike"), ("bike", "down", "street")]),
    ("A black and white cat sleeping on a wooden bench.", ["cat", "bench"],
     [("black", "cat"), ("white", "cat"), ("wooden", "bench")], [("cat", "sleeping on", "bench")]),
    ("Two dogs playing with a frisbee in a grassy field.", ["dog", "frisbee", "field"],
     [("two", "dog"), ("grassy", "field")], [("dog", "playing with", "frisbee"), ("frisbee", "in", "field")]),
    ("a plate with a sandwich and fries next to a cup of coffee", ["plate", "sandwich", "fry", "cup", "coffee"],
     [], [("plate", "with", "sandwich"), ("plate", "with", "fry"), ("fry", "next to", "cup"),
          ("cup", "of", "coffee")]),
    ("a herd of elephants walking across a dirt road", ["elephant", "road"], [("herd", "elephant")],
     [("elephant", "walking across", "road")]),
    ("a slice of pizza on a white plate", ["pizza", "plate"], [("slice", "pizza"), ("white", "plate")],
     [("pizza", "on", "plate")]),
    ("a large red fire truck parked next to a fire hydrant", ["truck", "fire hydrant"],
     [("large", "truck"), ("red", "truck")], [("truck", "parked next to", "fire hydrant")]),
    ("a cat is sitting on top of a laptop computer", ["cat", "computer"], [],
     [("cat", "sitting on top of", "computer")]),
    ("a group of people standing next to a train at a station", ["person", "train", "station"],
     [("group", "person")], [("person", "standing next to", "train"), ("train", "at", "station")]),
    ("a giraffe standing in a dirt enclosure at the zoo", ["giraffe", "enclosure", "zoo"], [],
     [("giraffe", "standing in", "enclosure"), ("enclosure", "at", "zoo")]),
    ("a little girl eating a chocolate donut", ["girl", "donut"], [("little", "girl")],
     [("girl", "eating", "donut")]),
    ("a bowl of broccoli and carrots on a wooden table", ["bowl", "broccoli", "carrot", "table"],
     [("wooden", "table")], [("bowl", "of", "broccoli"), ("bowl", "of", "carrot"), ("bowl", "on", "table")]),
    ("an airplane flying over a snowy mountain", ["airplane", "mountain"], [("snowy", "mountain")],
     [("airplane", "flying over", "mountain")]),
    ("three sheep grazing in a green pasture", ["sheep", "pasture"], [("three", "sheep"), ("green", "pasture")],
     [("sheep", "grazing in", "pasture")]),
    ("a surfer riding a large wave in the ocean", ["surfer", "wave", "ocean"], [("large", "wave")],
     [("surfer", "riding", "wave"), ("wave", "in", "ocean")]),
    ("the kitchen has a white refrigerator and a black stove", ["kitchen", "refrigerator", "stove"],
     [("white", "refrigerator"), ("black", "stove")],
     [("kitchen", "has", "refrigerator"), ("kitchen", "has", "stove")]),
    ("a brown horse pulling a wooden cart on a dirt road", ["horse", "cart", "road"],
     [("brown", "horse"), ("wooden", "cart")], [("horse", "pulling", "cart"), ("cart", "on", "road")]),
    ("a bathroom with a toilet and a sink under a mirror", ["bathroom", "toilet", "sink", "mirror"], [],
     [("bathroom", "with", "toilet"), ("bathroom", "with", "sink"), ("sink", "under", "mirror")]),
    ("a bus driving down a busy street", ["bus", "street"], [("busy", "street")],
     [("bus", "driving down", "street")]),
    ("a teddy bear sitting on a bed next to a pillow", ["teddy bear", "bed", "pillow"], [],
     [("teddy bear", "sitting on", "bed"), ("bed", "next to", "pillow")]),
    ("a baseball player swinging a bat at a ball", ["player", "bat", "ball"], [],
     [("player", "swinging", "bat"), ("bat", "at", "ball")]),
    ("the sky is blue and the grass is green", ["sky", "grass"], [("blue", "sky"), ("green", "grass")], []),
    ("a woman holding an orange umbrella", ["woman", "umbrella"], [("orange", "umbrella")],
     [("woman", "holding", "umbrella")]),
    ("an orange and a banana on a table", ["orange", "banana", "table"], [], [("banana", "on", "table")]),
    ("a small boat floating on a lake near a mountain", ["boat", "lake", "mountain"], [("small", "boat")],
     [("boat", "floating on", "lake"), ("lake", "near", "mountain")]),
    ("a person skiing down a snowy slope", ["person", "slope"], [("snowy", "slope")],
     [("person", "skiing down", "slope")]),
    ("a kitten laying on a pile of shoes", ["kitten", "shoe"], [("pile", "shoe")],
     [("kitten", "laying on", "shoe")]),
    ("a living room with a couch and a tv", ["living room", "couch", "tv"], [],
     [("living room", "with", "couch"), ("living room", "with", "tv")]),
    ("a motorcycle parked on the side of the road", ["motorcycle", "road"], [],
     [("motorcycle", "parked on the side of", "road")]),
    ("an elderly woman sitting at a table with a cake", ["woman", "table", "cake"], [("elderly", "woman")],
     [("woman", "sitting at", "table"), ("table", "with", "cake")]),
]
TEXTS = [c[0] for c in CAPTIONS]


@pytest.mark.parametrize("caption, objects, attributes, triples", CAPTIONS, ids=[c[:40] for c in TEXTS])
def test_parser_finds_the_hand_checked_graph(caption, objects, attributes, triples):
    graph = parse(caption)
    assert [o.name for o in graph.objects] == objects
    assert sorted(graph.attribute_pairs()) == sorted(attributes)
    assert graph.triples() == triples


def test_parser_details_types_plurals_modifiers_and_coverage():
    street = parse(TEXTS[0]).objects[2]
    assert (street.name, street.modifiers, street.plural) == ("street", ("city",), False)
    dogs = parse(TEXTS[2]).objects[0]
    assert dogs.plural and [(a.value, a.type) for a in dogs.attributes] == [("two", "count")]
    assert [(a.value, a.type) for a in parse(TEXTS[6]).objects[0].attributes] == [("large", "size"),
                                                                                ("red", "colour")]
    sky = parse("the sky is blue").objects[0]
    assert sky.attributes[0].predicative and sky.attributes[0].type == "colour"
    assert parse("an orange and a banana").objects[0].name == "orange"  # noun: no noun follows
    graphs = [parse(t) for t in TEXTS]
    assert sum(bool(g.objects) and bool(g.relations) for g in graphs) == len(TEXTS) - 1  # all but "the sky is"


def test_documented_limits():
    assert parse("a man flipping a pancake").triples() == []  # "flipping" is not in the lexicon
    # nearest-object attachment: the shirt, not the man, gets "throwing"
    assert parse("a man in a blue shirt throwing a frisbee").triples() == [("man", "in", "shirt"),
                                                                          ("shirt", "throwing", "frisbee")]


def test_lexicon_roles_are_disjoint_and_plurals_invert():
    types = [w for words in lx.ATTRIBUTES.values() for w in words]
    assert len(types) == len(set(types))
    objects, attributes = set(lx.OBJECT_CATEGORY), set(lx.ATTRIBUTE_TYPE)
    assert objects & attributes == set(lx.ATTRIBUTE_NOUNS)
    assert not (objects | attributes) & lx.RELATION_WORDS
    assert set(lx.REPLACEMENT_RELATIONS) <= {" ".join(g.triples()[0][1:2]) for g in
                                              [parse(f"a dog {p} a cat") for p in lx.REPLACEMENT_RELATIONS]}
    for noun in lx.COUNTABLE_OBJECTS:
        assert noun_lemma(lx.pluralize(noun)) == (noun, lx.pluralize(noun) != noun), noun
    assert [lx.pluralize(w) for w in ("man", "bus", "knife", "pony", "hot dog", "grass")] == \
        ["men", "buses", "knives", "ponies", "hot dogs", "grass"]
    assert (lx.article_for("orange"), lx.article_for("uniform"), lx.article_for("red")) == ("an", "a", "a")


def _check_rewrite(graph, r):
    original, changed = tokenize(graph.caption), tokenize(r.text)
    first, last = r.span
    tail = len(original) - last
    assert [t.text for t in changed[:first]] == [t.text for t in original[:first]]
    assert [t.text for t in changed[len(changed) - tail:]] == [t.text for t in original[last:]]
    assert " ".join(t.text for t in changed[first:len(changed) - tail]) == r.new
    assert r.old == graph.text(r.span) and r.new.lower() != r.old.lower()
    if first > 0 and original[first - 1].lower in ("a", "an"):
        assert lx.article_for(r.new) == original[first - 1].lower
    new, old = r.new.lower(), r.old.lower()
    if r.kind == "object":
        (lemma, _), (old_lemma, _) = noun_lemma(new), noun_lemma(old)
        obj = next(o for o in graph.objects if o.head == r.span)
        assert new == (lx.pluralize(lemma) if obj.plural else lemma) and not lx.related("object", old_lemma, lemma)
        assert not obj.plural or lemma not in lx.MASS_NOUNS
        assert lemma in [o.name for o in parse(r.text).objects]
    elif r.kind == "attribute":
        assert lx.ATTRIBUTE_TYPE[new] == lx.ATTRIBUTE_TYPE[old] == r.type
        assert not lx.related("attribute", old, new) and new in [a for a, _ in parse(r.text).attribute_pairs()]
    else:
        assert r.kind == "relation" and new in lx.REPLACEMENT_RELATIONS and r.type is None
        assert old in [rel.predicate for rel in graph.relations] and not lx.related("relation", old, new)
        assert new in [p for _, p, _ in parse(r.text).triples()]


def test_every_rewrite_changes_exactly_one_slot_to_a_different_one_of_its_kind():
    kinds = {k: 0 for k in rewrite.KINDS}
    for i, caption in enumerate(TEXTS):
        graph = parse(caption)
        made = rewrite.make_negatives(graph, 8, random.Random(i))
        assert len({r.text for r in made}) == len(made) == 8
        for r in made:
            _check_rewrite(graph, r)
            kinds[r.kind] += 1
    assert min(kinds.values()) > 40, kinds


def test_rewrites_are_deterministic_balanced_and_respect_kinds():
    graph = parse(TEXTS[0])
    a = rewrite.make_negatives(graph, 6, np.random.default_rng(3))
    assert a == rewrite.make_negatives(graph, 6, np.random.default_rng(3))
    assert a != rewrite.make_negatives(graph, 6, np.random.default_rng(4))
    assert sorted(r.kind for r in a) == ["attribute"] * 2 + ["object"] * 2 + ["relation"] * 2
    only = rewrite.make_negatives(graph, 5, random.Random(0), kinds=("attribute",))
    assert {r.kind for r in only} == {"attribute"} and {r.type for r in only} == {"age", "colour"}
    sitting = parse("a cat sitting on a bed")
    news = {w for s in rewrite.slots(sitting) if s.kind == "relation" for w in rewrite.candidates(sitting, s)}
    assert not news & {"on", "on top of", "sitting on", "laying on", "standing on"} and "under" in news
    man = parse("a man holding a kite")
    assert not {"guy", "person", "skier"} & set(rewrite.candidates(man, rewrite.slots(man)[0]))
    assert rewrite.make_negatives(parse("a man flipping a pancake"), 3, random.Random(0))[0].kind == "object"
    assert rewrite.make_negatives(parse("hello there"), 3, random.Random(0)) == []
    with pytest.raises(ValueError, match="unknown rewrite kinds"):
        rewrite.make_negatives(graph, 1, random.Random(0), kinds=("verb",))
    with pytest.raises(TypeError, match="rng"):
        rewrite.make_negatives(graph, 1, 0)
    capital = rewrite.make_negatives(parse("Two dogs on a bed"), 10, random.Random(1), kinds=("attribute",))
    assert all(r.new[0].isupper() for r in capital)


def test_read_paraphrases(tmp_path):
    good = tmp_path / "p.tsv"
    good.write_bytes("\ufeffc1\ta man rides a bike\n\nc1\ta man rides a bike\r\nc2\tdeux chiens\n".encode())
    assert rewrite.read_paraphrases(good, {"c1", "c2"}) == {"c1": ["a man rides a bike"], "c2": ["deux chiens"]}
    bad = {"c1 a man\n": r"2 tab-separated fields\), got 1", "c1\ta\tb\n": "got 3", "\tx\n": "empty caption id",
           "c1\t \n": "empty paraphrase", "c9\tx\n": "'c9' is not in the captions file"}
    for text, message in bad.items():
        path = tmp_path / "bad.tsv"
        path.write_text("c1\tfine\n" + text)
        with pytest.raises(DataError, match=f"bad.tsv:2: .*{message}"):
            rewrite.read_paraphrases(path, {"c1", "c2"})
    path.write_bytes(b"c1\tok\nc2\t\xff\n")
    with pytest.raises(DataError, match="bad.tsv:2: not UTF-8"):
        rewrite.read_paraphrases(path)


RETRIEVAL = ["a dog catching a frisbee in a park", "a dog runs after a frisbee in the park",
             "a cat sleeping on a sofa", "a dog jumping for a frisbee on the grass", "a kitten asleep on a couch",
             "a cat sleeping on a bed", "red buses parked downtown"]
GROUPS = ["A", "A", "B", "C", "D", "E", "F"]


def test_tfidf_retrieval_finds_the_expected_neighbour_and_never_itself_or_its_image():
    near = retrieval.nearest_texts(RETRIEVAL, GROUPS, k=2)
    assert near[0][0][0] == 3 and near[1][0][0] == 3  # the other dog-and-frisbee image, not each other
    assert near[2][0][0] == 5 and near[5][0][0] == 2  # cat sleeping on ...
    assert near[6] == []  # shares no word of 2+ letters with anything
    for i, row in enumerate(near):
        assert all(j != i and GROUPS[j] != GROUPS[i] for j, _ in row)
        assert [s for _, s in row] == sorted((s for _, s in row), reverse=True) and all(s > 0 for _, s in row)
    ungrouped = retrieval.nearest_texts(RETRIEVAL, k=1)
    assert ungrouped[0][0][0] == 1 and all(row[0][0] != i for i, row in enumerate(ungrouped) if row)
    from sklearn.feature_extraction.text import TfidfVectorizer
    x = TfidfVectorizer().fit_transform(RETRIEVAL)
    assert near[0][0][1] == pytest.approx(float((x[0] @ x[3].T).toarray()[0, 0]))
    assert retrieval.nearest_texts(RETRIEVAL, GROUPS, k=2, block_cells=1) == near  # row blocks of one
    assert retrieval.nearest_texts(["a", "I"], k=2) == [[], []] and retrieval.nearest_texts(RETRIEVAL, k=0)[0] == []
    tied = retrieval.nearest_texts(["red car", "red car", "red car", "blue boat"], k=1)
    assert [row[0][0] for row in tied[:3]] == [1, 0, 0] and tied[3] == []


def test_corpus_retrieval_finds_related_texts_and_never_the_query_itself():
    corpus = ["dogs love to chase a frisbee in the park", "a cat sleeping on a sofa", "stock markets fell today",
              "the kitten sleeps on the sofa all day"]
    queries = ["a dog catching a frisbee in a park", "a cat sleeping on a sofa", "red buses"]
    near = retrieval.nearest_corpus_texts(queries, corpus, k=2)
    assert near[0][0][0] == 0 and near[1] == [(3, near[1][0][1])]  # the equal text (1) is never retrieved
    assert near[2] == []  # "red buses": no word in the corpus
    from sklearn.feature_extraction.text import TfidfVectorizer
    x = TfidfVectorizer().fit_transform(corpus + queries)
    assert near[0][0][1] == pytest.approx(float((x[len(corpus)] @ x[0].T).toarray()[0, 0]))
    assert retrieval.nearest_corpus_texts(queries, corpus, k=2, block_cells=1) == near
    assert retrieval.nearest_corpus_texts(queries, [], k=2) == [[], [], []]


def _record(image_id, argmax, classes=5):
    probs = np.full((len(argmax), classes), 0.01, np.float32)
    probs[np.arange(len(argmax)), argmax] = 0.9
    boxes = np.tile(np.asarray([[0, 0, 10, 10]], np.float32), (len(argmax), 1))
    return RegionRecord(image_id, 20, 20, boxes, np.ones((len(argmax), 3), np.float32), probs)


IMAGES = {"x": [1, 2, 0, 2], "y": [1, 2, 3], "z": [4, 0], "w": [2], "v": [0, 0]}


def test_image_retrieval_by_region_label_jaccard():
    records = [_record(k, v) for k, v in IMAGES.items()]
    labels = [retrieval.region_labels(r, 0) for r in records]
    assert labels == [{1, 2}, {1, 2, 3}, {4}, {2}, set()]
    near = retrieval.nearest_images(labels, k=2)
    assert near[0] == [(1, pytest.approx(2 / 3)), (3, pytest.approx(0.5))]  # x: y then w
    assert near[1] == [(0, pytest.approx(2 / 3)), (3, pytest.approx(1 / 3))]
    assert near[2] == [] and near[4] == []  # nothing shares label 4; no labels at all
    assert all(j != i for i, row in enumerate(near) for j, _ in row)
    assert retrieval.region_labels(records[0], -1) == {0, 1, 2}  # class 4 would be background instead
    assert retrieval.region_labels(records[2], None) == {0, 4}
    no_probs = RegionRecord("n", 20, 20, np.zeros((1, 4), np.float32), np.ones((1, 3), np.float32))
    assert retrieval.region_labels(no_probs, 0) == frozenset()


def _captions_file(tmp_path):
    lines = [{"image_id": i // 2 + 1, "caption_id": f"c{i}", "caption": t} for i, t in enumerate(TEXTS)]
    path = tmp_path / "captions.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path, lines


CORPUS = ["a man rides his bicycle to work every morning", "pizza is best eaten hot from the oven",
          "two dogs playing together on the beach", "the weather was sunny all week"]


def test_tool_end_to_end(tmp_path, capsys):
    captions, lines = _captions_file(tmp_path)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n\n", "utf-8")
    (tmp_path / "p.tsv").write_text(f"c0\ta young guy cycling on an urban road\nc0\t{TEXTS[0]}\n"
                                    "c5\ta piece of pizza on a plate\n")
    store = RegionStore(tmp_path / "regions")
    store.append([_record(str(k), v) for k, v in zip(range(1, 6), ([1, 2], [1, 2, 3], [2], [4, 0], [3]))])
    out = tmp_path / "cmcl.jsonl"
    summary = build_cmcl_data.run(["--captions", str(captions), "--out", str(out), "--paraphrases",
                                    str(tmp_path / "p.tsv"), "--regions", str(tmp_path / "regions"),
                                    "--background", "first", "--negatives", "3", "--retrieved-texts", "2",
                                    "--retrieved-images", "2", "--seed", "7", "--text-corpus", str(corpus)])
    rows = list(records.read_rows(out))
    assert [(r["caption_id"], r["image_id"], r["caption"]) for r in rows] == \
        [(x["caption_id"], str(x["image_id"]), x["caption"]) for x in lines]
    assert all(len([n for n in r["negative_texts"] if n["kind"] != "retrieved"]) == 3
               and r["caption"] not in [n["text"] for n in r["negative_texts"]] for r in rows)
    assert [p["text"] for p in rows[0]["positive_texts"] if p["source"] == "paraphrase"] == \
        ["a young guy cycling on an urban road"]  # the copy of the caption itself is dropped
    captions_by_id = {x["caption_id"]: x for x in lines}
    for r in rows:  # TF-IDF-similar captions of other images are hard negatives, as nearest_texts finds them
        hard = [n for n in r["negative_texts"] if n["kind"] == "retrieved"]
        assert len(hard) <= 2 and all(n["image_id"] != r["image_id"] and n["score"] > 0
                                      and captions_by_id[n["caption_id"]]["caption"] == n["text"] for n in hard)
        assert all(p["source"] in ("paraphrase", "corpus") for p in r["positive_texts"])
    near = retrieval.nearest_texts([x["caption"] for x in lines], [str(x["image_id"]) for x in lines], 2)
    assert [[n["caption_id"] for n in r["negative_texts"] if n["kind"] == "retrieved"] for r in rows] == \
        [[lines[j]["caption_id"] for j, _ in row if lines[j]["caption"] != r["caption"]] for row, r in zip(near, rows)]
    related = retrieval.nearest_corpus_texts([x["caption"] for x in lines], CORPUS, 2)
    assert [[p["text"] for p in r["positive_texts"] if p["source"] == "corpus"] for r in rows] == \
        [[CORPUS[j] for j, _ in row] for row in related]
    assert summary["corpus_texts"] > 0
    assert [p["image_id"] for p in rows[0]["positive_images"]] == ["2", "3"]  # {1,2}: {1,2,3} 2/3, {2} 1/2
    assert rows[6]["positive_images"] == []  # image 4 has {4}, which no other image has
    assert rows[8]["positive_images"] == [{"image_id": "2", "score": 0.333333}]  # {3} vs {1, 2, 3}
    assert all(r["positive_images"] == [] for r in rows[10:])  # images 6.. are not in the store
    neg = summary["negatives"]
    assert sum(neg.values()) - neg["retrieved"] == 3 * len(rows) and min(neg.values()) > 0
    assert neg["retrieved"] == sum(len(r["negative_texts"]) for r in rows) - 3 * len(rows)
    assert (summary["paraphrases"], summary["images_not_in_store"]) == (2, len({x["image_id"] for x in lines}) - 5)
    assert summary["corpus_texts"] == sum(len(r["positive_texts"]) for r in rows) - 2
    assert summary["parsed_with_relation"] == len(TEXTS) - 1
    printed = capsys.readouterr().out
    assert f"{len(rows)} captions" in printed and f"relation {neg['relation']}" in printed
    again = tmp_path / "again.jsonl"
    build_cmcl_data.main(["--captions", str(captions), "--out", str(again), "--seed", "7", "--negatives", "3"])
    assert [r["negative_texts"] for r in records.read_rows(again)] == [r["negative_texts"] for r in rows]
    assert all(p["source"] == "paraphrase" for r in records.read_rows(again) for p in r["positive_texts"])
    assert not list(tmp_path.glob("*.tmp"))


def test_tool_rejects_bad_input(tmp_path):
    captions, _ = _captions_file(tmp_path)
    out = str(tmp_path / "o.jsonl")
    with pytest.raises(SystemExit):
        build_cmcl_data.main(["--captions", str(captions), "--out", out, "--retrieved-images", "2"])
    cases = {'{"image_id": 1, "caption_id": "a"\n': "malformed JSON",
             '{"image_id": 1, "caption": "a dog"}\n': r"missing \['caption_id'\]",
             '{"image_id": 1, "caption_id": "a", "caption": " "}\n': "caption must be a non-empty string",
             '{"image_id": 1.5, "caption_id": "a", "caption": "a dog"}\n': "image_id must be",
             '{"image_id": 1, "caption_id": "c1", "caption": "a dog"}\n': "'c1' repeats line 1"}
    for text, message in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"image_id": 1, "caption_id": "c1", "caption": "a cat"}\n' + text)
        with pytest.raises(DataError, match=f"bad.jsonl:2: .*{message}"):
            build_cmcl_data.run(["--captions", str(bad), "--out", out])
    (tmp_path / "not_a_store").mkdir()
    with pytest.raises(DataError, match=r"not_a_store: not a region store \(no index.json\)"):
        build_cmcl_data.run(["--captions", str(captions), "--out", out, "--regions", str(tmp_path / "not_a_store")])
    assert not list((tmp_path / "not_a_store").iterdir())  # nothing written there


def test_rows_hold_each_text_once_and_never_the_caption(tmp_path):
    """Paraphrases repeated, a corpus text that is the caption or a paraphrase again, a retrieved caption that is
    also a paraphrase: each text once, the caption never, and a text that is a positive is no negative."""
    captions = [{"image_id": "1", "caption_id": "c0", "caption": "a dog runs on the grass"},
                {"image_id": "2", "caption_id": "c1", "caption": "a brown dog runs on the green grass"},
                {"image_id": "3", "caption_id": "c2", "caption": "a red car parked on the street"}]
    paraphrases = {"c0": ["a brown dog runs on the green grass", "a dog is running on grass",
                          "a dog is running on grass", "a dog runs on the grass"]}
    corpus = ["a dog runs on the grass", "a dog is running on grass", "dogs like running on grass"]
    rows = records.build_rows(captions, 3, 2, 0, paraphrases, corpus=corpus, corpus_texts=3)
    for row in rows:
        positives = [p["text"] for p in row["positive_texts"]]
        negatives = [n["text"] for n in row["negative_texts"]]
        assert len(set(positives)) == len(positives) and len(set(negatives)) == len(negatives)
        assert row["caption"] not in positives + negatives and not set(positives) & set(negatives)
    assert [(p["text"], p["source"]) for p in rows[0]["positive_texts"]] == [
        ("a brown dog runs on the green grass", "paraphrase"), ("a dog is running on grass", "paraphrase"),
        ("dogs like running on grass", "corpus")]
    assert not [n for n in rows[0]["negative_texts"] if n["kind"] == "retrieved" and n["caption_id"] == "c1"]
    # c1's nearest caption (c0's) is also its nearest corpus text: a positive of c1, so not a negative
    assert ("a dog runs on the grass", "corpus") in [(p["text"], p["source"]) for p in rows[1]["positive_texts"]]
    assert [n["caption_id"] for n in rows[1]["negative_texts"] if n["kind"] == "retrieved"] == ["c2"]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match=f"^{empty}: no captions"):
        build_cmcl_data.run(["--captions", str(empty), "--out", str(tmp_path / "o.jsonl")])
    assert not (tmp_path / "o.jsonl").exists()


def test_rows_become_cmcl_examples_and_a_batch(tmp_path):
    captions, _ = _captions_file(tmp_path)
    store = RegionStore(tmp_path / "regions")
    store.append([_record(str(k), [1, k % 5]) for k in range(1, 16)])
    out = tmp_path / "cmcl.jsonl"
    build_cmcl_data.main(["--captions", str(captions), "--out", str(out), "--regions", str(tmp_path / "regions"),
                          "--background", "none", "--negatives", "2", "--retrieved-images", "1"])
    rows = list(records.read_rows(out))[:3]
    tokenizer = WordPieceTokenizer.build_char_vocab(
        [r["caption"] for r in rows] + [t["text"] for r in rows for t in r["positive_texts"] + r["negative_texts"]])
    examples = [records.to_example(r, tokenizer, store) for r in rows]
    assert examples[0].text_ids == tokenizer.encode(rows[0]["caption"])
    assert [len(e.negative_texts) for e in examples] == [2 + 2, 2 + 2, 2 + 2]  # rewrites + retrieved captions
    assert examples[0].positive_images[0].image_id == rows[0]["positive_images"][0]["image_id"]
    batch = cmcl.make_batch(examples, cmcl.CMCLConfig(TextSpecials.from_tokenizer(tokenizer), max_img_len=4))
    for b, (row, e) in enumerate(zip(rows, examples)):
        n_pos = 1 + len(e.positive_texts) + len(e.positive_images)
        assert batch["pair_positive"][b].sum() == n_pos
        assert batch["pair_valid"][b].sum() == n_pos + len(e.negative_texts)  # in-batch negatives: in loss


def test_captions_and_rows_files_accept_a_byte_order_mark_and_name_bad_bytes(tmp_path):
    path = tmp_path / "captions.jsonl"
    first = '{"image_id": 139, "caption_id": "c1", "caption": " a red bike "}\n'
    path.write_bytes(b"\xef\xbb\xbf" + first.encode() + b'{"image_id": 1, "caption_id": "c2", "caption": "caf\xe9"}\n')
    with pytest.raises(DataError, match=f"^{path}:2: not UTF-8"):
        records.read_captions(path)
    path.write_bytes(b"\xef\xbb\xbf" + first.encode())
    assert records.read_captions(path) == [{"image_id": "139", "caption_id": "c1", "caption": "a red bike"}]
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(b"\xef\xbb\xbf" + json.dumps({"caption_id": "c1", "negative_texts": []}).encode() + b"\n\n[]\n")
    with pytest.raises(DataError, match=f"^{rows}:3: expected a JSON object, got list"):
        list(records.read_rows(rows))
    rows.write_bytes(b"\xef\xbb\xbf" + json.dumps({"caption_id": "c1", "negative_texts": []}).encode() + b"\n")
    assert list(records.read_rows(rows)) == [{"caption_id": "c1", "negative_texts": []}]


def test_tool_main_returns_an_exit_status(tmp_path):
    captions, lines = _captions_file(tmp_path)
    out = tmp_path / "cmcl.jsonl"
    assert build_cmcl_data.main(["--captions", str(captions), "--out", str(out), "--negatives", "1"]) == 0
    assert [r["caption_id"] for r in records.read_rows(out)] == [x["caption_id"] for x in lines]
