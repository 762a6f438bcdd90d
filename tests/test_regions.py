"""Region records, the sharded store, the region file formats and the region collate."""
import base64
import gzip
import logging
import os

import numpy as np
import pytest

from paddle_unimo.data import regions
from paddle_unimo.data.region_formats import (CaptionText, VEText, convert_to_store, read_bottom_up_tsv,
                                              read_unimo_caption, read_unimo_retrieval, read_unimo_ve,
                                              write_bottom_up_tsv)
from paddle_unimo.data.regions import RegionRecord, RegionStore, collate_regions, region_locations
from paddle_unimo.fileio import DataError

from tools import convert_regions

D, C = 7, 5  # odd sizes so that a transposed read fails loudly


def make_record(rng, image_id, n, probs=False, w=640, h=480, dim=D, classes=C):
    x1 = rng.uniform(0, w * 0.6, n)
    y1 = rng.uniform(0, h * 0.6, n)
    boxes = np.stack([x1, y1, x1 + rng.uniform(1, w * 0.5, n), y1 + rng.uniform(1, h * 0.5, n)], 1)
    if n:
        boxes[0, 2] = w + 25.0  # one box past the right edge: locations clip it
    p = rng.dirichlet(np.ones(classes), n).astype(np.float32) if probs else None
    return RegionRecord(image_id, w, h, boxes.astype(np.float32), rng.normal(size=(n, dim)).astype(np.float32), p)


def hand_locations(rec):
    """The 5-d location written out box by box, clipping to the image first."""
    out = []
    for x1, y1, x2, y2 in rec.boxes.astype(float).tolist():
        x1, x2 = min(max(x1, 0), rec.image_w), min(max(x2, 0), rec.image_w)
        y1, y2 = min(max(y1, 0), rec.image_h), min(max(y2, 0), rec.image_h)
        out.append([x1 / rec.image_w, y1 / rec.image_h, x2 / rec.image_w, y2 / rec.image_h,
                    (x2 - x1) * (y2 - y1) / (rec.image_w * rec.image_h)])
    return np.array(out, dtype=np.float64).reshape(-1, 5)


def assert_same(a, b):
    assert a.image_id == b.image_id and (a.image_w, a.image_h) == (b.image_w, b.image_h)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.features, b.features)
    assert (a.class_probs is None) == (b.class_probs is None)
    if a.class_probs is not None:
        np.testing.assert_array_equal(a.class_probs, b.class_probs)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_round_trip_tsv_store_collate(tmp_path, rng):
    written = [make_record(rng, "img-a", 3, probs=True), make_record(rng, "img-b", 6, w=333, h=517),
               make_record(rng, "img-c", 1, probs=True), make_record(rng, "42", 4)]
    tsv = str(tmp_path / "feats.tsv")
    assert write_bottom_up_tsv(tsv, written) == 4
    read = list(read_bottom_up_tsv(tsv))
    for a, b in zip(written, read):
        assert_same(a, b)
    store = RegionStore(tmp_path / "store")
    store.append(read[:2])
    store.append(read[2:])
    reopened = RegionStore(tmp_path / "store")
    assert reopened.ids() == ["img-a", "img-b", "img-c", "42"] and len(reopened) == 4
    assert (reopened.feature_dim, reopened.num_classes) == (D, C)
    got = [reopened.get(r.image_id) for r in written]
    for a, b in zip(written, got):
        assert_same(a, b)
    for a, b in zip(written, reopened):
        assert_same(a, b)

    batch = collate_regions(got, max_img_len=10)
    assert set(batch) == {"region_feats", "region_locs", "region_valid", "num_regions"}  # probs not on every record
    assert batch["region_feats"].shape == (4, 7, D) and batch["region_feats"].dtype == np.float32
    for b, rec in enumerate(written):
        n = rec.num_boxes
        np.testing.assert_array_equal(batch["region_feats"][b, 1:n + 1], rec.features)
        np.testing.assert_allclose(batch["region_feats"][b, 0], rec.features.astype(np.float64).mean(0), rtol=1e-6)
        np.testing.assert_array_equal(batch["region_locs"][b, 0], [0, 0, 1, 1, 1])
        np.testing.assert_allclose(batch["region_locs"][b, 1:n + 1], hand_locations(rec), rtol=1e-6, atol=1e-7)
        assert batch["region_valid"][b].tolist() == [True] * (n + 1) + [False] * (6 - n)
        assert not batch["region_feats"][b, n + 1:].any() and not batch["region_locs"][b, n + 1:].any()
    assert batch["num_regions"].tolist() == [4, 7, 2, 5] and batch["num_regions"].dtype == np.int64
    assert batch["region_locs"][0, 1, 2] == 1.0  # the box past the right edge was clipped to x2 = W

    with_probs = collate_regions([got[0], got[2]], max_img_len=10)
    probs = with_probs["region_class_probs"]
    assert probs.shape == (2, 4, C)
    np.testing.assert_array_equal(probs[0, 1:4], written[0].class_probs)
    np.testing.assert_array_equal(probs[1, 1:2], written[2].class_probs)
    assert not probs[:, 0].any() and not probs[1, 2:].any()


