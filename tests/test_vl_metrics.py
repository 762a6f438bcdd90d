"""paddle_unimo.metrics.vqa / retrieval: the official VQA formula and normalisation on hand-worked cases, the
real UNITER answer vocabulary and an official-format annotation file, R@K by hand and against brute force."""
import json

import numpy as np
import pytest

from paddle_unimo.fileio import DataError
from paddle_unimo.metrics import (answer_targets, build_answer_vocabulary, load_annotations, load_answer_vocabulary,
                                  normalize_answer, normalize_label, recall_at_k, soft_score, vqa_accuracy,
                                  write_submission)
from paddle_unimo.metrics.vqa import question_accuracy

from conftest import shared_path

# ---- VQA accuracy ----------------------------------------------------------------------------------------


def test_three_of_ten_matching_is_0_9():
    # "two" -> "2" matches 3 of the 10 answers. Leaving out one of the 3 matching leaves 2 matches: 2/3;
    # leaving out one of the 7 others leaves 3: min(1, 3/3) = 1. Mean = (3 * (2/3) + 7 * 1) / 10 = 0.9.
    answers = ["2", "2", "2", "1", "1", "1", "1", "3", "3", "4"]
    assert question_accuracy("two", answers) == pytest.approx(0.9)
    # one match: left out -> 0, else 1/3 -> (9 * 1/3) / 10 = 0.3; two: (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    assert question_accuracy("4", answers) == pytest.approx(0.3)
    assert question_accuracy("3", answers) == pytest.approx(0.6)
    # four matches: left out -> 3/3 = 1, else min(1, 4/3) = 1 -> 1.0; none -> 0
    assert question_accuracy("1", answers) == pytest.approx(1.0)
    assert question_accuracy("5", answers) == 0.0


def test_ground_truth_is_only_punctuation_processed():
    # The official script never maps number words, lower-cases or drops articles in the ground truth.
    assert question_accuracy("two", ["two"] * 3 + ["1"] * 7) == 0.0
    # ...and does not even touch the punctuation when all ten answers are identical.
    assert question_accuracy("yes", ["yes."] * 10) == 0.0
    assert question_accuracy("yes", ["yes."] * 9 + ["no"]) == pytest.approx(1.0)
    assert question_accuracy("Yes", ["yes"] * 10) == pytest.approx(1.0)


def test_vqa_accuracy_overall_and_refusals():
    annotations = {1: ["yes"] * 10, 2: ["2"] * 3 + ["3"] * 7, 3: ["red"] * 10}
    result = vqa_accuracy({1: "yes", 2: "two", 3: "blue"}, annotations)
    assert result["per_question"] == pytest.approx({1: 100.0, 2: 90.0, 3: 0.0})
    assert result["overall"] == pytest.approx(190.0 / 3)
    with pytest.raises(ValueError, match=r"unknown question ids \[7\]"):
        vqa_accuracy({1: "yes", 2: "2", 3: "red", 7: "no"}, annotations)
    with pytest.raises(ValueError, match=r"without a prediction \[3\]"):
        vqa_accuracy({1: "yes", 2: "2"}, annotations)
    with pytest.raises(ValueError, match="question 1: expected 10"):
        vqa_accuracy({1: "yes"}, {1: ["yes"] * 9})


@pytest.mark.parametrize("text, expected", [
    ("yes.", "yes"), ("Yes", "yes"), ("two", "2"), ("None", "0"), ("ten", "10"), ("a dog", "dog"),
    ("The  Two\tdogs\n", "2 dogs"), ("dont", "don\u2019t"), ("cant", "can't"), ("don't", "don t"),
    ("1.5", "1.5"), ("1,000", "1000"), ("hello, world", "hello world"), ("yes/no", "yes no"),
    ("what?", "what"), ("t-shirt", "t-shirt"), ("8:00", "8 00"), ("." * 40, "." * 8),
])
def test_normalize_answer_as_official(text, expected):
    # "don't": the apostrophe touches no space -> replaced by a space. "." * 40: re.UNICODE (32) as count.
    assert normalize_answer(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("t-shirt", "t shirt"), ("8:00", "8:00"), ("don't know", "don't know"), ("dont", "don't"),
    ("1,000", "1000"), ("two", "2"), ("yes!", "yes"),
])
def test_normalize_label_as_compute_softscore(text, expected):
    assert normalize_label(text) == expected


# ---- soft targets and the answer vocabulary ------------------------------------------------------------------


def test_soft_score():
    assert [soft_score(c) for c in range(7)] == [0.0, 0.3, 0.6, 0.9, 1.0, 1.0, 1.0]
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError):
            soft_score(bad)


