"""Checkpoints: PaddleNLP folder layout, strict loading, and the original English UNIMO name map.

A model folder holds ``config.json`` (PaddleNLP's name; the older ``model_config.json`` is read too),
``model_state.pdparams`` and the tokenizer files, so a downloaded ``unimo-text-1.0*`` folder loads as is.

Loading is strict: every missing, unexpected or wrongly shaped tensor is listed in one error. The tolerated
differences are listed in ``load_pretrained`` (e.g. ``lm_head.decoder_weight``, an alias of the tied word
embedding that PaddleNLP writes twice); a longer position table than the checkpoint's is grown from its rows
(``grow_positions``).
"""
from __future__ import annotations

import logging
import os
import re
from typing import Dict, Iterable, Mapping, Tuple

import numpy as np
import paddle

from .config import UNIMOConfig
from .fileio import DataError, atomic_save, first_line, read_json
from .legacy_io import widen_bfloat16

logger = logging.getLogger(__name__)

CONFIG_NAMES = ("config.json", "model_config.json")
WEIGHTS_NAME = "model_state.pdparams"
TIED_ALIAS = "lm_head.decoder_weight"


class CheckpointError(ValueError):
    pass


def find_config(path: str) -> str:
    for name in CONFIG_NAMES:
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    run, name = os.path.split(os.path.normpath(path))
    if os.path.isfile(path):
        raise FileNotFoundError(f"{path}: a file; a model is the folder holding its config and weights ({run})")
    if not os.path.isdir(path):
        if name == "inference" and os.path.isdir(os.path.join(run, "best")):
            raise FileNotFoundError(f"{path}: no export yet (make export writes it from {os.path.join(run, 'best')})")
        if name == "best" and os.path.isdir(os.path.join(run, "checkpoint")):
            raise FileNotFoundError(f"{path}: the run has no best model yet (it is saved at the first evaluation): "
                                    "run the same finetune command again to resume it")
        raise FileNotFoundError(f"{path}: no such model folder (a fine-tuned model is OUT/best once "
                                "`make finetune` has run; a converted one is what `make convert` wrote)")
    if os.path.isfile(os.path.join(path, "best", CONFIG_NAMES[0])):
        raise FileNotFoundError(f"{path}: a fine-tuning run's folder, not a model folder: its model is "
                                f"{os.path.join(path, 'best')}")
    if os.path.isfile(os.path.join(path, "trainer_state.json")):
        raise FileNotFoundError(f"{path}: a training checkpoint (to resume from), not a model folder: the run's "
                                f"model is {os.path.join(run, 'best')}")
    raise FileNotFoundError(f"{path}: no {' or '.join(CONFIG_NAMES)} (is this a model folder?)")


def load_state(path: str) -> Dict[str, np.ndarray]:
    weights = os.path.join(path, WEIGHTS_NAME) if os.path.isdir(path) else path
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{weights}: weights file not found")
    return {k: np.asarray(v) for k, v in read_paddle_file(weights, return_numpy=True).items()}


def read_paddle_file(path: str, **options) -> dict:
    """``paddle.load(path, **options)`` of a state dict (weights, an optimizer's state); a file it cannot read
    (truncated by a full disk or an interrupted copy, or not paddle's) is a ``DataError`` naming it."""
    try:
        state = paddle.load(path, **options)
    except MemoryError:
        raise
    except Exception as e:  # paddle.load raises ValueError, pickle and OS errors alike for a file it cannot read
        raise DataError(f"{path}: not a readable paddle state file, truncated or damaged? ({type(e).__name__}: "
                        f"{first_line(e)})") from None
    if not isinstance(state, dict):
        raise DataError(f"{path}: not a paddle state dict (holds a {type(state).__name__})")
    return state


