"""VQA v2: the official accuracy, answer normalisation, UNITER-style soft targets and the answer vocabulary.

**Accuracy** follows the official evaluation script (GT-Vision-Lab/VQA,
``PythonEvaluationTools/vqaEvaluation/vqaEval.py``, ``VQAEval.evaluate``), including its asymmetries:

* the prediction has newlines and tabs turned into spaces, is stripped, then goes through
  ``process_punctuation`` and ``process_digit_article`` (together: ``normalize_answer``);
* the ground-truth answers of a question go through ``process_punctuation`` only, and only when they are
  not all identical (``len(set(answers)) > 1``); they are never lower-cased, never have number words mapped
  or articles removed. (The released VQA v2 annotations are already in normalised form, e.g. "2" not "two",
  so a ground-truth "two" never matches any prediction: a prediction "two" becomes "2".)
* for each of the 10 ground-truth answers left out in turn, acc = min(1, #matches among the other 9 / 3);
  a question scores the mean of the 10, the overall accuracy is 100 x the mean over questions (the official
  script rounds it to 2 decimals for display; it is returned unrounded here).

``process_punctuation``: for each character of the official list ``; : / ' [ ] " ( ) = + \\ _ > < @ ` , ?``,
if it is next to a space in the input, or the input contains a digit-comma-digit ("1,000"), it is deleted,
otherwise replaced by a space; then every "." not followed by a digit is deleted ("yes." -> "yes", "1.5"
kept). The official call ``periodStrip.sub("", text, re.UNICODE)`` passes ``re.UNICODE`` (= 32) as the
*count*, so at most 32 periods are removed; that is reproduced. ``process_digit_article``: lower-case, split
on whitespace, number words none/zero..ten -> digits, drop a/an/the, then the official contractions table
(mostly to a curly apostrophe U+2019: "dont" -> "don’t"; a few straight: "cant" -> "can't").

**Soft targets and the answer vocabulary** follow the preprocessing that produced UNITER's
``utils/ans2label.json`` (3129 answers; UNITER ``train_vqa.py`` loads it, ``data/vqa.py`` scatters the stored
``labels``/``scores`` into the target vector trained with binary cross-entropy). Those labels and scores come
from bottom-up-attention-vqa ``tools/compute_softscore.py``: ``get_score`` gives 0, 0.3, 0.6, 0.9, 1 for
0, 1, 2, 3, >=4 annotators, and answers are normalised by its ``preprocess_answer`` (``normalize_label``
here: the same two steps with its own punctuation list, which keeps ``'`` and ``:`` and adds ``{ } - !``,
straight-apostrophe contractions, then every comma removed), so "8:00" and "don't know" stay as in the
vocabulary.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Dict, Hashable, Iterable, List, Mapping, Sequence

from paddle_unimo.fileio import DataError, read_json, write_json

NUM_ANSWERS = 10  # annotators per VQA v2 question
EVAL_PUNCT = (";", ":", "/", "'", "[", "]", '"', "(", ")", "=", "+", "\\", "_", ">", "<", "@", "`", ",", "?")
LABEL_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
               "?", "!")
# The official pattern is "(?!<=\d)(\.)(?!\d)"; its first group is a look-*ahead* for the text "<=digit",
# which never follows a ".", so it reduces to this.
PERIOD_STRIP = re.compile(r"\.(?!\d)")
COMMA_BETWEEN_DIGITS = re.compile(r"\d,\d")
PERIOD_STRIP_MAX = int(re.UNICODE)  # the official script passes re.UNICODE (32) as re.sub's count
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = ("a", "an", "the")
# The official table, character for character (U+2019 where it has a curly apostrophe; keys with capitals
# can never match, since the words are lower-cased first).
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn’t’ve", "couldnt’ve": "couldn’t’ve", "didnt": "didn’t", "doesnt": "doesn’t",
    "dont": "don’t", "hadnt": "hadn’t", "hadnt’ve": "hadn’t’ve", "hadn'tve": "hadn’t’ve", "hasnt": "hasn’t",
    "havent": "haven’t", "hed": "he’d", "hed’ve": "he’d’ve", "he’dve": "he’d’ve", "hes": "he’s",
    "howd": "how’d", "howll": "how’ll", "hows": "how’s", "Id’ve": "I’d’ve", "I’dve": "I’d’ve", "Im": "I’m",
    "Ive": "I’ve", "isnt": "isn’t", "itd": "it’d", "itd’ve": "it’d’ve", "it’dve": "it’d’ve", "itll": "it’ll",
    "let’s": "let’s", "maam": "ma’am", "mightnt": "mightn’t", "mightnt’ve": "mightn’t’ve",
    "mightn’tve": "mightn’t’ve", "mightve": "might’ve", "mustnt": "mustn’t", "mustve": "must’ve",
    "neednt": "needn’t", "notve": "not’ve", "oclock": "o’clock", "oughtnt": "oughtn’t",
    "ow’s’at": "’ow’s’at", "’ows’at": "’ow’s’at", "’ow’sat": "’ow’s’at", "shant": "shan’t",
    "shed’ve": "she’d’ve", "she’dve": "she’d’ve", "she’s": "she’s", "shouldve": "should’ve",
    "shouldnt": "shouldn’t", "shouldnt’ve": "shouldn’t’ve", "shouldn’tve": "shouldn’t’ve",
    "somebody’d": "somebodyd", "somebodyd’ve": "somebody’d’ve", "somebody’dve": "somebody’d’ve",
    "somebodyll": "somebody’ll", "somebodys": "somebody’s", "someoned": "someone’d",
    "someoned’ve": "someone’d’ve", "someone’dve": "someone’d’ve", "someonell": "someone’ll",
    "someones": "someone’s", "somethingd": "something’d", "somethingd’ve": "something’d’ve",
    "something’dve": "something’d’ve", "somethingll": "something’ll", "thats": "that’s",
    "thered": "there’d", "thered’ve": "there’d’ve", "there’dve": "there’d’ve", "therere": "there’re",
    "theres": "there’s", "theyd": "they’d", "theyd’ve": "they’d’ve", "they’dve": "they’d’ve",
    "theyll": "they’ll", "theyre": "they’re", "theyve": "they’ve", "twas": "’twas", "wasnt": "wasn’t",
    "wed’ve": "we’d’ve", "we’dve": "we’d’ve", "weve": "we've", "werent": "weren’t", "whatll": "what’ll",
    "whatre": "what’re", "whats": "what’s", "whatve": "what’ve", "whens": "when’s", "whered": "where’d",
    "wheres": "where's", "whereve": "where’ve", "whod": "who’d", "whod’ve": "who’d’ve",
    "who’dve": "who’d’ve", "wholl": "who’ll", "whos": "who’s", "whove": "who've", "whyll": "why’ll",
    "whyre": "why’re", "whys": "why’s", "wont": "won’t", "wouldve": "would’ve", "wouldnt": "wouldn’t",
    "wouldnt’ve": "wouldn’t’ve", "wouldn’tve": "wouldn’t’ve", "yall": "y’all", "yall’ll": "y’all’ll",
    "y’allll": "y’all’ll", "yall’d’ve": "y’all’d’ve", "y’alld’ve": "y’all’d’ve", "y’all’dve": "y’all’d’ve",
    "youd": "you’d", "youd’ve": "you’d’ve", "you’dve": "you’d’ve", "youll": "you’ll", "youre": "you’re",
    "youve": "you’ve",
}
# compute_softscore.py's table is the same one with straight apostrophes throughout.
LABEL_CONTRACTIONS = {k.replace("’", "'"): v.replace("’", "'") for k, v in CONTRACTIONS.items()}


def process_punctuation(text: str, punct: Sequence[str] = EVAL_PUNCT) -> str:
    """The official ``processPunctuation`` (see the module docstring); the tests on ``text`` look at the input,
    not at the partly rewritten output."""
    out = text
    strip_all = COMMA_BETWEEN_DIGITS.search(text) is not None
    for p in punct:
        out = out.replace(p, "" if strip_all or p + " " in text or " " + p in text else " ")
    return PERIOD_STRIP.sub("", out, count=PERIOD_STRIP_MAX)


def process_digit_article(text: str, contractions: Mapping[str, str] = CONTRACTIONS) -> str:
    """The official ``processDigitArticle``: lower-case, number words to digits, articles dropped, contractions."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(contractions.get(w, w) for w in words if w not in ARTICLES)


