"""tools/train_tokenizer.py: WordPiece and SentencePiece vocabularies trained on the real Chinese and English
texts of ../shared/data (LCSTS contents, XSum documents)."""
import gzip
import json
import os
import re
import unicodedata
from collections import Counter

import pytest

from paddle_unimo import WordPieceTokenizer, load_tokenizer
from paddle_unimo.fileio import DataError
from paddle_unimo.tokenization import SPECIAL_TOKENS, _is_cjk, basic_tokenize, read_vocab
from paddle_unimo.tokenization_training import Corpus, SentencePieceTokenizer, wordpiece_vocab

from conftest import shared_path

from tools import train_tokenizer

VOCAB_SIZE = 8000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """LCSTS content column (Chinese) and XSum documents, one paragraph a line (English): ~600 lines."""
    lines = [row.split("\t")[1] for row in
             shared_path("lcsts", "val_part1.tsv").read_text(encoding="utf-8").splitlines()]
    english = []
    for row in shared_path("xsum", "sample.json").read_text(encoding="utf-8").splitlines():
        english += [p for p in json.loads(row)["document"].split("\n") if p.strip()]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(lines + english) + "\n", encoding="utf-8")  # empty lines are skipped
    training = list(Corpus([str(path)]))
    return {"path": str(path), "training": training, "english": [t for t in training if t in english]}


@pytest.fixture(scope="module")
def wordpiece(corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("wp") / "vocab")
    summary = train_tokenizer.run(["--input", corpus["path"], "--out", out, "--vocab-size", str(VOCAB_SIZE)])
    return load_tokenizer(out), summary


def test_wordpiece_vocab_is_the_documented_count():
    """Characters (+ ##) by frequency, then the pieces with the highest word-weighted counts."""
    counts = {"low": 5, "lower": 2, "newest": 6, "widest": 3}
    # ##est, ##es, ##st: 6 (newest) + 3 (widest); ##we: 6 (newest) + 2 (lower); then lo, low, ##ow: 7.
    vocab = wordpiece_vocab(counts, vocab_size=29, min_piece_count=8)
    chars = "ewstlondir"  # by count (e 17, w 16, s 9, t 9, l 7, o 7, n 6, d 3, i 3, r 2), ties alphabetical
    assert list(vocab) == list(SPECIAL_TOKENS) + [t for c in chars for t in (c, "##" + c)] + \
        ["##est", "##es", "##st", "##we"]
    assert list(vocab.values()) == list(range(29))
    assert len(wordpiece_vocab(counts, vocab_size=100, min_piece_count=8)) == 29  # no more candidates
    with pytest.raises(ValueError, match="need 25 vocabulary entries.*--min-char-count"):
        wordpiece_vocab(counts, vocab_size=24)
    no_cjk_hash = wordpiece_vocab({"中文": 1, "ab": 1}, vocab_size=100)
    assert "##中" in no_cjk_hash
    assert "##中" not in wordpiece_vocab({"中文": 1, "ab": 1}, vocab_size=100, cjk_continuations=False)