def check_state(model: paddle.nn.Layer, state: Mapping[str, np.ndarray], source: str,
                optional: Iterable[str] = (), origins: Mapping[str, str] | None = None) -> None:
    """Raises one CheckpointError listing every missing, unexpected and wrongly shaped tensor; ``origins`` gives
    the name a tensor has in the source files when it was renamed (an original checkpoint's file names)."""
    expected = {k: list(v.shape) for k, v in model.state_dict().items()}
    optional, origins = set(optional), origins or {}

    def named(k):
        return f"{k} (file {origins[k]})" if k in origins else k
    missing = sorted(k for k in expected if k not in state and k not in optional)
    unexpected = sorted(named(k) for k in state if k not in expected)
    wrong = sorted(f"{named(k)}: checkpoint {list(state[k].shape)} vs model {expected[k]}"
                   for k in expected if k in state and list(state[k].shape) != expected[k])
    problems = [f"{title} ({len(items)}):\n    " + "\n    ".join(items)
                for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                if items]
    if problems:
        raise CheckpointError(f"{source}: checkpoint does not match the model\n  " + "\n  ".join(problems))


def set_state(model: paddle.nn.Layer, state: Mapping[str, np.ndarray], source: str,
              optional: Iterable[str] = (), origins: Mapping[str, str] | None = None) -> None:
    check_state(model, state, source, optional, origins)
    tied = "unimo.embeddings.word_embeddings.weight"
    if TIED_ALIAS in state and tied in state and not np.array_equal(state[TIED_ALIAS], state[tied]):
        raise CheckpointError(f"{source}: {TIED_ALIAS} differs from {tied}; paddle_unimo ties the LM output "
                              "matrix to the word embeddings and cannot load an untied head")
    params = model.state_dict()
    for name, value in state.items():
        params[name].set_value(paddle.to_tensor(value).astype(params[name].dtype))


DIALOG_EMBEDDINGS = ("embeddings.role_embeddings.weight", "embeddings.turn_embeddings.weight")


def load_pretrained(cls, path: str, **config_overrides):
    """Builds ``cls`` from a PaddleNLP-layout folder and loads its weights strictly.

    Besides a grown position table (below), four differences are allowed, and logged: a model without an LM
    head (``UNIMOModel``, the understanding models) leaves the folder's ``lm_head.*`` tensors unused; a task model
    (``head_prefixes``) whose head is wholly absent from the folder -- a pretrained model -- keeps its freshly
    initialised head; a head that is all there but of other shapes (another label set) is replaced by a fresh
    one; and the dialog embeddings (``role_type_size``/``turn_type_size`` given as overrides, CoQA) start fresh
    when the folder has none. A head that is only partly there is an error, as is every other missing,
    unexpected or mis-shaped tensor. A ``max_position_embeddings`` override above the folder's grows its position
    table (``grow_positions``)."""
    from .export import is_export
    if os.path.isdir(path) and is_export(path):
        raise CheckpointError(f"{path} is an export (programs for Paddle Inference), not a checkpoint: load the "
                              "folder it was exported from (e.g. OUT/best)")
    config = UNIMOConfig.from_file(find_config(path))
    folder_positions = config.max_position_embeddings
    if config_overrides:
        config = config.replace(**config_overrides)
    with paddle.utils.unique_name.guard():
        model = cls(config)
    state = load_state(path)
    if config.max_position_embeddings != folder_positions:
        state = grow_positions(state, config.max_position_embeddings, config.position_start, path)
    expected = model.state_dict()
    is_base = getattr(cls, "base_model_prefix", None) == "unimo" and not hasattr(model, "unimo")
    if is_base and any(k.startswith("unimo.") for k in state):
        dropped = sorted(k for k in state if not k.startswith("unimo."))
        if dropped:
            logger.info("%s: head-less UNIMOModel does not use %d head tensors", path, len(dropped))
        state = {k[len("unimo."):]: v for k, v in state.items() if k.startswith("unimo.")}
    elif not hasattr(model, "lm_head"):
        dropped = sorted(k for k in state if k.startswith("lm_head."))
        if dropped:
            logger.info("%s: %s has no LM head; %d lm_head tensors unused", path, cls.__name__, len(dropped))
        state = {k: v for k, v in state.items() if not k.startswith("lm_head.")}
    head = [k for k in expected if k.startswith(tuple(getattr(cls, "head_prefixes", ())))]
    fresh = head if head and not any(k in state for k in head) else []
    if fresh:
        logger.info("%s: no %s head in this folder; new, initialised: %s", path, cls.__name__, ", ".join(fresh))
    elif head and all(k in state for k in head) and any(state[k].shape != tuple(expected[k].shape) for k in head):
        # another task's head of the same kind (STS-B starts from an MNLI model): replaced, as the original does
        logger.info("%s: the folder's %s head has other shapes (%s); replaced by a new one", path, cls.__name__,
                    ", ".join(f"{k} {list(state[k].shape)}" for k in head))
        state, fresh = {k: v for k, v in state.items() if k not in head}, head
    dialog = [k for k in expected if k not in state and k.endswith(DIALOG_EMBEDDINGS)]
    if dialog:  # a pretrained model fine-tuned on a dialog task (CoQA) gets the dialog embeddings, as the original
        logger.info("%s: no dialog embeddings in this folder; new, initialised: %s", path, ", ".join(dialog))
    set_state(model, state, os.path.join(path, WEIGHTS_NAME), optional=[TIED_ALIAS, *fresh, *dialog])
    model.eval()
    return model


