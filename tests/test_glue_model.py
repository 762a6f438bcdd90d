"""The GLUE head: the original's classifier formula, conversion of an original GLUE checkpoint (``cls_out_<n>_w``,
e.g. the released MNLI models) and STS-B started from an MNLI model (its head replaced)."""
import json

import numpy as np
import paddle
import pytest

from paddle_unimo import get_preset
from paddle_unimo.checkpoint import load_any
from paddle_unimo.modeling import UNIMOForSequenceClassification
from paddle_unimo.typed import ConfigError
from tools import convert_checkpoint

from test_checkpoint import original_encoder_shapes, save_legacy
from test_vl_units import SMALL_ORIGINAL_CONFIG, hand_name


def convert_mnli(tmp_path):
    rng = np.random.default_rng(11)
    h = SMALL_ORIGINAL_CONFIG["hidden_size"]
    shapes = {**original_encoder_shapes(SMALL_ORIGINAL_CONFIG), "cls_out_3_w": (h, 3), "cls_out_3_b": (3,)}
    params = {n: (rng.standard_normal(s) * 0.3 + ("scale" in n)).astype("float32") for n, s in shapes.items()}
    (tmp_path / "params").mkdir()
    for name, array in params.items():
        save_legacy(array, tmp_path / "params" / name)
    (tmp_path / "config.json").write_text(json.dumps(SMALL_ORIGINAL_CONFIG))
    convert_checkpoint.convert(str(tmp_path / "params"), str(tmp_path / "config.json"), str(tmp_path / "mnli"))
    return params


def test_original_glue_checkpoint_converts_and_computes_the_classifier(tmp_path):
    params = convert_mnli(tmp_path)
    model = load_any(str(tmp_path / "mnli"))
    assert type(model) is UNIMOForSequenceClassification and model.config.num_labels == 3
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    names = {n: ("classifier." + ("weight" if n.endswith("_w") else "bias")) if n.startswith("cls_out")
             else hand_name(n) for n in params}
    assert set(state) == set(names.values())
    for name, array in params.items():
        np.testing.assert_array_equal(state[names[name]], array, err_msg=name)
    ids = paddle.to_tensor([[0, 7, 8, 9, 2, 1], [0, 5, 2, 1, 1, 1]])  # [CLS] .. [SEP], pad 1
    valid = (ids != 1).numpy()
    mask = paddle.to_tensor(valid[:, None, :] & valid[:, :, None])
    positions = paddle.to_tensor(2 + np.arange(6)[None].repeat(2, 0))
    with paddle.no_grad():
        logits = model(ids, positions, mask).numpy()
        hidden = model.unimo(ids, None, positions, mask).numpy().astype("float64")
    pooled = np.maximum(hidden[:, 0] @ params["pooled_fc_text.w_0"] + params["pooled_fc_text.b_0"], 0)
    np.testing.assert_allclose(logits, pooled @ params["cls_out_3_w"] + params["cls_out_3_b"], atol=1e-4)


def test_stsb_from_the_mnli_model_replaces_the_head(tmp_path, caplog):
    params = convert_mnli(tmp_path)
    with caplog.at_level("INFO"):
        stsb = UNIMOForSequenceClassification.from_pretrained(str(tmp_path / "mnli"), num_labels=1)
    assert list(stsb.classifier.weight.shape) == [SMALL_ORIGINAL_CONFIG["hidden_size"], 1]
    assert "replaced by a new one" in caplog.text
    np.testing.assert_array_equal(stsb.unimo.text_pooler.weight.numpy(), params["pooled_fc_text.w_0"])


def test_a_model_without_region_embeddings_is_a_config_error():
    """The CLI prints a ConfigError as one line (a text-only model folder or image_embedding_size=0)."""
    with pytest.raises(ConfigError, match="without region embeddings"):
        UNIMOForSequenceClassification(get_preset("tiny", image_embedding_size=0, num_labels=2))
