"""A small rule-based parser of English image captions into scene graphs (UNIMO paper section 2.1, CMCL).

UNIMO makes phrase- and word-level hard negatives by parsing a caption into a scene graph and replacing
one object, attribute or relation. The paper uses an off-the-shelf scene-graph parser; this module is our
own, dependency-free stand-in for COCO-style captions, driven by the lexicon in ``lexicon.py``::

    parse("a young man riding a red bike down a city street")
    objects:    man [young (age)], bike [red (colour)], street (modifier: city)
    relations:  (man, riding, bike), (bike, down, street)

How it works
1. Tokens are words (hyphenated words are one token), numbers and single punctuation marks, each with its
   character offsets, so that a rewrite can splice the caption without touching anything else.
2. Tagging: greedy longest match against the lexicon (phrases up to 4 words: "in the middle of", "hot dog")
   into determiners, attributes (typed), object nouns (singular or plural, reduced to the singular),
   relation words, copulas, conjunctions, punctuation and unknown words. A word that is both a colour and
   a noun ("orange") is an attribute when a noun or attribute follows, else the noun.
3. Noun phrases: a run of nouns is one object whose head is the last noun ("city street" -> street, with
   modifier city). Attributes are the attribute words before it in the same phrase ("black and white",
   "a red fire truck": up to 2 unknown words may sit between), or after a copula ("the sky is blue").
   "a herd of / a slice of" words are attributes of type group / portion of the noun after "of". Counts
   ("two", "several") are attributes of type count and make the object plural.
4. Relations: between each object and the next, the last run of relation words in the gap is the
   predicate ("is sitting on top of" -> "sitting on top of"). Its subject is the preceding object, except
   that an object attached by "of" hands the role to its head ("a cup of coffee next to a plate": the cup
   is next to the plate). An object joined to the previous one by "and" or "," shares that one's relation
   ("a plate with a sandwich and fries": the plate is with the fries too).

Coverage: 29 of the 30 captions of ``tests/test_augment.py`` (people, animals, vehicles, food, indoor and
outdoor scenes) give at least one object and one relation, all as hand-checked; the other is "the sky is blue
and the grass is green", which has no relation to find.

Limits (by design): words outside the lexicon are never objects, attributes or relations, so in "a man
flipping a pancake" the unknown verb leaves no relation. Prepositional phrases attach to the nearest object
("a man riding a bike down a street" gives (bike, down, street), where a human reads (man, down, street);
"a man in a blue shirt throwing a frisbee" gives (shirt, throwing, frisbee)). Relative clauses, negation
("without"), comparatives and coreference are not analysed; subjects after a conjunction ("a man and a
woman riding horses") get no relation of their own. Adjectives outside the lexicon ("fluffy") are skipped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

from . import lexicon as lx

__all__ = ["Token", "Attribute", "SceneObject", "Relation", "SceneGraph", "tokenize", "parse", "noun_lemma"]

Span = Tuple[int, int]  # token indices [first, last)
_TOKEN = re.compile(r"[A-Za-z]+(?:['-][A-Za-z]+)*|\d+(?:\.\d+)?|\S")
_MAX_UNKNOWN_IN_PHRASE = 2


@dataclass(frozen=True)
class Token:
    text: str
    start: int  # character offsets in the caption
    end: int

    @property
    def lower(self) -> str:
        return self.text.lower()


@dataclass(frozen=True)
class Attribute:
    value: str
    type: str  # a key of lexicon.ATTRIBUTES
    span: Span
    predicative: bool = False  # after a copula: "the sky is blue"


@dataclass
class SceneObject:
    name: str  # singular lemma of the head noun ("dog" for "dogs")
    head: Span
    start: int  # first token of the noun phrase (determiner or attribute), for the relation gaps
    plural: bool
    attributes: List[Attribute] = field(default_factory=list)
    modifiers: Tuple[str, ...] = ()  # nouns before the head ("city" in "city street")

    @property
    def category(self) -> str:
        return lx.OBJECT_CATEGORY[self.name]


@dataclass(frozen=True)
class Relation:
    subject: int  # index into SceneGraph.objects
    predicate: str  # lower-case words of the span
    object: int
    span: Span
    shared: bool = False  # inherited over "and": the span belongs to an earlier relation too

    @property
    def structural(self) -> bool:
        return self.predicate in lx.STRUCTURAL_RELATIONS


@dataclass
class SceneGraph:
    caption: str
    tokens: List[Token]
    objects: List[SceneObject]
    relations: List[Relation]

    def text(self, span: Span) -> str:
        """The caption's characters covered by a token span."""
        return self.caption[self.tokens[span[0]].start:self.tokens[span[1] - 1].end]

    def triples(self) -> List[Tuple[str, str, str]]:
        return [(self.objects[r.subject].name, r.predicate, self.objects[r.object].name) for r in self.relations]

    def attribute_pairs(self) -> List[Tuple[str, str]]:
        return [(a.value, o.name) for o in self.objects for a in o.attributes]


