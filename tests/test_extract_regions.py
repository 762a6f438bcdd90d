"""Region extraction with PaddleDetection: the paddle-3 compat layer, box selection, the extract_regions tool.

The detector runs with seeded random weights on small images and few proposals, so the values are meaningless
but reproducible; the tests check invariants (boxes inside the image, probabilities summing to 1, feature
size, counts) and exact equality between runs.
"""
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import paddle
import pytest

from conftest import shared_path
from paddle_unimo.data.regions import RegionRecord, RegionStore
from paddle_unimo.regions import detector as det
from paddle_unimo.regions import paddledet_compat as compat

from tools import extract_regions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--random-weights", "--short-side", "128", "--max-side", "160", "--proposals", "12"]
NAMES = ["000000014439.jpg", "000000087038.jpg", "000000570688.jpg", "39006.jpg", "orange_71.jpg"]


def summary(capsys) -> dict:
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("extract_regions:")][-1]
    return {k: int(v) for v, k in re.findall(r"(\d+) (done|skipped|failed)", line)}


def records(out):
    store = RegionStore(out)
    return {i: store.get(i) for i in store.ids()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k].image_w, a[k].image_h) == (b[k].image_w, b[k].image_h)
        for name in ("boxes", "features", "class_probs"):
            np.testing.assert_array_equal(getattr(a[k], name), getattr(b[k], name), err_msg=f"{k} {name}")


def assert_close(a, b):
    """Equal up to float rounding: a --nproc worker runs with fewer threads, so oneDNN sums in another order
    (differences seen: 5e-6 on features up to 14, 3e-4 px on boxes up to 1249 px)."""
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k].image_w, a[k].image_h) == (b[k].image_w, b[k].image_h)
        for name in ("boxes", "features", "class_probs"):
            want = getattr(b[k], name)
            np.testing.assert_allclose(getattr(a[k], name), want, rtol=1e-5, atol=1e-5 * np.abs(want).max(),
                                       err_msg=f"{k} {name}")


# ---- the compat layer ----------------------------------------------------------------------------------

def original_source(patch):
    fn = compat._resolve(patch)[3]
    return inspect.getsource(getattr(fn, compat._MARK, None) or fn)


def test_compat_patches_the_reviewed_sources_and_is_idempotent():
    compat.apply()
    assert compat.is_applied() and compat.apply() == []
    for patch in compat.PATCHES:
        fn = compat._resolve(patch)[3]
        text = inspect.getsource(fn)  # served from linecache: the patched text
        for old, new in patch.edits:
            assert new in text and old not in text
    target_layer = sys.modules["ppdet.modeling.proposal_generator.target_layer"]
    assert getattr(target_layer.generate_proposal_target, compat._MARK, None) is not None


def test_compat_refuses_a_mismatched_source(monkeypatch):
    patch = compat.PATCHES[0]
    source = original_source(patch)
    assert compat.patched_source(patch, source) != source
    old = patch.edits[0][0]
    changed = source.replace(old, old.replace("[1])", "[2])"))
    with pytest.raises(RuntimeError, match=re.escape(patch.name)) as err:
        compat.patched_source(patch, changed)
    assert "sha256" in str(err.value) and "occurs 0 times" in str(err.value)
    doubled = source + "\n" + source  # every edited line now twice
    with pytest.raises(RuntimeError, match="occurs 2 times"):
        compat.patched_source(patch, doubled)
    monkeypatch.setattr(sys.modules["ppdet.version"], "full_version", "2.7.0")
    with pytest.raises(RuntimeError, match="paddledet 2.7.0 is installed"):
        compat.apply()


# ---- box selection (pure numpy) ------------------------------------------------------------------------

BOXES = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 9]], np.float32)[:, None]
PROBS = np.array([[0.6, 0.1, 0.3], [0.5, 0.4, 0.1], [0.1, 0.05, 0.85], [0.05, 0.3, 0.65]], np.float32)


@pytest.mark.parametrize("min_boxes,max_boxes,keep,best", [
    (1, 10, [0, 1], [0, 1]),  # box 1 loses class 0 to box 0 (IoU .81) but wins class 1; box 3 loses both
    (3, 10, [0, 1, 2], [0, 1, 0]),
    (4, 10, [0, 1, 2, 3], [0, 1, 0, 0]),  # box 3 survives no class: confidence 0, taken last
    (1, 1, [0], [0]),
])
def test_select_regions_follows_generate_tsv(min_boxes, max_boxes, keep, best):
    cfg = det.ExtractorConfig(conf_threshold=0.2, nms_iou=0.3, min_boxes=min_boxes, max_boxes=max_boxes)
    got_keep, got_best = det.select_regions(BOXES, PROBS, cfg)
    assert got_keep.tolist() == keep and got_best.tolist() == best


