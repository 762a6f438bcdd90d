"""Tokenizers of both UNIMO families behind one small interface.

* ``WordPieceTokenizer``: unimo-text (Chinese). BERT basic tokenization (lower-casing, accent stripping,
  CJK characters and punctuation split) + greedy longest-match WordPiece; vocab ``token<TAB>index``.
* ``GptBpeTokenizer``: original English UNIMO. GPT-2 byte-level BPE (``encoder.json`` + ``vocab.bpe``);
  each GPT-2 id, as a string, is then looked up in ``unimo_en.vocab.txt`` whose line number is the id.
  Specials: [CLS]=0, [PAD]=1, [SEP]=2, [UNK]=3, [MASK]=50264.
* ``SentencePieceTokenizer``: a SentencePiece model trained for pretraining from scratch
  (``tools/train_tokenizer.py --kind sentencepiece``); ``spm.model``, pieces as the vocabulary.

Both families use [CLS] as the bos and [MASK] as the eos of generation (PaddlePaddle/Research NLP/UNIMO; PaddleNLP ``unimo``).
"""
from __future__ import annotations

import abc
import os
import shutil
import unicodedata
from functools import lru_cache
from typing import Dict, Iterable, List, Sequence

import regex

from .fileio import DataError, atomic_save, atomic_write, read_json, read_text_lines, write_json

SPECIAL_TOKENS = ("[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]")  # order of a vocabulary built from data
TOKENIZER_CONFIG = "tokenizer_config.json"


def read_vocab(path: str) -> Dict[str, int]:
    """``token<TAB>index`` lines, or one token per line (the index is then the line number, counted from 0).
    UTF-8 with an optional byte order mark; blank lines are skipped but still count for the line number."""
    vocab = {}
    for where, line in read_text_lines(path):
        token, sep, index = line.rpartition("\t")
        if not sep:
            token, index = line, int(where.rpartition(":")[2]) - 1
        try:
            vocab[token] = int(index)
        except ValueError:
            raise DataError(f"{where}: expected 'token<TAB>index', got {line!r}") from None
    return vocab


def write_vocab(vocab: Dict[str, int], path: str) -> None:
    atomic_write(path, (f"{token}\t{index}\n" for token, index in sorted(vocab.items(), key=lambda kv: kv[1])))


class Tokenizer(abc.ABC):
    """The common interface. Subclasses define ``tokenize`` and ``convert_tokens_to_string``."""

    vocab: Dict[str, int]

    def _init_specials(self):
        self.inv_vocab = {i: t for t, i in self.vocab.items()}
        missing = [t for t in SPECIAL_TOKENS if t not in self.vocab]
        if missing:
            raise DataError(f"vocabulary lacks special tokens {missing}")
        self.unk_token_id, self.sep_token_id, self.pad_token_id, self.cls_token_id, self.mask_token_id = (
            self.vocab[t] for t in SPECIAL_TOKENS)
        self.special_ids = {self.vocab[t] for t in SPECIAL_TOKENS}

    @property
    def bos_token_id(self) -> int:
        return self.cls_token_id

    @property
    def eos_token_id(self) -> int:
        return self.mask_token_id

    @property
    def vocab_size(self) -> int:
        return max(self.vocab.values()) + 1

    def __len__(self):
        return self.vocab_size

    @abc.abstractmethod
    def tokenize(self, text: str) -> List[str]:
        """Vocabulary tokens of ``text``."""

    @abc.abstractmethod
    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        """Text of a token sequence (the inverse of ``tokenize`` up to normalisation)."""

    @abc.abstractmethod
    def save_pretrained(self, path: str) -> None:
        """Writes the tokenizer files into a model folder."""

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> List[int]:
        return [self.vocab.get(t, self.unk_token_id) for t in tokens]

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> List[str]:
        return [self.inv_vocab.get(int(i), "[UNK]") for i in ids]

    def encode(self, text: str) -> List[int]:
        """Token ids of ``text``, without special tokens."""
        return self.convert_tokens_to_ids(self.tokenize(text))

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        ids = [int(i) for i in ids if not (skip_special_tokens and int(i) in self.special_ids)]
        return self.convert_tokens_to_string(self.convert_ids_to_tokens(ids))

    def build_inputs_with_special_tokens(self, a: List[int], b: List[int] | None = None) -> List[int]:
        """``[CLS] a [SEP] (b [SEP])``."""
        out = [self.cls_token_id] + list(a) + [self.sep_token_id]
        return out + list(b) + [self.sep_token_id] if b is not None else out


