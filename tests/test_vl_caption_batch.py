"""The captioning task's training and decoding batches against hand-built examples of the original layout
(PaddlePaddle/Research NLP/UNIMO ``src/reader/img2txt_reader.py``): ``[regions; object tags; caption]``, labels
``token_ids[1:]`` at the caption positions ``0 .. len - 2``, decoding from ``[CLS]`` with ``[SEP]`` as the eos."""
import json

import numpy as np
import pytest

from paddle_unimo import UNIMOLMHeadModel, WordPieceTokenizer, get_preset
from paddle_unimo.data.object_tags import read_tag_file
from paddle_unimo.data.regions import RegionRecord, RegionStore
from paddle_unimo.fileio import DataError
from tasks.cli import load_config
from tasks.coco_caption import TASK
from tasks.vision_language import VLExample

TEXTS = ["a red ball", "ball box"]


def make_runner(tmp_path):
    rng = np.random.default_rng(0)
    store = RegionStore(str(tmp_path / "regions"))
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 30]], np.float32)
    store.append([RegionRecord("img1.jpg", 40, 40, boxes, rng.normal(size=(2, 24)).astype(np.float32)),
                  RegionRecord("img2.jpg", 40, 40, boxes[:1], rng.normal(size=(1, 24)).astype(np.float32))])
    (tmp_path / "tags.json").write_text(json.dumps({"img1.jpg": ["ball", "box"], "img2.jpg": "box"}))
    cfg = load_config("tasks/configs/coco_caption_tiny.yaml",
                      ["data.tags=file", f"data.tag_file={tmp_path / 'tags.json'}"], TASK.config_class)
    cfg.data.regions = str(tmp_path / "regions")
    tokenizer = WordPieceTokenizer.build_char_vocab(TEXTS, words=True)
    model = UNIMOLMHeadModel(get_preset("tiny", vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_token_id))
    return TASK.bind(model, tokenizer, cfg), tokenizer


def test_training_batch_is_the_original_layout(tmp_path):
    runner, tok = make_runner(tmp_path)
    ball, box, a, red = (tok.vocab[w] for w in ("ball", "box", "a", "red"))
    cls, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    caption = runner.encode("a red ball")
    assert caption == [cls, a, red, ball, sep]
    batch = runner.make_batch([("img1.jpg", caption), ("img2.jpg", [cls, box, sep])])
    R = 3  # the global feature + 2 boxes of img1; img2 has a padded third row
    np.testing.assert_array_equal(batch["region_valid"], [[True, True, True], [True, True, False]])
    np.testing.assert_array_equal(batch["input_ids"], [[ball, box, cls, a, red, ball, sep],
                                                       [box, cls, box, sep, pad, pad, pad]])
    np.testing.assert_array_equal(batch["position_ids"], [[0, 1, 0, 1, 2, 3, 4], [0, 0, 1, 2, 0, 0, 0]])
    L = 7
    # caption token j (from [CLS]) predicts token j + 1, as the reader's tgt_pos / tgt_label
    np.testing.assert_array_equal(batch["masked_positions"], [R + 2, R + 3, R + 4, R + 5,
                                                              (R + L) + R + 1, (R + L) + R + 2])
    np.testing.assert_array_equal(batch["labels"], [a, red, ball, sep, box, sep])
    np.testing.assert_array_equal(batch["caption_mask"], [[0, 0, 1, 1, 1, 1, 1], [0, 1, 1, 1, 0, 0, 0]])
    mask = batch["attention_mask"][0]  # (R + L, R + L)
    context, caption_rows = slice(0, R + 2), slice(R + 2, R + L)
    assert mask[context, context].all() and not mask[context, caption_rows].any()  # never see the caption
    np.testing.assert_array_equal(mask[caption_rows, caption_rows], np.tril(np.ones((5, 5), bool)))
    assert mask[caption_rows, context].all()
    assert not batch["attention_mask"][1][:, 2].any()  # img2's padded region is never attended


