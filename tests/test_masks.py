import numpy as np
import paddle

from paddle_unimo import masks


def original_seq2seq_mask(src_len, tgt_len, total):
    """The original reader's gen_seq2seq_mask, written from its description (UNIMO_FACTS.md section 1)."""
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