def test_answer_targets_and_vocabulary():
    ans2label = {"2": 0, "yes": 1, "t shirt": 2}
    answers = ["two", "2", "2", "Yes", "t-shirt", "maybe", "2", "2", "3", "3"]
    # "2" x5 (two -> 2) -> 1.0; "yes" x1 -> 0.3; "t shirt" x1 -> 0.3; "maybe", "3" not in the vocabulary
    assert answer_targets(answers, ans2label) == {0: 1.0, 1: 0.3, 2: 0.3}
    assert answer_targets(["no"] * 10, ans2label) == {}
    lists = [["Two", "2", "yes", "y"], ["yes.", "no", "2", "x"], ["x", "y", "z", "the"]]
    # counts: 2 -> 3, yes/x/y -> 2, no/z/"" (the article "the" removed) -> 1; ties by text
    assert build_answer_vocabulary(lists, 2) == {"2": 0, "x": 1, "y": 2, "yes": 3}
    assert build_answer_vocabulary(lists, 4) == {}
    with pytest.raises(ValueError):
        build_answer_vocabulary(lists, 0)


def test_real_answer_vocabulary():
    vocab = load_answer_vocabulary(shared_path("vqa", "ans2label.json"))
    assert len(vocab) == 3129 and sorted(vocab.values()) == list(range(3129))
    assert vocab["net"] == 0 and vocab["yes"] == 3 and vocab["2"] == 17 and vocab["t shirt"] == 501
    # every answer is already in compute_softscore's normal form, i.e. normalize_label made this file
    assert [a for a in vocab if normalize_label(a) != a] == []


def test_answer_vocabulary_refuses_bad_files(tmp_path):
    for name, content in [("gap.json", {"a": 0, "b": 2}), ("list.json", ["a"]), ("str.json", {"a": "0"})]:
        path = tmp_path / name
        path.write_text(json.dumps(content), encoding="utf-8")
        with pytest.raises(DataError, match=name):
            load_answer_vocabulary(path)


def test_real_annotation_fixture():
    folder = shared_path("vqa", "allennlp_fixture")
    annotations = load_annotations(folder / "annotations.json")
    questions = json.loads((folder / "questions.json").read_text(encoding="utf-8"))["questions"]
    assert sorted(annotations) == sorted(q["question_id"] for q in questions) == [458752000, 458752001, 458752002]
    # 458752000: net x6, netting, mesh, pitcher, orange. "net" leaves >= 5 matches whichever answer is left
    #            out -> min(1, 5/3 or 6/3) = 1 -> 1.0
    # 458752001: pitcher x9, catcher -> 0;  458752002: orange x10 -> 0.  Overall 100 * (1 + 0 + 0) / 3
    result = vqa_accuracy({qid: "net" for qid in annotations}, annotations)
    assert result["per_question"] == pytest.approx({458752000: 100.0, 458752001: 0.0, 458752002: 0.0})
    assert result["overall"] == pytest.approx(100.0 / 3)
    # "pitcher" answers 1 of 10 on the first question: (9 * 1/3) / 10 = 0.3; 9 of 10 on the second: 1.0
    result = vqa_accuracy({458752000: "pitcher", 458752001: "pitcher", 458752002: "orange"}, annotations)
    assert result["per_question"] == pytest.approx({458752000: 30.0, 458752001: 100.0, 458752002: 100.0})
    vocab = load_answer_vocabulary(shared_path("vqa", "ans2label.json"))
    # net 6 -> 1.0; pitcher 1 -> 0.3; orange 1 -> 0.3; netting and mesh are not in the vocabulary
    assert answer_targets(annotations[458752000], vocab) == {0: 1.0, 1: 0.3, 2: 0.3}


def test_write_submission(tmp_path):
    path = tmp_path / "results.json"
    write_submission(path, {"12": "yes", 3: "2"})
    assert json.loads(path.read_text(encoding="utf-8")) == [{"question_id": 3, "answer": "2"},
                                                            {"question_id": 12, "answer": "yes"}]
    with pytest.raises(ValueError):
        write_submission(path, {"q1": "yes"})


# ---- retrieval recall ----------------------------------------------------------------------------------------

SCORES = np.array([[0.9, 0.1, 0.3],   # text 0 -> image 0
                   [0.2, 0.8, 0.1],   # text 1 -> image 0
                   [0.5, 0.4, 0.6],   # text 2 -> image 1
                   [0.3, 0.2, 0.7]])  # text 3 -> image 2
TEXT_TO_IMAGE = [0, 0, 1, 2]