def test_get_reads_only_its_own_byte_range(tmp_path, rng, monkeypatch):
    a, b, c = make_record(rng, "a", 3), make_record(rng, "b", 5, probs=True), make_record(rng, "c", 2, probs=True)
    store = RegionStore(tmp_path)
    store.append([a])
    store.append([b, c])
    reads = []
    real_open = open

    class Counting:
        def __init__(self, f):
            self.f, self.name = f, f.name

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def seek(self, pos):
            return self.f.seek(pos)

        def readinto(self, buf):
            got = self.f.readinto(buf)
            reads.append((os.path.basename(self.name), got))
            return got

    def counting_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return Counting(f) if str(path).endswith(".bin") else f

    monkeypatch.setattr(regions, "open", counting_open, raising=False)
    fresh = RegionStore(tmp_path)
    assert reads == []  # opening reads the index and the row tables only
    assert_same(fresh.get("c"), c)
    assert reads == [("shard-000002.bin", 2 * (4 + D + C) * 4)]
    monkeypatch.undo()

    os.remove(tmp_path / "shard-000002.bin")  # another shard gone: "a" still reads
    assert_same(RegionStore(tmp_path).get("a"), a)
    with pytest.raises(FileNotFoundError):
        fresh.get("b")
    (tmp_path / "shard-000001.bin").write_bytes(b"\0" * 10)  # truncated shard: a clear error
    with pytest.raises(IOError, match="truncated"):
        fresh.get("a")
    with pytest.raises(ValueError, match="shard-000001.bin: 10 bytes, but its table holds .* truncated"):
        RegionStore(tmp_path)  # and when the store opens


@pytest.mark.parametrize("fail_on", ["shard-000002.bin", "shard-000002.json", "index.json"])
def test_interrupted_append_leaves_old_content(tmp_path, rng, monkeypatch, fail_on):
    a, b, c = make_record(rng, "a", 3), make_record(rng, "b", 4), make_record(rng, "c", 2, probs=True)
    store = RegionStore(tmp_path)
    store.append([a])
    real_replace = os.replace

    def failing_replace(src, dst):
        if os.path.basename(dst) == fail_on:
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        store.append([b])
    monkeypatch.undo()
    assert store.ids() == ["a"] and "b" not in store
    reopened = RegionStore(tmp_path)
    assert reopened.ids() == ["a"]
    assert_same(reopened.get("a"), a)
    leftovers = set(os.listdir(tmp_path)) - {"index.json", "shard-000001.bin", "shard-000001.json"}
    if fail_on.endswith(".bin"):
        assert not leftovers  # the failed write removed its temporary file
    else:
        assert leftovers  # the interrupted shard is on disk but not live

    b2 = make_record(rng, "b", 6)
    store.append([b2, c])  # the same instance keeps working; orphans are cleaned first
    assert set(os.listdir(tmp_path)) == {"index.json", "shard-000001.bin", "shard-000001.json",
                                         "shard-000002.bin", "shard-000002.json"}
    final = RegionStore(tmp_path)
    assert final.ids() == ["a", "b", "c"]
    assert_same(final.get("b"), b2)
    assert_same(final.get("c"), c)


