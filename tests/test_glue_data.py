"""GLUE readers, encoding, batches, submission files and metrics (paddle_unimo.data.glue, paddle_unimo.metrics.glue)."""
import random

import numpy as np
import pytest
from conftest import shared_path
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from paddle_unimo import WordPieceTokenizer
from paddle_unimo.data.glue import (GLUE_TASKS, GlueExample, encode_example, encode_pair, get_task, glue_batch,
                                    glue_path, label_id, read_glue, read_glue_file, read_unimo_tsv, truncate_pair,
                                    write_submission)
from paddle_unimo.fileio import DataError
from paddle_unimo.metrics.glue import glue_metrics, main_metric


def write_tsv(path, rows, bom=False):
    text = "".join("\t".join(row) + "\n" for row in rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return str(path)


# ---- the shared samples ---------------------------------------------------------------------------------------

def test_cola_dev_sample():
    path = shared_path("glue", "CoLA", "dev.tsv")
    examples, report = read_glue(path, "cola", "dev")
    assert (len(examples), report.read, report.lines, report.skipped) == (100, 100, 100, [])
    assert examples[0] == GlueExample("1", "The sailors rode the breeze clear of the rocks.", None, "1", 1)
    assert examples[-1] == GlueExample(
        "100", "I won't ask you to believe that he tried to force me to give her any money.", None, "1", 100)
    assert {e.label for e in examples} <= {"0", "1"}


def test_sst2_dev_sample():
    examples, report = read_glue(shared_path("glue", "SST-2", "dev.tsv"), "sst2", "dev")
    assert (len(examples), report.lines) == (100, 101)
    assert examples[0] == GlueExample("2", "it 's a charming and often affecting journey . ", None, "1", 2)
    assert examples[1].text_a == "unflinchingly bleak and desperate " and examples[1].label == "0"
    assert examples[-1] == GlueExample(
        "101", "why make a documentary about these marginal historical figures ? ", None, "0", 101)


def test_mnli_dev_matched_sample():
    examples, report = read_glue(shared_path("glue", "MNLI", "dev_matched.tsv"), "mnli", "dev_matched")
    assert (len(examples), report.lines) == (2, 3)
    assert examples[0] == GlueExample("2", "The new rights are nice enough",
                                      "Everyone really likes the newest benefits ", "neutral", 2)
    assert examples[1].text_a.startswith("This site includes a list of all award winners")
    assert examples[1].text_b == "The Government Executive articles housed on the website are not able to be searched."
    assert examples[1].label == "contradiction"


@pytest.mark.parametrize("split, first, last", [
    ("dev", ("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5.0),
     ("Three men are playing guitars.", "Three men are on stage playing guitars.", 3.75)),
    ("train", ("A plane is taking off.", "An air plane is taking off.", 5.0),
     ("A man is playing on a guitar and singing.", "A woman is playing an acoustic guitar and singing.", 2.2)),
])
def test_stsb_samples(split, first, last):
    examples, report = read_glue(shared_path("glue", "STS-B", f"{split}.tsv"), "stsb", split)
    assert (len(examples), report.lines) == (9, 10)
    assert (examples[0].text_a, examples[0].text_b, examples[0].label) == first
    assert (examples[-1].text_a, examples[-1].text_b, examples[-1].label) == last
    assert all(isinstance(e.label, float) for e in examples)


@pytest.mark.parametrize("split", ["dev", "train"])
def test_mrpc_samples_with_byte_order_mark(split):
    path = shared_path("glue", "MRPC", f"{split}.tsv")
    assert path.read_bytes().startswith(b"\xef\xbb\xbfQuality\t#1 ID")
    examples, report = read_glue(path, "mrpc", split)
    assert (len(examples), report.lines) == (6, 7)
    assert examples[0] == GlueExample(
        "2", "He said the foodservice pie business doesn 't fit the company 's long-term growth strategy .",
        '" The foodservice pie business does not fit our long-term growth strategy .', "1", 2)  # a bare quote
    assert examples[1].label == "0"
    assert examples[-1].text_a.startswith("Wal-Mart said it would check") and examples[-1].label == "1"


def test_header_of_another_task_is_refused():
    stsb = shared_path("glue", "STS-B", "dev.tsv")
    with pytest.raises(DataError, match=r"STS-B/dev\.tsv:1: not a MRPC train/dev file: expected a header with "
                                        r"the columns \['Quality', '#1 ID'"):
        read_glue(stsb, "mrpc", "dev")
    with pytest.raises(DataError, match=r"SST-2/dev\.tsv:1: not a CoLA train/dev file: expected 4 tab-separated"):
        read_glue(shared_path("glue", "SST-2", "dev.tsv"), "cola", "dev", skip_bad=True)
    with pytest.raises(DataError, match=r"CoLA/dev\.tsv:1: not a SST-2 train/dev file.*'sentence', 'label'"):
        read_glue(shared_path("glue", "CoLA", "dev.tsv"), "sst2", "dev")


# ---- every task in its official layout --------------------------------------------------------------------------

MNLI_HEAD = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
             "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
MNLI_ROW = ["7", "1", "1e", "fiction", "( A )", "( B )", "(ROOT A)", "(ROOT B)", "Premise here .", "Hypo here ."]
STSB_HEAD = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]
STSB_ROW = ["7", "main-news", "headlines", "2015", "0001", "none", "none", "Premise here .", "Hypo here ."]
# task: (train header + row, expected (text_a, text_b, label)), (test header + row, expected (id, text_a, text_b))
LAYOUTS = {
    "cola": ([["gj04", "1", "", "Premise here ."]], ("Premise here .", None, "1"),
             [["index", "sentence"], ["7", "Premise here ."]], ("7", "Premise here .", None)),
    "sst2": ([["sentence", "label"], ["Premise here . ", "0"]], ("Premise here . ", None, "0"),
             [["index", "sentence"], ["7", "Premise here ."]], ("7", "Premise here .", None)),
    "mrpc": ([["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], ["1", "11", "12", "Premise here .",
                                                                        "Hypo here ."]],
             ("Premise here .", "Hypo here .", "1"),
             [["index", "#1 ID", "#2 ID", "#1 String", "#2 String"],
              ["7", "11", "12", "Premise here .", "Hypo here ."]],
             ("7", "Premise here .", "Hypo here .")),
    "stsb": ([STSB_HEAD + ["score"], STSB_ROW + ["3.200"]], ("Premise here .", "Hypo here .", 3.2),
             [STSB_HEAD, STSB_ROW], ("7", "Premise here .", "Hypo here .")),
    "qqp": ([["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
             ["5", "1", "2", "Premise here ?", "Hypo here ?", "1"]], ("Premise here ?", "Hypo here ?", "1"),
            [["id", "question1", "question2"], ["7", "Premise here ?", "Hypo here ?"]],
            ("7", "Premise here ?", "Hypo here ?")),
    "mnli": ([MNLI_HEAD + ["label1", "gold_label"], MNLI_ROW + ["neutral", "entailment"]],
             ("Premise here .", "Hypo here .", "entailment"), [MNLI_HEAD, MNLI_ROW],
             ("7", "Premise here .", "Hypo here .")),
    "qnli": ([["index", "question", "sentence", "label"], ["0", "Premise here ?", "Hypo here .", "not_entailment"]],
             ("Premise here ?", "Hypo here .", "not_entailment"),
             [["index", "question", "sentence"], ["7", "Premise here ?", "Hypo here ."]],
             ("7", "Premise here ?", "Hypo here .")),
    "rte": ([["index", "sentence1", "sentence2", "label"], ["0", "Premise here .", "Hypo here .", "entailment"]],
            ("Premise here .", "Hypo here .", "entailment"),
            [["index", "sentence1", "sentence2"], ["7", "Premise here .", "Hypo here ."]],
            ("7", "Premise here .", "Hypo here .")),
    "wnli": ([["index", "sentence1", "sentence2", "label"], ["0", "Premise here .", "Hypo here .", "1"]],
             ("Premise here .", "Hypo here .", "1"),
             [["index", "sentence1", "sentence2"], ["7", "Premise here .", "Hypo here ."]],
             ("7", "Premise here .", "Hypo here .")),
}


def test_task_table():
    assert list(GLUE_TASKS) == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    assert [t.folder for t in GLUE_TASKS.values()] == ["CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI",
                                                        "RTE", "WNLI"]
    assert GLUE_TASKS["mnli"].labels == ("entailment", "neutral", "contradiction")
    assert GLUE_TASKS["rte"].labels == GLUE_TASKS["qnli"].labels == ("entailment", "not_entailment")
    assert GLUE_TASKS["stsb"].labels is None and GLUE_TASKS["stsb"].num_labels == 1
    assert GLUE_TASKS["cola"].labelled.header is None and GLUE_TASKS["cola"].test.header == ("index", "sentence")
    assert glue_path("/g", "mnli", "test_mismatched") == "/g/MNLI/test_mismatched.tsv"
    assert glue_path("/g", "STS-B", "dev") == "/g/STS-B/dev.tsv" and get_task("SST-2").name == "sst2"
    with pytest.raises(ValueError, match="has no split 'dev'"):
        glue_path("/g", "mnli", "dev")


@pytest.mark.parametrize("task", list(LAYOUTS))
def test_official_layouts(tmp_path, task):
    train_rows, train_expected, test_rows, test_expected = LAYOUTS[task]
    examples, report = read_glue(write_tsv(tmp_path / "train.tsv", train_rows), task, "train")
    line = len(train_rows)
    assert examples == [GlueExample(str(line), *train_expected, line)] and report.lines == line
    test_path = write_tsv(tmp_path / "test.tsv", test_rows)
    examples, _ = read_glue(test_path, task, "test")
    assert examples == [GlueExample(*test_expected, None, 2)]
    if task != "cola":  # a test file has no label column: refused as a train/dev file
        with pytest.raises(DataError, match=r"test\.tsv:1: not a .* train/dev file: expected a header"):
            read_glue(test_path, task, "dev")


def test_tabs_only_no_quote_processing(tmp_path):
    path = write_tsv(tmp_path / "dev.tsv", [["sentence", "label"], ['"a quoted', "1"], ['start "x', "0"]])
    examples, _ = read_glue(path, "sst2", "dev")
    assert [e.text_a for e in examples] == ['"a quoted', 'start "x']


# ---- bad rows ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task, rows, line, message", [
    ("rte", [["index", "sentence1", "sentence2", "label"], ["0", "a", "b"]], 2,
     "expected 4 tab-separated columns, got 3"),
    ("rte", [["index", "sentence1", "sentence2", "label"], ["0", "a", "b", "neutral"]], 2,
     "unknown rte label 'neutral'"),
    ("rte", [["index", "sentence1", "sentence2", "label"], ["0", "a", " ", "entailment"]], 2, "empty second sentence"),
    ("cola", [["x", "1", "", "ok"], ["x", "1", "", "  "]], 2, "empty sentence"),
    ("cola", [["x", "1", "", "ok"], ["x", "2", "", "bad"]], 2, "unknown cola label '2'"),
    ("stsb", [STSB_HEAD + ["score"], STSB_ROW + ["high"]], 2, "stsb score 'high' is not a finite number"),
    ("stsb", [STSB_HEAD + ["score"], STSB_ROW + ["nan"]], 2, "stsb score 'nan' is not a finite number"),
])
def test_bad_rows(tmp_path, task, rows, line, message):
    path = write_tsv(tmp_path / "f.tsv", rows)
    with pytest.raises(DataError, match=f"f.tsv:{line}: {message}"):
        read_glue(path, task, "train")