def test_wordpiece_loads_with_specials_and_requested_size(wordpiece, corpus):
    tokenizer, summary = wordpiece
    assert isinstance(tokenizer, WordPieceTokenizer)
    assert [tokenizer.vocab[t] for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert sorted(tokenizer.vocab.values()) == list(range(len(tokenizer.vocab)))
    assert len(tokenizer.vocab) == summary["vocab_size"] <= VOCAB_SIZE
    assert summary["lines"] == len(corpus["training"]) + summary["held_out_lines"]
    assert summary["held_out_lines"] == summary["lines"] // 100 > 0 and summary["skipped"] == 0
    assert 0.9 < summary["coverage"] <= 1.0


def test_wordpiece_covers_every_chinese_character_without_unk(wordpiece, corpus):
    tokenizer, _ = wordpiece
    chinese = {ch for line in corpus["training"] for ch in line if _is_cjk(ord(ch))}
    assert len(chinese) > 1500
    assert not [ch for ch in chinese if ch not in tokenizer.vocab or "##" + ch not in tokenizer.vocab]
    tokens = [t for line in corpus["training"] for t in tokenizer.tokenize(line)]
    assert "[UNK]" not in tokens


def test_wordpiece_splits_english_words_into_pieces_that_decode_back(wordpiece, corpus):
    tokenizer, _ = wordpiece
    assert len(corpus["english"]) > 50
    for text in corpus["english"]:
        expected = tokenizer.convert_tokens_to_string(basic_tokenize(text))
        assert tokenizer.decode(tokenizer.encode(text)) == expected
    pieces = Counter(len(tokenizer.tokenize(word)) for text in corpus["english"] for word in basic_tokenize(text))
    assert pieces[1] > 0 and sum(n for k, n in pieces.items() if k >= 2) > 0.05 * sum(pieces.values())
    assert tokenizer.tokenize("the") == ["the"]


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_specials_and_round_trip(corpus, tmp_path, model_type):
    out = str(tmp_path / "spm")
    summary = train_tokenizer.run(["--input", corpus["path"], "--out", out, "--kind", "sentencepiece",
                                    "--sp-model-type", model_type, "--vocab-size", "3000",
                                    "--sp-character-coverage", "1.0"])
    tokenizer = SentencePieceTokenizer.from_dir(out)
    assert [tokenizer.sp.id_to_piece(i) for i in range(5)] == list(SPECIAL_TOKENS)
    assert (tokenizer.unk_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, tokenizer.cls_token_id,
            tokenizer.mask_token_id) == (0, 1, 2, 3, 4)
    assert read_vocab(os.path.join(out, "vocab.txt")) == tokenizer.vocab
    assert len(tokenizer.vocab) == summary["vocab_size"] <= 3000
    assert 4 in tokenizer.encode("新闻 [MASK] news")  # a user-defined symbol is one token
    for line in corpus["training"]:
        ids = tokenizer.encode(line)
        assert 0 not in ids
        assert tokenizer.decode(ids) == tokenizer.sp.normalize(line).replace("\u2581", " ").strip()
    assert any(unicodedata.normalize("NFKC", line) != line for line in corpus["training"])  # NFKC does apply


def test_bad_utf8_names_file_line_and_leaves_no_output(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes("第一行 first\n\n".encode("utf-8") + b"caf\xe9 latin-1\n" + "第四行\n".encode("utf-8"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    out = tmp_path / "vocab"
    for kind in ("wordpiece", "sentencepiece"):
        with pytest.raises(DataError, match=re.escape(f"{bad}:3: not UTF-8")):
            train_tokenizer.run(["--input", str(empty), str(bad), "--out", str(out), "--kind", kind])
        with pytest.raises(ValueError, match="empty corpus"):
            train_tokenizer.run(["--input", str(empty), "--out", str(out), "--kind", kind])
    assert sorted(os.listdir(tmp_path)) == ["bad.txt", "empty.txt"]  # neither the folder nor a temporary one

    gz = tmp_path / "bad.txt.gz"
    with gzip.open(gz, "wb") as f:
        f.write(bad.read_bytes())
    summary = train_tokenizer.run(["--input", str(gz), "--out", str(out), "--skip-bad"])
    assert (summary["lines"], summary["skipped"]) == (2, 1)
    assert "行" in load_tokenizer(str(out)).vocab


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_failed_run_keeps_the_previous_output(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("hello world\n你好\n", encoding="utf-8")
    out = tmp_path / "vocab"
    assert train_tokenizer.main(["--input", str(good), "--out", str(out)]) == 0  # an exit status, for the script
    assert oct(os.stat(out).st_mode & 0o777) == oct(0o777 & ~current_umask())  # a folder like any new one
    before = (out / "vocab.txt").read_text(encoding="utf-8")
    with pytest.raises(FileExistsError, match="--overwrite"):
        train_tokenizer.run(["--input", str(good), "--out", str(out)])
    with pytest.raises(ValueError, match="--vocab-size"):  # 9 characters need 23 entries
        train_tokenizer.run(["--input", str(good), "--out", str(out), "--overwrite", "--vocab-size", "20"])
    assert (out / "vocab.txt").read_text(encoding="utf-8") == before
    assert sorted(os.listdir(tmp_path)) == ["good.txt", "vocab"]
    train_tokenizer.main(["--input", str(good), "--out", str(out), "--overwrite", "--no-cjk-continuations"])
    assert (out / "vocab.txt").read_text(encoding="utf-8") != before
    assert sorted(os.listdir(tmp_path)) == ["good.txt", "vocab"]


def test_a_sentencepiece_vocabulary_too_small_for_the_corpus_is_a_user_error(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("hello world\nanother line here\n" * 20, encoding="utf-8")
    with pytest.raises(DataError, match=r"SentencePiece cannot train a unigram vocabulary of 6 pieces on this corpus "
                                        r"\(.*Vocabulary size is smaller than required_chars.*\); try another"):
        train_tokenizer.run(["--input", str(good), "--out", str(tmp_path / "sp"), "--kind", "sentencepiece",
                             "--vocab-size", "6"])
    assert sorted(os.listdir(tmp_path)) == ["good.txt"]


def test_the_working_folder_is_never_an_output_folder(tmp_path, monkeypatch):
    """An empty --out (make train-tokenizer without TOKENIZER_OUT), '.' or a folder holding the working folder
    would be replaced, with everything in it: refused before anything is trained."""
    good = tmp_path / "good.txt"
    good.write_text("hello world\n你好\n", encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    (work / "precious.txt").write_text("keep me", encoding="utf-8")
    monkeypatch.chdir(work)
    for out, message in [("", "an output folder must be named"), (".", "the current folder or one holding it"),
                         (str(tmp_path), "the current folder or one holding it")]:
        with pytest.raises(DataError, match=message):
            train_tokenizer.run(["--input", str(good), "--out", out, "--overwrite"])
    assert (work / "precious.txt").read_text(encoding="utf-8") == "keep me" and os.listdir(work) == ["precious.txt"]
    assert sorted(os.listdir(tmp_path)) == ["good.txt", "work"]


def test_sentencepiece_words_are_whole_masking_units(tmp_path):
    from paddle_unimo.objectives import text_example
    lines = [f"the quick brown fox number {i} jumps over the lazy dog" for i in range(200)]
    from paddle_unimo.tokenization_training import train_sentencepiece
    tokenizer = train_sentencepiece(lines, vocab_size=60, model_type="bpe")
    example = text_example("the quickest brownish foxes", tokenizer)
    pieces = tokenizer.tokenize("the quickest brownish foxes")
    words = [pieces[a:b] for a, b in zip(example.word_starts, example.word_starts[1:] + [len(pieces)])]
    assert ["".join(w).replace("\u2581", "") for w in words] == ["the", "quickest", "brownish", "foxes"]
