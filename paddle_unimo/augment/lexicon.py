"""The built-in English lexicon of the caption parser (``scene_graph.py``) and the rewriter (``rewrite.py``).

Compact by design: the 80 COCO object categories (in their caption wordings: "bike" as well as "bicycle"),
common scene nouns (street, field, kitchen, ...), attributes grouped by type, and relation words. Every word
has one role, except the words in ``ATTRIBUTE_NOUNS`` ("orange"), which the parser resolves by position.

* ``OBJECTS``: singular head nouns by category. Plurals are derived by ``pluralize`` (regular rules plus
  ``IRREGULAR_PLURALS``); ``MASS_NOUNS`` have no plural and take no "a"/"an".
* ``ATTRIBUTES``: type -> words. A rewrite replaces an attribute only by another one of the same type.
  ``group`` and ``portion`` words ("a herd of", "a slice of") quantify the noun that follows "of".
* ``RELATION_WORDS``: verbs and prepositions that the parser joins into a predicate ("sitting" + "on top
  of"). ``STRUCTURAL_RELATIONS`` ("of") link objects but are never rewritten.
* ``REPLACEMENT_RELATIONS``: complete predicates that a relation rewrite may insert.
* ``related(kind, a, b)``: whether ``b`` may describe the same thing as ``a`` (synonyms "couch"/"sofa",
  hypernyms "person"/"man", roles "skier"/"woman", young animals "puppy"/"dog", "sitting on"/"on"). A rewrite
  never swaps related words, since its "negative" could still be true of the image.
"""
from __future__ import annotations

from typing import Dict, FrozenSet, Tuple

OBJECTS: Dict[str, Tuple[str, ...]] = {
    "person": ("man", "woman", "person", "boy", "girl", "child", "kid", "baby", "lady", "guy", "player",
               "skier", "surfer", "skateboarder", "snowboarder", "chef", "cook", "officer", "rider",
               "batter", "catcher", "pitcher", "toddler", "student", "worker", "tourist"),
    "animal": ("dog", "cat", "horse", "cow", "sheep", "elephant", "bear", "zebra", "giraffe", "bird",
               "duck", "goose", "pigeon", "seagull", "puppy", "kitten", "goat", "pony", "calf", "animal"),
    "vehicle": ("car", "truck", "bus", "train", "bike", "bicycle", "motorcycle", "motorbike", "boat",
                "airplane", "plane", "jet", "helicopter", "scooter", "van", "taxi", "tractor", "cart",
                "trailer", "vehicle"),
    "food": ("pizza", "sandwich", "hot dog", "donut", "doughnut", "cake", "banana", "apple", "orange",
             "broccoli", "carrot", "salad", "bread", "fry", "soup", "meat", "cheese", "vegetable", "fruit",
             "coffee", "wine", "beer", "rice", "egg", "tomato", "potato", "burger", "hamburger", "cookie",
             "pie", "steak", "pasta", "food", "meal", "dessert", "sauce", "lemon", "strawberry", "pancake"),
    "household": ("table", "chair", "couch", "sofa", "bed", "desk", "bench", "toilet", "sink", "bathtub",
                  "tub", "shower", "tv", "television", "laptop", "computer", "keyboard", "monitor", "phone",
                  "cell phone", "remote", "book", "clock", "vase", "lamp", "shelf", "refrigerator", "fridge",
                  "oven", "microwave", "stove", "counter", "cabinet", "mirror", "window", "door", "wall",
                  "floor", "pillow", "blanket", "curtain", "plate", "bowl", "cup", "mug", "glass",
                  "bottle", "fork", "knife", "spoon", "box", "bag", "backpack", "umbrella", "suitcase",
                  "luggage", "handbag", "purse", "scissors", "toothbrush", "teddy bear", "hair drier",
                  "flower", "plant", "tray", "napkin", "pan", "pot", "basket", "towel", "rug", "carpet"),
    "clothing": ("tie", "hat", "cap", "shirt", "jacket", "coat", "helmet", "dress", "suit", "uniform",
                 "jeans", "shorts", "shoe", "boot", "sweater", "vest", "scarf", "wetsuit", "sunglasses", "t-shirt"),
    "sports": ("ball", "frisbee", "kite", "bat", "baseball bat", "glove", "racket", "racquet",
               "tennis racket", "skateboard", "surfboard", "ski", "snowboard", "net", "sail"),
    "scene": ("street", "road", "sidewalk", "field", "beach", "ocean", "sea", "water", "river", "lake",
              "grass", "snow", "sky", "hill", "mountain", "slope", "park", "city", "building", "house",
              "tree", "fence", "track", "station", "airport", "runway", "kitchen", "bathroom", "room",
              "living room", "bedroom", "restaurant", "zoo", "farm", "court", "tennis court", "wave",
              "sand", "dirt", "forest", "highway", "parking lot", "yard", "pole", "sign", "stop sign",
              "street sign", "traffic light", "fire hydrant", "hydrant", "bridge", "tower", "market",
              "store", "shop", "area", "ground", "air", "pasture", "enclosure", "intersection", "corner",
              "window sill", "pen", "crowd", "sun", "cloud", "rock", "dock", "harbor", "shore", "road sign",
              "rain", "leaf"),
}

