"""Both tokenizers on the real texts in ../shared/data, against independent implementations."""
import json
import unicodedata

import pytest

from paddle_unimo import GptBpeTokenizer, WordPieceTokenizer, load_tokenizer
from paddle_unimo.fileio import DataError
from paddle_unimo.tokenization import read_vocab, write_vocab

from conftest import shared_path



def paddlenlp_transformers():
    """paddlenlp's tokenizers, the reference of the two tests that compare with it (skipped without it)."""
    return pytest.importorskip("paddlenlp.transformers")


def english_texts():
    squad = json.loads(shared_path("squad", "sample.json").read_text(encoding="utf-8"))["data"]
    texts = [item[k] for item in squad for k in ("question", "context")]
    for line in shared_path("xsum", "sample.json").read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        texts += [item["document"], item["summary"]]
    return texts


def chinese_texts():
    texts = []
    for line in shared_path("dureader_qg", "sample.jsonl").read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        texts += [item["context"], item["answer"], item["question"]]
    for line in shared_path("advertisegen", "dev_part1.jsonl").read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        texts += [item["content"], item["summary"]]
    for line in shared_path("lcsts", "val_part1.tsv").read_text(encoding="utf-8").splitlines():
        texts += line.split("\t")
    return texts


@pytest.fixture(scope="module")
def english():
    return GptBpeTokenizer.from_dir(str(shared_path("unimo_en")), prefix="unimo_en.")


def test_english_special_ids_and_known_roberta_ids(english):
    assert (english.cls_token_id, english.pad_token_id, english.sep_token_id, english.unk_token_id,
            english.mask_token_id) == (0, 1, 2, 3, 50264)
    assert english.vocab_size == 50265
    assert english.encode("Hello world") == [31414, 232]  # RoBERTa/fairseq ids of the same dictionary
    assert english.encode(" the.") == [5, 4]


def test_the_original_dict_folder_loads_as_gpt2_bpe(english):
    """``model_files/dict`` of the original release (``unimo_en.encoder.json`` ...) is a tokenizer folder, so
    ``-o model.vocab_dir=`` can name it."""
    loaded = load_tokenizer(str(shared_path("unimo_en")))
    assert isinstance(loaded, GptBpeTokenizer) and loaded.vocab == english.vocab
    text = "A man rides a horse on the beach."
    assert loaded.encode(text) == english.encode(text)


def test_english_matches_gpt2_bpe_reference_and_round_trips(english):
    ref = paddlenlp_transformers().GPTTokenizer(vocab_file=str(shared_path("unimo_en", "unimo_en.encoder.json")),
                                 merges_file=str(shared_path("unimo_en", "unimo_en.vocab.bpe")))
    texts = english_texts()
    assert len(texts) >= 40
    for text in texts:
        tokens = english.tokenize(text)
        assert tokens == [str(i) for i in ref.convert_tokens_to_ids(ref.tokenize(text))]
        ids = english.encode(text)
        assert all(0 <= i < 50265 for i in ids) and english.unk_token_id not in ids
        assert english.decode(ids) == text
        assert english.decode([english.cls_token_id] + ids + [english.mask_token_id]) == text


def test_a_roberta_folder_tokenizes_as_the_original_dictionary(english, tmp_path):
    """A PaddleNLP RoBERTa folder (``vocab.json`` + ``merges.txt``, written here by PaddleNLP's RobertaBPETokenizer from
    the original dictionary's pieces and ids) loads as GPT-2 BPE with the same ids as the original UNIMO files and
    as RobertaBPETokenizer, the same special ids, and saves as such a folder."""
    pnlp = paddlenlp_transformers()
    pieces = json.loads(shared_path("unimo_en", "unimo_en.encoder.json").read_text("utf-8"))
    specials = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 50264}
    vocab = {**{p: english.vocab[str(i)] for p, i in pieces.items() if str(i) in english.vocab}, **specials}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), "utf-8")
    merges = shared_path("unimo_en", "unimo_en.vocab.bpe")
    ref = pnlp.RobertaBPETokenizer(str(tmp_path / "vocab.json"), str(merges))
    folder = tmp_path / "roberta"
    ref.save_pretrained(str(folder))
    assert {"vocab.json", "merges.txt"} <= {p.name for p in folder.iterdir()}
    ours = load_tokenizer(str(folder))
    assert isinstance(ours, GptBpeTokenizer) and ours.vocab_size == 50265
    assert (ours.cls_token_id, ours.pad_token_id, ours.sep_token_id, ours.unk_token_id, ours.mask_token_id) == \
        (0, 1, 2, 3, 50264)
    texts = english_texts()
    for text in texts:
        ids = ours.encode(text)
        assert ids == english.encode(text) == ref.convert_tokens_to_ids(ref.tokenize(text))
        assert ours.decode([ours.cls_token_id] + ids + [ours.mask_token_id]) == text
    ours.save_pretrained(str(tmp_path / "saved"))
    again = load_tokenizer(str(tmp_path / "saved"))
    assert again.vocab == ours.vocab and again.encode(texts[0]) == ours.encode(texts[0])