def test_score_floor_is_exact_above_it():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 80, (60, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (60, 2))], 1).astype(np.float32)[:, None]
    probs = rng.dirichlet(np.full(31, 0.3), 60).astype(np.float32)
    full, _ = det.best_scores(boxes, probs, 0.3, 0.0)
    for floor in (0.2, 0.05):
        part, _ = det.best_scores(boxes, probs, 0.3, floor)
        above = full >= floor
        assert above.sum() > 5
        np.testing.assert_array_equal(part[above], full[above])
        assert (part[~above] < floor).all()


# ---- the detector --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def c4():
    cfg = det.ExtractorConfig(short_side=128, max_side=160, proposals=12)
    return det.RegionExtractor(cfg, random_weights=True)


def test_zero_proposals_give_one_whole_image_region(c4, monkeypatch):
    image, _ = det.read_image(str(shared_path("images", NAMES[0])))
    empty = ([paddle.zeros([0, 4])], paddle.to_tensor([0], "int32"), None)
    monkeypatch.setattr(c4.model.rpn_head, "forward", lambda *a, **k: empty)
    record, notes = c4.extract(image, "x")
    assert notes == ["no proposals: one whole-image box"]
    np.testing.assert_allclose(record.boxes, [[0, 0, 640, 404]], atol=1e-3)
    assert record.features.shape == (1, 2048) and abs(record.class_probs.sum() - 1) < 1e-5


def test_regressed_boxes_stay_in_the_image(c4, monkeypatch):
    image, _ = det.read_image(str(shared_path("images", NAMES[1])))
    monkeypatch.setattr(c4.cfg, "regress_boxes", True)
    record, _ = c4.extract(image, "y")
    assert record.num_boxes == 10
    assert (record.boxes >= 0).all()
    assert (record.boxes[:, [0, 2]] <= 640).all() and (record.boxes[:, [1, 3]] <= 480).all()


def test_fpn_gives_1024_d_features():
    cfg = det.ExtractorConfig(arch="fpn", short_side=100, max_side=150, proposals=12, min_boxes=4, max_boxes=6,
                              conf_threshold=0.0)
    image, _ = det.read_image(str(shared_path("images", NAMES[2])))
    assert det.preprocess(image, cfg)[0].shape == (1, 3, 128, 160)  # 100x133 padded to multiples of 32
    record, _ = det.RegionExtractor(cfg, random_weights=True).extract(image, "z")
    assert record.features.shape == (6, 1024) and record.class_probs.shape == (6, 1601)  # conf 0: max_boxes


def test_weights_load_strictly(tmp_path):
    model = paddle.nn.Sequential(paddle.nn.Linear(3, 4), paddle.nn.Linear(4, 2))
    state = model.state_dict()
    good = str(tmp_path / "good.pdparams")
    paddle.save(state, good)
    det.load_weights(model, good)
    bad = {k: v for k, v in state.items() if k != "1.bias"}
    bad["2.weight"], bad["0.bias"] = paddle.zeros([2]), paddle.zeros([5])
    paddle.save(bad, str(tmp_path / "bad.pdparams"))
    with pytest.raises(ValueError) as err:
        det.load_weights(model, str(tmp_path / "bad.pdparams"))
    message = str(err.value)
    assert "1 missing (first: ['1.bias'])" in message and "1 unexpected (first: ['2.weight'])" in message
    assert "0.bias: file [5] vs model [4]" in message


# ---- the tool ------------------------------------------------------------------------------------------

