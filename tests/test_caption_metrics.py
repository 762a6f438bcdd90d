"""COCO caption metrics: equal to pycocoevalcap on the coco-caption debug files, a hand check, the readers."""
import json
import math

import pytest
from conftest import shared_path

from paddle_unimo.fileio import DataError
from paddle_unimo.metrics.caption import (caption_scores, read_coco_references, read_coco_results,
                                          spice_available)

# METEOR's JVM spends ~12 s of CPU loading its paraphrase table at every start; each test below that scores
# twice (ours and the direct call, or two predictions) takes 25-35 s on a 2-core machine, hence slow.
METRIC_KEYS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider")


def _pycocoevalcap_direct(predictions, references):
    """COCOEvalCap.evaluate without the COCO API: PTB tokenization, then each scorer's compute_score."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in refs] for k, refs in references.items()})
    res = tokenizer.tokenize({k: [{"caption": predictions[k]}] for k in references})
    out = dict(zip(["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"], Bleu(4).compute_score(gts, res)[0]))
    for scorer, name in ((Meteor(), "METEOR"), (Rouge(), "ROUGE_L"), (Cider(), "CIDEr")):
        out[name] = scorer.compute_score(gts, res)[0]
    return out


@pytest.fixture(scope="module")
def debug_files():
    references = read_coco_references(shared_path("coco", "debug.ref.json"))
    hypotheses = read_coco_references(shared_path("coco", "debug.hypo.json"))  # same layout, one caption each
    assert all(len(c) == 1 for c in hypotheses.values())
    return {k: c[0] for k, c in hypotheses.items()}, references


@pytest.mark.slow
def test_equals_pycocoevalcap_on_debug_files(debug_files):
    predictions, references = debug_files
    assert len(references) == 10 and all(len(r) >= 4 for r in references.values())
    ours = caption_scores(predictions, references)
    direct = _pycocoevalcap_direct(predictions, references)
    names = dict(zip(METRIC_KEYS, ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"]))
    for key, name in names.items():
        assert ours[key] == pytest.approx(100.0 * direct[name], abs=1e-9, rel=0), key
    assert 0 < ours["bleu4"] < ours["bleu1"] < 100 and 0 < ours["meteor"] < 100 and 0 < ours["rouge_l"] < 100
    assert 0 < ours["cider"] < 1000
    if spice_available():
        assert 0 < ours["spice"] < 100
    else:
        assert "spice" not in ours
        reason = ours["skipped"]["spice"]
        assert isinstance(reason, str) and "CoreNLP" in reason


SMALL_REFS = {
    1: ["a black dog runs across the green field", "a dog running on grass in a park"],
    2: ["two people ride bicycles down a city street", "cyclists riding along a busy road"],
    3: ["a plate of pasta with tomato sauce on a table", "a dish of spaghetti next to a glass of wine"],
}


@pytest.mark.slow
def test_identical_prediction_scores_100_and_nonsense_scores_low():
    identical = caption_scores({k: refs[0] for k, refs in SMALL_REFS.items()}, SMALL_REFS)
    assert identical["bleu4"] == pytest.approx(100.0, abs=1e-6)
    assert identical["bleu1"] == pytest.approx(100.0, abs=1e-6)
    nonsense = caption_scores({k: "quantum violin orbits purple marmalade tonight" for k in SMALL_REFS},
                              SMALL_REFS)
    assert nonsense["bleu4"] < 1.0 and nonsense["cider"] < identical["cider"] / 10
    assert all(math.isfinite(nonsense[k]) for k in METRIC_KEYS)


def test_mismatched_ids_raise_before_running_java():
    with pytest.raises(ValueError, match=r"without references: \[4\]"):
        caption_scores({1: "a dog", 4: "a cat"}, {1: ["a dog"]})
    with pytest.raises(ValueError, match=r"without predictions: \[2\]"):
        caption_scores({1: "a dog"}, {1: ["a dog"], 2: ["a cat"]})
    with pytest.raises(ValueError, match="differ only in type"):
        caption_scores({1: "a dog"}, {"1": ["a dog"]})


def test_missing_java_is_a_clear_error(monkeypatch):
    import paddle_unimo.metrics.caption as caption
    monkeypatch.setattr(caption.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="needs Java.*METEOR and SPICE"):
        caption_scores({1: "a dog"}, {1: ["a dog"]})


def _write(tmp_path, name, obj):
    path = tmp_path / name
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def test_read_coco_results(tmp_path):
    path = _write(tmp_path, "res.json", [{"image_id": 7, "caption": "a cat"}, {"image_id": 9, "caption": "a dog"}])
    assert read_coco_results(path) == {7: "a cat", 9: "a dog"}
    bad = _write(tmp_path, "bad.json", [{"image_id": 7, "caption": "a cat"}, {"image_id": 9}])
    with pytest.raises(DataError, match=r"bad\.json: entry 1: expected an object with image_id and caption"):
        read_coco_results(bad)
    repeated = _write(tmp_path, "rep.json", [{"image_id": 7, "caption": "a"}, {"image_id": 7, "caption": "b"}])
    with pytest.raises(DataError, match=r"rep\.json: entry 1: image_id 7 repeated"):
        read_coco_results(repeated)
    not_text = _write(tmp_path, "num.json", [{"image_id": 7, "caption": 3}])
    with pytest.raises(DataError, match=r"num\.json: entry 0: caption must be a string"):
        read_coco_results(not_text)


def test_read_coco_references_both_layouts(tmp_path):
    coco = _write(tmp_path, "captions_val.json", {"images": [{"id": 5}, {"id": 3}], "annotations": [
        {"image_id": 5, "id": 1, "caption": "a cat"}, {"image_id": 3, "id": 2, "caption": "a dog"},
        {"image_id": 5, "id": 3, "caption": "a kitten"}]})
    assert read_coco_references(coco) == {5: ["a cat", "a kitten"], 3: ["a dog"]}
    debug = _write(tmp_path, "debug.json", {"5": ["a cat", "a kitten"], "3": ["a dog"]})
    assert read_coco_references(debug) == {"5": ["a cat", "a kitten"], "3": ["a dog"]}
    bad = _write(tmp_path, "bad_ann.json", {"annotations": [{"image_id": 5, "caption": "a"}, {"image_id": True,
                                                                                             "caption": "b"}]})
    with pytest.raises(DataError, match=r"bad_ann\.json: entry 1: image_id must be an int or a string"):
        read_coco_references(bad)
    bad_debug = _write(tmp_path, "bad_debug.json", {"5": "a cat"})
    with pytest.raises(DataError, match=r"bad_debug\.json: image '5': expected a non-empty list"):
        read_coco_references(bad_debug)
    with pytest.raises(DataError, match="missing.json"):
        read_coco_references(tmp_path / "missing.json")
