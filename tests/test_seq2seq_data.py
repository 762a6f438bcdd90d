"""Readers, encoding and collators of the generation tasks."""
import json
import logging

import numpy as np
import pytest

from paddle_unimo import WordPieceTokenizer
from paddle_unimo.data.seq2seq import (Example, Fields, Seq2SeqEncoder, decoding_batch, postprocess, prompted,
                                       read_examples, training_batch)
from paddle_unimo.fileio import DataError
from paddle_unimo.typed import ConfigError

QG = Fields(source="context", title="answer", target="question", id="id")
LCSTS = Fields(source="content", target="summary", id="id")


def write_lines(path, lines):
    path.write_bytes(b"".join(line if isinstance(line, bytes) else line.encode("utf-8") + b"\n" for line in lines))
    return str(path)


GOOD = json.dumps({"context": "青石镇人口3万", "answer": "3万", "question": "青石镇人口多少", "id": 7}, ensure_ascii=False)


@pytest.mark.parametrize("bad, message", [
    ('{"context": "a", "answer": "b", "question": ', "malformed JSON"),
    ('{"context": "a", "question": "q"}', "missing field 'answer'"),
    ('{"context": "a", "answer": "b", "question": "  "}', "empty target 'question'"),
    ('{"context": "a", "answer": "b", "question": 5}', "field 'question' must be a string"),
    ('[1, 2]', "expected a JSON object, got list (a JSON-lines file holds one JSON object per line"),
    ('{"context": "a', "malformed JSON (Unterminated string starting at column 13)"),
    ('[', "malformed JSON (Expecting value, column 2) (a JSON-lines file holds one JSON object per line, not one "
          "JSON document)"),
])
def test_bad_lines_name_file_and_line(tmp_path, bad, message):
    path = write_lines(tmp_path / "train.json", [GOOD, "", bad, GOOD])
    with pytest.raises(DataError) as err:
        read_examples(path, QG)
    assert str(err.value).startswith(f"{path}:3: ") and message in str(err.value)
    assert ("--skip-bad" in str(err.value)) != ("JSON document" in str(err.value))  # a document's lines: no skip
    examples, report = read_examples(path, QG, skip_bad=True)
    assert [(e.id, e.title, e.line) for e in examples] == [("7", "3万", 1), ("7", "3万", 4)]
    (skip,) = report.skipped
    assert (skip["file"], skip["line"]) == (path, 3) and message in skip["reason"]
    assert not skip["reason"].startswith(path)  # the place is in "file" and "line", not repeated in the reason
    assert (report.read, report.lines) == (2, 4)


def test_every_skipped_line_is_listed_with_its_reason(tmp_path, caplog):
    path = write_lines(tmp_path / "train.json", [
        '{"context": "a", "question": "q"}', GOOD, "not json", "", GOOD, '{"context": " ", "answer": "b", '
        '"question": "q"}', "  ", "\t"])
    with caplog.at_level(logging.WARNING):
        examples, report = read_examples(path, QG, skip_bad=True)
    assert [e.line for e in examples] == [2, 5]
    assert [(s["file"], s["line"]) for s in report.skipped] == [(path, 1), (path, 3), (path, 6)]
    assert [s["reason"].split(" (")[0] for s in report.skipped] == [
        "missing field 'answer'", "malformed JSON", "empty source 'context'"]
    assert report.lines == 6  # the last non-blank line; the whitespace-only lines 7-8 do not count
    assert f"{path}: skipped 3 bad lines (first: line 1: missing field 'answer'" in caplog.text