def test_duplicates_skip_existing_and_mixed_dims(tmp_path, rng):
    a, b = make_record(rng, "a", 3), make_record(rng, "b", 2)
    store = RegionStore(tmp_path)
    store.append([a])
    files = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError, match=r"\['a'\].*skip_existing=True"):
        store.append([make_record(rng, "a", 5), b])
    assert sorted(os.listdir(tmp_path)) == files and store.ids() == ["a"]
    store.append([make_record(rng, "a", 5), b, make_record(rng, "b", 1)], skip_existing=True)
    assert store.ids() == ["a", "b"]
    assert_same(store.get("a"), a)
    assert_same(store.get("b"), b)
    store.append([a], skip_existing=True)  # nothing new: no shard written
    assert len([n for n in os.listdir(tmp_path) if n.endswith(".bin")]) == 2

    with pytest.raises(KeyError, match=r"'zz'.*2 images.*'a', 'b'"):
        store.get("zz")
    with pytest.raises(ValueError, match="'odd' has feature_dim 5, the store 7"):
        store.append([make_record(rng, "odd", 2, dim=5)])
    store.append([make_record(rng, "p", 2, probs=True)])
    with pytest.raises(ValueError, match="'q' has 3 classes, the store 5"):
        store.append([make_record(rng, "q", 2, probs=True, classes=3)])
    with pytest.raises(ValueError, match="feature_dim 7, not 9"):
        RegionStore(tmp_path, feature_dim=9)

    counts = convert_to_store([make_record(rng, "a", 2), (make_record(rng, "n1", 2), "text"),
                               make_record(rng, "n2", 3), make_record(rng, "n1", 4)], store, batch_size=1)
    assert counts == {"read": 4, "added": 2, "skipped": 2}
    assert store.ids()[-2:] == ["n1", "n2"]


def test_record_validation_names_the_image(rng):
    good = make_record(rng, "x9", 2)
    with pytest.raises(TypeError, match="'x9'.*boxes must be a float32"):
        RegionRecord("x9", 10, 10, good.boxes.astype(np.float64), good.features)
    with pytest.raises(ValueError, match="'x9'.*features has 1 rows but boxes has 2"):
        RegionRecord("x9", 10, 10, good.boxes, good.features[:1])
    with pytest.raises(ValueError, match="'x9'.*image_h must be a positive int"):
        RegionRecord("x9", 10, 0, good.boxes, good.features)
    with pytest.raises(ValueError, match="'x9'.*x2 >= x1"):
        RegionRecord("x9", 10, 10, good.boxes[:, [2, 1, 0, 3]].copy(), good.features)


def test_truncation_padding_and_empty_images(rng):
    long, short, empty = make_record(rng, "l", 5), make_record(rng, "s", 2), make_record(rng, "e", 0)
    batch = collate_regions([long, short, empty], max_img_len=4)
    assert batch["region_feats"].shape == (3, 4, D)
    assert batch["region_valid"].tolist() == [[True] * 4, [True] * 3 + [False], [False] * 4]
    assert batch["num_regions"].tolist() == [4, 3, 0]
    np.testing.assert_array_equal(batch["region_feats"][0, 1:], long.features[:3])
    np.testing.assert_allclose(batch["region_feats"][0, 0], long.features.mean(0), rtol=1e-5)  # all 5 boxes
    np.testing.assert_allclose(batch["region_locs"][0, 1:], hand_locations(long)[:3], rtol=1e-6, atol=1e-7)
    assert not batch["region_feats"][2].any() and not batch["region_locs"][2].any()
    kept = collate_regions([long], max_img_len=4, global_mean="kept")
    np.testing.assert_allclose(kept["region_feats"][0, 0], long.features[:3].mean(0), rtol=1e-5)
    assert collate_regions([long, short], max_img_len=101)["region_feats"].shape == (2, 6, D)
    np.testing.assert_allclose(region_locations(long.boxes, long.image_w, long.image_h), hand_locations(long),
                               rtol=1e-6, atol=1e-7)
    only_global = collate_regions([long], max_img_len=1)
    assert only_global["region_valid"].tolist() == [[True]] and only_global["num_regions"].tolist() == [1]


def b64(arr):
    return base64.b64encode(np.asarray(arr, np.float32).tobytes()).decode("ascii")


