"""English generation benchmarks: readers on the real samples, the original UNIMO seq2seq encoding
(``seq2seq_reader.py`` of PaddlePaddle/Research NLP/UNIMO) and the metrics (rouge-score, CoQA
evaluate-v1.0.py, UniLM's SQuAD-QG evaluation)."""
import json
import pathlib

import numpy as np
import pytest
from conftest import shared_path
from rouge_score import rouge_scorer

from paddle_unimo.data import english_seq2seq as E
from paddle_unimo.fileio import DataError
from paddle_unimo.masks import may_attend, ranks
from paddle_unimo.metrics import english as M

CLS, PAD, SEP, UNK, MASK = 0, 1, 2, 3, 9
ROOT = pathlib.Path(__file__).resolve().parent.parent


class DigitTokenizer:
    """Text "5 6 7" -> ids [5, 6, 7]; GPT-2 id g maps to model id g + 100 (for pre-tokenized examples)."""
    family = "gpt2_bpe"  # its vocabulary maps GPT-2 id strings, as the English tokenizer's
    cls_token_id, pad_token_id, sep_token_id, unk_token_id, mask_token_id = CLS, PAD, SEP, UNK, MASK
    vocab = {str(g): g + 100 for g in range(50)}

    def encode(self, text):
        return [int(w) for w in text.split()]


@pytest.fixture(scope="module")
def gpt2():
    from paddle_unimo.tokenization import GptBpeTokenizer
    return GptBpeTokenizer.from_dir(str(shared_path("unimo_en")), prefix="unimo_en.")


# ---- readers on the real samples ---------------------------------------------------------------------

def test_squad_qg_line_aligned():
    src, tgt = E.line_aligned_paths(shared_path("squad_qg"), "dev")
    assert src.endswith("src-dev.txt") and tgt.endswith("tgt-dev.txt")
    examples, report = E.read_line_aligned(src, tgt)
    assert len(examples) == report.read == report.lines == 300 and not report.skipped
    first, last = examples[0], examples[-1]
    assert first.source.startswith("the american football conference -lrb- afc -rrb- champion denver broncos")
    assert first.source.endswith("to earn their third super bowl title .")  # the trailing space is stripped
    assert first.target == "which nfl team represented the afc at super bowl 50 ?"
    assert (first.id, first.line, first.segments) == ("1", 1, [first.source])
    assert last.source == ("pro bowl linebacker von miller led the team with 11 sacks , forced four fumbles , "
                           "and recovered three .")
    assert last.target == "how many interceptions did aqib talib have for the regular season ?"


def test_line_aligned_mismatch_and_blank_lines(tmp_path):
    (tmp_path / "train.src").write_text("a b\nc d\ne f\n")
    (tmp_path / "train.tgt").write_text("x\ny\n\n\n")
    with pytest.raises(DataError, match=r"train\.src has 3 lines but .*train\.tgt has 2 \(up to its last non-blank "
                                        r"line\): the files are not line-aligned; .*train\.tgt:3 is missing or blank"):
        E.read_line_aligned(*E.line_aligned_paths(tmp_path, "train"))
    (tmp_path / "train.tgt").write_text("x\n\nz\n")
    with pytest.raises(DataError, match=r"train\.src:2: empty target line \(.*train\.tgt:2\)$"):
        E.read_line_aligned(tmp_path / "train.src", tmp_path / "train.tgt")
    examples, report = E.read_line_aligned(tmp_path / "train.src", tmp_path / "train.tgt", skip_bad=True)
    assert [e.target for e in examples] == ["x", "z"] and report.skipped[0]["line"] == 2
    with pytest.raises(DataError, match=r"tried test\.src, test\.source, src-test\.txt.*; the folder has the split "
                                        r"train: -o data\.dev=<split>"):
        E.line_aligned_paths(tmp_path, "test")
    with pytest.raises(DataError, match=r"train\.tgt: the target side of a line-aligned pair: give its source file "
                                        r"train\.src"):
        E.pair_of_source_file(tmp_path / "train.tgt")
    (tmp_path / "train.tgt").unlink()
    with pytest.raises(DataError, match=r"train\.src: no target file \(.*train\.tgt not found\)"):
        E.read_line_aligned(*E.pair_of_source_file(tmp_path / "train.src"))