@pytest.fixture(scope="module")
def chinese_vocab(tmp_path_factory):
    texts = chinese_texts()
    tokenizer = WordPieceTokenizer.build_char_vocab(texts)
    path = tmp_path_factory.mktemp("zh") / "vocab.txt"
    write_vocab(tokenizer.vocab, str(path))
    return texts, tokenizer, path


def test_chinese_wordpiece_equals_paddlenlp_unimo_tokenizer(chinese_vocab):
    texts, ours, path = chinese_vocab
    ref = paddlenlp_transformers().UNIMOTokenizer(str(path))
    assert len(texts) > 1500
    for text in texts:
        assert ours.tokenize(text) == ref.tokenize(text)
        assert ours.encode(text) == ref.convert_tokens_to_ids(ref.tokenize(text))


def test_chinese_decode_round_trip_on_normalised_text(chinese_vocab):
    texts, ours, _ = chinese_vocab
    for text in texts[:300]:
        ids = ours.encode(text)
        assert ours.unk_token_id not in ids
        # the basic tokenizer lower-cases, strips accents and drops spaces: compare normalised, spaceless text
        normalised = "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")
        assert ours.decode(ids).replace(" ", "") == "".join(normalised.split())


def test_fixture_vocab_and_folder_round_trip(tmp_path):
    tok = WordPieceTokenizer.from_vocab_file(str(shared_path("unimo_zh_fixture", "vocab.zh.unimo.txt")))
    assert (tok.unk_token_id, tok.sep_token_id, tok.pad_token_id, tok.cls_token_id, tok.mask_token_id) == \
        (0, 1, 2, 3, 4)
    assert (tok.bos_token_id, tok.eos_token_id) == (3, 4)
    assert tok.encode("欢迎使用百度飞桨深度学习框架") == [5, 6, 7, 8, 9, 10, 11, 12, 13, 10, 14, 15, 16, 17]
    assert tok.encode("欢迎x") == [5, 6, 0]
    tok.save_pretrained(str(tmp_path))
    again = load_tokenizer(str(tmp_path))
    assert isinstance(again, WordPieceTokenizer) and again.vocab == tok.vocab


def test_english_folder_round_trip(english, tmp_path):
    english.save_pretrained(str(tmp_path))
    again = load_tokenizer(str(tmp_path))
    assert isinstance(again, GptBpeTokenizer) and again.encode("A small test.") == english.encode("A small test.")


def test_bad_vocab_line_names_file_and_line(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[UNK]\t0\n[SEP]\tone\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab.txt:2"):
        WordPieceTokenizer.from_vocab_file(str(path))


def test_files_with_a_byte_order_mark_load(tmp_path):
    """Editors on Windows start UTF-8 files with a byte order mark; it is not part of the first token."""
    path = tmp_path / "vocab.txt"
    path.write_bytes("\ufeff[PAD]\t2\n[UNK]\t0\n\n[SEP]\t1\n[CLS]\t3\n[MASK]\t4\n中\t5\n".encode("utf-8"))
    (tmp_path / "tokenizer_config.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"do_lower_case": False}).encode())
    tok = load_tokenizer(str(tmp_path))
    assert tok.vocab == {"[PAD]": 2, "[UNK]": 0, "[SEP]": 1, "[CLS]": 3, "[MASK]": 4, "中": 5}
    assert tok.do_lower_case is False and tok.encode("中") == [5]
    path.write_bytes("\ufeff[UNK]\n\n[SEP]\n[PAD]\r\n".encode("utf-8"))
    assert read_vocab(str(path)) == {"[UNK]": 0, "[SEP]": 2, "[PAD]": 3}  # index = line number, blank lines count


def test_vocab_that_is_not_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"[UNK]\t0\n\xd6\xd0\t1\n")  # GBK
    with pytest.raises(DataError, match=rf"^{path}:2: not UTF-8"):
        WordPieceTokenizer.from_vocab_file(str(path))


def test_english_files_with_a_byte_order_mark_load(english, tmp_path):
    english.save_pretrained(str(tmp_path))
    for name in ("encoder.json", "vocab.bpe", "vocab.txt"):
        path = tmp_path / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    again = load_tokenizer(str(tmp_path))
    text = "A small test of byte-level BPE."
    assert again.encode(text) == english.encode(text) and again.bpe_ranks == english.bpe_ranks