def test_decoding_starts_from_cls_and_stops_at_sep(tmp_path):
    runner, tok = make_runner(tmp_path)
    batch = runner.inputs(["img1.jpg", "img2.jpg"], [[tok.cls_token_id]] * 2, left_pad=True)
    box, ball, pad, cls = tok.vocab["box"], tok.vocab["ball"], tok.pad_token_id, tok.cls_token_id
    np.testing.assert_array_equal(batch["input_ids"], [[ball, box, cls], [pad, box, cls]])
    np.testing.assert_array_equal(batch["position_ids"][:, -1], [0, 0])  # [CLS] at position_start
    runner.model.lm_head.decoder_bias.set_value(np.where(np.arange(tok.vocab_size) == tok.sep_token_id, 50.0,
                                                         0.0).astype("float32"))
    runner.cfg.decode.min_length = 0
    assert runner.predict([VLExample("img1.jpg", "img1.jpg", "")]) == [""]  # [SEP] first: an empty caption


def test_object_file_tags_keep_their_position_ids(tmp_path):
    """The original's reader feeds the object file's obj_pos_ids as the tags' position ids; the caption still
    starts at position_start. A position beyond the model's embeddings is an error naming the file."""
    runner, tok = make_runner(tmp_path)
    ball, box, cls, sep, pad = tok.vocab["ball"], tok.vocab["box"], tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    ids_file = tmp_path / "coco_object.ids"
    ids_file.write_text(f"1;{ball} {box};0 0;5 6\n2;{box};0;9\n")
    runner.cfg.data.tag_file = str(ids_file)
    runner.tag_table = read_tag_file(str(ids_file))
    assert runner.tag_ids("img1.jpg") == ([ball, box], [5, 6])
    batch = runner.make_batch([("img1.jpg", [cls, ball, sep]), ("img2.jpg", [cls, sep])])
    np.testing.assert_array_equal(batch["input_ids"], [[ball, box, cls, ball, sep], [box, cls, sep, pad, pad]])
    np.testing.assert_array_equal(batch["position_ids"], [[5, 6, 0, 1, 2], [9, 0, 1, 0, 0]])
    decoding = runner.inputs(["img1.jpg", "img2.jpg"], [[cls]] * 2, left_pad=True)
    np.testing.assert_array_equal(decoding["position_ids"], [[5, 6, 0], [0, 9, 0]])
    ids_file.write_text(f"1;{ball};0;128\n")
    runner.tag_table = read_tag_file(str(ids_file))
    with pytest.raises(DataError, match=f"{ids_file}: image img1.jpg: obj_pos_ids up to 128, beyond the model's 128"):
        runner.tag_ids("img1.jpg")


def test_images_without_tags_in_the_tag_file_are_an_error(tmp_path):
    """The original reads ``obj_dict[image_id]`` and fails for an image the object file lacks; we name the file
    and the images before training or decoding, instead of captioning them without tags."""
    runner, tok = make_runner(tmp_path)
    examples = [VLExample("1", "img1.jpg", "a red ball"), VLExample("2", "img2.jpg", "ball box"),
                VLExample("3", "COCO_val2014_000000000042.jpg", "box")]
    with pytest.raises(DataError, match=r"tags.json: 1 of 3 images have no object tags \(COCO_val2014_000000000042"):
        runner.predict(examples)
    with pytest.raises(DataError, match=r"tags.json: 1 of 3 images have no object tags"):
        runner.trainer(examples[:2], examples[2:], str(tmp_path / "out"))
    runner.check_tags(examples[:2])  # every image has an entry (img2.jpg's is a string)
    (tmp_path / "tags.json").write_text(json.dumps({"img1.jpg": [], "img2.jpg": "", "42": "box"}))
    runner.tag_table = read_tag_file(str(tmp_path / "tags.json"))
    runner.check_tags(examples)  # empty entries are entries; the COCO file name finds the image number 42