def test_xsum_json_lines():
    examples, report = E.read_jsonl_pairs(shared_path("xsum", "sample.json"), "document", "summary")
    assert len(examples) == report.read == 10 and examples[-1].id == "10"
    assert examples[0].target == "The Met Office has issued a yellow weather warning for ice across most of Wales."
    assert examples[0].source.startswith("The warning begins at 22:00 GMT on Saturday")
    assert examples[0].segments == [examples[0].source]
    assert examples[-1].target == ("It's been topsy-turvy for the England side but eventful and entertaining "
                                   "nonetheless.")


def test_cnn_dm_stories_in_url_list_order():
    stories, lists = shared_path("cnn_dm", "cnn_stories"), shared_path("cnn_dm", "url_lists")
    examples, report = E.read_cnn_dm(stories, lists, "train")
    assert len(examples) == report.lines == 10
    first = examples[0]
    assert first.id == "ee8871b15c50d0db17b0179a6d2beab35065f1e9" == E.hashhex(
        "http://web.archive.org/web/20070716092219id_/http://us.cnn.com:80/2007/US/07/13/"
        "btsc.obrien.criminallyinsane/index.html")
    assert first.source.startswith("Editor's note: In our Behind the Scenes series, CNN correspondents")
    # fix_missing_period: '"' ends a sentence, so only the last highlight gets " ."
    assert first.target_sentences == [
        'Mentally ill inmates in Miami are housed on the "forgotten floor"',
        'Judge Steven Leifman says most are there as a result of "avoidable felonies"',
        'While CNN tours facility, patient shouts: "I am the son of the president"',
        "Leifman says the system is unjust and he's fighting for change ."]
    assert first.target == " ".join(first.target_sentences)
    assert examples[-1].id == "0d43b97000ff852282c89d8d105e41495c0ee9bd"
    assert examples[-1].target.endswith("Seven bore holes drilled into the mountain have found no signs of life .")
    assert "@highlight" not in first.source and "Leifman says the system" not in first.source
    tagged, _ = E.read_cnn_dm(stories, lists, "train", lower=True, sentence_tags=True)
    assert tagged[0].target.startswith('<s> mentally ill inmates in miami are housed on the "forgotten floor" </s> '
                                       "<s> judge steven leifman")


def test_cnn_dm_missing_story(tmp_path):
    (tmp_path / "all_val.txt").write_text("http://example.com/a\n")
    with pytest.raises(DataError, match=r"all_val.txt:1: story [0-9a-f]{40}\.story of http://example.com/a"):
        E.read_cnn_dm(tmp_path, tmp_path, "val")


def test_coqa_history_on_the_real_story():
    examples, report = E.read_coqa(shared_path("coqa", "coqa-dev-v1.0.dummy.json"))
    assert len(examples) == report.read == 12 and report.lines == 1
    turn5 = examples[4]
    assert turn5.id.endswith("_5") and turn5.dialog
    assert turn5.segments == ["What color was Cotton?", "white", "Where did she live?", "in a barn",
                              "Did she live alone?", "no", "Who did she live with?", "with her mommy and 5 sisters",
                              "What color were her sisters?"]
    assert turn5.source == " [SEP] ".join(turn5.segments) and turn5.target == "orange and white"
    assert turn5.knowledge.startswith("Once upon a time, in a barn near a farm house")
    assert turn5.role_ids == [1, 0] * 4 + [1] and turn5.turn_ids == list(range(9, 0, -1))
    assert examples[0].segments == ["What color was Cotton?"] and examples[0].references == ["white"] * 4
    assert examples[1].references == ["in a barn", "in a barn", "in a barn", "in a barn near"]
    assert examples[-1].target == "no"