def test_the_tools_user_errors_are_one_line_and_exit_status_2(tmp_path, capsys):
    """A missing or empty image folder (subfolders are not searched), missing or unreadable weights and bad
    settings stop the tool before it writes anything, each with one ``error:`` line and exit status 2."""
    (tmp_path / "nested" / "sub").mkdir(parents=True)
    picture = np.zeros((30, 40, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "nested" / "sub" / "a.jpg"), picture)
    (tmp_path / "junk.pdparams").write_bytes(b"not a pickle")
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "one.jpg"), picture)
    out = tmp_path / "out"
    cases = [(["--images", str(tmp_path / "nowhere"), "--random-weights"], "no such folder or list file"),
             (["--images", str(tmp_path / "nested"), "--random-weights"],
              "no image files (.jpg, .jpeg, .png, .bmp, .webp, .tif, .tiff) in this folder; its subfolders are not"),
             (["--images", str(tmp_path / "images"), "--weights", str(tmp_path / "none.pdparams")],
              "none.pdparams: weights file not found"),
             (["--images", str(tmp_path / "images"), "--weights", str(tmp_path / "junk.pdparams")],
              "junk.pdparams: not a readable paddle state file"),
             (["--images", str(tmp_path / "images"), "--random-weights", "--min-boxes", "0"],
              "extraction settings: need 1 <= min_boxes <= max_boxes")]
    for argv, message in cases:
        capsys.readouterr()
        with pytest.raises(SystemExit) as stopped:
            extract_regions.main(argv + ["--out", str(out)])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert stopped.value.code == 2 and len(errors) == 1 and message in errors[0], err
        assert "Traceback" not in err and not out.exists()



@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    images = shared_path("images")
    out = tmp_path_factory.mktemp("regions") / "store"
    assert extract_regions.main(["--images", str(images), "--out", str(out)] + SMALL) == 0
    return images, out


def test_store_holds_valid_regions(first_run):
    images, out = first_run
    got = records(out)
    assert sorted(got) == NAMES
    for name, rec in got.items():
        h, w = cv2.imread(str(images / name)).shape[:2]
        assert (rec.image_w, rec.image_h) == (w, h)
        assert rec.num_boxes == 10  # 12 proposals, random probabilities < conf: min_boxes
        assert (rec.boxes >= 0).all() and (rec.boxes[:, [0, 2]] <= w).all() and (rec.boxes[:, [1, 3]] <= h).all()
        assert (rec.boxes[:, 2:] >= rec.boxes[:, :2]).all()
        assert rec.features.shape == (10, 2048) and np.isfinite(rec.features).all()
        assert rec.class_probs.shape == (10, 1601)
        np.testing.assert_allclose(rec.class_probs.sum(1), 1.0, atol=1e-5)
    settings = json.loads((out / "extraction.json").read_text())
    assert settings["random_weights"] is True and "MEANINGLESS" in settings["warning"]
    assert (out / "errors.jsonl").read_text() == ""


def test_resumed_rerun_skips_finished_images_and_equals_first_run(first_run, tmp_path, capsys):
    images, reference = first_run
    out = tmp_path / "store"
    (tmp_path / "two.txt").write_text("\n".join(str(images / n) for n in NAMES[:2]) + "\n")
    assert extract_regions.main(["--images", str(tmp_path / "two.txt"), "--out", str(out)] + SMALL) == 0
    assert summary(capsys) == {"done": 2, "skipped": 0, "failed": 0}
    shard = (out / "shard-000001.bin").read_bytes()
    assert extract_regions.main(["--images", str(images), "--out", str(out)] + SMALL) == 0
    assert summary(capsys) == {"done": 3, "skipped": 2, "failed": 0}
    assert (out / "shard-000001.bin").read_bytes() == shard
    assert_same(records(out), records(reference))  # same seed: identical values, also across processes
    with pytest.raises(SystemExit) as refused:
        extract_regions.main(["--images", str(images), "--out", str(out)] + SMALL + ["--conf", "0.3"])
    assert refused.value.code == 2 and "was extracted with other settings" in capsys.readouterr().err