def normalize_answer(text: str) -> str:
    """What the official evaluation does to a predicted answer before comparing it."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def ground_truth_answers(answers: Sequence[str]) -> List[str]:
    """What the official evaluation does to a question's ground-truth answers: punctuation only, and only when
    they are not all the same."""
    if len(set(answers)) > 1:
        return [process_punctuation(a) for a in answers]
    return list(answers)


def question_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Official accuracy (0-1) of one prediction: mean over the answers left out of min(1, matches / 3)."""
    if len(answers) != NUM_ANSWERS:
        raise ValueError(f"expected {NUM_ANSWERS} ground-truth answers, got {len(answers)}")
    pred = normalize_answer(prediction)
    matches = [a == pred for a in ground_truth_answers(answers)]
    total = sum(matches)
    return sum(min(1.0, (total - m) / 3.0) for m in matches) / len(matches)


def _check_ids(predictions: Mapping, annotations: Mapping) -> None:
    unknown = [q for q in predictions if q not in annotations]
    missing = [q for q in annotations if q not in predictions]
    if unknown or missing:
        raise ValueError(f"predictions for unknown question ids {sorted(unknown, key=str)[:20]}; "
                         f"questions without a prediction {sorted(missing, key=str)[:20]}")


def vqa_accuracy(predictions: Mapping[Hashable, str], annotations: Mapping[Hashable, Sequence[str]]) -> dict:
    """``{"overall": 0-100, "per_question": {question_id: 0-100}}`` by the official formula.

    ``predictions`` maps question id -> answer, ``annotations`` question id -> its 10 ground-truth answers; both
    must hold exactly the same question ids.
    """
    _check_ids(predictions, annotations)
    if not annotations:
        raise ValueError("no questions to score")
    per_question = {}
    for qid, answers in annotations.items():
        if not isinstance(predictions[qid], str):
            raise ValueError(f"question {qid}: the answer must be a string, got {type(predictions[qid]).__name__}")
        if len(answers) != NUM_ANSWERS:
            raise ValueError(f"question {qid}: expected {NUM_ANSWERS} ground-truth answers, got {len(answers)}")
        per_question[qid] = 100.0 * question_accuracy(predictions[qid], answers)
    return {"overall": sum(per_question.values()) / len(per_question), "per_question": per_question}