@dataclass(frozen=True)
class _Unit:
    first: int
    last: int
    kind: str  # DET ATTR NOUN REL COPULA CONJ FILL PUNCT OTHER
    value: str = ""
    attr_type: Optional[str] = None
    plural: bool = False


def _phrase_table() -> Dict[Tuple[str, ...], List[_Unit]]:
    table: Dict[Tuple[str, ...], List[_Unit]] = {}

    def add(phrase: str, kind: str, value: str, attr_type: Optional[str] = None, plural: bool = False):
        table.setdefault(tuple(phrase.split(" ")), []).append(_Unit(0, 0, kind, value, attr_type, plural))

    for noun in lx.OBJECT_CATEGORY:
        add(noun, "NOUN", noun)
    for plural, noun in lx.PLURAL_TO_SINGULAR.items():
        if plural != noun:
            add(plural, "NOUN", noun, plural=True)
    for word, kind in lx.ATTRIBUTE_TYPE.items():
        add(word, "ATTR", word, kind)
    for kind, words in (("REL", lx.RELATION_WORDS), ("DET", lx.DETERMINERS), ("COPULA", lx.COPULAS),
                        ("FILL", lx.FILLERS), ("CONJ", lx.CONJUNCTIONS)):
        for word in words:
            add(word, kind, word)
    return table


_TABLE = _phrase_table()
_MAX_PHRASE = max(len(k) for k in _TABLE)