@pytest.mark.parametrize("line, message", [
    ("img\t10\t10\t2\tAAAA", "expected 6 or 7 fields"),
    ("img\t10\tten\t1\t{box}\t{feat}", "image_h must be an integer"),
    ("img\t10\t10\t2\t{box}\t{feat}", "boxes holds 4 floats, not 2 rows of 4"),
    ("img\t10\t10\t1\t{box}!\t{feat}", "boxes is not valid base64"),
    ("img\t10\t10\t1\t{bad_box}\t{feat}", "x2 >= x1"),
])
def test_bad_tsv_line_names_file_and_line(tmp_path, rng, line, message):
    rec = make_record(rng, "ok", 1, w=10, h=10)
    path = tmp_path / "bad.tsv"
    write_bottom_up_tsv(str(path), [rec])
    bad = line.format(box=b64([[1, 1, 5, 5]]), feat=b64(np.ones((1, D))), bad_box=b64([[5, 1, 1, 5]]))
    path.write_text(path.read_text() + "\n" + bad + "\n")  # a blank line 2, the bad line 3
    with pytest.raises(DataError, match=f"^{path}:3: .*{message}"):
        list(read_bottom_up_tsv(str(path)))


def test_tsv_byte_order_mark_gzip_and_encoding_errors(tmp_path, rng):
    recs = [make_record(rng, "img-a", 2, probs=True), make_record(rng, "img-b", 3)]
    plain, packed = tmp_path / "feats.tsv", tmp_path / "feats.tsv.gz"
    assert write_bottom_up_tsv(str(packed), recs) == 2 and write_bottom_up_tsv(str(plain), recs) == 2
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["feats.tsv", "feats.tsv.gz"]  # no temporary file left
    header = "image_id\timage_w\timage_h\tnum_boxes\tboxes\tfeatures\tcls_prob\n".encode()
    for body in (b"\xef\xbb\xbf" + plain.read_bytes(), b"\xef\xbb\xbf" + header + plain.read_bytes()):
        plain.write_bytes(body)  # a byte order mark before the first record, or before a header
        packed.write_bytes(gzip.compress(body))
        for path in (plain, packed):
            read = list(read_bottom_up_tsv(str(path)))
            assert [r.image_id for r in read] == ["img-a", "img-b"]
            assert_same(read[0], recs[0])
    plain.write_bytes(body + b"caf\xe9\t1\n")
    packed.write_bytes(gzip.compress(body + b"caf\xe9\t1\n"))
    for path in (plain, packed):
        with pytest.raises(DataError, match=f"^{path}:4: not UTF-8"):
            list(read_bottom_up_tsv(str(path)))
    packed.write_bytes(gzip.compress(body)[:-12])
    with pytest.raises(DataError, match=f"^{packed}: broken gzip file"):
        list(read_bottom_up_tsv(str(packed)))
    with pytest.raises(DataError, match=f"^{tmp_path}: is a folder"):
        list(read_unimo_ve(str(tmp_path)))


def test_failed_tsv_write_keeps_the_previous_file(tmp_path, rng):
    path = tmp_path / "feats.tsv"
    write_bottom_up_tsv(str(path), [make_record(rng, "old", 2)])
    before = path.read_bytes()

    def records():
        yield make_record(rng, "new", 2)
        raise RuntimeError("reader died")

    with pytest.raises(RuntimeError, match="reader died"):
        write_bottom_up_tsv(str(path), records())
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["feats.tsv"]


def original_visual(boxes, feats, w, h):
    """What the original readers build: [mean of all boxes; boxes] and [[0,0,1,1,1]; unclipped locations]."""
    loc = np.zeros((len(boxes), 5), np.float32)
    loc[:, :4] = boxes / np.array([w, h, w, h], np.float32)
    loc[:, 4] = (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 2] - boxes[:, 0]) / (float(w) * float(h))
    return (np.concatenate([feats.mean(0, keepdims=True), feats]),
            np.concatenate([[[0, 0, 1, 1, 1]], loc]).astype(np.float32))