POSITION_TABLE = "embeddings.position_embeddings.weight"


def grow_positions(state: Dict[str, np.ndarray], rows: int, start: int, source: str) -> Dict[str, np.ndarray]:
    """``state`` with its position table grown to ``rows`` rows, for inputs longer than the checkpoint was
    trained on: the trained rows are kept and the new ones repeat the trained positions from ``start`` on (row
    ``i`` copies row ``start + (i - start) % (trained - start)``), as Longformer grows RoBERTa's table (Beltagy et
    al., 2020), so that fine-tuning starts from embeddings of the right scale and local structure. A smaller
    table is an error: rows that were trained would be lost."""
    key = next((k for k in state if k.endswith(POSITION_TABLE)), None)
    if key is None:
        return state
    table = state[key]
    if rows < table.shape[0]:
        raise CheckpointError(f"{source}: max_position_embeddings {rows} is below the checkpoint's {table.shape[0]} "
                              "trained positions; a table can be grown, not cut")
    trained = table.shape[0] - start
    if trained < 1:
        raise CheckpointError(f"{source}: {key} has {table.shape[0]} rows, none after position_start {start}")
    extra = [start + (i - start) % trained for i in range(table.shape[0], rows)]
    logger.info("%s: position table grown from %d to %d rows (the new rows repeat rows %d..%d)", source,
                table.shape[0], rows, start, table.shape[0] - 1)
    return {**state, key: np.concatenate([table, table[extra]], axis=0)}


def load_any(path: str, **config_overrides):
    """The model of a folder, of the class its config.json names (``architectures``; default: the LM head
    model, as PaddleNLP's unimo-text folders)."""
    from .modeling import ARCHITECTURES, UNIMOLMHeadModel
    names = read_json(find_config(path), "model config").get("architectures") or ["UNIMOLMHeadModel"]
    cls = ARCHITECTURES.get(names[0], UNIMOLMHeadModel)
    return load_pretrained(cls, path, **config_overrides)


def save_pretrained(model, path: str) -> None:
    """Writes config.json (``UNIMOConfig.save``, through ``fileio.write_json``) and model_state.pdparams
    (``fileio.atomic_save``), each to a temporary file renamed into place."""
    model.config.save(os.path.join(path, "config.json"), type(model).__name__)
    atomic_save(os.path.join(path, WEIGHTS_NAME), lambda tmp: paddle.save(model.state_dict(), tmp))


# ---- original English UNIMO (static graph, one legacy file per parameter) ---------------------------------

