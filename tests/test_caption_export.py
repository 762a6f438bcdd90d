"""Paddle Inference export of a model with image regions: captioning through the exported prefill_regions and
step programs decodes exactly like the dynamic model; a text-only export has no prefill_regions and refuses
regions."""
import filecmp
import os

import numpy as np
import pytest

from paddle_unimo.export import InferenceStepper, export_model
from paddle_unimo.fileio import read_json
from paddle_unimo.generation import generate

from conftest import assert_exported_step_matches
from test_caption_decoding import SEP, make_model, start_inputs

TEXT = ("input_ids", "token_type_ids", "position_ids", "attention_mask")
REGIONS = ("region_feats", "region_locs", "region_valid")


# (seed, [SEP] bias): captions end at different steps (see test_caption_decoding)
@pytest.fixture(scope="module", params=[(0, 6.0), (1, 3.0), (2, 0.0)], ids=["seed0", "seed1", "seed2"])
def exported(request, tmp_path_factory):
    seed, sep_bias = request.param
    model = make_model(seed, sep_bias=sep_bias)
    folder = export_model(model, tmp_path_factory.mktemp("export") / "inference")
    return seed, model, InferenceStepper(folder)


def test_region_export_has_a_third_program(exported):
    _, _, stepper = exported
    files = set(os.listdir(stepper.folder))
    assert {"prefill_regions.json", "prefill_regions.pdiparams"} <= files and stepper.supports_regions
    manifest = read_json(os.path.join(stepper.folder, "export.json"), "manifest")
    assert [s["name"] for s in manifest["prefill_regions"]["inputs"]] == list(TEXT + REGIONS)
    assert manifest["prefill_regions"]["inputs"][4]["shape"] == [-1, -1, 24]
    paths = [os.path.join(stepper.folder, n + ".pdiparams") for n in ("prefill", "prefill_regions")]
    if os.stat(paths[0]).st_nlink > 1:  # hard links work here: equal weights files are one file
        assert os.path.samestat(*map(os.stat, paths)) == filecmp.cmp(*paths, shallow=False)


def test_region_prefill_and_step_match_dynamic_mode(exported):
    seed, model, stepper = exported
    inputs, _ = start_inputs(seed, num_valid=(4, 2, 3))
    args = [inputs[k] for k in TEXT + REGIONS]
    state = assert_exported_step_matches(model, stepper, args)
    assert state.cache.source_k[0].shape[2] == 4 + inputs["input_ids"].shape[1]  # R + L keys
    assert state.cache.length == 1  # then the new token's


BEAM = dict(decode_strategy="beam_search", num_beams=3, length_penalty=0.6)


@pytest.mark.parametrize("settings", [dict(), BEAM, dict(BEAM, num_return_sequences=2, min_length=2)],
                         ids=["greedy", "beam3", "beam3_return2"])
def test_captioning_through_the_export_equals_dynamic_mode(exported, settings):
    seed, model, stepper = exported
    for image_kwargs in (dict(num_valid=(4, 2, 3)), dict(num_valid=(1, 3), num_regions=3),
                         dict(num_valid=(5,), num_regions=6)):
        inputs, _ = start_inputs(seed, **image_kwargs)
        ref_ids, ref_scores = generate(model, **inputs, max_length=8, eos_token_id=SEP, **settings)
        ids, scores = generate(None, **inputs, max_length=8, eos_token_id=SEP, stepper=stepper, **settings)
        np.testing.assert_array_equal(ids.numpy(), ref_ids.numpy())
        np.testing.assert_allclose(scores.numpy(), ref_scores.numpy(), atol=1e-4)


def test_region_valid_defaults_to_all_regions(exported):
    seed, model, stepper = exported
    inputs, _ = start_inputs(seed, num_valid=(4, 4, 4))
    inputs = dict(inputs, region_valid=None)
    ref_ids, _ = generate(model, **inputs, max_length=6, eos_token_id=SEP)
    ids, _ = generate(None, **inputs, max_length=6, eos_token_id=SEP, stepper=stepper)
    np.testing.assert_array_equal(ids.numpy(), ref_ids.numpy())


def test_text_only_export_has_no_region_program_and_refuses_regions(tmp_path):
    folder = export_model(make_model(0, image_embedding_size=0), tmp_path / "inference")
    assert not any(n.startswith("prefill_regions") for n in os.listdir(folder))
    manifest = read_json(os.path.join(folder, "export.json"), "manifest")
    assert set(manifest) == {"paddle_version", "cpu_kernels", "prefill", "step"} and not manifest["cpu_kernels"]
    stepper = InferenceStepper(folder)
    assert not stepper.supports_regions
    inputs, _ = start_inputs(0)
    with pytest.raises(ValueError, match="InferenceStepper decodes text only"):
        generate(None, **inputs, stepper=stepper, max_length=3)
    with pytest.raises(ValueError, match="decodes text only"):
        stepper.prefill(*(inputs[k] for k in TEXT + REGIONS))
