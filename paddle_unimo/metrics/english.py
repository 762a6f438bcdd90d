"""Metrics of the English generation benchmarks of UNIMO: ROUGE (CNN/DM, Gigaword, XSum), CoQA F1/EM and the
SQuAD question-generation BLEU-4 / METEOR / ROUGE-L. Scores are in 0-100.

* ``rouge_scores``: Google's ``rouge-score`` (``rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"],
  use_stemmer=True)``): per-example F1, averaged. Its tokenizer lower-cases, replaces every character other
  than a-z and 0-9 by a space (non-ASCII text vanishes) and applies the Porter stemmer of nltk to tokens
  longer than 3 characters. ``rougeLsum`` (with ``lsum=True``) is the summary-level LCS over sentences
  separated by newlines (texts must carry one sentence per line, e.g. CNN/DM highlights joined by "\\n";
  without newlines it scores one "sentence" per text). Perl ROUGE-1.5.5 (the numbers of most CNN/DM papers,
  run through ``pyrouge``) differs in detail: sentences are the lines of its input files; its tokenizer
  lower-cases and keeps a-z, 0-9 and hyphens (a hyphen becomes a token of its own); ``-m`` stems with its own
  Porter stemmer; its summary-level ROUGE-L is a union-LCS over sentences (like ``rougeLsum``, not
  ``rougeL``); pyrouge's options add bootstrap confidence intervals (``-c 95 -r 1000``). Scores usually agree
  within a few tenths. ``perl_rouge_scores`` runs it when ``pyrouge`` is installed and ``ROUGE_HOME`` names a
  ROUGE-1.5.5 folder (``perl_rouge_available``); neither is installed here, so that path is untested.
* ``coqa_f1_em``: the CoQA official ``evaluate-v1.0.py``: answers normalized (lower-case, punctuation removed,
  articles a/an/the removed, whitespace collapsed); F1 over the bag of normalized tokens (1 when both are
  empty, 0 when only one is); EM on the normalized strings. With n > 1 gold answers (the main answer and the
  ``additional_answers``) a turn scores the mean, over each gold answer left out, of the best score against
  the other n - 1; with one gold answer the score against it. Turns are averaged (the script's "overall").
* ``squad_qg_scores``: UniLM's ``eval_on_unilm_tokenized_ref.py`` (after Du et al.'s nqg evaluation):
  sources, references and predictions are stripped and lower-cased, word pieces (``##x``) in references are
  merged; examples are grouped by source sentence: the references of all examples with that source form one
  reference set and the prediction of the last such example is the prediction (the script's
  ``res[key] = [prediction]`` overwrites); then pycocoevalcap ``Bleu(4)``, ``Meteor()`` and ``Rouge()`` on
  these already tokenized texts (no PTB tokenizer). METEOR runs Java.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import string
import tempfile
from collections import Counter
from typing import Dict, List, Sequence, Union

from rouge_score import rouge_scorer

logging.getLogger("absl").setLevel(logging.WARNING)  # rouge-score logs "Using default tokenizer." at every scorer

References = Sequence[Union[str, Sequence[str]]]


def _reference_lists(predictions: Sequence[str], references: References) -> List[List[str]]:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    out = [[r] if isinstance(r, str) else list(r) for r in references]
    if any(not refs for refs in out):
        raise ValueError("every example needs at least one reference")
    return out


# ---- ROUGE -------------------------------------------------------------------------------------------

def rouge_scores(predictions: Sequence[str], references: References, stemming: bool = True,
                 lsum: bool = False) -> Dict[str, float]:
    """Mean ROUGE-1/2/L F1 x100 (keys ``rouge1``, ``rouge2``, ``rougeL``; ``rougeLsum`` with ``lsum``).
    A reference may be a list of strings: the best-scoring one counts (``score_multi``)."""
    types = ["rouge1", "rouge2", "rougeL"] + (["rougeLsum"] if lsum else [])
    scorer = rouge_scorer.RougeScorer(types, use_stemmer=stemming)
    sums = dict.fromkeys(types, 0.0)
    for pred, refs in zip(predictions, _reference_lists(predictions, references)):
        scores = scorer.score(refs[0], pred) if len(refs) == 1 else scorer.score_multi(refs, pred)
        for key in types:
            sums[key] += scores[key].fmeasure
    return {key: 100.0 * value / max(len(predictions), 1) for key, value in sums.items()}


_SENTENCE_END = re.compile(r"([.!?][\"'\u201d\u2019)\]]*)\s+")


def split_sentences(text: str) -> List[str]:
    """Sentences of a summary, for ``rougeLsum``: a break after ``.``, ``!`` or ``?`` (with any closing quotes or
    brackets) followed by white space. A plain rule (nltk's punkt needs a download), so an abbreviation such as
    "U.S." before a space also ends a sentence."""
    return [part.strip() for part in _SENTENCE_END.sub("\\1\n", text.strip()).split("\n") if part.strip()]


def summary_rouge_scores(predictions: Sequence[str], reference_sentences: Sequence[Sequence[str]],
                         stemming: bool = True) -> Dict[str, float]:
    """``rouge_scores`` with ``rougeLsum``, the summary-level ROUGE-L that Perl ROUGE-1.5.5 reports for
    multi-sentence summaries (CNN/DM): each reference given as its sentences (the highlights), each prediction
    split by ``split_sentences``; one sentence per line, as ``rouge-score`` expects. ROUGE-1/2 and the
    sentence-level ``rougeL`` are those of the plain texts."""
    return rouge_scores(["\n".join(split_sentences(p)) for p in predictions],
                        ["\n".join(sentences) for sentences in reference_sentences], stemming, lsum=True)


def perl_rouge_available() -> bool:
    """True when ``pyrouge`` imports and ``ROUGE_HOME`` is a folder holding ``ROUGE-1.5.5.pl`` and Perl runs."""
    home = os.environ.get("ROUGE_HOME", "")
    if not (home and os.path.isfile(os.path.join(home, "ROUGE-1.5.5.pl")) and shutil.which("perl")):
        return False
    import importlib.util
    return importlib.util.find_spec("pyrouge") is not None


def perl_rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> Dict[str, float]:
    """ROUGE-1/2/L F1 x100 of Perl ROUGE-1.5.5 through pyrouge (its default options ``-c 95 -2 -1 -U -r 1000
    -n 4 -w 1.2 -a -m``: stemming, bootstrap confidence intervals); sentences are the lines of each text. Untested here:
    neither pyrouge nor ROUGE-1.5.5 is installed in this environment."""
    if not perl_rouge_available():
        raise RuntimeError("Perl ROUGE-1.5.5 is unavailable: install pyrouge and set ROUGE_HOME to the folder of "
                           "ROUGE-1.5.5.pl (with its data/ folder); rouge_scores is the Python alternative")
    from pyrouge import Rouge155
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    with tempfile.TemporaryDirectory() as tmp:
        system, model = os.path.join(tmp, "system"), os.path.join(tmp, "model")
        os.makedirs(system), os.makedirs(model)
        for i, (pred, ref) in enumerate(zip(predictions, references)):
            for folder, name, text in ((system, f"{i:06d}_decoded.txt", pred), (model, f"{i:06d}_reference.txt", ref)):
                with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
                    f.write(text.strip() + "\n")
        rouge = Rouge155(rouge_dir=os.environ["ROUGE_HOME"])
        rouge.system_dir, rouge.model_dir = system, model
        rouge.system_filename_pattern, rouge.model_filename_pattern = r"(\d+)_decoded.txt", "#ID#_reference.txt"
        result = rouge.output_to_dict(rouge.convert_and_evaluate())
    return {key: 100.0 * result[f"rouge_{n}_f_score"] for key, n in (("rouge1", "1"), ("rouge2", "2"),
                                                                      ("rougeL", "l"))}


# ---- CoQA -------------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, replace the words a/an/the by spaces, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_exact(gold: str, prediction: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(prediction))


def answer_f1(gold: str, prediction: str) -> float:
    gold_tokens = normalize_answer(gold).split() if gold else []
    pred_tokens = normalize_answer(prediction).split() if prediction else []
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)  # no-answer on either side: 1 only if both are empty
    same = sum((Counter(gold_tokens) & Counter(pred_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def coqa_turn_score(gold_answers: Sequence[str], prediction: str) -> Dict[str, float]:
    """``{"f1", "em"}`` (0-1) of one turn with the leave-one-out rule of evaluate-v1.0.py."""
    golds = list(gold_answers)
    if not golds:
        raise ValueError("a turn needs at least one gold answer")
    groups = [golds[:i] + golds[i + 1:] for i in range(len(golds))] if len(golds) > 1 else [golds]
    f1 = sum(max(answer_f1(g, prediction) for g in group) for group in groups)
    em = sum(max(answer_exact(g, prediction) for g in group) for group in groups)
    return {"f1": f1 / len(groups), "em": em / len(groups)}


def coqa_f1_em(predictions: Sequence[str], gold_answers_lists: References) -> Dict[str, float]:
    """Mean turn F1 and EM x100 (keys ``f1``, ``em``); each gold item is an answer or a list of answers."""
    golds = _reference_lists(predictions, gold_answers_lists)
    turns = [coqa_turn_score(g, p) for p, g in zip(predictions, golds)]
    count = max(len(turns), 1)
    return {key: 100.0 * sum(t[key] for t in turns) / count for key in ("f1", "em")}


# ---- SQuAD question generation ----------------------------------------------------------------------------

def merge_word_pieces(text: str) -> str:
    """UniLM ``detokenize``: a token ``##x`` is glued to the token before it."""
    out: List[str] = []
    for token in text.split():
        if token.startswith("##") and out:
            out[-1] += token[2:]
        else:
            out.append(token)
    return " ".join(out)


def squad_qg_groups(predictions: Sequence[str], sources: Sequence[str], references: Sequence[str]):
    """(gts, res) of eval_on_unilm_tokenized_ref.py: ``{source: [references]}``, ``{source: [last prediction]}``."""
    if not len(predictions) == len(sources) == len(references):
        raise ValueError(f"{len(predictions)} predictions, {len(sources)} sources, {len(references)} references")
    gts: Dict[str, List[str]] = {}
    res: Dict[str, List[str]] = {}
    for pred, src, ref in zip(predictions, sources, references):
        key = src.strip().lower()
        res[key] = [pred.strip().lower()]
        gts.setdefault(key, []).append(merge_word_pieces(ref.strip()).lower())
    return gts, res


def _bleu4(gts, res) -> float:
    from pycocoevalcap.bleu.bleu import Bleu
    return 100.0 * float(Bleu(4).compute_score(gts, res, verbose=0)[0][3])


def squad_qg_bleu4(predictions: Sequence[str], sources: Sequence[str], references: Sequence[str]) -> float:
    """The ``bleu4`` of ``squad_qg_scores`` alone, without Java (the number that picks the best checkpoint)."""
    return _bleu4(*squad_qg_groups(predictions, sources, references))


def squad_qg_scores(predictions: Sequence[str], sources: Sequence[str],
                    references: Sequence[str]) -> Dict[str, float]:
    """BLEU-4, METEOR, ROUGE-L x100 (keys ``bleu4``, ``meteor``, ``rougeL``) as UniLM's QG evaluation; without
    Java (`java` not on PATH), METEOR is not computed and its reason is under ``skipped``."""
    from pycocoevalcap.rouge.rouge import Rouge
    gts, res = squad_qg_groups(predictions, sources, references)
    scores: Dict[str, object] = {"bleu4": _bleu4(gts, res)}
    if shutil.which("java") is None:
        scores["skipped"] = {"meteor": "Java is not installed (`java` not on PATH), which pycocoevalcap's METEOR "
                                       "runs in"}
    else:
        from .caption import meteor_score
        scores["meteor"] = meteor_score(gts, res)
    scores["rougeL"] = 100.0 * float(Rouge().compute_score(gts, res)[0])
    return scores
