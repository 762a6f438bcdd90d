"""Annotation readers: exact values of the shared samples, small files in the real layouts, and bad input."""
import json
from collections import Counter

import pytest
from conftest import shared_path

from paddle_unimo.data.vl_annotations import (Caption, EntailmentPair, VqaQuestion, coco_image_name,
                                              read_coco_captions, read_coco_refs, read_flickr30k_sentences,
                                              read_karpathy, read_snli_ve, read_vqa, strip_entities)
from paddle_unimo.fileio import DataError


def _write(path, obj, bom=False):
    path.write_text(("\ufeff" if bom else "") + json.dumps(obj), encoding="utf-8")
    return path


# ---- shared samples -----------------------------------------------------------------------------------------

def test_coco_refs_sample():
    caps = read_coco_refs(shared_path("coco", "debug.ref.json"))
    assert len(caps) == 40 and len({c.image for c in caps}) == 10
    assert caps[0] == Caption("451102", "Group of people sitting in a waiting room with a vending machine.", "",
                              "451102#0")
    assert caps[-1] == Caption("402925", "A laptop sitting on top of a bed with the desktop open.", "", "402925#3")
    assert caps[2].text == "A group of people in a waiting room on their cell phones."
    assert [c.text for c in caps if c.image == "52104"][2] == "Acorss the street there are bags in front of a house"


def test_flickr30k_entities_markup_is_stripped():
    caps = read_flickr30k_sentences(shared_path("flickr30k", "sentences"))
    assert len(caps) == 10 and Counter(c.image for c in caps) == {"4945942737.jpg": 5, "6338542128.jpg": 5}
    assert caps[0] == Caption("4945942737.jpg",
                              "A girl with brown hair sits on the edge of a cement area overlooking water .",
                              "", "4945942737.jpg#0")
    assert caps[9].text == "# 8 for Iowa State stiff arms a Texas AM player attempting to tackle him ."
    assert caps[6].text == ("An offensive player running with a football while a football player tries to stop "
                            "him during a football game .")
    one = read_flickr30k_sentences(shared_path("flickr30k", "sentences", "6338542128.txt"))
    assert one == caps[5:]
    assert strip_entities("[/EN#7/people/other Two men] on [/EN#8/scene a street] .") == "Two men on a street ."


def test_snli_ve_sample():
    pairs, report = read_snli_ve(shared_path("snli_ve", "sample_pairs.jsonl"))
    assert len(pairs) == 16 and [p.line for p in pairs] == list(range(1, 17)) and report.lines == 16
    assert Counter(p.label for p in pairs) == {"entailment": 6, "neutral": 6, "contradiction": 4}
    assert pairs[0] == EntailmentPair("2248275918.jpg", "A toddler sleeps outside.", "contradiction",
                                      "2248275918.jpg#2r1c")
    assert pairs[5] == EntailmentPair("2248275918.jpg", "The computer smells like diapers.", "neutral",
                                      "2248275918.jpg#3r1c")  # the gold label, not the pair id's letter
    assert pairs[-1] == EntailmentPair("402978771.jpg", "The woman is sitting outside.", "entailment",
                                       "402978771.jpg#1r1e")


def test_vqa_sample_with_and_without_annotations():
    questions = shared_path("vqa", "allennlp_fixture", "questions.json")
    qs = read_vqa(questions, shared_path("vqa", "allennlp_fixture", "annotations.json"))
    assert [q.question_id for q in qs] == [458752000, 458752001, 458752002]
    assert qs[0] == VqaQuestion(458752000, "COCO_train2014_000000458752.jpg",
                                "What is this photo taken looking through?",
                                ["net", "net", "net", "netting", "net", "net", "mesh", "net", "pitcher", "orange"])
    assert qs[1].answers == ["pitcher", "catcher"] + ["pitcher"] * 8
    assert qs[2].answers == ["orange"] * 10 and qs[2].question == "What color is the players shirt?"
    assert [q.answers for q in read_vqa(questions)] == [None, None, None]


# ---- small files in the real layouts --------------------------------------------------------------------------

