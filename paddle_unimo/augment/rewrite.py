"""CMCL text rewriting (UNIMO paper section 2.1): scene-graph hard negatives and sentence-level positives.

Hard negatives (phrase / word level): parse the caption (``scene_graph.parse``) and replace exactly ONE
object, attribute or relation by a different one of the same kind from the lexicon: an object by another
object noun, an attribute by another attribute of the same type (red -> blue, never red -> large), a
relation by another predicate. The caption is spliced at the replaced span's character offsets, so every
other character stays as it was. Replacements keep the text well formed where that is cheap:

* number: a plural object gets a plural noun ("two dogs" -> "two horses"); a plural slot or one after
  "a"/"an" takes countable nouns only (no "two waters");
* article: after "a"/"an" only words taking that article are chosen ("a red bike" -> "a blue bike", never
  "a orange bike"), so the article never has to change;
* case: a capitalised word stays capitalised;
* parse: "orange" is never inserted as a colour, since after a copula it would read as the fruit;
* truth: a word related to the old one (synonym, hypernym, "sitting on" vs "on": ``lexicon.related``) or
  already used in the caption is never chosen, since the result could still describe the image.

Sentence-level positives (back-translations, paraphrases) are made offline by the user and read from a
TSV file ``caption_id<TAB>paraphrase`` (``read_paraphrases``).
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..fileio import DataError, read_text_lines
from . import lexicon as lx
from .scene_graph import SceneGraph, Span

__all__ = ["KINDS", "Slot", "Rewrite", "slots", "candidates", "apply", "make_negatives", "read_paraphrases"]

KINDS = ("object", "attribute", "relation")
Rng = Union[random.Random, np.random.Generator]


@dataclass(frozen=True)
class Slot:
    """One replaceable span of a parsed caption."""
    kind: str  # one of KINDS
    span: Span  # token indices [first, last)
    old: str  # lower-case text of the span (for an object, its singular lemma)
    type: Optional[str] = None  # attribute type
    plural: bool = False  # object slots: the noun is plural
    article: Optional[str] = None  # "a" / "an" right before the span


@dataclass(frozen=True)
class Rewrite:
    text: str
    kind: str
    old: str  # the replaced text as it appeared (e.g. "dogs")
    new: str  # the text put in its place (e.g. "horses")
    type: Optional[str]  # attribute type, None for objects and relations
    span: Span  # token indices of ``old`` in the original caption


def _article(graph: SceneGraph, first: int) -> Optional[str]:
    before = graph.tokens[first - 1].lower if first > 0 else None
    return before if before in ("a", "an") else None


def slots(graph: SceneGraph) -> List[Slot]:
    """Every object head, every attribute and every (non-structural) relation span of ``graph``."""
    out = [Slot("object", o.head, o.name, plural=o.plural, article=_article(graph, o.head[0]))
           for o in graph.objects]
    out += [Slot("attribute", a.span, a.value, a.type, article=_article(graph, a.span[0]))
            for o in graph.objects for a in o.attributes]
    seen = set()
    for r in graph.relations:
        if not r.structural and r.span not in seen:
            seen.add(r.span)
            out.append(Slot("relation", r.span, r.predicate, article=_article(graph, r.span[0])))
    return out


def candidates(graph: SceneGraph, slot: Slot) -> List[str]:
    """The texts that may replace ``slot`` (inflected, article-compatible), in lexicon order."""
    if slot.kind == "object":
        used = {o.name for o in graph.objects} | {m for o in graph.objects for m in o.modifiers}
        pool = lx.COUNTABLE_OBJECTS if slot.plural or slot.article else tuple(lx.OBJECT_CATEGORY)
        pool = [n for n in pool if not any(lx.related("object", u, n) for u in used | {slot.old})]
        words = [lx.pluralize(n) if slot.plural else n for n in pool]
    elif slot.kind == "attribute":
        used = {a.value for o in graph.objects for a in o.attributes} | {slot.old}
        words = [w for w in lx.ATTRIBUTES[slot.type] if w not in lx.ATTRIBUTE_NOUNS
                 and not any(lx.related("attribute", u, w) for u in used)]
    elif slot.kind == "relation":
        words = [p for p in lx.REPLACEMENT_RELATIONS if not lx.related("relation", slot.old, p)]
    else:
        raise ValueError(f"unknown slot kind {slot.kind!r}; known: {list(KINDS)}")
    return [w for w in words if slot.article is None or lx.article_for(w) == slot.article]


def apply(graph: SceneGraph, slot: Slot, new: str) -> Rewrite:
    """The caption with ``slot``'s span replaced by ``new`` (capitalised when the old text was)."""
    old = graph.text(slot.span)
    if old[:1].isupper():
        new = new[:1].upper() + new[1:]
    first, last = graph.tokens[slot.span[0]].start, graph.tokens[slot.span[1] - 1].end
    text = graph.caption[:first] + new + graph.caption[last:]
    return Rewrite(text, slot.kind, old, new, slot.type, slot.span)