def test_coqa_fifteen_turn_cutoff(tmp_path):
    questions = [{"input_text": f"q{i}", "turn_id": i} for i in range(1, 21)]
    answers = [{"input_text": f"a{i}", "turn_id": i} for i in range(1, 21)]
    data = {"version": "1.0", "data": [{"id": "s", "source": "x", "story": "A story.", "questions": questions,
                                         "answers": answers}]}
    (tmp_path / "coqa.json").write_text(json.dumps(data))
    examples, _ = E.read_coqa(tmp_path / "coqa.json")
    last = examples[-1]
    assert len(last.segments) == 15 and last.segments[0] == "q13" and last.segments[-1] == "q20"
    assert last.segments[1] == "a13" and last.turn_ids == list(range(15, 0, -1))
    assert last.role_ids[::2] == [1] * 8 and last.role_ids[1::2] == [0] * 7
    assert examples[7].segments[0] == "q1" and len(examples[7].segments) == 15  # q8: 7 pairs + q8 = 15 turns
    assert examples[8].segments[:2] == ["q2", "a2"]  # q9: 17 turns, q1 and a1 dropped
    # a dialog of 20 turns built in code is cut to 15 by the encoder too
    enc = E.OriginalSeq2SeqEncoder(DigitTokenizer(), max_src_len=8, max_tgt_len=4)
    long = E.EnglishExample("x", "", "1", segments=[str(i) for i in range(1, 21)], dialog=True)
    out = enc.encode(long)
    assert enc.truncated["turns"] == 1 and out.source_ids[1:3] == [6, SEP] and out.turn_ids[0] == 15


def test_unilm_squad_qg_lines_give_paragraph_and_answer_segments(tmp_path, gpt2):
    """UniLM's SQuAD-QG files (``X.pa.tok.txt`` / ``X.q.tok.txt``, a source line ``paragraph [SEP] answer``) read
    with the squad_qg configs' ``data.source_separator``: two segments, encoded ``[CLS] paragraph [SEP] answer
    [SEP]`` with the [SEP] token (not the BPE of its characters) and positions restarting; the real SQuAD sample's
    answered items; an empty answer is an error at its line (skipped with skip_bad); JSON lines alike."""
    from tasks.english_generation import read_any
    from tasks.cli import load_config
    from tasks.registry import get_task
    items = [i for i in json.loads(shared_path("squad", "sample.json").read_text("utf-8"))["data"]
             if i["answers"]["text"]]
    assert len(items) == 8
    pairs = [(f"{i['context']} [SEP] {i['answers']['text'][0]}", i["question"]) for i in items]
    (tmp_path / "dev.pa.tok.txt").write_text("".join(s + "\n" for s, _ in pairs), "utf-8")
    (tmp_path / "dev.q.tok.txt").write_text("".join(q + "\n" for _, q in pairs), "utf-8")
    task = get_task("squad_qg")
    cfg = load_config(str(ROOT / "tasks" / "configs" / "squad_qg_tiny.yaml"), [], task.config_class)
    assert cfg.data.source_separator == " [SEP] "
    for path in (tmp_path / "dev", tmp_path / "dev.pa.tok.txt"):  # the split, or its source file
        examples, report = read_any(str(path), cfg, need_target=True, dialog=False)
        assert report.read == 8 and [e.target for e in examples] == [i["question"] for i in items]
        assert [e.segments for e in examples] == [[i["context"].strip(), i["answers"]["text"][0]] for i in items]
    enc = E.OriginalSeq2SeqEncoder(gpt2, max_src_len=512, max_tgt_len=64, position_start=2)
    out = enc.encode(examples[0])
    context, answer = (gpt2.encode(t) for t in examples[0].segments)
    assert out.source_ids == [gpt2.cls_token_id, *context, gpt2.sep_token_id, *answer, gpt2.sep_token_id]
    assert out.source_positions == [2, *range(3, len(context) + 4), *range(3, len(answer) + 4)]
    whole, _ = E.read_line_aligned(tmp_path / "dev.pa.tok.txt", tmp_path / "dev.q.tok.txt")  # no separator
    assert E.OriginalSeq2SeqEncoder(gpt2, 512, 64).encode(whole[0]).source_ids.count(gpt2.sep_token_id) == 1

    (tmp_path / "bad.pa.tok.txt").write_text(f"{pairs[0][0]}\na paragraph [SEP]  [SEP] x\nno answer [SEP] \n",
                                             "utf-8")
    (tmp_path / "bad.q.tok.txt").write_text("q1\nq2\nq3\n", "utf-8")
    with pytest.raises(DataError, match=r"bad\.pa\.tok\.txt:2: an empty segment around ' \[SEP\] '"):
        read_any(str(tmp_path / "bad"), cfg, need_target=True, dialog=False)
    examples, report = E.read_line_aligned(tmp_path / "bad.pa.tok.txt", tmp_path / "bad.q.tok.txt", skip_bad=True,
                                           separator=" [SEP] ")
    assert len(examples) == 1 and [s["line"] for s in report.skipped] == [2, 3]
    (tmp_path / "plain.txt").write_text("\n".join(s for s, _ in pairs) + "\n", "utf-8")  # text lines, named otherwise
    with pytest.raises(DataError, match=r"plain\.txt:1: not a JSON line \(\{\"src\": \.\.\., \"tgt\": \.\.\.\}\); "
                                        r"a file of one text a line is read by its name.*test\.src"):
        read_any(str(tmp_path / "plain.txt"), cfg, need_target=False, dialog=False)
    (tmp_path / "qg.jsonl").write_text("".join(json.dumps({"src": s, "tgt": q}) + "\n" for s, q in pairs), "utf-8")
    examples, _ = E.read_jsonl_pairs(tmp_path / "qg.jsonl", separator=" [SEP] ")
    assert examples[3].segments == [items[3]["context"].strip(), items[3]["answers"]["text"][0]]