def test_bad_images_are_converted_or_listed(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for name in NAMES[:2]:
        shutil.copy(shared_path("images", name), images / name)
    color = cv2.imread(str(images / NAMES[0]))
    cv2.imwrite(str(images / "gray.png"), cv2.cvtColor(color, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(images / "tiny.png"), color[100:110, 200:210])
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    (images / "empty.jpg").write_bytes(b"")
    os.symlink(str(tmp_path / "nowhere.jpg"), images / "missing.jpg")
    out = tmp_path / "store"
    assert extract_regions.main(["--images", str(images), "--out", str(out)] + SMALL) == 0
    assert summary(capsys) == {"done": 4, "skipped": 0, "failed": 3}
    errors = {os.path.basename(e["image"]): e["reason"]
              for e in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}
    assert errors == {"corrupt.jpg": "cv2 cannot decode it (corrupt or not an image)", "empty.jpg": "empty file",
                      "missing.jpg": "broken symlink"}
    got = records(out)
    assert sorted(got) == sorted(NAMES[:2] + ["gray.png", "tiny.png"])
    tiny = got["tiny.png"]
    assert (tiny.image_w, tiny.image_h) == (10, 10) and 1 <= tiny.num_boxes <= 10
    assert (tiny.boxes >= 0).all() and (tiny.boxes <= 10).all()
    assert got["gray.png"].num_boxes >= 1 and got["gray.png"].image_w == 640
    listed = tmp_path / "list.txt"
    listed.write_text("images/tiny.png\nimages/gone.jpg\n")  # relative to the list's folder
    # exit status 0: one image was skipped, so not every image failed
    assert extract_regions.main(["--images", str(listed), "--out", str(out)] + SMALL) == 0
    assert summary(capsys) == {"done": 0, "skipped": 1, "failed": 1}
    assert json.loads((out / "errors.jsonl").read_text())["reason"] == "missing file"
    assert len(RegionStore(out)) == 4


def test_interrupted_run_keeps_finished_images(first_run, tmp_path, monkeypatch, capsys):
    images, reference = first_run
    out = tmp_path / "store"
    real, calls = det.RegionExtractor.extract, []

    def stop_at_third(self, image, image_id):
        calls.append(image_id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, image, image_id)

    monkeypatch.setattr(det.RegionExtractor, "extract", stop_at_third)
    # Ctrl-C: the unflushed batch (2 < --flush-every) is still written; exit status 130, no traceback
    assert extract_regions.main(["--images", str(images), "--out", str(out)] + SMALL) == 130
    assert "interrupted; the finished images are kept" in capsys.readouterr().err
    assert RegionStore(out).ids() == NAMES[:2]
    monkeypatch.setattr(det.RegionExtractor, "extract", real)
    assert extract_regions.main(["--images", str(images), "--out", str(out)] + SMALL) == 0
    assert summary(capsys) == {"done": 3, "skipped": 2, "failed": 0}
    assert_same(records(out), records(reference))


def test_list_file_accepts_a_byte_order_mark_and_windows_line_ends(tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_bytes(b"\xef\xbb\xbfa.jpg\r\n# a comment\r\n\r\nsub/b.png\r\nc/a.jpg\r\n")
    items, bad = extract_regions.list_images(str(listed))
    assert items == [("a.jpg", str(tmp_path / "a.jpg")), ("b.png", str(tmp_path / "sub" / "b.png"))]
    assert bad == [(str(tmp_path / "c" / "a.jpg"), f"duplicate image_id 'a.jpg' (also {tmp_path / 'a.jpg'})")]


# ---- --nproc: worker processes, each writing its own part of the store ---------------------------------

def tiny_record(image_id, value):
    return RegionRecord(image_id, 20, 10, np.array([[0, 0, 5, 5]], np.float32), np.full((1, 3), value, np.float32))


def test_parts_become_one_store(tmp_path):
    out = tmp_path / "store"
    RegionStore(out).append([tiny_record("a", 1)])
    RegionStore(out / "worker-00").append([tiny_record("b", 2), tiny_record("c", 3)])
    part1 = RegionStore(out / "worker-01")
    part1.append([tiny_record("d", 4)])
    store = RegionStore(out)
    assert store.add_parts(["worker-00", "worker-01"]) == 3
    assert store.add_parts(["worker-00", "worker-01"]) == 0  # already live: nothing twice
    part1.append([tiny_record("e", 5)])  # a resumed worker adds a shard
    assert store.add_parts(["worker-00", "worker-01"]) == 1
    store.append([tiny_record("f", 6)])  # numbered after the top-level shards only
    reread = RegionStore(out)
    assert reread.ids() == ["a", "b", "c", "d", "e", "f"]
    assert [float(reread.get(i).features[0, 0]) for i in reread.ids()] == [1, 2, 3, 4, 5, 6]
    names = [e["name"] for e in json.loads((out / "index.json").read_text())["shards"]]
    assert names == ["shard-000001", "worker-00/shard-000001", "worker-01/shard-000001",
                     "worker-01/shard-000002", "shard-000002"]
    RegionStore(out / "worker-02").append([tiny_record("c", 7)])
    with pytest.raises(ValueError, match="'c' is in both worker-00/shard-000001 and worker-02/shard-000001"):
        reread.add_parts(["worker-02"])
    with pytest.raises(ValueError, match="sub-folder name"):
        reread.add_parts(["../elsewhere"])
    assert RegionStore(out).ids() == ["a", "b", "c", "d", "e", "f"]  # a refused merge changes nothing


def test_split_is_contiguous_and_covers_every_image():
    items = list(range(7))
    assert extract_regions.split(items, 3) == [[0, 1], [2, 3], [4, 5, 6]]
    assert extract_regions.split(items, 1) == [items]
    assert sum(extract_regions.split(items, 7), []) == items


@pytest.mark.slow
def test_two_processes_give_the_same_store_as_one(first_run, tmp_path, capsys):
    images, reference = first_run
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)  # 5th of 6: worker 1
    out = tmp_path / "store"
    assert extract_regions.main(["--images", str(folder), "--out", str(out), "--nproc", "2"] + SMALL) == 0
    assert summary(capsys) == {"done": 5, "skipped": 0, "failed": 1}
    assert RegionStore(out).ids() == NAMES  # chunks in order, so the list order survives
    assert RegionStore(out / "worker-00").ids() == NAMES[:3]
    assert RegionStore(out / "worker-01").ids() == NAMES[3:]
    assert_close(records(out), records(reference))
    assert json.loads((out / "extraction.json").read_text()) == json.loads((reference / "extraction.json").read_text())
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    reason = "cv2 cannot decode it (corrupt or not an image)"
    assert errors == [{"image": str(folder / "corrupt.jpg"), "reason": reason}]
    assert extract_regions.main(["--images", str(folder), "--out", str(out), "--nproc", "2"] + SMALL) == 0
    assert summary(capsys) == {"done": 0, "skipped": 5, "failed": 1}


@pytest.mark.slow
def test_killed_two_process_run_resumes(first_run, tmp_path, capsys):
    images, reference = first_run
    out = tmp_path / "store"
    command = [sys.executable, "-m", "tools.extract_regions", "--images", str(images), "--out", str(out),
               "--nproc", "2", "--flush-every", "1"] + SMALL
    proc = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    parts = [out / "worker-00" / "index.json", out / "worker-01" / "index.json"]
    try:
        deadline = time.monotonic() + 300
        while not any(p.exists() for p in parts):  # a worker has made its first image live
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before any image was kept"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the main process and both workers, mid-run
        proc.wait()
    kept = len(RegionStore(out / "worker-00")) + len(RegionStore(out / "worker-01"))
    assert 1 <= kept < len(NAMES)
    assert len(RegionStore(out)) == 0  # killed before the merge: readers do not see the parts yet
    assert extract_regions.main(["--images", str(images), "--out", str(out), "--nproc", "2"] + SMALL) == 0
    assert summary(capsys) == {"done": len(NAMES) - kept, "skipped": kept, "failed": 0}
    assert sorted(RegionStore(out).ids()) == NAMES
    assert_close(records(out), records(reference))


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_sigterm_keeps_the_finished_images(first_run, tmp_path, capsys, nproc):
    """``kill`` (SIGTERM, as a job scheduler sends) of the main process of a run that has not reached its next
    periodic write: the images finished (by it, or by the workers it passes the signal to) are written and made
    live before it stops with status 130, and a rerun extracts only the others."""
    import select
    images, reference = first_run
    out = tmp_path / "store"
    command = [sys.executable, "-m", "tools.extract_regions", "--images", str(images), "--out", str(out),
               "--flush-every", "100", "--nproc", str(nproc)] + SMALL
    proc = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    seen, deadline = b"", time.monotonic() + 300
    try:
        while not re.search(rb"\| [1-9]/\d \[", seen):  # a progress bar: an image is finished
            assert proc.poll() is None and time.monotonic() < deadline, seen[-2000:]
            if select.select([proc.stderr], [], [], 0.05)[0]:
                seen += os.read(proc.stderr.fileno(), 65536)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=300)
        assert proc.returncode == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    kept = len(RegionStore(out))
    assert 1 <= kept < len(NAMES), kept
    assert extract_regions.main(["--images", str(images), "--out", str(out)] + SMALL) == 0
    assert summary(capsys) == {"done": len(NAMES) - kept, "skipped": kept, "failed": 0}
    assert sorted(RegionStore(out).ids()) == NAMES
    assert_close(records(out), records(reference))