def _karpathy(tmp_path, bom=False):
    def image(imgid, filename, split, *raws):
        sents = [{"tokens": r.lower().split(), "raw": r, "imgid": imgid, "sentid": 10 * imgid + k}
                 for k, r in enumerate(raws)]
        return {"filepath": "val2014", "sentids": [s["sentid"] for s in sents], "filename": filename,
                "imgid": imgid, "split": split, "sentences": sents, "cocoid": 1000 + imgid}
    return _write(tmp_path / "dataset_coco.json", {"images": [
        image(0, "COCO_val2014_000000391895.jpg", "test", "A man riding a bike."),
        image(1, "COCO_val2014_000000522418.jpg", "restval", "A woman cutting a cake. ", "Cake time."),
        image(2, "COCO_train2014_000000318556.jpg", "train", "A bathroom sink."),
        image(3, "COCO_val2014_000000184613.jpg", "val", "A boy and cows."),
    ], "dataset": "coco"}, bom)


def test_karpathy_splits_and_restval(tmp_path):
    path = _karpathy(tmp_path)
    assert read_karpathy(path) == [
        Caption("COCO_val2014_000000522418.jpg", "A woman cutting a cake.", "restval", "10"),
        Caption("COCO_val2014_000000522418.jpg", "Cake time.", "restval", "11"),
        Caption("COCO_train2014_000000318556.jpg", "A bathroom sink.", "train", "20")]
    assert [c.id for c in read_karpathy(path, splits=("train",))] == ["20"]
    assert read_karpathy(path, splits=["test"]) == [
        Caption("COCO_val2014_000000391895.jpg", "A man riding a bike.", "test", "0")]
    assert read_karpathy(_karpathy(tmp_path, bom=True), ("val",))[0].text == "A boy and cows."
    with pytest.raises(ValueError, match="unknown Karpathy split"):
        read_karpathy(path, splits=("dev",))


def test_karpathy_bad_split_and_missing_raw(tmp_path):
    data = json.loads(_karpathy(tmp_path).read_text())
    data["images"][2]["split"] = "dev"
    with pytest.raises(DataError, match=r"dataset_coco\.json: images\[2\]: split 'dev'"):
        read_karpathy(_write(tmp_path / "dataset_coco.json", data))
    data["images"][2]["split"] = "train"
    del data["images"][1]["sentences"][1]["raw"]
    with pytest.raises(DataError, match=r"dataset_coco\.json: images\[1\]\.sentences\[1\]: missing key 'raw'"):
        read_karpathy(_write(tmp_path / "dataset_coco.json", data))


def _coco(tmp_path, image_id=42, bom=False):
    return _write(tmp_path / "captions_val2014.json", {
        "info": {"year": 2014}, "licenses": [],
        "images": [{"license": 1, "file_name": "COCO_val2014_000000000042.jpg", "height": 640, "width": 478,
                    "id": 42},
                   {"license": 3, "file_name": "COCO_val2014_000000000073.jpg", "height": 424, "width": 640,
                    "id": 73}],
        "annotations": [{"image_id": 73, "id": 5, "caption": "A motorcycle parked in a lot.\n"},
                        {"image_id": image_id, "id": 9, "caption": "A dog on a shoe rack."}]}, bom)


def test_coco_captions_join_through_image_id(tmp_path):
    assert read_coco_captions(_coco(tmp_path, bom=True), split="val") == [
        Caption("COCO_val2014_000000000073.jpg", "A motorcycle parked in a lot.", "val", "5"),
        Caption("COCO_val2014_000000000042.jpg", "A dog on a shoe rack.", "val", "9")]
    with pytest.raises(DataError, match=r"captions_val2014\.json: annotation id 9 refers to image_id 999"):
        read_coco_captions(_coco(tmp_path, image_id=999))


# ---- broken inputs -----------------------------------------------------------------------------------------

def test_malformed_json_names_the_file(tmp_path):
    bad = tmp_path / "dataset_flickr30k.json"
    bad.write_text('{"images": [', encoding="utf-8")
    for read in (read_karpathy, read_coco_captions, read_coco_refs, read_vqa):
        with pytest.raises(DataError, match=r"dataset_flickr30k\.json:1: malformed"):
            read(bad)