# ---- the original encoding ----------------------------------------------------------------------------

def test_positions_restart_per_segment_and_for_the_target():
    enc = E.OriginalSeq2SeqEncoder(DigitTokenizer(), max_src_len=10, max_tgt_len=5, position_start=2)
    out = enc.encode(E.EnglishExample("1", "10 11 12", "20 21", segments=["10 11 12", "13 14"]))
    assert out.source_ids == [CLS, 10, 11, 12, SEP, 13, 14, SEP]
    assert out.source_positions == [2, 3, 4, 5, 6, 3, 4, 5]
    assert out.target_ids == [CLS, 20, 21, MASK] and out.target_positions == [2, 3, 4, 5]
    assert enc.encode(E.EnglishExample("1", "10", None), with_target=False).target_ids == [CLS]


def test_truncated_target_has_no_end_token():
    enc = E.OriginalSeq2SeqEncoder(DigitTokenizer(), max_src_len=10, max_tgt_len=5)
    exact = enc.encode(E.EnglishExample("1", "10", "20 21 22"))  # 3 tokens + end = max_tgt_len - 1: kept
    assert exact.target_ids == [CLS, 20, 21, 22, MASK] and enc.truncated["target"] == 0
    cut = enc.encode(E.EnglishExample("2", "10", "20 21 22 23 24"))
    assert cut.target_ids == [CLS, 20, 21, 22, 23] and enc.truncated["target"] == 1
    batch = E.original_training_batch([cut], PAD)
    assert batch["labels"].tolist() == [20, 21, 22, 23]  # no eos label
    assert batch["masked_positions"].tolist() == [3, 4, 5, 6]


def test_fixed_source_budget_independent_of_the_target():
    enc = E.OriginalSeq2SeqEncoder(DigitTokenizer(), max_src_len=8, max_tgt_len=6)
    source = " ".join(str(i) for i in range(10, 30))
    short, long = (enc.encode(E.EnglishExample("1", source, t)) for t in ("5", "5 6 7 8 9"))
    assert short.source_ids == long.source_ids == [CLS, 10, 11, 12, 13, 14, 15, SEP]
    assert len(short.source_ids) == 8 and enc.truncated["source"] == 2
    assert short.source_positions == list(range(2, 10))