def test_skip_bad_reports_each_line(tmp_path):
    rows = [["index", "sentence1", "sentence2", "label"], ["0", "a", "b", "entailment"], ["1", "a", "b"],
            ["2", "a", "b", "maybe"], ["3", "", "b", "entailment"], ["4", "c", "d", "not_entailment"]]
    path = write_tsv(tmp_path / "f.tsv", rows)
    examples, report = read_glue(path, "rte", "train", skip_bad=True)
    assert [(e.id, e.text_a, e.label) for e in examples] == [("2", "a", "entailment"), ("6", "c", "not_entailment")]
    assert (report.path, report.read, report.lines) == (path, 2, 6)
    assert report.skipped == [
        {"file": path, "line": 3, "reason": "expected 4 tab-separated columns, got 3"},
        {"file": path, "line": 4,
         "reason": "unknown rte label 'maybe'; expected one of ['entailment', 'not_entailment']"},
        {"file": path, "line": 5, "reason": "empty first sentence"}]
    only_bad = write_tsv(tmp_path / "g.tsv", rows[:1] + rows[2:3])
    with pytest.raises(DataError, match="g.tsv: no usable examples"):
        read_glue(only_bad, "rte", "train", skip_bad=True)


# ---- the original UNIMO TSV ------------------------------------------------------------------------------------