def tokenize(caption: str) -> List[Token]:
    return [Token(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(caption)]


def noun_lemma(word: str) -> Optional[Tuple[str, bool]]:
    """(singular lemma, is plural) of an object noun of the lexicon, or None."""
    for unit in _TABLE.get(tuple(word.lower().split(" ")), []):
        if unit.kind == "NOUN":
            return unit.value, unit.plural
    return None


def _tag(tokens: Sequence[Token]) -> List[_Unit]:
    words = [t.lower for t in tokens]
    options: List[List[_Unit]] = []
    i = 0
    while i < len(words):
        for size in range(min(_MAX_PHRASE, len(words) - i), 0, -1):
            found = _TABLE.get(tuple(words[i:i + size]))
            if found:
                options.append([replace(u, first=i, last=i + size) for u in found])
                break
        else:
            kind = "PUNCT" if not words[i][0].isalnum() else "OTHER"
            options.append([_Unit(i, i + 1, kind, words[i])])
            size = 1
        i += size
    units = []
    for k, choices in enumerate(options):
        if len(choices) > 1:  # an attribute noun ("orange"): attribute when a noun or attribute follows
            following = {u.kind for u in options[k + 1]} if k + 1 < len(options) else set()
            wanted = "ATTR" if following & {"NOUN", "ATTR"} else "NOUN"
            choices = [u for u in choices if u.kind == wanted]
        units.append(choices[0])
    return units


def _predicative(units: List[_Unit], i: int, obj: SceneObject) -> int:
    """At a copula right after ``obj``'s head: attaches "is red and white" to ``obj``; returns the next unit."""
    j, found = i + 1, []
    while j < len(units) and units[j].kind in ("ATTR", "CONJ"):
        if units[j].kind == "ATTR":
            found.append(units[j])
        j += 1
    if not found or (j < len(units) and units[j].kind in ("NOUN", "OTHER")):
        return i
    obj.attributes.extend(Attribute(u.value, u.attr_type, (u.first, u.last), True) for u in found)
    return j


def _make_object(nouns: Sequence[_Unit], pending: Sequence[_Unit], start: Optional[int]) -> SceneObject:
    head = nouns[-1]
    attributes = [Attribute(u.value, u.attr_type, (u.first, u.last)) for u in pending]
    plural = head.plural or any(a.type == "count" for a in attributes)
    return SceneObject(head.value, (head.first, head.last), nouns[0].first if start is None else start, plural,
                       attributes, tuple(u.value for u in nouns[:-1]))


def _chunk(units: List[_Unit]) -> List[SceneObject]:
    """Noun phrases -> objects with their attributes (see the module docstring, step 3)."""
    objects: List[SceneObject] = []
    pending: List[_Unit] = []
    start, unknown, i = None, 0, 0
    while i < len(units):
        u = units[i]
        if u.kind == "NOUN":
            j = i
            while j + 1 < len(units) and units[j + 1].kind == "NOUN":
                j += 1
            objects.append(_make_object(units[i:j + 1], pending, start))
            pending, start, unknown, i = [], None, 0, j + 1
            continue
        after_quantifier = bool(pending) and pending[-1].attr_type in lx.QUANTIFIER_TYPES
        if u.kind == "COPULA" and objects and objects[-1].head[1] == u.first:
            nxt = _predicative(units, i, objects[-1])
            if nxt != i:
                pending, start, unknown, i = [], None, 0, nxt
                continue
        if u.kind == "ATTR":
            pending.append(u)
            start = u.first if start is None else start
        elif u.kind == "OTHER" and unknown < _MAX_UNKNOWN_IN_PHRASE:
            unknown += 1
            i += 1
            continue
        elif u.kind == "REL" and u.value == "of" and after_quantifier:
            pass
        elif u.kind == "DET" and after_quantifier and units[i - 1].value == "of":
            pass
        elif u.kind == "CONJ" and pending and i + 1 < len(units) and units[i + 1].kind == "ATTR":
            pass
        elif u.kind == "DET":
            pending, start = [], u.first
        else:
            pending, start = [], None
        unknown, i = 0, i + 1
    return objects


def _subject(relations: Sequence[Relation], index: int) -> int:
    """The subject for a relation after object ``index``: its head when it hangs off an "of"."""
    for r in relations:
        if r.object == index and r.structural:
            return _subject(relations, r.subject)
    return index


def _relations(units: List[_Unit], objects: List[SceneObject]) -> List[Relation]:
    relations: List[Relation] = []
    for k in range(1, len(objects)):
        gap = [u for u in units if u.first >= objects[k - 1].head[1] and u.last <= objects[k].start]
        run = _last_run(gap)
        if run:
            predicate = " ".join(u.value for u in run)
            relations.append(Relation(_subject(relations, k - 1), predicate, k, (run[0].first, run[-1].last)))
        elif gap and all(u.kind == "CONJ" for u in gap):
            earlier = [r for r in relations if r.object == k - 1]
            if earlier:
                relations.append(replace(earlier[-1], object=k, shared=True))
    return relations


def _last_run(gap: Sequence[_Unit]) -> List[_Unit]:
    """The last maximal run of consecutive relation units in ``gap``."""
    run: List[_Unit] = []
    for k, u in enumerate(gap):
        if u.kind == "REL":
            run = run + [u] if run and gap[k - 1] is run[-1] else [u]
    return run


def parse(caption: str) -> SceneGraph:
    tokens = tokenize(caption)
    units = _tag(tokens)
    objects = _chunk(units)
    return SceneGraph(caption, tokens, objects, _relations(units, objects))