MASS_NOUNS: FrozenSet[str] = frozenset({
    "broccoli", "bread", "soup", "meat", "cheese", "coffee", "wine", "beer", "rice", "pasta", "food", "sauce",
    "luggage", "water", "grass", "snow", "sky", "sand", "dirt", "air", "ground", "scissors", "jeans", "shorts",
    "sunglasses", "salad", "fruit", "rain"})
IRREGULAR_PLURALS: Dict[str, str] = {
    "man": "men", "woman": "women", "person": "people", "child": "children", "sheep": "sheep",
    "goose": "geese", "calf": "calves", "leaf": "leaves", "knife": "knives", "shelf": "shelves", "scarf": "scarves",
    "tomato": "tomatoes", "potato": "potatoes"}

ATTRIBUTES: Dict[str, Tuple[str, ...]] = {
    "colour": ("red", "blue", "green", "yellow", "white", "black", "brown", "orange", "pink", "purple",
               "gray", "grey", "silver", "tan", "beige", "golden"),
    "size": ("large", "small", "big", "little", "tiny", "huge", "giant", "tall", "short", "long"),
    "age": ("young", "old", "elderly", "new", "older", "adult"),
    "material": ("wooden", "metal", "plastic", "stone", "brick", "leather", "ceramic", "steel", "concrete",
                 "marble", "cardboard"),
    "count": ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "several", "many",
              "multiple"),
    "group": ("group", "herd", "flock", "bunch", "pile", "stack", "row", "couple", "pair", "lot", "variety",
              "line", "team", "family"),
    "portion": ("slice", "piece", "half", "bite"),
    "shape": ("round", "square", "rectangular", "circular", "oval", "triangular"),
    "state": ("empty", "full", "open", "closed", "dirty", "clean", "wet", "dry", "broken", "messy",
              "crowded", "busy"),
    "pattern": ("striped", "checkered", "plaid", "spotted", "floral"),
    "terrain": ("grassy", "sandy", "rocky", "muddy", "snowy", "dusty"),
    "weather": ("sunny", "cloudy", "rainy", "foggy", "stormy", "overcast"),
    "cooking": ("fried", "grilled", "baked", "sliced", "cooked", "raw", "fresh", "toasted", "frosted"),
}
QUANTIFIER_TYPES: FrozenSet[str] = frozenset({"group", "portion"})  # "a <word> of <noun>"
ATTRIBUTE_NOUNS: FrozenSet[str] = frozenset({"orange"})  # colour before a noun, else the fruit