def _index(rng: Rng, n: int) -> int:
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(n))
    if isinstance(rng, random.Random):
        return rng.randrange(n)
    raise TypeError(f"rng must be random.Random or numpy.random.Generator, got {type(rng).__name__}")


def make_negatives(graph: SceneGraph, n: int, rng: Rng, kinds: Sequence[str] = KINDS) -> List[Rewrite]:
    """Up to ``n`` distinct hard negatives, each changing one slot. Deterministic given ``rng``'s state.

    Spread: draws cycle through the kinds that have a replaceable slot (objects, attributes and relations
    alternate whatever their counts); within a kind, a least-used slot is taken, then an unused word.
    Fewer than ``n`` come back when the caption has fewer distinct rewrites.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown rewrite kinds {sorted(unknown)}; known: {list(KINDS)}")
    options: Dict[str, List[Tuple[Slot, List[str]]]] = {}
    for slot in slots(graph):
        words = candidates(graph, slot) if slot.kind in kinds else []
        if words:
            options.setdefault(slot.kind, []).append((slot, list(words)))
    out: List[Rewrite] = []
    uses = {slot: 0 for pairs in options.values() for slot, _ in pairs}
    order = [k for k in KINDS if k in options]
    turn = _index(rng, len(order)) if order else 0
    while len(out) < n and options:
        kind = order[turn % len(order)]
        pairs = options[kind]
        fewest = min(uses[slot] for slot, _ in pairs)
        least = [p for p in pairs if uses[p[0]] == fewest]
        slot, words = least[_index(rng, len(least))]
        out.append(apply(graph, slot, words.pop(_index(rng, len(words)))))
        uses[slot] += 1
        if not words:
            pairs.remove((slot, words))
            if not pairs:
                del options[kind]
                order.remove(kind)
                continue
        turn += 1
    return out


def read_paraphrases(path: Union[str, os.PathLike], known_ids: Optional[Iterable[str]] = None
                     ) -> Dict[str, List[str]]:
    """``caption_id<TAB>paraphrase`` lines -> {caption_id: [paraphrase, ...]} in file order.

    UTF-8 (a leading BOM is ignored), blank lines skipped, duplicates of a paraphrase dropped. Raises
    ``DataError`` naming ``file:line`` for: a line without exactly one tab, an empty id or paraphrase, an id
    not in ``known_ids`` (when given), or bytes that are not UTF-8.
    """
    known = None if known_ids is None else set(known_ids)
    out: Dict[str, List[str]] = {}
    for where, line in read_text_lines(path):
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(f"{where}: expected 'caption_id<TAB>paraphrase' (2 tab-separated fields), "
                            f"got {len(fields)}")
        caption_id, text = fields[0].strip(), fields[1].strip()
        if not caption_id or not text:
            raise DataError(f"{where}: empty {'caption id' if not caption_id else 'paraphrase'}")
        if known is not None and caption_id not in known:
            raise DataError(f"{where}: caption id {caption_id!r} is not in the captions file")
        texts = out.setdefault(caption_id, [])
        if text not in texts:
            texts.append(text)
    return out