def test_training_and_decoding_batches():
    enc = E.OriginalSeq2SeqEncoder(DigitTokenizer(), max_src_len=10, max_tgt_len=6)
    items = enc.encode_all([E.EnglishExample("1", "10 11 12", "20 21"), E.EnglishExample("2", "13", "22")])
    batch = E.original_training_batch(items, PAD)
    assert batch["input_ids"].tolist() == [[CLS, 10, 11, 12, SEP, CLS, 20, 21, MASK],
                                           [CLS, 13, SEP, CLS, 22, MASK, PAD, PAD, PAD]]
    assert batch["token_type_ids"][1].tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert batch["position_ids"][0].tolist() == [2, 3, 4, 5, 6, 2, 3, 4, 5]
    assert batch["masked_positions"].tolist() == [5, 6, 7, 9 + 3, 9 + 4]
    assert batch["labels"].tolist() == [20, 21, MASK, 22, MASK]
    for b, (s, t) in enumerate([(5, 4), (3, 3)]):
        valid = np.zeros((1, 9), bool)
        valid[0, :s + t] = True
        rank = np.concatenate([ranks(s, t), np.zeros(9 - s - t, np.int64)])[None]
        np.testing.assert_array_equal(batch["attention_mask"][b], may_attend(valid, rank)[0])
    m = batch["attention_mask"][0]
    assert m[:5, :5].all() and not m[:5, 5:].any() and np.array_equal(m[5:9, 5:9], np.tril(np.ones((4, 4), bool)))
    dec = E.original_decoding_batch(items, PAD)
    assert dec["input_ids"].tolist() == [[CLS, 10, 11, 12, SEP, CLS], [PAD, PAD, CLS, 13, SEP, CLS]]
    assert dec["position_ids"][:, -1].tolist() == [2, 2] and dec["token_type_ids"][:, -1].tolist() == [1, 1]
    assert not dec["attention_mask"][1][:, :2].any() and dec["attention_mask"][1][-1, 2:].all()
    assert set(dec) == {"input_ids", "token_type_ids", "position_ids", "attention_mask"}


def test_dialog_roles_turns_and_knowledge():
    enc = E.OriginalSeq2SeqEncoder(DigitTokenizer(), max_src_len=10, max_tgt_len=6)
    ex = E.EnglishExample("s_2", "", "7", segments=["11", "12 13", "14"], knowledge="30 31", dialog=True)
    out = enc.encode(ex)
    assert out.source_ids == [CLS, 30, 31, SEP, 11, SEP, 12, 13, SEP, 14, SEP]
    assert out.source_positions == [2, 3, 4, 5, 3, 4, 3, 4, 5, 3, 4]
    assert out.role_ids == [1, 2, 2, 2, 1, 1, 0, 0, 0, 1, 1]
    assert out.turn_ids == [3, 0, 0, 0, 3, 3, 2, 2, 2, 1, 1]
    batch = E.original_training_batch([out], PAD)
    assert batch["role_ids"][0].tolist() == out.role_ids + [0, 0, 0]
    assert batch["turn_ids"][0].tolist() == out.turn_ids + [0, 0, 0]
    with pytest.raises(ValueError, match="mixes dialog"):
        E.original_training_batch([out, enc.encode(E.EnglishExample("1", "10", "5"))], PAD)


