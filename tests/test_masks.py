"""The mask rule, the meaning of every accepted mask form, and default position ids."""
import subprocess
import sys

import numpy as np
import paddle
import pytest

from paddle_unimo import masks


def original_seq2seq_mask(src_len, tgt_len, total):
    """The original reader's gen_seq2seq_mask (PaddlePaddle/Research NLP/UNIMO, ``seq2seq_reader.py``)."""
    end = src_len + tgt_len
    m = np.zeros((total, total), bool)
    m[:end, :src_len] = True
    m[src_len:end, src_len:end] = np.tril(np.ones((tgt_len, tgt_len), bool))
    return m


def test_seq2seq_mask_equals_original_rule_with_padding():
    batch = masks.seq2seq_inputs([[3, 5, 6, 1], [3, 7, 1]], [[3, 8, 9, 4], [3, 4]], pad_id=2, position_start=0)
    total = batch["input_ids"].shape[1]
    assert total == 8
    for b, (s, t) in enumerate([(4, 4), (3, 2)]):
        expected = original_seq2seq_mask(s, t, total)
        got = batch["attention_mask"][b]
        real = s + t
        np.testing.assert_array_equal(got[:real], expected[:real])  # real rows exactly as the original
        assert not got[:, real:].any()  # no row ever sees a padded key
    np.testing.assert_array_equal(batch["position_ids"][1], [0, 1, 2, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(batch["token_type_ids"][0], [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(batch["input_ids"][1], [3, 7, 1, 3, 4, 2, 2, 2])


def test_captioning_rank_regions_and_tags_never_see_caption():
    rank = masks.ranks(5, 3)[None]  # 3 regions + 2 object tags, then a 3-token caption
    valid = np.ones_like(rank, bool)
    m = masks.may_attend(valid, rank)[0]
    assert m[:5, :5].all() and not m[:5, 5:].any()
    np.testing.assert_array_equal(m[5:, 5:], np.tril(np.ones((3, 3), bool)))
    assert m[5:, :5].all()


def test_decoding_row_is_the_rule_for_a_later_rank():
    rank = masks.ranks(4, 2)[None]
    valid = np.array([[True, True, False, True, True, True]])
    row = masks.decoding_row(valid)
    full = masks.may_attend(valid, rank, query_rank=np.array([[rank.max() + 1]]))
    np.testing.assert_array_equal(row, full)


def test_rule_same_on_paddle_and_numpy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        valid = rng.random((3, 7)) > 0.3
        rank = np.sort(rng.integers(0, 4, (3, 7)), axis=1)
        got = masks.may_attend(paddle.to_tensor(valid), paddle.to_tensor(rank)).numpy()
        np.testing.assert_array_equal(got, masks.may_attend(valid, rank))


def test_default_positions_skip_left_padding():
    ids = paddle.to_tensor([[2, 2, 5, 6, 7], [5, 6, 7, 8, 9]])
    pos = masks.default_position_ids(ids != 2, start=2).numpy()
    np.testing.assert_array_equal(pos, [[2, 2, 2, 3, 4], [2, 3, 4, 5, 6]])
    pos = masks.default_position_ids(ids[:, -1:] != 2, start=0, past=5).numpy()
    np.testing.assert_array_equal(pos, [[5], [5]])  # only the new tokens are seen: callers pass positions


def test_default_positions_do_not_depend_on_the_padding_side():
    right = paddle.to_tensor([[5, 6, 7, 2, 2], [5, 6, 7, 8, 9], [2, 5, 6, 2, 2]])
    pos = masks.default_position_ids(right != 2, start=2).numpy()
    # real tokens 2, 3, 4 ... whatever the padding; a pad repeats the position before it (start before any)
    np.testing.assert_array_equal(pos, [[2, 3, 4, 4, 4], [2, 3, 4, 5, 6], [2, 2, 3, 3, 3]])
    left = paddle.to_tensor([[2, 2, 5, 6, 7]])
    np.testing.assert_array_equal(masks.default_position_ids(left != 2, start=2).numpy(), [[2, 2, 2, 3, 4]])
    # with a cache: the real cached tokens of each row, as an int tensor, shift the new ones
    new = paddle.to_tensor([[8, 9], [2, 9]])
    pos = masks.default_position_ids(new != 2, start=0, past=paddle.to_tensor([3, 5])).numpy()
    np.testing.assert_array_equal(pos, [[3, 4], [5, 5]])


def test_default_positions_equal_paddlenlp_rule_on_left_padding():
    """PaddleNLP's default: relu(arange(L) - num_pad), for every left-padded row."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        lengths = rng.integers(1, 9, 4)
        valid = np.arange(8)[None, :] >= 8 - lengths[:, None]
        expected = np.maximum(np.arange(8)[None, :] - (~valid).sum(1, keepdims=True), 0) + 2
        got = masks.default_position_ids(paddle.to_tensor(valid), start=2).numpy()
        np.testing.assert_array_equal(got, expected)


ATTEND = np.array([[[True, False, True], [True, True, False], [False, True, True]]])  # (1, 3, 3)


@pytest.mark.parametrize("form", ["bool3", "bool4", "int3", "float3", "float4", "float4_minus_1e9"])
def test_every_mask_form_means_the_same(form):
    additive = np.where(ATTEND, 0.0, -1e4).astype("float32")
    mask = {"bool3": ATTEND, "bool4": ATTEND[:, None], "int3": ATTEND.astype("int64"), "float3": additive,
            "float4": additive[:, None], "float4_minus_1e9": np.where(ATTEND, 0.0, -1e9)[:, None].astype("float32"),
            }[form]
    mask = paddle.to_tensor(mask)
    np.testing.assert_array_equal(masks.may_attend_bool(mask).numpy(), ATTEND)
    bias = masks.additive_bias(mask, "float32").numpy()
    assert bias.shape == (1, 1, 3, 3)
    expected = np.where(ATTEND, 0.0, -1e9 if form == "float4_minus_1e9" else -1e4)[:, None]
    np.testing.assert_array_equal(bias, expected)


def test_key_validity_rows_are_shared_by_every_query():
    valid = np.array([[True, True, False]])
    for mask in (valid, np.where(valid, 0.0, -1e4).astype("float32")[:, None, None]):  # (B, Lk), (B, 1, 1, Lk)
        mask = paddle.to_tensor(mask)
        np.testing.assert_array_equal(masks.may_attend_bool(mask).numpy(), valid[:, None])
        np.testing.assert_array_equal(masks.may_attend_bool(mask, num_queries=4).numpy(),
                                      np.repeat(valid[:, None], 4, axis=1))
        np.testing.assert_array_equal(masks.additive_bias(mask, "float32").numpy(), [[[[0.0, 0.0, -1e4]]]])
    assert masks.additive_bias(None, "float32") is None
    with pytest.raises(ValueError, match="one head|B, 1, Lq, Lk"):
        masks.may_attend_bool(paddle.ones([1, 2, 3, 3], "bool"))


def test_masks_imports_without_paddle():
    code = ("import sys; sys.modules['paddle'] = None\n"
            "from paddle_unimo import masks\n"
            "b = masks.seq2seq_inputs([[3, 5, 1]], [[3, 4]], pad_id=2, position_start=0)\n"
            "assert b['attention_mask'].shape == (1, 5, 5) and masks.MASKED_BIAS == -1e4")
    subprocess.run([sys.executable, "-c", code], check=True)