VERBS = (
    "riding", "holding", "carrying", "eating", "wearing", "sitting", "standing", "laying", "lying",
    "walking", "running", "playing", "looking", "watching", "pulling", "pushing", "driving", "throwing",
    "catching", "flying", "hitting", "swinging", "feeding", "petting", "chasing", "using", "drinking",
    "cutting", "crossing", "covered", "filled", "topped", "parked", "hanging", "leaning", "resting",
    "surrounded", "grazing", "traveling", "travelling", "going", "waiting", "sleeping", "posing", "jumping",
    "skiing", "surfing", "skateboarding", "swimming", "floating", "perched", "stacked", "kicking", "brushing",
    "reading", "preparing", "cooking", "heading", "coming", "loaded", "lined", "dressed", "stopped",
    "holds", "rides", "sits", "stands", "eats", "wears", "carries", "looks", "lays", "lies", "walks", "plays",
    "has", "have")
PREPOSITIONS = (
    "on", "in", "at", "under", "over", "above", "below", "behind", "beside", "near", "by", "with", "inside",
    "along", "across", "through", "into", "onto", "toward", "towards", "around", "against", "down", "up",
    "from", "off", "atop", "beneath", "underneath", "past", "next to", "in front of", "on top of", "close to",
    "in the middle of", "on the side of", "on the edge of", "in back of", "out of", "on the back of",
    "alongside", "outside of", "inside of", "of")
RELATION_WORDS: FrozenSet[str] = frozenset(VERBS + PREPOSITIONS)
STRUCTURAL_RELATIONS: FrozenSet[str] = frozenset({"of"})
REPLACEMENT_RELATIONS: Tuple[str, ...] = (
    "riding", "holding", "carrying", "eating", "wearing", "pulling", "pushing", "driving", "throwing",
    "catching", "chasing", "watching", "feeding", "using", "sitting on", "standing on", "standing next to",
    "sitting next to", "laying on", "walking on", "walking down", "looking at", "playing with",
    "hanging from", "leaning against", "parked on", "parked next to", "on", "in", "under", "above",
    "below", "behind", "beside", "near", "next to", "in front of", "on top of", "inside", "across", "along",
    "over", "with", "through", "against", "by")

# Words that may describe the same thing (synonyms, hypernyms, roles anyone can take): a rewrite never
# replaces one by another, since the result could still be true of the image. Conservative on purpose.
_GENERIC_OBJECTS = {"person": "person", "animal": "animal", "vehicle": "vehicle", "food": "food"}
_PERSON_ROLES = ("player", "skier", "surfer", "skateboarder", "snowboarder", "chef", "cook", "officer", "rider",
                 "batter", "catcher", "pitcher", "student", "worker", "tourist")
_HYPERNYMS = {  # generic noun -> the nouns it covers
    "fruit": ("apple", "banana", "orange", "lemon", "strawberry"),
    "vegetable": ("broccoli", "carrot", "tomato", "potato"),
    "dessert": ("cake", "pie", "cookie", "donut", "doughnut", "pancake"),
    "bird": ("duck", "goose", "pigeon", "seagull"),
    "room": ("living room", "bedroom", "kitchen", "bathroom"),
    "building": ("house", "tower", "store", "shop", "restaurant", "market", "station"),
    "sign": ("stop sign", "street sign", "road sign")}