def test_bytes_not_utf8_stop_the_read_even_with_skip_bad(tmp_path):
    bad = '{"context": "\xe9"}'.encode("latin-1") + b"\n"
    path = write_lines(tmp_path / "train.json", [GOOD, bad, GOOD])
    for skip_bad in (False, True):
        with pytest.raises(DataError, match=rf"^{path}:2: not UTF-8"):
            read_examples(path, QG, skip_bad=skip_bad)


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    path = write_lines(tmp_path / "train.json", [b"\xef\xbb\xbf" + GOOD.encode("utf-8") + b"\r\n", GOOD])
    examples, report = read_examples(path, QG)
    assert [(e.id, e.source, e.target, e.title, e.line) for e in examples] == [
        ("7", "青石镇人口3万", "青石镇人口多少", "3万", 1), ("7", "青石镇人口3万", "青石镇人口多少", "3万", 2)]
    tsv = write_lines(tmp_path / "train.tsv", ["\ufeff标题一\t正文一", "标题二\t正文二"])
    examples, _ = read_examples(tsv, LCSTS)
    assert [(e.target, e.source, e.id, e.line) for e in examples] == [("标题一", "正文一", "1", 1),
                                                                      ("标题二", "正文二", "2", 2)]


def test_folder_missing_and_empty_files_name_the_file(tmp_path):
    with pytest.raises(DataError, match=rf"^{tmp_path}: is a folder"):
        read_examples(str(tmp_path), QG)
    with pytest.raises(DataError, match=rf"^{tmp_path}/nope.json: file not found"):
        read_examples(str(tmp_path / "nope.json"), QG)
    for name, lines in (("empty.json", []), ("blank.json", ["", "  ", "\r"])):
        path = write_lines(tmp_path / name, lines)
        with pytest.raises(DataError, match=rf"^{path}: empty file"):
            read_examples(path, QG, skip_bad=True)
    path = write_lines(tmp_path / "all_bad.json", ["{}", "[]"])
    with pytest.raises(DataError, match=rf"^{path}: no usable examples \(2 bad lines skipped\)"):
        read_examples(path, QG, skip_bad=True)


def test_prediction_input_needs_no_target_and_lcsts_tsv(tmp_path):
    path = write_lines(tmp_path / "test.json", ['{"context": "c", "answer": "a", "id": 1}'])
    (example,), _ = read_examples(path, QG, need_target=False)
    assert (example.target, example.line) == (None, 1)
    tsv = write_lines(tmp_path / "val.tsv", ["标题一\t正文一", "标题二\t正文二", "只有一列"])
    with pytest.raises(DataError, match=r"val.tsv:3: expected 'summary<TAB>content'"):
        read_examples(tsv, LCSTS)
    examples, report = read_examples(tsv, LCSTS, skip_bad=True)
    assert [(e.source, e.target) for e in examples] == [("正文一", "标题一"), ("正文二", "标题二")]
    assert report.skipped == [{"file": tsv, "line": 3, "reason": "expected 'summary<TAB>content', got 1 columns"}]
    examples, _ = read_examples(tsv, LCSTS, need_target=False)  # a test file: the content alone
    assert [(e.source, e.target, e.line) for e in examples] == [("正文一", "标题一", 1), ("正文二", "标题二", 2),
                                                                 ("只有一列", None, 3)]
    three = write_lines(tmp_path / "three.tsv", ["a\tb\tc"])
    with pytest.raises(DataError, match=r"three.tsv:1: expected 'summary<TAB>content' \(or the content alone, to "
                                        r"predict\), got 3 columns"):
        read_examples(three, LCSTS, need_target=False)
    assert Example("1", "s", "t").line == 0  # built in code, not read from a file
    headed = write_lines(tmp_path / "headed.tsv", ["summary\tcontent", "标题一\t正文一"])
    examples, report = read_examples(headed, LCSTS)  # the header row is no example
    assert [(e.source, e.target, e.line) for e in examples] == [("正文一", "标题一", 2)] and report.header == 1
    swapped = write_lines(tmp_path / "swapped.tsv", ["content\tsummary", "正文一\t标题一"])
    with pytest.raises(DataError, match=r"swapped.tsv:1: the header names content<TAB>summary; the columns are read "
                                        r"as summary<TAB>content: swap them"):
        read_examples(swapped, LCSTS)
    qg_tsv = write_lines(tmp_path / "qg.tsv", ["问题\t上下文"])
    with pytest.raises(DataError, match=r"qg.tsv:1: a .tsv file holds 'target<TAB>source' lines, which have no "
                                        r"'answer': this task reads JSON lines"):
        read_examples(qg_tsv, QG)