PAIRS = [("The cat sat on the mat .", "A cat is sitting .", "entailment"),
         ("Stocks fell sharply on Monday , traders said .", "Stocks rose .", "not_entailment"),
         ("He left .", "Somebody went away from the room before the storm started in town .", "entailment")]


def _tokenizer():
    return WordPieceTokenizer.build_char_vocab([t for p in PAIRS for t in p[:2]], words=True)


def test_unimo_tsv_reader(tmp_path):
    """The original's reader BPE-encodes its texts (``tokenizer.tokenize``): they are kept as written, spaces too."""
    path = write_tsv(tmp_path / "o.tsv", [["label", "text_a", "text_b", "qid"], ["1", "A cat .", " sat 9", "q1"],
                                          ["0", "10", "11 12", "q2"]])
    examples, report = read_unimo_tsv(path)
    assert examples == [GlueExample("q1", "A cat .", " sat 9", "1", 2), GlueExample("q2", "10", "11 12", "0", 3)]
    assert report.read == 2
    single = write_tsv(tmp_path / "s.tsv", [["text_a", "label"], ["5 6", "1"], [" ", "0"], ["x", "1", "2"]])
    with pytest.raises(DataError, match=r"s.tsv:3: empty text_a"):
        read_unimo_tsv(single)
    examples, report = read_unimo_tsv(single, skip_bad=True)
    assert examples == [GlueExample("2", "5 6", None, "1", 2)]
    assert [s["line"] for s in report.skipped] == [3, 4] and report.skipped[0]["reason"] == "empty text_a"
    assert read_glue_file(path, "rte", "train")[0] == read_unimo_tsv(path)[0]
    with pytest.raises(DataError, match="o.tsv:1: not a RTE train/dev file"):
        read_glue(path, "rte", "train")
    with pytest.raises(DataError, match="missing.tsv: file not found"):
        read_glue_file(tmp_path / "missing.tsv", "rte", "train")


