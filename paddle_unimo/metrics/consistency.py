"""Reference-free factual-consistency checks of generated text against its source.

Texts are compared after normalisation (NFKC, lower-case, and, for substring tests, all whitespace
removed), so full-width digits, case and the spaces of decoded token output do not matter.

* **Attribute coverage** (AdvertiseGen; 0-1): share of the source's distinct attribute values
  (``类型#上衣*颜色#白色`` → 上衣, 白色) that occur as substrings of the generated text; 1.0 when the source
  has no attributes.
* **Attribute contradictions** (AdvertiseGen; a count): number of distinct values that the training
  sources use for one of this source's attribute types (``build_value_vocabulary``) and that occur in the
  generated text although the source does not give them (source 颜色#白色, output mentions 黑色 → 1).
  Occurrences of the source's own values are masked out first and longer values are matched before the
  shorter ones they contain, so nothing is counted twice: with source 颜色#深蓝色 the output's 深蓝色 does
  not also count as 蓝色, and with vocabulary {浅灰色, 灰色} an output 浅灰色 counts once.
* **Unsupported numbers**: distinct numbers in the output (integers, decimals, percentages: ``\\d+(\\.\\d+)?%?``,
  with ASCII thousands separators: 8,088; a full-width comma separates numbers: 160，165) that are not among the
  numbers of the source (compared as whole numbers without separators: 5 is not supported by 15, 8,088 is by
  8088).
  Chinese numerals (三十) are not checked, since characters such as 一 and 万 are mostly not numbers.
* **Unsupported quotes**: distinct quoted spans (“…”, "…", 「…」, 『…』, 《…》) of the output whose inner text
  does not occur in the source.

``consistency_report`` sums these over a corpus: counts of unsupported numbers/quotes and their rates per
prediction for every task, plus mean coverage and total / per-prediction contradictions for AdvertiseGen.
"""
from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

# 8,088 is one number (8088); a full-width comma separates numbers (160，165), so it is not read as one
_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?![\d,])(?:\.\d+)?%?|\d+(?:\.\d+)?%?")


def _numbers(text: str) -> List[str]:
    return _NUMBER.findall(_nfkc(text.replace("\uff0c", "\u3001")))  # ，-> 、 before NFKC makes it ","
_QUOTE = re.compile(r"“([^”]*)”|\"([^\"]*)\"|「([^」]*)」|『([^』]*)』|《([^》]*)》")
_MASK = "\x00"


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


def _squash(text: str) -> str:
    """Normalised text for substring tests: NFKC, lower-case, no whitespace."""
    return "".join(_nfkc(text).split())


def parse_attributes(content: str) -> List[Tuple[str, str]]:
    """``类型#上衣*颜色#白色`` → [("类型", "上衣"), ("颜色", "白色")]; ValueError on a piece without type#value."""
    content = content.strip()
    if not content:
        return []
    pairs = []
    for piece in content.split("*"):
        key, sep, value = piece.partition("#")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"attribute piece {piece!r} of {content!r} is not 'type#value'")
        pairs.append((key, value))
    return pairs


def build_value_vocabulary(contents: Iterable[str]) -> Dict[str, Set[str]]:
    """All values seen per attribute type in the given (training) source strings."""
    vocabulary: Dict[str, Set[str]] = defaultdict(set)
    for content in contents:
        for key, value in parse_attributes(content):
            vocabulary[key].add(value)
    return dict(vocabulary)


def _by_length(values: Iterable[str]) -> List[str]:
    return sorted(set(values), key=lambda v: (-len(v), v))


def attribute_report(content: str, generated: str, value_vocabulary: Mapping[str, Set[str]]) -> dict:
    """``coverage``, ``contradictions`` (see module docstring), plus the ``missing`` and
    ``contradicting_values`` lists behind them."""
    pairs = parse_attributes(content)
    source_values = list(dict.fromkeys(value for _, value in pairs))
    text = _squash(generated)
    missing = [value for value in source_values if _squash(value) not in text]
    coverage = 1.0 - len(missing) / len(source_values) if source_values else 1.0
    masked = text
    for value in _by_length(_squash(v) for v in source_values):
        masked = masked.replace(value, _MASK)
    source_normalised = {_squash(v) for v in source_values}
    found = []
    for key in dict.fromkeys(key for key, _ in pairs):
        candidates = {v for v in value_vocabulary.get(key, ()) if _squash(v) not in source_normalised}
        for value in _by_length(candidates):
            needle = _squash(value)
            if needle and needle in masked:
                found.append(value)
                masked = masked.replace(needle, _MASK)
    return {"coverage": coverage, "contradictions": len(found), "missing": missing, "contradicting_values": found}


def unsupported_spans(source: str, generated: str) -> dict:
    """``numbers`` and ``quotes`` of the generated text that the source does not support, each a list of
    distinct items in order of first appearance."""
    source_numbers = {n.replace(",", "") for n in _numbers(source)}
    numbers = [n for n in dict.fromkeys(_numbers(generated)) if n.replace(",", "") not in source_numbers]
    source_text = _squash(source)
    inner = (next(g for g in m.groups() if g is not None) for m in _QUOTE.finditer(_nfkc(generated)))
    quotes = [q for q in dict.fromkeys(q.strip() for q in inner) if q and _squash(q) not in source_text]
    return {"numbers": numbers, "quotes": quotes}


def consistency_report(sources: Sequence[str], predictions: Sequence[str], task: str,
                       value_vocabulary: Optional[Mapping[str, Set[str]]] = None) -> dict:
    """Corpus summary. For ``task == "advertisegen"`` also attribute coverage / contradictions; without a
    ``value_vocabulary`` it is built from ``sources`` (better: from the training sources)."""
    if len(sources) != len(predictions):
        raise ValueError(f"{len(sources)} sources but {len(predictions)} predictions")
    count = len(predictions)
    spans = [unsupported_spans(s, p) for s, p in zip(sources, predictions)]
    numbers = sum(len(s["numbers"]) for s in spans)
    quotes = sum(len(s["quotes"]) for s in spans)
    report = {"task": task, "examples": count,
              "unsupported_numbers": numbers, "unsupported_number_rate": numbers / count if count else 0.0,
              "unsupported_quotes": quotes, "unsupported_quote_rate": quotes / count if count else 0.0}
    if task.lower() == "advertisegen":
        vocabulary = value_vocabulary if value_vocabulary is not None else build_value_vocabulary(sources)
        attrs = [attribute_report(s, p, vocabulary) for s, p in zip(sources, predictions)]
        contradictions = sum(a["contradictions"] for a in attrs)
        report.update(coverage=sum(a["coverage"] for a in attrs) / count if count else 0.0,
                      contradictions=contradictions,
                      contradictions_per_example=contradictions / count if count else 0.0)
    return report