# ---- unimo-text WordPiece -----------------------------------------------------------------------------

def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_symbol(ch: str) -> bool:
    """PaddleNLP's BasicTokenizer also splits symbols (category S*, and a few IPA-like code points)."""
    return unicodedata.category(ch).startswith("S") or ord(ch) in (0xAD, 0xB2, 0xBA, 0x3007, 0xB5, 0xD8, 0x14B,
                                                                   0x1B1)


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def basic_tokenize(text: str, lower: bool = True) -> List[str]:
    """PaddleNLP's BasicTokenizer: clean, split CJK characters, punctuation and symbols, lower-case,
    strip accents."""
    chars = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_whitespace(ch):
            chars.append(" ")
        elif _is_cjk(cp):
            chars.extend((" ", ch, " "))
        else:
            chars.append(ch)
    tokens = []
    for word in "".join(chars).split():
        if lower:
            word = "".join(c for c in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(c) != "Mn")
        current = ""
        for ch in word:
            if _is_punctuation(ch) or _is_symbol(ch):
                if current:
                    tokens.append(current)
                tokens.append(ch)
                current = ""
            else:
                current += ch
        if current:
            tokens.append(current)
    return tokens


class WordPieceTokenizer(Tokenizer):
    family = "wordpiece"
    max_chars_per_word = 100

    def __init__(self, vocab: Dict[str, int], do_lower_case: bool = True, spaced: bool = False):
        self.vocab = dict(vocab)
        self.do_lower_case = do_lower_case
        self.spaced = spaced  # English word vocabularies: decoded words are separated by spaces
        self._init_specials()

    @classmethod
    def from_vocab_file(cls, path: str, do_lower_case: bool = True, spaced: bool = False) -> "WordPieceTokenizer":
        return cls(read_vocab(path), do_lower_case, spaced)

    @classmethod
    def build_char_vocab(cls, texts: Iterable[str], words: bool = False) -> "WordPieceTokenizer":
        """A character vocabulary (plus the special tokens) from training texts, for the tiny preset. With
        ``words`` the texts' words come first, so that a known word is one token and any other word falls
        back to its characters (English captions and questions), and decoding puts a space between words."""
        seen = {}
        vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
        for text in texts:
            for token in basic_tokenize(text):
                if words and len(token) > 1:
                    vocab.setdefault(token, len(vocab))
                for ch in token:
                    seen.setdefault(ch, None)
        for ch in seen:
            vocab.setdefault(ch, len(vocab))
            vocab.setdefault("##" + ch, len(vocab))
        return cls(vocab, spaced=words)

    def _wordpiece(self, word: str) -> List[str]:
        if len(word) > self.max_chars_per_word:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            else:
                return ["[UNK]"]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> List[str]:
        return [p for word in basic_tokenize(text, self.do_lower_case) for p in self._wordpiece(word)]

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        """Merges ``##`` pieces; a space between words (``spaced``), else only between two words of ASCII letters
        or digits (Chinese text)."""
        out = ""
        for token in tokens:
            if token.startswith("##"):
                out += token[2:]
            elif out and (self.spaced or (out[-1].isascii() and out[-1].isalnum() and token[:1].isascii()
                                          and token[:1].isalnum())):
                out += " " + token
            else:
                out += token
        return out

    def save_pretrained(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        write_vocab(self.vocab, os.path.join(path, "vocab.txt"))
        write_json(os.path.join(path, TOKENIZER_CONFIG),
                   {"tokenizer_class": "UNIMOTokenizer", "do_lower_case": self.do_lower_case,
                    **({"spaced": True} if self.spaced else {})})


# ---- original English UNIMO: GPT-2 byte-level BPE -----------------------------------------------------

GPT2_PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


@lru_cache(maxsize=1)
def bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return dict(zip(range(256), chars))


class GptBpeTokenizer(Tokenizer):
    family = "gpt2_bpe"
    FILES = ("vocab.txt", "encoder.json", "vocab.bpe")

    ROBERTA_FILES = ("vocab.json", "merges.txt")
    ROBERTA_SPECIALS = {"[CLS]": "<s>", "[PAD]": "<pad>", "[SEP]": "</s>", "[UNK]": "<unk>", "[MASK]": "<mask>"}

    def __init__(self, vocab_file: str, encoder_json_file: str, vocab_bpe_file: str):
        self._setup(read_vocab(vocab_file), read_json(encoder_json_file, "GPT-2 encoder.json"), vocab_bpe_file,
                    dict(zip(self.FILES, (vocab_file, encoder_json_file, vocab_bpe_file))))

    def _setup(self, vocab: Dict[str, int], encoder: Dict[str, int], merges_file: str, files: Dict[str, str]):
        """``encoder`` maps byte-level BPE pieces to ids whose decimal strings are the tokens of ``vocab``."""
        self.files, self.vocab, self.encoder = files, vocab, encoder
        self.decoder = {i: t for t, i in self.encoder.items()}
        merges = [tuple(line.split()) for _, line in read_text_lines(merges_file) if not line.startswith("#version")]
        self.bpe_ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self._cache: Dict[str, List[str]] = {}
        self._init_specials()

    @classmethod
    def from_dir(cls, path: str, prefix: str = "") -> "GptBpeTokenizer":
        return cls(*(os.path.join(path, prefix + name) for name in cls.FILES))

    @classmethod
    def from_roberta_dir(cls, path: str) -> "GptBpeTokenizer":
        """RoBERTa's ``vocab.json`` (BPE piece -> model id) and ``merges.txt``, as PaddleNLP's RobertaBPETokenizer
        and Hugging Face save them: the same byte-level BPE as the original UNIMO's files, its ids already the
        model's (the English UNIMO's dictionary is RoBERTa's), ``<s>``/``</s>``/... the special tokens."""
        files = {name: os.path.join(path, name) for name in cls.ROBERTA_FILES}
        encoder = read_json(files["vocab.json"], "RoBERTa vocab.json")
        missing = [t for t in cls.ROBERTA_SPECIALS.values() if t not in encoder]
        if missing:
            raise DataError(f"{files['vocab.json']}: lacks RoBERTa's special tokens {missing}")
        specials = set(cls.ROBERTA_SPECIALS.values())
        vocab = {str(i): i for t, i in encoder.items() if t not in specials}
        vocab.update({ours: encoder[theirs] for ours, theirs in cls.ROBERTA_SPECIALS.items()})
        tokenizer = cls.__new__(cls)
        tokenizer._setup(vocab, encoder, files["merges.txt"], files)
        return tokenizer

    def _bpe(self, word: str) -> List[str]:
        if word in self._cache:
            return self._cache[word]
        parts = list(word)
        while len(parts) > 1:
            pairs = {(parts[i], parts[i + 1]) for i in range(len(parts) - 1)}
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._cache[word] = parts
        return parts

    def tokenize(self, text: str) -> List[str]:
        """GPT-2 ids as strings: the tokens of ``unimo_en.vocab.txt`` (no lower-casing, as the original)."""
        tokens = []
        for piece in GPT2_PATTERN.findall(text):
            word = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            tokens.extend(str(self.encoder[p]) for p in self._bpe(word))
        return tokens

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        """Byte-level decoding; tokens that are not GPT-2 ids (``[CLS]``, ``madeupword0000``) stay literal."""
        text = "".join(self.decoder[int(t)] if t.isdigit() else t for t in tokens)
        return bytearray(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace")

    def save_pretrained(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        for name, src in self.files.items():
            if os.path.abspath(src) != os.path.abspath(os.path.join(path, name)):
                atomic_save(os.path.join(path, name), lambda tmp, src=src: shutil.copyfile(src, tmp))
        write_json(os.path.join(path, TOKENIZER_CONFIG), {"tokenizer_class": "GptBpeTokenizer"})


# ---- SentencePiece models trained from scratch (tools/train_tokenizer.py) ------------------------------

class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model (``spm.model``); its pieces, by id, are the vocabulary.

    ``tokenize`` gives SentencePiece pieces (``\u2581`` marks a preceding space); a character the model does
    not know comes out as itself and maps to [UNK]. ``convert_tokens_to_string`` is SentencePiece's decoding,
    so ``decode(encode(text))`` is ``text`` after the model's normalisation (NFKC, whitespace runs squeezed).
    """
    family = "sentencepiece"
    MODEL_FILE = "spm.model"

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm  # local: only this tokenizer needs it
        self.model_proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        self.vocab = {self.sp.id_to_piece(i): i for i in range(self.sp.get_piece_size())}
        self._init_specials()

    @classmethod
    def from_dir(cls, path: str) -> "SentencePieceTokenizer":
        with open(os.path.join(path, cls.MODEL_FILE), "rb") as f:
            return cls(f.read())

    def tokenize(self, text: str) -> List[str]:
        return self.sp.encode(text, out_type=str)

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        return self.sp.decode_pieces(list(tokens))

    def save_pretrained(self, path: str) -> None:
        """``spm.model``, ``vocab.txt`` (piece<TAB>id, for reading only) and ``tokenizer_config.json``."""
        os.makedirs(path, exist_ok=True)
        atomic_write(os.path.join(path, self.MODEL_FILE), self.model_proto)
        write_vocab(self.vocab, os.path.join(path, "vocab.txt"))
        write_json(os.path.join(path, TOKENIZER_CONFIG), {"tokenizer_class": "SentencePieceTokenizer"})


def from_original_ids(tokenizer, ids: Sequence[int]) -> List[int]:
    """Model ids of the token ids in the original release's preprocessed files (``tokenized_input``: GPT-2 BPE
    ids). With the English GPT-2 BPE tokenizer each is looked up as its vocabulary's text (``unimo_en.vocab.txt``
    line i holds a GPT-2 id); any other tokenizer takes them as its own ids. An id the vocabulary lacks is a
    ValueError."""
    if getattr(tokenizer, "family", "") != "gpt2_bpe":
        return [int(i) for i in ids]
    missing = [i for i in ids if str(i) not in tokenizer.vocab]
    if missing:
        raise ValueError(f"token ids {missing[:5]} are not in the vocabulary (GPT-2 BPE ids expected)")
    return [tokenizer.vocab[str(i)] for i in ids]


def load_tokenizer(path: str) -> Tokenizer:
    """The tokenizer of a model folder: GPT-2 BPE if it has ``encoder.json`` (or ``<prefix>encoder.json`` with
    its vocab.txt and vocab.bpe of the same prefix, as the original release's ``model_files/dict`` has
    ``unimo_en.*``) or RoBERTa's ``vocab.json`` and ``merges.txt``, SentencePiece if it has ``spm.model``, else
    WordPiece ``*vocab.txt``. A bad tokenizer is a
    ``DataError`` naming the folder (or the file and line)."""
    try:
        return _load_tokenizer(path)
    except DataError as e:
        if str(e).startswith(path):
            raise
        raise DataError(f"{path}: {e}") from None


def _load_tokenizer(path: str) -> Tokenizer:
    if os.path.isfile(os.path.join(path, "encoder.json")):
        return GptBpeTokenizer.from_dir(path)
    encoders = sorted(n for n in os.listdir(path) if n.endswith("encoder.json"))
    if encoders:
        return GptBpeTokenizer.from_dir(path, prefix=encoders[0][:-len("encoder.json")])
    if all(os.path.isfile(os.path.join(path, name)) for name in GptBpeTokenizer.ROBERTA_FILES):
        return GptBpeTokenizer.from_roberta_dir(path)
    if os.path.isfile(os.path.join(path, SentencePieceTokenizer.MODEL_FILE)):
        return SentencePieceTokenizer.from_dir(path)
    candidates = ["vocab.txt"] + sorted(n for n in os.listdir(path) if n.endswith("vocab.txt"))
    for name in candidates:
        if os.path.isfile(os.path.join(path, name)):
            settings = {}
            cfg = os.path.join(path, TOKENIZER_CONFIG)
            if os.path.isfile(cfg):
                settings = read_json(cfg, "tokenizer config")
            return WordPieceTokenizer.from_vocab_file(os.path.join(path, name), settings.get("do_lower_case", True),
                                                      bool(settings.get("spaced", False)))
    raise FileNotFoundError(f"{path}: no tokenizer files (vocab.txt, spm.model, encoder.json + vocab.bpe + "
                            "vocab.txt, or RoBERTa's vocab.json + merges.txt)")