@pytest.mark.parametrize("pair", [True, False])
def test_original_and_glue_formats_encode_alike(tmp_path, pair):
    tok = _tokenizer()
    if pair:
        task = "rte"
        glue_rows = [["index", "sentence1", "sentence2", "label"]] + [[str(i), a, b, y] for i, (a, b, y) in
                                                                       enumerate(PAIRS)]
        orig_rows = [["text_a", "text_b", "label"]] + [[a, b, str(label_id("rte", y))] for a, b, y in PAIRS]
    else:
        task = "sst2"
        glue_rows = [["sentence", "label"]] + [[a, str(i % 2)] for i, (a, _, _) in enumerate(PAIRS)]
        orig_rows = [["label", "text_a"]] + [[str(i % 2), a] for i, (a, _, _) in enumerate(PAIRS)]
    glue_examples, _ = read_glue_file(write_tsv(tmp_path / "glue.tsv", glue_rows), task, "train")
    orig_examples, _ = read_glue_file(write_tsv(tmp_path / "orig.tsv", orig_rows), task, "train")
    assert [(e.text_a, e.text_b) for e in glue_examples] == [(e.text_a, e.text_b) for e in orig_examples]
    for max_len in (64, 9):  # 9 truncates
        rows_g = [encode_example(e, task, tok, max_len) for e in glue_examples]
        rows_o = [encode_example(e, task, tok, max_len) for e in orig_examples]
        assert [(r.input_ids, r.token_type_ids, r.label) for r in rows_g] == \
               [(r.input_ids, r.token_type_ids, r.label) for r in rows_o]
        assert any(r.truncated for r in rows_g) == (max_len == 9)
        batch_g, batch_o = glue_batch(rows_g, tok.pad_token_id, 2), glue_batch(rows_o, tok.pad_token_id, 2)
        assert set(batch_g) == {"input_ids", "position_ids", "token_type_ids", "attention_mask", "labels"}
        for key in batch_g:
            np.testing.assert_array_equal(batch_g[key], batch_o[key], err_msg=key)


# ---- encoding ---------------------------------------------------------------------------------------------------

def original_truncate(tokens_a, tokens_b, max_length):
    """The original reader's ``_truncate_seq_pair`` loop, written out."""
    while True:
        total_length = len(tokens_a) + len(tokens_b)
        if total_length <= max_length:
            break
        if len(tokens_a) > len(tokens_b):
            tokens_a.pop()
        else:
            tokens_b.pop()