@pytest.fixture()
def tokenizer():
    return WordPieceTokenizer.build_char_vocab(["青石镇人口多少万", "abc"])


def test_encoding_matches_gen_encode_layout_and_counts_truncation(tokenizer, caplog):
    t = tokenizer
    enc = Seq2SeqEncoder(t, max_seq_len=12, max_target_len=5, max_title_len=3)
    e = Example("1", "青石镇人口多少万", "人口多少", title="青石镇")
    with caplog.at_level(logging.WARNING):
        (out,) = enc.encode_all([e], where="train.json")
    cls, sep, mask = t.cls_token_id, t.sep_token_id, t.mask_token_id
    assert out.target_ids == [cls] + t.encode("人口多")[:3] + [mask]  # max_target_len - 2 tokens
    assert out.source_ids == [cls] + t.encode("青石") + [sep] + t.encode("青石") + [sep]
    assert len(out.source_ids) + len(out.target_ids) == 12
    assert enc.truncated == {"source": 1, "title": 1, "target": 1}
    assert "train.json: truncated 1 sources, 1 titles, 1 targets" in caplog.text
    with pytest.raises(ValueError, match="no room"):
        Seq2SeqEncoder(t, max_seq_len=8, max_target_len=5, max_title_len=3)


def test_training_batch_labels_are_the_next_target_tokens(tokenizer):
    enc = Seq2SeqEncoder(tokenizer, 32, 10)
    items = enc.encode_all([Example("1", "青石镇", "人口"), Example("2", "多少万人口", "青石")])
    batch = training_batch(items, tokenizer.pad_token_id, position_start=0)
    flat = batch["input_ids"].reshape(-1)
    length = batch["input_ids"].shape[1]
    # every masked position predicts the token that follows it inside the target
    np.testing.assert_array_equal(flat[batch["masked_positions"] + 1], batch["labels"])
    assert list(batch["labels"][:3]) == tokenizer.encode("人口") + [tokenizer.mask_token_id]
    rows = batch["masked_positions"] // length
    assert list(np.bincount(rows)) == [3, 3]
    # a target position sees the source and the target before it, never after
    b, j = divmod(int(batch["masked_positions"][0]), length)
    assert batch["attention_mask"][b, j, :j + 1].all() and not batch["attention_mask"][b, j, j + 1:].any()


def test_decoding_batch_is_left_padded_and_ends_with_cls(tokenizer):
    enc = Seq2SeqEncoder(tokenizer, 32, 10)
    items = enc.encode_all([Example("1", "青石镇", None), Example("2", "多少万人口", None)], with_target=False)
    batch = decoding_batch(items, tokenizer.pad_token_id, 0)
    assert (batch["input_ids"][:, -1] == tokenizer.cls_token_id).all()
    assert batch["input_ids"][0, 0] == tokenizer.pad_token_id
    assert list(batch["position_ids"][0, -2:]) == [4, 0]  # [SEP] ends the source, [CLS] restarts at 0


def test_postprocess_stops_at_eos_and_drops_unk(tokenizer):
    t = tokenizer
    ids = t.encode("人口") + [t.unk_token_id] + t.encode("多少") + [t.mask_token_id] + t.encode("万")
    assert postprocess(t, ids) == "人口多少"


def test_advertisegen_content_must_be_attributes(tmp_path):
    """The consistency report reads AdvertiseGen's content as ``type#value`` pieces: another content is a bad
    line when the file is read (not a crash after training), and ``--skip-bad`` skips it."""
    from tasks.advertisegen import TASK
    path = tmp_path / "dev.json"
    path.write_text('{"content": "类型#裤*材质#牛仔布", "summary": "牛仔裤"}\n'
                    '{"content": "类型#裤*宽松", "summary": "这条裤子很宽松"}\n', "utf-8")
    with pytest.raises(DataError, match=r"dev.json:2: field 'content': attribute piece '宽松' .* not 'type#value'"):
        read_examples(str(path), TASK.fields)
    examples, report = read_examples(str(path), TASK.fields, skip_bad=True)
    assert [e.source for e in examples] == ["类型#裤*材质#牛仔布"] and [s["line"] for s in report.skipped] == [2]