def test_unimo_caption_reader(tmp_path, rng):
    boxes = np.array([[0, 0, 100, 50], [10, 20, 630, 470], [300, 200, 301, 201]], np.float32)
    feats = rng.normal(size=(3, D)).astype(np.float32)
    fields = ["COCO2014_391895", "cap7", "0 10 20 2", "0 0 0 0", "2 3 4 5", "-1 1 1 -1", "", "", "480", "640", "3",
              b64(boxes), b64(np.ones((3, 4))), b64(np.ones((3, 2))), b64(feats), "1"]
    test_fields = list(fields)
    test_fields[1:6] = ["cap8", "", "", "", ""]
    path = tmp_path / "coco.txt"
    path.write_text(";".join(fields) + "\n" + ";".join(test_fields) + "\n")
    (rec, text), (rec2, text2) = read_unimo_caption(str(path))
    assert (rec.image_id, rec.image_w, rec.image_h) == ("391895", 640, 480)  # height comes first in the file
    np.testing.assert_array_equal(rec.boxes, boxes)
    np.testing.assert_array_equal(rec.features, feats)
    assert rec.class_probs is None
    assert text == CaptionText("391895", "cap7", [0, 10, 20, 2], [0, 0, 0, 0], [2, 3, 4, 5], [-1, 1, 1, -1], "1")
    assert text2.token_ids == [] and rec2.image_id == "391895"
    batch = collate_regions([rec], max_img_len=101)
    want_feats, want_locs = original_visual(boxes, feats, 640, 480)
    np.testing.assert_allclose(batch["region_feats"][0], want_feats, rtol=1e-6)
    np.testing.assert_allclose(batch["region_locs"][0], want_locs, rtol=1e-6)
    path.write_text(";".join(fields[:15]) + "\n")
    with pytest.raises(DataError, match=f"{path}:1: expected 16 fields"):
        list(read_unimo_caption(str(path)))


def test_unimo_retrieval_reader(tmp_path, rng, caplog):
    boxes = np.array([[0, 0, 499, 300], [20, 30, 40, 50]], np.float32)
    feats, probs = rng.normal(size=(2, D)).astype(np.float32), rng.dirichlet(np.ones(C), 2).astype(np.float32)
    path = tmp_path / "flickr_feats.tsv"
    path.write_text("\t".join(["1000092795", "500", "375", "2", b64(boxes), b64(feats), b64(probs)]) + "\n")
    [rec] = read_unimo_retrieval(str(path))
    assert (rec.image_id, rec.image_w, rec.image_h) == ("1000092795", 500, 375)
    np.testing.assert_array_equal(rec.features, feats)
    np.testing.assert_array_equal(rec.class_probs, probs)
    with caplog.at_level(logging.WARNING):
        [swapped] = read_unimo_retrieval(str(path), wh_order="hw")
    assert (swapped.image_w, swapped.image_h) == (375, 500)
    assert "wh_order='hw'" in caplog.text  # x2 = 499 does not fit a width of 375, but fits 500


def test_unimo_ve_reader_and_convert_tool(tmp_path, rng):
    boxes = np.array([[5, 5, 50, 60], [0, 0, 499, 332]], np.float32)
    feats = rng.normal(size=(2, D)).astype(np.float32)
    line = ["2248275300.jpg", "d17", "2", "0 5 2", "0 0 0", "2 3 4", "x", "500", "333", "2", b64(boxes),
            b64(feats), "y", "z"]
    other = list(line)
    other[1:3] = ["d18", "0"]
    path = tmp_path / "ve.txt"
    path.write_text(";".join(line) + "\n" + ";".join(other) + "\n")
    (rec, text), (_, text2) = read_unimo_ve(str(path))
    assert (rec.image_id, rec.image_w, rec.image_h) == ("2248275300.jpg", 500, 333)
    np.testing.assert_array_equal(rec.boxes, boxes)
    assert text == VEText("2248275300.jpg", "d17", 2, [0, 5, 2], [0, 0, 0], [2, 3, 4]) and text2.label == 0

    out = tmp_path / "store"
    assert convert_regions.run(["--format", "unimo_ve", "--input", str(path), "--out", str(out)]) == \
        {"read": 2, "added": 1, "skipped": 1}
    assert convert_regions.run(["--format", "unimo_ve", "--input", str(tmp_path / "ve.txt"), "--out", str(out)]) == \
        {"read": 2, "added": 0, "skipped": 2}
    assert_same(RegionStore(out).get("2248275300.jpg"), rec)