def test_recall_by_hand():
    # image retrieval (per text, rank of its image): t0 0.9 first -> 0; t1 0.2 below 0.8 -> 1;
    #   t2 0.4 below 0.5 and 0.6 -> 2; t3 0.7 first -> 0.  R@1 2/4, R@2 3/4, R@3 4/4.
    # text retrieval (per image, rank of its best caption): image 0 best t0 0.9 -> 0;
    #   image 1 t2 0.4 below t1 0.8 -> 1; image 2 t3 0.7 first -> 0.  R@1 2/3, R@2 and R@3 3/3.
    result = recall_at_k(SCORES, ks=(1, 2, 3), text_to_image=TEXT_TO_IMAGE)
    expected = {"img_r1": 50.0, "img_r2": 75.0, "img_r3": 100.0,
                "txt_r1": 200.0 / 3, "txt_r2": 100.0, "txt_r3": 100.0}
    expected["mean_recall"] = sum(expected.values()) / 6
    assert result == pytest.approx(expected)
    assert set(recall_at_k(SCORES, text_to_image=TEXT_TO_IMAGE)) == {
        "txt_r1", "txt_r5", "txt_r10", "img_r1", "img_r5", "img_r10", "mean_recall"}


def test_recall_ties_never_hit():
    flat = np.ones((2, 2))
    assert recall_at_k(flat, ks=(1, 2)) == pytest.approx(
        {"txt_r1": 0.0, "txt_r2": 100.0, "img_r1": 0.0, "img_r2": 100.0, "mean_recall": 50.0})
    # texts 0, 1 -> image 0, text 2 -> image 1.  Image 0: its two captions tie at the top -> a hit.
    # Image 1: its caption 2 ties with caption 0 (0.5) -> the wrong one counts as first -> a miss.
    # Text 2: image 0 ties with its image 1 (0.5) -> a miss; texts 0 and 1 find image 0 first -> hits.
    scores = np.array([[1.0, 0.5], [1.0, 0.2], [0.5, 0.5]])
    result = recall_at_k(scores, ks=(1, 2), text_to_image=[0, 0, 1])
    assert result == pytest.approx({"txt_r1": 50.0, "txt_r2": 100.0, "img_r1": 100.0 * 2 / 3, "img_r2": 100.0,
                                    "mean_recall": (50.0 + 100.0 + 200.0 / 3 + 100.0) / 4})


def brute_force_recall(scores, text_to_image, ks):
    num_texts, num_images = scores.shape
    img_hits, txt_hits = {k: 0 for k in ks}, {k: 0 for k in ks}
    for t in range(num_texts):
        gt = text_to_image[t]
        order = sorted(range(num_images), key=lambda i: (-scores[t, i], i == gt))  # ground truth last in a tie
        for k in ks:
            img_hits[k] += gt in order[:k]
    for i in range(num_images):
        order = sorted(range(num_texts), key=lambda t: (-scores[t, i], text_to_image[t] == i))
        for k in ks:
            txt_hits[k] += any(text_to_image[t] == i for t in order[:k])
    out = {f"txt_r{k}": 100.0 * txt_hits[k] / num_images for k in ks}
    out.update({f"img_r{k}": 100.0 * img_hits[k] / num_texts for k in ks})
    out["mean_recall"] = float(np.mean(list(out.values())))
    return out


def test_recall_equals_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(20):
        num_images = int(rng.integers(1, 12))
        num_texts = num_images + int(rng.integers(0, 25))
        extra = rng.integers(0, num_images, num_texts - num_images)
        t2i = rng.permutation(np.concatenate([np.arange(num_images), extra]))  # every image has a text
        scores = rng.integers(0, 4, size=(num_texts, num_images)).astype(float)  # few values: many ties
        if trial % 2:
            scores += rng.normal(size=scores.shape)
        ks = (1, 2, 5, 10)
        assert recall_at_k(scores, ks, t2i) == pytest.approx(brute_force_recall(scores, t2i, ks)), trial


def test_recall_refuses_bad_input():
    with pytest.raises(ValueError, match="text_to_image is required"):
        recall_at_k(SCORES)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        recall_at_k(SCORES, text_to_image=[0, 1, 2])
    with pytest.raises(ValueError, match=r"images without any text: \[2\]"):
        recall_at_k(SCORES, text_to_image=[0, 0, 1, 1])
    with pytest.raises(ValueError, match="outside"):
        recall_at_k(SCORES, text_to_image=[0, 0, 1, 3])
    with pytest.raises(ValueError, match="matrix"):
        recall_at_k(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        recall_at_k(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="ks"):
        recall_at_k(np.eye(2), ks=(0,))