def load_annotations(path) -> Dict[int, List[str]]:
    """``{question_id: [10 answer strings]}`` from an official ``v2_mscoco_*_annotations.json``."""
    data = read_json(path, "VQA annotation file")
    rows = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected an object with an 'annotations' list")
    out = {}
    for i, row in enumerate(rows):
        try:
            answers = [a["answer"] for a in row["answers"]]
            qid = row["question_id"]
        except (KeyError, TypeError):
            raise DataError(f"{path}: annotation {i} lacks question_id or answers[].answer") from None
        if len(answers) != NUM_ANSWERS or not all(isinstance(a, str) for a in answers) or qid in out:
            raise DataError(f"{path}: annotation {i} (question {qid}) needs {NUM_ANSWERS} string answers "
                            "and a unique question_id")
        out[qid] = answers
    return out


def write_submission(path, predictions: Mapping[Hashable, str]) -> None:
    """The official results format ``[{"question_id": int, "answer": str}, ...]``, sorted by question id."""
    rows = []
    for qid, answer in predictions.items():
        if isinstance(qid, bool) or not isinstance(qid, (int, str)) or not str(qid).isdigit():
            raise ValueError(f"question id {qid!r} is not an integer")
        if not isinstance(answer, str):
            raise ValueError(f"question {qid}: the answer must be a string, got {type(answer).__name__}")
        rows.append({"question_id": int(qid), "answer": answer})
    rows.sort(key=lambda r: r["question_id"])
    write_json(path, rows)


# ---- training targets and the answer vocabulary (UNITER / bottom-up-attention-vqa) -------------------------

def normalize_label(text: str) -> str:
    """compute_softscore.py ``preprocess_answer``: the answer as it is written in ans2label.json."""
    text = process_digit_article(process_punctuation(text, LABEL_PUNCT), LABEL_CONTRACTIONS)
    return text.replace(",", "")


def soft_score(count: int) -> float:
    """Target score of an answer given by ``count`` annotators: 0, 0.3, 0.6, 0.9, 1.0 for 0, 1, 2, 3, >=4."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    return (0.0, 0.3, 0.6, 0.9)[count] if count < 4 else 1.0


def answer_targets(answers: Sequence[str], ans2label: Mapping[str, int]) -> Dict[int, float]:
    """``{label: soft_score(count)}`` over a question's answers (``normalize_label``-ed); answers outside the
    vocabulary get no label (all-zero target when none is in it)."""
    counts = Counter(normalize_label(a) for a in answers)
    return {ans2label[a]: soft_score(c) for a, c in counts.items() if a in ans2label}


def build_answer_vocabulary(answer_lists: Iterable[Sequence[str]], min_count: int) -> Dict[str, int]:
    """``{answer: index}`` of the ``normalize_label``-ed answers given at least ``min_count`` times (every
    annotator's answer counts once), sorted by count descending, then by text; indices from 0.

    (compute_softscore.py instead counts the questions whose ``multiple_choice_answer`` it is, with
    min_occurence 9, and keeps first-seen order; UNITER's ans2label.json is that file.)
    """
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be a positive integer, got {min_count!r}")
    counts = Counter(normalize_label(a) for answers in answer_lists for a in answers)
    kept = sorted((a for a, c in counts.items() if c >= min_count), key=lambda a: (-counts[a], a))
    return {a: i for i, a in enumerate(kept)}


def load_answer_vocabulary(path) -> Dict[str, int]:
    """UNITER's ``ans2label.json``: a JSON object answer -> index with indices exactly 0..N-1."""
    data = read_json(path, "answer vocabulary")
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: expected a non-empty JSON object answer -> index")
    bad = [k for k, v in data.items() if isinstance(v, bool) or not isinstance(v, int)]
    if bad:
        raise DataError(f"{path}: indices must be integers (answers {bad[:5]})")
    if sorted(data.values()) != list(range(len(data))):
        raise DataError(f"{path}: indices must be 0..{len(data) - 1}, each once")
    return data
