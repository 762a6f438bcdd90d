"""Typed UNIMO configuration and the named presets of both released model families.

Two families share one architecture (UNIMO paper, section 2; PaddlePaddle/Research NLP/UNIMO and PaddleNLP ``unimo``):

* PaddleNLP ``unimo-text-1.0*`` (Chinese): ReLU, post-LN, 4 token types, positions start at 0 and
  restart at 0 for the target; [CLS] is the bos and [MASK] the eos.
* The original English UNIMO: GELU, post-LN, no token types, RoBERTa-style positions starting at 2,
  and region inputs (2048-d feature + 5-d location).

Unknown keys raise: a typo in a config must never be silently ignored.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Tuple

from .fileio import read_json, write_json
from .typed import ConfigError, bounded, check_fields, from_dict

# Keys PaddleNLP writes into config.json / model_config.json that describe bookkeeping, not the model.
PADDLENLP_BOOKKEEPING_KEYS = frozenset({
    "architectures", "model_type", "init_class", "paddlenlp_version", "dtype", "transformers_version",
    "use_cache", "return_dict", "output_attentions", "output_hidden_states", "use_return_dict",
    "tensor_parallel_degree", "tensor_parallel_rank", "tensor_parallel_output", "chunk_size_feed_forward",
    "num_choices", "classifier_dropout", "problem_type", "_name_or_path",
})

# Keys of the original English config JSON that configure pretraining or task heads, not the encoder.
ORIGINAL_NON_MODEL_KEYS = frozenset({
    "sent_type_vocab_size", "task_type_vocab_size", "max_obj_len", "image_attr_size", "image_predict_feature",
    "image_predict_class", "image_use_attr", "image_use_soft_label", "use_neg_lm_loss", "fusion_method",
    "similarity_method", "txt_mask_ratio", "vl_mask_ratio", "scenegraph_mask_ratio", "overlap_ratio",
    "num_labels", "max_pixel_len", "max_pixel_position_embeddings",
})

REGION_LOCATION_SIZE = 5  # [x1/W, y1/H, x2/W, y2/H, area fraction]


@dataclass
class UNIMOConfig:
    vocab_size: int = bounded(18000, min=1)
    hidden_size: int = bounded(768, min=1)
    num_hidden_layers: int = bounded(12, min=0)
    num_attention_heads: int = bounded(12, min=1)
    intermediate_size: int = bounded(3072, min=1)
    hidden_act: str = bounded("relu", choices=("relu", "gelu"))
    hidden_dropout_prob: float = bounded(0.1, min=0.0, max=1.0)
    attention_probs_dropout_prob: float = bounded(0.1, min=0.0, max=1.0)
    normalize_before: bool = False
    max_position_embeddings: int = bounded(513, min=1)
    type_vocab_size: int = bounded(4, min=0)  # 0: no token-type embedding (original English UNIMO)
    initializer_range: float = bounded(0.02, min=0.0)
    unk_token_id: int = bounded(17963, min=0)
    pad_token_id: int = bounded(0, min=0)
    bos_token_id: int = bounded(1, min=0)  # [CLS]
    eos_token_id: int = bounded(3, min=0)  # [MASK] ends a generated sequence in both families
    mask_token_id: int = bounded(3, min=0)
    position_start: int = bounded(0, min=0)  # first position id of each block: 0 for unimo-text, 2 for English UNIMO
    image_embedding_size: int = bounded(0, min=0)  # 0: text-only model without region embeddings
    max_img_len: int = bounded(0, min=0)  # regions per image the model was trained with, including the global feature
    image_class_size: int = bounded(0, min=0)  # detector classes (incl. background) for region classification
    # IoU above which a region is masked with an overlapping masked anchor in visual pretraining (the original
    # config's overlap_ratio: 0.4 base, 0.3 large)
    overlap_ratio: float = bounded(0.4, min=0.0, max=1.0)
    num_labels: int = bounded(0, min=0)  # outputs of a classification head (VQA: answers); 0 without one
    # dialog embeddings of the original's ``task_type=dialog`` (CoQA): speaker role (3: two speakers and the
    # passage) and turn (16: the current turn 1 .. 15 turns back, 0 the passage and the answer); 0: none
    role_type_size: int = bounded(0, min=0)
    turn_type_size: int = bounded(0, min=0)

    def __post_init__(self):
        check_fields(self, "UNIMOConfig")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")

    # ---- dict / file round trips -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Dict[str, Any], ignore=frozenset(), source: str = "config") -> "UNIMOConfig":
        return from_dict(cls, values, source, ignore=ignore)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "UNIMOConfig":
        return self.from_dict({**self.to_dict(), **changes}, source="replace()")

    @classmethod
    def from_paddlenlp_dict(cls, values: Dict[str, Any], source: str = "config") -> "UNIMOConfig":
        """Reads PaddleNLP's config.json, or the older model_config.json with nested ``init_args``."""
        values = dict(values)
        for nested in values.pop("init_args", []):
            if isinstance(nested, dict):
                values = {**nested, **values}
        return cls.from_dict(values, ignore=PADDLENLP_BOOKKEEPING_KEYS, source=source)

    @classmethod
    def from_original_json(cls, path: str) -> "UNIMOConfig":
        """Reads an original English UNIMO config (``model_files/config/unimo_*_en.json``)."""
        original = read_json(path, "model config")
        if isinstance(original, dict):  # num_labels sizes a classification head, which each task sets
            original.pop("num_labels", None)
        values = {**PRESETS["unimo-base-en"].to_dict(), **original}
        values["intermediate_size"] = 4 * values["hidden_size"]  # hard-coded d_inner_hid in the original
        return cls.from_dict(values, ignore=ORIGINAL_NON_MODEL_KEYS, source=f"{path}:")

    @classmethod
    def from_file(cls, path: str) -> "UNIMOConfig":
        return cls.from_paddlenlp_dict(read_json(path, "model config"), source=f"{path}:")

    def save(self, path: str, architecture: str = "UNIMOLMHeadModel") -> None:
        write_json(path, {"architectures": [architecture], "model_type": "unimo", **self.to_dict()}, indent=2)

    @property
    def has_regions(self) -> bool:
        return self.image_embedding_size > 0