def test_truncations_count_each_input_set_once(tokenizer, caplog):
    """metrics.json's ``truncated``: the training data, plus the inputs decoded last -- not one more dev set per
    evaluation -- and a set encoded again with the same cuts is not logged again."""
    enc = Seq2SeqEncoder(tokenizer, max_seq_len=12, max_target_len=5)
    long, short = Example("1", "青石镇人口多少万青石镇", "人口多少"), Example("2", "青石", "人口")
    with caplog.at_level(logging.WARNING):
        enc.encode_all([long, short, long], where="training data")
        for _ in range(3):  # three evaluations of the same dev subset
            enc.encode_all([long], with_target=False, where="decoding inputs")
        enc.encode_all([long, long, short], with_target=False, where="decoding inputs")  # the final dev set
    assert enc.counted() == {"source": 2 + 2, "title": 0, "target": 2}  # targets: the training data's
    assert enc.truncated["source"] == 2 + 3 + 2  # every encoding
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["training data", "decoding inputs",
                                                                     "decoding inputs"]


# PaddleNLP's question-generation application (applications/question_generation, gen_utils.convert_example): its
# --template 1 and 2 as the source texts and target prefixes it builds, and ours as config values.
PADDLENLP_TEMPLATES = {
    1: (lambda c, a, sep: "答案：" + a + sep + "上下文：" + c, "问题："),
    2: (lambda c, a, sep: "答案：" + a + sep + "上下文：" + c, "在已知答案的前提下，问题："),
    3: (lambda c, a, sep: "这是一个问题生成任务，根据提供的答案和上下文，来生成问题。" + a + sep + "上下文：" + c, "问题："),
}
OUR_TEMPLATES = {1: "答案：{title}[SEP]上下文：{source}", 2: "答案：{title}[SEP]上下文：{source}",
                 3: "这是一个问题生成任务，根据提供的答案和上下文，来生成问题。{title}[SEP]上下文：{source}"}


@pytest.mark.parametrize("template", sorted(PADDLENLP_TEMPLATES))
def test_prompts_encode_as_paddlenlp_question_generation_templates(tmp_path, template):
    """The ids of a source template and target prefix equal PaddleNLP's gen_encode of the texts its application
    builds, over the demo data (long contexts truncated), with a vocabulary built by ours from the prompted texts."""
    import os
    from tasks.generation import GenerationTask
    from tasks.dureader_qg import TASK
    paddlenlp = pytest.importorskip("paddlenlp.transformers")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    examples, _ = read_examples(os.path.join(root, "tasks", "demo_data", "dureader_qg", "dev.json"), TASK.fields)
    source_of, prefix = PADDLENLP_TEMPLATES[template]

    class Data:
        source_template, target_prefix = OUR_TEMPLATES[template], prefix
    ours = WordPieceTokenizer.build_char_vocab(GenerationTask.texts(examples, type("Cfg", (), {"data": Data})))
    ours.save_pretrained(str(tmp_path))
    ref = paddlenlp.UNIMOTokenizer(str(tmp_path / "vocab.txt"))
    enc = Seq2SeqEncoder(ours, max_seq_len=56, max_target_len=24, max_title_len=16,
                         source_template=OUR_TEMPLATES[template], target_prefix=prefix)
    for e in examples:
        text = source_of(e.source, e.title, ref.sep_token)
        for with_target in (True, False):
            got = enc.encode(e, with_target)
            expected = ref.gen_encode(text, target=prefix + e.target if with_target else None, max_seq_len=56,
                                      max_target_len=24, max_title_len=16,
                                      add_start_token_for_decoding=not with_target)["input_ids"]
            assert got.source_ids + got.target_ids == expected, e.id
    assert enc.truncated["source"] > 10  # some sources were cut, and cut as PaddleNLP cuts them
    assert ours.unk_token_id not in enc.encode(examples[0]).source_ids  # the prompt's characters are in the vocabulary
    assert enc.prefix_ids == ours.encode(prefix) and len(enc.prefix_ids) == len(prefix)