def test_truncation_longer_side_first():
    a, b = list(range(100, 110)), [200, 201, 202]
    ids, types = encode_pair(a, b, 10, 0, 1)  # room 7: a loses 6 tokens, b none
    assert ids == [0, 100, 101, 102, 103, 1, 200, 201, 202, 1] and types == [0] * 6 + [1] * 4
    assert a == list(range(100, 110))  # inputs untouched
    assert truncate_pair([1] * 5, [2] * 5, 8) == ([1] * 4, [2] * 4)  # a tie pops from b first
    assert truncate_pair([1, 2, 3], [4, 5, 6, 7], 3) == ([1, 2], [4])  # b, b (tie), a, b (tie)
    assert encode_pair([5, 6, 7, 8], None, 4, 0, 1) == ([0, 5, 6, 1], [0, 0, 0, 0])
    rng = random.Random(0)
    for _ in range(300):
        a = [rng.randrange(10, 99) for _ in range(rng.randrange(1, 30))]
        b = [rng.randrange(10, 99) for _ in range(rng.randrange(1, 30))]
        max_len = rng.randrange(3, 50)
        ref_a, ref_b = list(a), list(b)
        original_truncate(ref_a, ref_b, max_len - 3)
        assert encode_pair(a, b, max_len, 0, 1)[0] == [0] + ref_a + [1] + ref_b + [1]
        assert encode_pair(a, None, max_len, 0, 1)[0] == [0] + a[:max_len - 2] + [1]
    with pytest.raises(ValueError, match="no room"):
        encode_pair([1], [2], 2, 0, 1)


def test_batch_positions_types_mask():
    tok = _tokenizer()
    w = [tok.encode(word)[0] for word in ("cat", "sat", "on", "mat", "He")]
    rows = [encode_example(GlueExample("a", "cat sat on", "mat", "1"), "mrpc", tok, 16),
            encode_example(GlueExample("b", "He", None, "0"), "mrpc", tok, 16)]
    batch = glue_batch(rows, tok.pad_token_id, 2)
    c, s, p = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    assert len(set(w)) == 5 and not {c, s, p} & set(w)
    np.testing.assert_array_equal(batch["input_ids"], [[c, *w[:3], s, w[3], s], [c, w[4], s, p, p, p, p]])
    np.testing.assert_array_equal(batch["position_ids"], [[2, 3, 4, 5, 6, 7, 8], [2, 3, 4, 0, 0, 0, 0]])
    np.testing.assert_array_equal(batch["token_type_ids"], [[0, 0, 0, 0, 0, 1, 1], [0] * 7])
    valid = batch["input_ids"] != p
    assert batch["attention_mask"].dtype == bool and batch["attention_mask"].shape == (2, 7, 7)
    np.testing.assert_array_equal(batch["attention_mask"], np.broadcast_to(valid[:, None, :], (2, 7, 7)))
    assert batch["labels"].dtype == np.int64 and batch["labels"].tolist() == [1, 0]
    assert all(batch[k].dtype == np.int64 for k in ("input_ids", "position_ids", "token_type_ids"))
    sts = [encode_example(GlueExample("a", "cat", "mat", 3.5), "stsb", tok, 8)]
    assert glue_batch(sts, p, 0)["labels"].dtype == np.float32
    assert "labels" not in glue_batch([encode_example(GlueExample("7", "cat", None, None), "sst2", tok, 8)], p, 0)


# ---- submissions ------------------------------------------------------------------------------------------------

SUBMISSIONS = {
    "cola": ("test", "CoLA.tsv", [1, 0, "1"], "0\t1\n1\t0\n2\t1\n"),
    "sst2": ("test", "SST-2.tsv", [0, 1, 1], "0\t0\n1\t1\n2\t1\n"),
    "mrpc": ("test", "MRPC.tsv", [1, 1, 0], "0\t1\n1\t1\n2\t0\n"),
    "stsb": ("test", "STS-B.tsv", [-0.2, 2.34567, 5.5], "0\t0.000\n1\t2.346\n2\t5.000\n"),
    "qqp": ("test", "QQP.tsv", [0, 0, 1], "0\t0\n1\t0\n2\t1\n"),
    "mnli": ("test_matched", "MNLI-m.tsv", [0, 1, "contradiction"], "0\tentailment\n1\tneutral\n2\tcontradiction\n"),
    "qnli": ("test", "QNLI.tsv", [1, 0, 0], "0\tnot_entailment\n1\tentailment\n2\tentailment\n"),
    "rte": ("test", "RTE.tsv", [0, 1, "entailment"], "0\tentailment\n1\tnot_entailment\n2\tentailment\n"),
    "wnli": ("test", "WNLI.tsv", [1, 1, 1], "0\t1\n1\t1\n2\t1\n"),
}