class PositionLimitError(ConfigError):
    """A configured length beyond the model's position table; ``rows`` is the table it would need."""

    def __init__(self, message: str, rows: int):
        super().__init__(message)
        self.rows = rows


def check_positions(config: UNIMOConfig, where: str, lengths: Dict[str, Tuple[int, int]]) -> None:
    """Each configured length must fit the model's position table from ``position_start`` (source, target and
    text blocks each restart there): ``lengths`` maps a key to (its value, the positions that value takes). The
    error names the first length too long and the table every length would fit (``PositionLimitError.rows``)."""
    start, rows = config.position_start, config.max_position_embeddings
    too_long = [(key, value, needed) for key, (value, needed) in lengths.items() if start + needed > rows]
    if too_long:
        key, value, needed = too_long[0]
        place = f"{where}: {key}" if where else key
        raise PositionLimitError(f"{place}: {value} is above the model's {rows} position embeddings (allowed: <= "
                                 f"{rows - start - (needed - value)})",
                                 rows=start + max(n for _, n in lengths.values()))


def _english(**size) -> UNIMOConfig:
    return UNIMOConfig(vocab_size=50265, hidden_act="gelu", max_position_embeddings=514, type_vocab_size=0,
                       unk_token_id=3, pad_token_id=1, bos_token_id=0, eos_token_id=50264, mask_token_id=50264,
                       position_start=2, image_embedding_size=2048, image_class_size=1601, **size)


PRESETS: Dict[str, UNIMOConfig] = {
    "unimo-text-1.0": UNIMOConfig(),
    "unimo-text-1.0-large": UNIMOConfig(vocab_size=12800, hidden_size=1024, num_hidden_layers=24,
                                        num_attention_heads=16, intermediate_size=4096,
                                        max_position_embeddings=512, unk_token_id=12088),
    "unimo-base-en": _english(max_img_len=37),
    "unimo-large-en": _english(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                               intermediate_size=4096, max_img_len=101, overlap_ratio=0.3),
    # Oddly sized so that a wrong transpose or head split fails loudly; regions on, so every path runs.
    "tiny": UNIMOConfig(vocab_size=99, hidden_size=36, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=128, unk_token_id=0, pad_token_id=2,
                        bos_token_id=3, eos_token_id=4, mask_token_id=4, image_embedding_size=24,
                        max_img_len=11, image_class_size=7),
}


def get_preset(name: str, **overrides) -> UNIMOConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)