_LAYER = r"encoder_layer_(\d+)_"
ORIGINAL_NAME_RULES: Tuple[Tuple[str, str], ...] = (
    (r"word_embedding", "unimo.embeddings.word_embeddings.weight"),
    (r"pos_embedding", "unimo.embeddings.position_embeddings.weight"),
    (r"role_embedding", "unimo.embeddings.role_embeddings.weight"),  # the dialog (CoQA) model's
    (r"turn_embedding", "unimo.embeddings.turn_embeddings.weight"),
    (r"pre_encoder_layer_norm_scale", "unimo.encoder_norm.weight"),
    (r"pre_encoder_layer_norm_bias", "unimo.encoder_norm.bias"),
    (r"image_emb\.w_0", "unimo.region_embeddings.image_emb.weight"),
    (r"image_emb\.b_0", "unimo.region_embeddings.image_emb.bias"),
    (r"image_loc\.w_0", "unimo.region_embeddings.image_loc.weight"),
    (r"image_loc\.b_0", "unimo.region_embeddings.image_loc.bias"),
    (r"v_pre_encoder_layer_norm_scale", "unimo.region_embeddings.layer_norm.weight"),
    (r"v_pre_encoder_layer_norm_bias", "unimo.region_embeddings.layer_norm.bias"),
    (_LAYER + r"multi_head_att_(query|key|value|output)_fc\.([wb])_0", "unimo.encoder.layers.{0}.self_attn.{1}.{2}"),
    (_LAYER + r"post_att_layer_norm_(scale|bias)", "unimo.encoder.layers.{0}.norm1.{1}"),
    (_LAYER + r"ffn_fc_0\.([wb])_0", "unimo.encoder.layers.{0}.linear1.{1}"),
    (_LAYER + r"ffn_fc_1\.([wb])_0", "unimo.encoder.layers.{0}.linear2.{1}"),
    (_LAYER + r"post_ffn_layer_norm_(scale|bias)", "unimo.encoder.layers.{0}.norm2.{1}"),
    (r"pooled_fc_text\.([wb])_0", "unimo.text_pooler.{0}"),
    (r"pooled_fc_image\.([wb])_0", "unimo.image_pooler.{0}"),
    (r"mask_lm_trans_fc\.([wb])_0", "lm_head.transform.{0}"),
    (r"mask_lm_trans_layer_norm_(scale|bias)", "lm_head.layer_norm.{0}"),
    (r"mask_lm_out_fc\.b_0", "lm_head.decoder_bias"),
    # task heads of the original fine-tuning code (src/finetune/retrieval.py, visual_entailment.py)
    (r"match_fc\.([wb])_0", "match_fc.{0}"),
    (r"cls_out_([wb])_([01])", "cls_out_{1}.{0}"),
    (r"cls_out_\d+_([wb])", "classifier.{0}"),  # classifier.py / regression.py: cls_out_<num_labels>_w
)
_PART_NAMES = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "output": "out_proj", "w": "weight",
               "b": "bias", "scale": "weight"}
# Files a training run leaves beside the parameters: optimizer moments, accumulators, the learning rate.
OPTIMIZER_STATE = re.compile(r"(_moment[12]_\d+|_beta[12]_pow_acc_\d+|^learning_rate_\d+|@LR_DECAY_COUNTER@"
                             r"|^loss_scaling_\d+|^num_(bad|good)_steps_\d+)$")


def original_to_paddle_name(name: str) -> str | None:
    """Maps one original static-graph parameter name to its paddle_unimo name (None if not a model part)."""
    for pattern, template in ORIGINAL_NAME_RULES:
        m = re.fullmatch(pattern, name)
        if m:
            return template.format(*(_PART_NAMES.get(g, g) for g in m.groups()))
    return None


def map_original_state(arrays: Mapping[str, np.ndarray], source: str, allow_unused: str | None = None):
    """Renames original arrays; returns (state, skipped files: optimizer state and names matching
    ``allow_unused``, the original name of each state key). Other names without a paddle_unimo name are an
    error."""
    state, skipped, unknown, origins = {}, [], [], {}
    for name, value in sorted(arrays.items()):
        target = original_to_paddle_name(name)
        if OPTIMIZER_STATE.search(name) or (allow_unused and re.fullmatch(allow_unused, name)):
            skipped.append(name)  # left out even where it has a name (a task head the user does not want)
        elif target is not None:
            state[target], origins[target] = value, name
        elif name == "mask_lm_out_fc.w_0":
            unknown.append(f"{name} (an untied LM output matrix; paddle_unimo ties it to word_embedding)")
        else:
            unknown.append(name)
    if unknown:
        raise CheckpointError(f"{source}: {len(unknown)} parameter files have no paddle_unimo name:\n    "
                              + "\n    ".join(unknown) + "\n  (pass --allow-unused REGEX to leave task heads out)")
    return state, skipped, origins


# ---- initialising from a RoBERTa-like checkpoint (PaddleNLP layout) -----------------------------------------