@pytest.mark.parametrize("task", list(SUBMISSIONS))
def test_submission_files(tmp_path, task):
    split, name, predictions, body = SUBMISSIONS[task]
    path = write_submission(tmp_path / "out", task, ["0", "1", "2"], predictions, split)
    assert path == str(tmp_path / "out" / name)
    assert (tmp_path / "out" / name).read_bytes() == ("index\tprediction\n" + body).encode()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [name]  # no temporary file left


def test_submission_mnli_mismatched_and_errors(tmp_path):
    path = write_submission(tmp_path, "mnli", [10, 11], np.array([2, 1]), "test_mismatched")
    assert open(path, "rb").read() == b"index\tprediction\n10\tcontradiction\n11\tneutral\n"
    assert path.endswith("MNLI-mm.tsv")
    with pytest.raises(ValueError, match="not 'test'"):
        write_submission(tmp_path, "mnli", [0], [0], "test")
    with pytest.raises(ValueError, match="as many predictions as ids"):
        write_submission(tmp_path, "rte", [0, 1], [0])
    with pytest.raises(ValueError, match="not a class index"):
        write_submission(tmp_path, "rte", [0], [2])
    with pytest.raises(ValueError, match="unknown rte label"):
        write_submission(tmp_path, "rte", [0], ["neutral"])
    with pytest.raises(ValueError, match="finite"):
        write_submission(tmp_path, "stsb", [0], [float("nan")])


# ---- metrics ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("task", list(GLUE_TASKS))
def test_metrics_match_sklearn_and_scipy(task, seed):
    rng = np.random.default_rng(seed)
    spec = GLUE_TASKS[task]
    n = 57
    if spec.is_regression:
        gold = rng.uniform(0, 5, n)
        pred = gold + rng.normal(0, 1.5, n)
        got = glue_metrics(task, pred, gold)
        assert got == pytest.approx({"pearson": 100 * pearsonr(pred, gold)[0],
                                     "spearman": 100 * spearmanr(pred, gold)[0]}, rel=1e-12)
        return
    gold, pred = rng.integers(0, spec.num_labels, n), rng.integers(0, spec.num_labels, n)
    expected = {"accuracy": 100 * accuracy_score(gold, pred)}
    if task in ("mrpc", "qqp"):
        expected["f1"] = 100 * f1_score(gold, pred)
    if task == "cola":
        expected["mcc"] = 100 * matthews_corrcoef(gold, pred)
    assert glue_metrics(task, pred, gold) == pytest.approx(expected, rel=1e-12)
    names = [spec.labels[i] for i in pred]  # label names score the same as indices
    assert glue_metrics(task, names, [spec.labels[i] for i in gold]) == pytest.approx(expected, rel=1e-12)
    assert main_metric(task) in expected


def test_mcc_by_hand_and_main_metric():
    # TP 2 (rows 0, 1), TN 1 (row 3), FN 1 (row 2), FP 1 (row 4): (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    got = glue_metrics("cola", [1, 1, 0, 0, 1], [1, 1, 1, 0, 0])
    assert got == pytest.approx({"accuracy": 60.0, "mcc": 100 / 6})
    assert glue_metrics("mrpc", ["1", "1", "0", "0", "1"], ["1", "1", "1", "0", "0"]) == \
        pytest.approx({"accuracy": 60.0, "f1": 200 / 3})  # precision = recall = 2/3
    assert {t: main_metric(t) for t in GLUE_TASKS} == {
        "cola": "mcc", "sst2": "accuracy", "mrpc": "f1", "stsb": "pearson", "qqp": "f1", "mnli": "accuracy",
        "qnli": "accuracy", "rte": "accuracy", "wnli": "accuracy"}