_PEOPLE = ("man", "woman", "boy", "girl", "child", "kid", "lady", "guy", "toddler", "person")
_RELATED_OBJECTS = (
    ("man", "guy"), ("woman", "lady"), ("child", "kid", "toddler", "baby"), ("boy", "child", "kid"),
    ("girl", "child", "kid"),
    ("player", "batter", "catcher", "pitcher"), ("rider", "skier", "surfer", "skateboarder", "snowboarder"),
    ("chef", "cook", "worker"), ("officer", "worker"), ("dog", "puppy"), ("cat", "kitten"), ("cow", "calf"),
    ("elephant", "calf"), ("horse", "pony"), ("bike", "bicycle"), ("bike", "motorcycle", "motorbike"),
    ("motorcycle", "scooter"), ("airplane", "plane", "jet"),
    ("car", "taxi", "van"), ("truck", "van", "tractor", "trailer", "cart"), ("donut", "doughnut"),
    ("burger", "hamburger", "sandwich"), ("cake", "pie"), ("salad", "vegetable"), ("fry", "potato"),
    ("steak", "meat"),
    ("food", "meal"), ("couch", "sofa"), ("tv", "television", "monitor"),
    ("computer", "laptop", "monitor", "keyboard"), ("refrigerator", "fridge"), ("phone", "cell phone"),
    ("tub", "bathtub"),
    ("cup", "mug", "glass"), ("bag", "handbag", "purse", "backpack", "luggage", "suitcase"), ("rug", "carpet"),
    ("flower", "plant", "vase"), ("table", "desk", "counter"), ("pot", "pan"), ("plate", "tray"),
    ("hat", "cap", "helmet"), ("jacket", "coat", "sweater", "vest"), ("shoe", "boot"),
    ("shirt", "t-shirt", "uniform"), ("suit", "uniform", "wetsuit"), ("racket", "racquet", "tennis racket"),
    ("bat", "baseball bat"), ("street", "road", "highway", "intersection", "corner", "sidewalk", "city"),
    ("ocean", "sea", "water", "wave", "lake", "river"), ("hill", "mountain", "slope"),
    ("park", "field", "grass", "yard", "pasture", "farm", "ground"), ("beach", "sand", "shore", "ground"),
    ("dirt", "ground"), ("floor", "ground"), ("area", "room", "ground"),
    ("station", "track", "train"), ("airport", "runway"),
    ("store", "shop", "market"),
    ("hydrant", "fire hydrant"), ("dock", "harbor", "shore"), ("zoo", "enclosure", "pen"), ("sky", "air", "cloud"),
    ("court", "tennis court"), ("crowd", "person"), ("window", "window sill"))