def test_a_prompt_folds_the_title_only_when_it_names_it(tokenizer):
    e = Example("1", "青石镇", "人口多少", title="三万")
    assert prompted(e) == ("青石镇", "三万", "人口多少")
    assert prompted(e, "{title}：{source}", "问") == ("三万：青石镇", None, "问人口多少")
    assert prompted(e, "上下文{source}{{x}}") == ("上下文青石镇{x}", "三万", "人口多少")
    assert prompted(Example("2", "镇", None), "{source}", "问")[2] is None  # decoding: no target


def test_a_target_prefix_is_taken_off_predictions_only_when_they_start_with_it(tokenizer):
    t = tokenizer
    prefix = t.encode("人口")
    assert postprocess(t, prefix + t.encode("多少") + [t.mask_token_id], prefix) == "多少"
    assert postprocess(t, t.encode("多少人口") + [t.mask_token_id], prefix) == "多少人口"  # not at the start: kept
    assert postprocess(t, prefix[:1] + t.encode("多少"), prefix) == "人多少"  # a part of it: kept
    assert postprocess(t, prefix + [t.mask_token_id], prefix) == ""  # nothing after it
    chars = WordPieceTokenizer.build_char_vocab(["青石镇人口", "q"]).vocab
    words = WordPieceTokenizer({**chars, "qq": len(chars)})  # "Q" + "QQ..." joined would be "qq", "##q"
    enc = Seq2SeqEncoder(words, max_seq_len=16, max_target_len=8, target_prefix="Q")
    target = enc.encode(Example("1", "青石镇", "QQ人口")).target_ids
    assert target[1:-1] == enc.prefix_ids + words.encode("QQ人口") and enc.prefix_ids == [words.vocab["q"]]
    assert postprocess(words, target[1:], enc.prefix_ids) == "qq人口"  # the prefix's own tokens come off


@pytest.mark.parametrize("override, key", [("data.max_target_len=5", "data.max_target_len 5"),
                                           ("decode.max_length=3", "decode.max_length 3")])
def test_a_target_prefix_that_leaves_no_room_is_refused(tokenizer, override, key):
    import os
    from tasks.cli import load_config
    from tasks.dureader_qg import TASK
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = load_config(os.path.join(root, "tasks", "configs", "dureader_qg_tiny.yaml"),
                      ["data.target_prefix=人口多", override], TASK.config_class)
    with pytest.raises(ConfigError, match=f"data.target_prefix: '人口多' is 3 tokens, which leave no room for the "
                                          f"target in {key}"):
        TASK.bind(None, tokenizer, cfg)


@pytest.mark.parametrize("override, message", [
    ("data.source_template=答案{answer}{source}", r"\{answer\}: a template names \{source\} and \{title\} only"),
    ("data.source_template=答案{source:>9}", r"\{source:>9\}: a template names"),
    ("data.source_template=答案{title}", "names no {source}"),
    ("data.source_template=答案{source", "expected '}'"),
])
def test_a_bad_source_template_names_the_key(override, message):
    import os
    from tasks.cli import load_config
    from tasks.dureader_qg import TASK
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with pytest.raises(ConfigError, match=message) as err:
        load_config(os.path.join(root, "tasks", "configs", "dureader_qg_tiny.yaml"), [override], TASK.config_class)
    assert "data.source_template" in str(err.value)


def test_a_title_in_the_template_of_a_task_without_one_is_refused():
    import os
    from paddle_unimo import UNIMOConfig
    from tasks.advertisegen import TASK
    from tasks.cli import load_config
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "tasks", "configs", "advertisegen_tiny.yaml")
    cfg = load_config(path, ["data.source_template=商品：{source}"], TASK.config_class)
    TASK.check(cfg, UNIMOConfig(), path)  # {source} alone is fine
    cfg = load_config(path, ["data.source_template='{title}{source}'"], TASK.config_class)
    with pytest.raises(ConfigError, match=r"names \{title\}, which advertisegen has none of"):
        TASK.check(cfg, UNIMOConfig(), path)