def test_original_tsv_ids_equal_plain_text(tmp_path, gpt2):
    pairs = [("The cat sat on the mat, quietly.", "A cat sat."),
             ("Harry Potter star Daniel Radcliffe gets a fortune as he turns 18 on Monday.", "Radcliffe turns 18.")]
    (tmp_path / "test.src").write_text("".join(s + "\n" for s, _ in pairs))
    (tmp_path / "test.tgt").write_text("".join(t + "\n" for _, t in pairs))
    ids = lambda text: " ".join(gpt2.tokenize(text))  # GPT-2 BPE ids, as the original TSV files hold them
    (tmp_path / "test.tsv").write_text("src\ttgt\n" + "".join(f"{ids(s)}\t{ids(t)}\n" for s, t in pairs))
    text_examples, _ = E.read_line_aligned(*E.line_aligned_paths(tmp_path, "test"))
    tsv_examples, report = E.read_unimo_tsv(tmp_path / "test.tsv")
    assert report.read == 2 and report.header == 1 and [e.line for e in tsv_examples] == [2, 3]
    assert tsv_examples[0].pretokenized and tsv_examples[0].segments[0][:2] == [464, 3797]
    enc = E.OriginalSeq2SeqEncoder(gpt2, max_src_len=12, max_tgt_len=6)
    for build in (E.original_training_batch, E.original_decoding_batch):
        a, b = (build(enc.encode_all(x), gpt2.pad_token_id) for x in (text_examples, tsv_examples))
        assert set(a) == set(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert enc.truncated["source"] == 4  # the long source, cut in both forms and both batches


def test_tsv_columns_knowledge_dialog_and_errors(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("src\tknowledge\ttgt\n1 2 [SEP] 3 [SEP] 4 5\t7 8\t9\n")
    (ex,), _ = E.read_unimo_tsv(path, dialog=True)
    assert ex.segments == [[1, 2], [3], [4, 5]] and ex.knowledge == [7, 8] and ex.target_ids == [9]
    assert ex.role_ids == [1, 0, 1] and ex.turn_ids == [3, 2, 1]
    out = E.OriginalSeq2SeqEncoder(DigitTokenizer(), 10, 5).encode(ex)
    assert out.source_ids == [CLS, 107, 108, SEP, 101, 102, SEP, 103, SEP, 104, 105, SEP]
    assert out.target_ids == [CLS, 109, MASK]
    path.write_text("src\tsrc2\ttgt\n1 2\t3\t4\nx y\t3\t4\n1\t2\n")
    with pytest.raises(DataError, match=r"d.tsv:3: column 'src' is not space-separated token ids"):
        E.read_unimo_tsv(path)
    examples, report = E.read_unimo_tsv(path, skip_bad=True)
    assert examples[0].segments == [[1, 2], [3]] and [s["line"] for s in report.skipped] == [3, 4]
    plain, _ = E.read_unimo_tsv(path, pretokenized=False, skip_bad=True)
    assert plain[1].segments == ["x y", "3"]


# ---- metrics -------------------------------------------------------------------------------------------

def test_rouge_equals_rouge_score():
    preds = ["the cats were sitting on the mat today", "police arrested two men on monday ."]
    refs = ["a cat sat on the mat", "two men were arrested by police"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    direct = [scorer.score(r, p) for p, r in zip(preds, refs)]
    ours = M.rouge_scores(preds, refs)
    for key in ("rouge1", "rouge2", "rougeL"):
        assert ours[key] == pytest.approx(100 * np.mean([d[key].fmeasure for d in direct]))
    assert M.rouge_scores(["a b c"], ["a b c"]) == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    lsum = M.rouge_scores(["cat sat .\nthe dog ran ."], ["the dog ran .\ncat sat ."], lsum=True)
    assert lsum["rougeLsum"] == pytest.approx(100.0) and lsum["rougeL"] < 100.0


def test_coqa_normalisation_and_f1():
    assert M.normalize_answer("The  Cat, sat! An apple...") == "cat sat apple"
    assert M.normalize_answer("theater") == "theater"  # articles only as whole words
    assert M.answer_f1("White", "a white cat") == pytest.approx(2 / 3)  # P 1/2, R 1
    assert M.answer_exact("the White.", "white") == 1
    assert M.answer_f1("the", "") == 1.0 and M.answer_f1("cat", "the") == 0.0  # empty after normalizing
    assert M.coqa_f1_em(["a white cat"], ["white"]) == pytest.approx({"f1": 200 / 3, "em": 0.0})


def test_coqa_leave_one_out():
    # every gold left out in turn: the others always contain "white"
    assert M.coqa_turn_score(["white", "white", "orange"], "white") == {"f1": 1.0, "em": 1.0}
    # leaving out "white" leaves only "orange" (0); leaving out "orange" leaves "white" (1)
    assert M.coqa_turn_score(["white", "orange"], "white") == {"f1": 0.5, "em": 0.5}
    # "barn" against "in barn" (P 1, R 1/2: F1 2/3) and "in barn near" (P 1, R 1/3: F1 1/2); each is
    # scored only when the other is left out, so the turn's F1 is their mean
    turn = M.coqa_turn_score(["in a barn", "in a barn near"], "barn")
    assert turn["f1"] == pytest.approx((2 / 3 + 1 / 2) / 2) and turn["em"] == 0.0
    scores = M.coqa_f1_em(["white", "barn"], [["white", "orange"], ["in a barn", "in a barn near"]])
    assert scores["f1"] == pytest.approx(100 * (0.5 + turn["f1"]) / 2) and scores["em"] == pytest.approx(25.0)


def test_cnn_dm_rouge_lsum_is_rouge_scores_over_sentences():
    assert M.split_sentences(' He said "no." Then he left!  Why? (It rained.) end ') == \
        ['He said "no."', "Then he left!", "Why?", "(It rained.)", "end"]
    assert M.split_sentences("3.5 percent rose. e.g.x") == ["3.5 percent rose.", "e.g.x"]  # no space, no break
    preds = ["Police arrested two men. They were released on Monday!", "The cat sat on the mat."]
    highlights = [["Two men were released on Monday .", "Police had arrested them ."], ["A cat sat on a mat ."]]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    direct = [scorer.score("\n".join(h), p.replace(". ", ".\n").replace("! ", "!\n"))
              for p, h in zip(preds, highlights)]
    ours = M.summary_rouge_scores(preds, highlights)
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert ours[key] == pytest.approx(100 * np.mean([d[key].fmeasure for d in direct]))
    assert ours["rougeLsum"] > ours["rougeL"]  # the reordered sentences: the union LCS counts both
    assert {k: ours[k] for k in ("rouge1", "rouge2", "rougeL")} == pytest.approx(
        M.rouge_scores(preds, [" ".join(h) for h in highlights]))


def test_squad_qg_grouping():
    gts, res = M.squad_qg_groups(["Q one ?", "what is x ?", "who ?"], ["The S ", "the s", "other"],
                                 ["what is x ?", "what is the y ##s ?", "who is he ?"])
    assert gts == {"the s": ["what is x ?", "what is the ys ?"], "other": ["who is he ?"]}
    assert res == {"the s": ["what is x ?"], "other": ["who ?"]}  # the last prediction of a source counts


@pytest.mark.slow  # two METEOR Java runs: about 40 s on a 2-core machine
def test_squad_qg_scores_hand_example(monkeypatch):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge
    preds = ["which nfl team represented the afc at super bowl 50 ?", "where did super bowl 50 take place ?"]
    sources = ["the afc champion denver broncos defeated the nfc champion .", "the game was played in santa clara ."]
    refs = ["Which NFL team represented the AFC at Super Bowl 50 ?", "where was super bowl 50 played ?"]
    scores = M.squad_qg_scores(preds, sources, refs)
    gts, res = M.squad_qg_groups(preds, sources, refs)
    assert scores["bleu4"] == pytest.approx(100 * Bleu(4).compute_score(gts, res, verbose=0)[0][3])
    assert M.squad_qg_bleu4(preds, sources, refs) == scores["bleu4"]  # the checkpoint-choosing number
    assert scores["rougeL"] == pytest.approx(100 * Rouge().compute_score(gts, res)[0])
    assert 50 < scores["meteor"] < 100 and 0 < scores["bleu4"] < 100
    perfect = M.squad_qg_scores(refs, sources, refs)
    assert perfect["bleu4"] == pytest.approx(100.0) and perfect["rougeL"] == pytest.approx(100.0)
    assert perfect["meteor"] > 99.0
    monkeypatch.setattr(M.shutil, "which", lambda name: None)  # no Java: METEOR reported skipped, never filled in
    without = M.squad_qg_scores(preds, sources, refs)
    assert "meteor" not in without and "Java is not installed" in without["skipped"]["meteor"]
    assert {k: without[k] for k in ("bleu4", "rougeL")} == {k: scores[k] for k in ("bleu4", "rougeL")}