ROBERTA_NAME_RULES: Tuple[Tuple[str, str], ...] = (
    (r"embeddings\.(word|position|token_type)_embeddings\.weight", "unimo.embeddings.{0}_embeddings.weight"),
    (r"embeddings\.layer_norm\.(weight|bias)", "unimo.encoder_norm.{0}"),
    (r"encoder\.layers\.(\d+)\.(.+)", "unimo.encoder.layers.{0}.{1}"),  # the same paddle.nn layer names
    (r"pooler\.dense\.(weight|bias)", "unimo.text_pooler.{0}"),
)
ROBERTA_CONFIG_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                       "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                       "type_vocab_size", "initializer_range", "pad_token_id")


def as_float32(array: np.ndarray) -> np.ndarray:
    """A weight as float32: ``paddle.load(return_numpy=True)`` gives bfloat16 as its uint16 bit patterns."""
    return widen_bfloat16(array) if array.dtype == np.uint16 else array.astype(np.float32)


def roberta_to_paddle_name(name: str) -> str | None:
    name = name[len("roberta."):] if name.startswith("roberta.") else name
    for pattern, template in ROBERTA_NAME_RULES:
        m = re.fullmatch(pattern, name)
        if m:
            return template.format(*m.groups())
    return None


def init_from_roberta(path: str, **config_overrides):
    """A ``UNIMOLMHeadModel`` whose encoder comes from a PaddleNLP RoBERTa-like folder (``model_type`` roberta
    or bert with the same layer names). Positions start at ``pad_token_id + 1`` for RoBERTa, 0 for BERT.

    A ``max_position_embeddings`` override above the folder's grows its table (``grow_positions``). RoBERTa's single
    token type (``type_vocab_size`` 1: a constant added to every position) is folded into the position table and
    the model takes no token types, as the original English UNIMO (``type_vocab_size`` 0): the outputs are the
    same, and the seq2seq objective's target type 1 has no row to miss. An initialisation, not a load: the parts
    RoBERTa lacks (region embeddings, image pooler, the LM head's transform) keep their fresh initialisation and
    are returned by name; every RoBERTa tensor must map onto a parameter of the same shape, else the error lists
    them all. Returns (model, newly initialised names).
    """
    from .modeling import UNIMOLMHeadModel
    source = read_json(find_config(path), "model config")
    values = {k: source[k] for k in ROBERTA_CONFIG_KEYS if k in source}
    # RoBERTa numbers positions from padding_idx + 1; BERT-style models from 0
    values["position_start"] = values.get("pad_token_id", 1) + 1 if source.get("model_type") == "roberta" else 0
    one_type = values.get("type_vocab_size") == 1
    if one_type:
        values["type_vocab_size"] = 0
    config = UNIMOConfig.from_dict({**values, **config_overrides}, source=path)
    model = UNIMOLMHeadModel(config)
    state, unknown = {}, []
    for name, value in load_state(path).items():
        target = roberta_to_paddle_name(name)
        if target is None:
            if not name.startswith(("lm_head.", "cls.")):  # a pretraining head of the source model
                unknown.append(name)
            continue
        state[target] = value
    if unknown:
        raise CheckpointError(f"{path}: tensors with no paddle_unimo name: {sorted(unknown)}")
    types = "unimo.embeddings.token_type_embeddings.weight"
    if one_type and types in state:  # word + position + type[0] = word + (position + type[0])
        positions = "unimo.embeddings.position_embeddings.weight"
        state[positions] = as_float32(state[positions]) + as_float32(state.pop(types))[0]
        logger.info("%s: RoBERTa's one token type folded into the position embeddings (no token types, as the "
                    "English UNIMO)", path)
    if config.max_position_embeddings != values.get("max_position_embeddings", config.max_position_embeddings):
        state = grow_positions(state, config.max_position_embeddings, config.position_start, path)
    expected = model.state_dict()
    fresh = sorted(k for k in expected if k not in state and k != TIED_ALIAS)
    check_state(model, state, path, optional=fresh + [TIED_ALIAS])
    set_state(model, state, path, optional=fresh + [TIED_ALIAS])
    logger.info("%s: initialised %d tensors from RoBERTa; new: %s", path, len(state), fresh)
    return model, fresh