def test_metrics_refuse_bad_input():
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        glue_metrics("sst2", [0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="at least one"):
        glue_metrics("mnli", [], [])
    with pytest.raises(ValueError, match="not a class index"):
        glue_metrics("rte", [2], [0])
    with pytest.raises(ValueError, match="unknown mnli label"):
        glue_metrics("mnli", ["maybe"], ["neutral"])
    with pytest.raises(ValueError, match="finite"):
        glue_metrics("stsb", [1.0, float("nan")], [1.0, 2.0])


def test_original_tsv_with_the_english_tokenizer_encodes_as_the_original_reader(tmp_path):
    """The original TSV holds text, which its reader encodes as ``convert_tokens_to_ids(tokenize(text))``: GPT-2 BPE
    ids as strings, then their lines in unimo_en.vocab.txt. The same sentences from the GLUE TSV encode alike."""
    from paddle_unimo import GptBpeTokenizer
    tok = GptBpeTokenizer.from_dir(str(shared_path("unimo_en")), prefix="unimo_en.")
    sentences = ["it 's a charming and often affecting journey . ", "unflinchingly bleak and desperate "]
    (tmp_path / "orig.tsv").write_text("text_a\tlabel\n" + "".join(f"{s}\t1\n" for s in sentences), "utf-8")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t1\n" for s in sentences), "utf-8")
    original, _ = read_glue_file(tmp_path / "orig.tsv", "sst2", "dev")
    glue, _ = read_glue_file(tmp_path / "dev.tsv", "sst2", "dev")
    assert [e.text_a for e in original] == sentences  # as written: the trailing space is a token of its own
    for sentence, a, b in zip(sentences, original, glue):
        gpt2 = tok.tokenize(sentence)
        assert all(t.isdigit() for t in gpt2)
        ours, theirs = encode_example(a, "sst2", tok, 64), encode_example(b, "sst2", tok, 64)
        assert ours.input_ids == theirs.input_ids == [tok.cls_token_id, *(tok.vocab[t] for t in gpt2), tok.sep_token_id]
        assert ours.input_ids[1:-1] != [int(t) for t in gpt2]  # the model ids are not the GPT-2 ids


def test_the_diagnostic_set_is_an_mnli_test_split_with_its_own_layout(tmp_path):
    """GLUE's diagnostic/diagnostic.tsv (index, sentence1, sentence2), predicted by the MNLI model: AX.tsv."""
    from tasks.glue import GlueTask as CliTask
    path = tmp_path / "diagnostic.tsv"
    path.write_text("index\tsentence1\tsentence2\n0\tThe cat sat.\tA cat sat.\n1\tNo one came.\tSomeone came.\n",
                    "utf-8")
    examples, report = read_glue(path, "mnli", "test_ax")
    assert [(e.id, e.text_a, e.text_b, e.label) for e in examples] == [
        ("0", "The cat sat.", "A cat sat.", None), ("1", "No one came.", "Someone came.", None)]
    assert report.header == 1
    with pytest.raises(DataError, match="not a MNLI test file"):
        read_glue(path, "mnli", "test_matched")  # the test files' many columns
    assert CliTask("mnli").split_of(str(path), "dev") == "test_ax"
    written = write_submission(tmp_path / "out", "mnli", ["0", "1"], ["entailment", "contradiction"], "test_ax")
    assert written.endswith("AX.tsv")
    assert open(written).read() == "index\tprediction\n0\tentailment\n1\tcontradiction\n"


def test_a_file_to_predict_for_is_read_as_a_test_file_only_when_its_layout_says_so(tmp_path):
    """A labelled file with a bad line stays a labelled file (its error, not a silent test read); MNLI's two test
    files share one layout, so a renamed one must say which it is (its submission file depends on it)."""
    from types import SimpleNamespace
    from tasks.glue import GlueTask as CliTask
    cfg = SimpleNamespace(data=SimpleNamespace(skip_bad=False))
    rte = tmp_path / "my_dev.tsv"
    rte.write_text("index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tentailment\n1\tC.\tD.\tnot_entailmnet\n", "utf-8")
    with pytest.raises(DataError, match=r"my_dev.tsv:3: .*not_entailmnet"):
        CliTask("rte").read(str(rte), cfg, need_target=False)
    renamed = tmp_path / "mm.tsv"
    renamed.write_text("\t".join(MNLI_HEAD) + "\n" + "\t".join(MNLI_ROW) + "\n", "utf-8")
    with pytest.raises(DataError, match=r"mm.tsv: the layout of MNLI's test files test_matched.tsv, "
                                        r"test_mismatched.tsv; its submission depends on which: name it so"):
        CliTask("mnli").read(str(renamed), cfg, need_target=False)
    named = tmp_path / "test_mismatched.tsv"
    named.write_bytes(renamed.read_bytes())
    items, _ = CliTask("mnli").read(str(named), cfg, need_target=False)
    assert [(i.id, i.split) for i in items] == [("7", "test_mismatched")]