_RELATED_ATTRIBUTES = (
    ("big", "large", "huge", "giant", "tall", "long"), ("small", "little", "tiny", "short"),
    ("old", "elderly", "older", "adult"), ("gray", "grey", "silver"), ("tan", "beige", "brown"),
    ("golden", "yellow"), ("round", "circular", "oval"), ("square", "rectangular"), ("dirty", "messy"),
    ("crowded", "busy", "full"), ("group", "bunch", "lot", "variety", "couple", "team", "family"),
    ("several", "many", "multiple", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    ("herd", "flock", "group"), ("pile", "stack", "bunch"), ("row", "line"), ("pair", "couple"),
    ("slice", "piece", "half", "bite"), ("cooked", "baked", "grilled", "fried", "toasted"), ("fresh", "raw"),
    ("cloudy", "overcast", "stormy", "rainy", "foggy"), ("wet", "rainy"), ("sandy", "dusty"), ("muddy", "dirty"))
# Relations are related when any of their keys (the whole predicate, its verb, its trailing preposition
# phrase) share a group: "hanging on" and "on" share "on"; "riding" and "on" share the ON group.
_RELATION_GROUPS = (
    ("on", "on top of", "atop", "onto", "riding", "sitting", "laying", "lying", "standing", "resting", "parked",
     "perched", "stacked", "walking", "hanging", "sits", "stands", "lays", "lies", "rides"),
    ("next to", "beside", "near", "by", "alongside", "close to", "on the side of", "on the edge of"),
    ("under", "below", "beneath", "underneath"), ("above", "over", "on top of", "atop", "flying"),
    ("in", "inside", "inside of", "into", "in the middle of", "sitting", "standing", "laying", "lying", "parked",
     "floating", "swimming", "dressed", "wearing"),
    ("behind", "in back of"),
    ("holding", "carrying", "with", "using", "eating", "drinking", "holds", "carries", "eats", "playing", "throwing",
     "catching", "wearing", "wears", "has", "have"),
    ("watching", "looking", "looks"),
    ("walking", "running", "going", "heading", "traveling", "travelling", "driving", "riding", "coming", "down",
     "along", "across", "up", "through", "past", "crossing", "walks"),
    ("covered", "filled", "topped", "loaded", "lined", "with", "surrounded"))


DETERMINERS: FrozenSet[str] = frozenset({
    "a", "an", "the", "this", "that", "these", "those", "his", "her", "its", "their", "some", "another", "each",
    "one", "our", "my", "your", "other"})
COPULAS: FrozenSet[str] = frozenset({"is", "are", "was", "were", "be", "being"})
FILLERS: FrozenSet[str] = frozenset({"who", "which", "while", "there", "it", "they", "he", "she", "as"})
CONJUNCTIONS: FrozenSet[str] = frozenset({"and", "or", ",", "&"})
# "a"/"an" choice for words whose spelling misleads the vowel rule.
_AN_EXCEPTIONS = frozenset({"hour", "honest", "heir"})
_A_EXCEPTIONS = frozenset({"one", "uniform", "university", "unicorn", "european", "user", "used", "useful"})


def pluralize(noun: str) -> str:
    """English plural of a (possibly multi-word) singular noun; the last word inflects."""
    *front, last = noun.split(" ")
    if noun in MASS_NOUNS:
        return noun
    if last in IRREGULAR_PLURALS:
        plural = IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        plural = last + "es"
    elif last.endswith("y") and last[-2:-1] not in ("a", "e", "i", "o", "u"):
        plural = last[:-1] + "ies"
    else:
        plural = last + "s"
    return " ".join(front + [plural])


def article_for(word: str) -> str:
    """"a" or "an" before ``word`` (its first word), by the spelling rule plus a few exceptions."""
    first = word.split(" ")[0].lower()
    if first in _AN_EXCEPTIONS:
        return "an"
    if first in _A_EXCEPTIONS:
        return "a"
    return "an" if first[:1] in ("a", "e", "i", "o", "u") else "a"


OBJECT_CATEGORY: Dict[str, str] = {noun: cat for cat, nouns in OBJECTS.items() for noun in nouns}
ATTRIBUTE_TYPE: Dict[str, str] = {word: kind for kind, words in ATTRIBUTES.items() for word in words}
PLURAL_TO_SINGULAR: Dict[str, str] = {pluralize(n): n for n in OBJECT_CATEGORY if n not in MASS_NOUNS}
COUNTABLE_OBJECTS: Tuple[str, ...] = tuple(n for n in OBJECT_CATEGORY if n not in MASS_NOUNS)


def _related_index(groups, extra=()) -> Dict[str, FrozenSet[str]]:
    index: Dict[str, set] = {}
    for group in tuple(groups) + tuple(extra):
        for word in group:
            index.setdefault(word, set()).update(group)
    return {word: frozenset(related) for word, related in index.items()}


RELATED_OBJECTS = _related_index(  # a generic noun or a role is related to each member, not the members to each other
    _RELATED_OBJECTS,
    [(generic, noun) for cat, generic in _GENERIC_OBJECTS.items() for noun in OBJECTS[cat]]
    + [(generic, noun) for generic, nouns in _HYPERNYMS.items() for noun in nouns]
    + [(role, person) for role in _PERSON_ROLES for person in _PEOPLE])
RELATED_ATTRIBUTES = _related_index(_RELATED_ATTRIBUTES)
RELATION_GROUPS = _related_index(_RELATION_GROUPS)


def relation_keys(predicate: str) -> FrozenSet[str]:
    """The predicate, its leading verb and its longest trailing preposition phrase."""
    words = predicate.split(" ")
    keys = {predicate}
    if words[0] in VERBS:
        keys.add(words[0])
    for k in range(len(words)):
        if " ".join(words[k:]) in PREPOSITIONS:
            keys.add(" ".join(words[k:]))
            break
    return frozenset(keys)


def related(kind: str, a: str, b: str) -> bool:
    """Whether ``b`` may describe the same thing as ``a`` (so that swapping them gives no sure negative)."""
    if a == b:
        return True
    if kind == "relation":
        ka, kb = relation_keys(a), relation_keys(b)
        return bool(ka & kb) or any(RELATION_GROUPS.get(k, frozenset()) & kb for k in ka)
    table = RELATED_OBJECTS if kind == "object" else RELATED_ATTRIBUTES
    return b in table.get(a, frozenset())