def test_snli_ve_unknown_label_and_bom(tmp_path):
    row = {"Flickr30K_ID": "2248275918", "gold_label": "entailment", "pairID": "2248275918.jpg#0r1e",
           "sentence2": "A child sits."}
    path = tmp_path / "snli_ve_dev.jsonl"
    path.write_text("\ufeff" + json.dumps(row) + "\n" + json.dumps({**row, "gold_label": "-"}) + "\n",
                    encoding="utf-8")
    with pytest.raises(DataError, match=r"snli_ve_dev\.jsonl:2: gold_label '-' is not one of"):
        read_snli_ve(path)
    path.write_text("\ufeff" + json.dumps(row) + "\n" + json.dumps({**row, "sentence2": None}) + "\n",
                    encoding="utf-8")
    with pytest.raises(DataError, match=r"snli_ve_dev\.jsonl:2: 'sentence2' must be str"):
        read_snli_ve(path)
    path.write_text("\ufeff" + json.dumps(row) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"snli_ve_dev\.jsonl:2: malformed JSON"):
        read_snli_ve(path)
    pairs, report = read_snli_ve(path, skip_bad=True)  # the bad line left out and listed
    assert pairs == [EntailmentPair("2248275918.jpg", "A child sits.", "entailment", "2248275918.jpg#0r1e")]
    assert report.skipped[0]["line"] == 2 and report.skipped[0]["reason"].startswith("malformed JSON")
    path.write_text("\ufeff\n" + json.dumps(row) + "\n\n" + json.dumps(row) + "\n", encoding="utf-8")
    pairs, report = read_snli_ve(path)  # blank lines keep their place: lines 2 and 4
    assert [p.line for p in pairs] == [2, 4] and report.lines == 4


def test_vqa_missing_annotation_and_missing_subtype(tmp_path):
    questions = _write(tmp_path / "questions.json", {"data_subtype": "val2014", "questions": [
        {"image_id": 42, "question": "What?", "question_id": 42000},
        {"image_id": 73, "question": "Why?", "question_id": 73001}]}, bom=True)
    ten = [{"answer": "yes", "answer_id": k} for k in range(1, 11)]
    annotations = _write(tmp_path / "annotations.json", {"annotations": [
        {"question_id": 42000, "image_id": 42, "answers": ten}]})
    with pytest.raises(DataError, match=r"annotations\.json: no annotation of question_id 73001"):
        read_vqa(questions, annotations)
    _write(annotations, {"annotations": [{"question_id": 42000, "image_id": 42, "answers": ten},
                                         {"question_id": 73001, "image_id": 73, "answers": ten[:9]}]})
    with pytest.raises(DataError, match=r"annotations\.json: annotations\[1\]: question_id 73001 has 9 answers; "
                                        r"VQA v2 gives 10"):  # before any training, not at the first evaluation
        read_vqa(questions, annotations, scored=True)
    assert len(read_vqa(questions, annotations)[1].answers) == 9  # training answers: any number
    assert read_vqa(questions)[1] == VqaQuestion(73001, "COCO_val2014_000000000073.jpg", "Why?", None)
    _write(questions, {"questions": []})
    with pytest.raises(DataError, match=r"questions\.json: missing key 'data_subtype'"):
        read_vqa(questions)
    assert coco_image_name("test-dev2015", 1) == "COCO_test2015_000000000001.jpg"


def test_flickr30k_unbalanced_markup_names_the_line(tmp_path):
    path = tmp_path / "1000092795.txt"
    path.write_text("\ufeff[/EN#1/people Two men] talk .\n[/EN#2/scene a street .\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"1000092795\.txt:2: unbalanced entity markup"):
        read_flickr30k_sentences(path)
    path.write_text("\ufeff[/EN#1/people Two men] talk .\n", encoding="utf-8")
    assert read_flickr30k_sentences(path) == [Caption("1000092795.jpg", "Two men talk .", "", "1000092795.jpg#0")]
