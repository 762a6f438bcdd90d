"""What every command of the toolkit shares: YAML configs with ``-o`` overrides typed by the task, logging into
``OUT/train.log``, building a model, the run fingerprint that guards resuming, and one way to report errors.

Errors a user causes (bad data, a bad config value, a missing file, a checkpoint of another run) print one line
``error: <file>:<line>: <what>`` (also written to ``train.log``) and exit with status 2; a traceback is shown
only for real bugs, or for everything with ``--debug``. Ctrl-C prints ``interrupted at step N; run the same
command to resume`` and exits with status 130.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import errno
import hashlib
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence

import yaml

from paddle_unimo.fileio import DataError
from paddle_unimo.typed import ConfigError, MissingPackage, bounded, from_dict, to_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
logger = logging.getLogger("paddle_unimo")
USER_ERRORS = (DataError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError,
               MissingPackage)
MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}  # a full disk, a quota, a read-only folder: one line too


@dataclass
class ModelSection:
    """Which model a run starts from when no ``--model`` folder is given."""
    preset: str = "tiny"
    overrides: Dict[str, Any] = field(default_factory=dict)  # UNIMOConfig keys
    vocab_dir: Optional[str] = None  # a trained tokenizer (tools/train_tokenizer.py); default: characters

    def validate(self, where: str) -> None:
        from paddle_unimo.config import PRESETS, UNIMOConfig
        if self.preset not in PRESETS:
            raise ConfigError(f"{where}.preset: unknown preset {self.preset!r}; known: {', '.join(sorted(PRESETS))}")
        try:
            UNIMOConfig.from_dict({**PRESETS[self.preset].to_dict(), **self.overrides}, source=f"{where}.overrides")
        except ConfigError:
            raise
        except ValueError as e:  # a combination the model cannot have (e.g. heads that do not divide the width)
            raise ConfigError(f"{where}.overrides: {e}") from None



@dataclass
class EvalSection:
    max_examples: int = bounded(0, min=0)  # dev examples decoded at each evaluation during training; 0: all
    batch_size: int = bounded(32, min=1)  # examples scored together (understanding tasks)


# ---- configs --------------------------------------------------------------------------------------------

def parse_override(item: str):
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"-o {item!r}: expected section.key=value")
    try:
        return key.split("."), yaml.safe_load(value)
    except yaml.YAMLError as e:  # e.g. a text starting with { or [, which YAML reads as a mapping or a list
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"-o {item}: the value is not valid YAML ({problem}); a text YAML would read as other "
                          f"syntax goes in quotes, -o '{key}=\"...\"' (through make O=, in a config file: "
                          "CONFIG=)") from None


def apply_overrides(config: dict, overrides: Sequence[str], known_sections: Sequence[str] = ()) -> dict:
    """``-o section.key=value`` (the value parsed as YAML) into the raw config; the typed config that is built
    from it afterwards refuses unknown keys and wrong types, exactly as for the YAML file."""
    for item in overrides or []:
        parts, value = parse_override(item)
        node = config
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"-o {item!r}: {'.'.join(parts[:depth + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return config


def read_yaml(path: str) -> dict:
    try:
        with open(path, encoding="utf-8-sig") as f:
            values = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise ConfigError(f"{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(values).__name__}")
    return values


def load_config(path: str, overrides: Sequence[str] = (), config_class=None):
    """The YAML file with the overrides applied, typed by ``config_class`` (the task's); the raw dict when None.
    An error names the file, or the command line's ``-o`` when the file alone is a valid config."""
    raw = read_yaml(path)
    if config_class is None:
        return apply_overrides(raw, overrides)
    if not overrides:
        return from_dict(config_class, raw, f"{path}:")
    merged = apply_overrides(copy.deepcopy(raw), overrides)  # a malformed -o is an error naming it already
    try:
        from_dict(config_class, raw, f"{path}:")
    except ConfigError:
        return from_dict(config_class, merged, f"{path}:")
    try:
        return from_dict(config_class, merged, "")
    except ConfigError as e:  # the file alone is valid: an override is wrong; name it
        message = str(e).lstrip(": ")
        about = message.partition("; known:")[0]  # not the list of known keys
        last = {o.partition("=")[0]: o for o in overrides}  # a key given twice: the later one counts

        def names(word: str) -> bool:
            return re.search(rf"(?<![\w.]){re.escape(word)}(?!\w)", about) is not None
        named = [o for k, o in last.items() if names(k)] or \
            [o for k, o in last.items() if names(k.rpartition(".")[2])] or list(last.values())
        raise ConfigError(f"-o {' -o '.join(named)}: {message}") from None


# ---- runs -----------------------------------------------------------------------------------------------

def setup_logging(out_dir: str) -> None:
    """INFO to OUT/train.log (another process of a launched run: OUT/train.rank<N>.log), and to the console unless
    paddle/paddlenlp already print there."""
    os.makedirs(out_dir, exist_ok=True)
    rank = int(os.environ.get("PADDLE_TRAINER_ID", "0") or 0)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for old in [h for h in root.handlers if getattr(h, "paddle_unimo_run", False)]:
        root.removeHandler(old)  # a previous run in this process (tests, the demo)
        old.close()
    handler = logging.FileHandler(os.path.join(out_dir, "train.log" if rank == 0 else f"train.rank{rank}.log"),
                                  encoding="utf-8")
    handler.paddle_unimo_run = True
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               for h in root.handlers):
        root.addHandler(logging.StreamHandler())
    root.addHandler(handler)


@contextlib.contextmanager
def output_folder(out: str):
    """The command's hold on its output folder (``fileio.folder_lock``): two runs into one OUT would mix their
    files. Taken by the first process of a launched run, which alone writes there; it removes what a killed run
    left of a checkpoint or best/ being saved."""
    from paddle_unimo.fileio import folder_lock
    from paddle_unimo.training.trainer import BEST, CHECKPOINT
    if int(os.environ.get("PADDLE_TRAINER_ID", "0") or 0) != 0:
        yield
        return
    with folder_lock(out, leftovers=(CHECKPOINT, BEST)):
        yield


RUN_CONFIG = "task.yaml"  # the config a model folder was fine-tuned with (finetune writes it into best/)


def write_run_config(folder: str, config, origin: str) -> None:
    """The run's typed config, every setting spelled out, as ``folder/task.yaml``: predicting with the folder
    (or its export, which copies the file) then uses the lengths and decoding settings it was trained with.
    ``origin``, the model the run started from (its ``model`` section describes the preset), heads the file."""
    from paddle_unimo.fileio import atomic_write
    atomic_write(os.path.join(folder, RUN_CONFIG),
                 f"# the settings this model was fine-tuned with, starting from {origin}; predicting with this folder "
                 "reads them\n" + yaml.safe_dump(to_dict(config), allow_unicode=True, sort_keys=False))


def run_config_of(model_dir: Optional[str]) -> Optional[str]:
    """A model folder's ``task.yaml`` (``write_run_config``), None when it has none (older folders)."""
    path = os.path.join(model_dir, RUN_CONFIG) if model_dir else None
    return path if path and os.path.isfile(path) else None


def blame_overrides(check, config_path: str, overrides):
    """``check()`` (checks of the config against the model); an error about a key that an ``-o`` set names that
    ``-o``, not the config file, which may hold another value. Returns what ``check`` returns."""
    try:
        return check()
    except ConfigError as e:
        message = str(e)
        for item in reversed(overrides or []):  # the last -o of a key is the one applied
            key = item.partition("=")[0]
            if message.startswith(f"{config_path}: {key}: "):
                raise ConfigError(f"-o {item}: {message[len(config_path) + 2:]}") from None
        raise


def set_aside_earlier_run(out: str, outputs: Optional[Sequence[str]] = None, inputs: Sequence[str] = ()):
    """A run starting over (not resuming) in a folder of an earlier run (its ``best/``, ``checkpoint/`` or
    ``metrics.json``) moves that run's ``outputs`` (default: everything but the logs, ``train.log`` and
    ``train.rank<N>.log``, which the new run appends to, hidden entries (the folder's lock, a folder being written
    by ``atomic_dir``), and what holds one of the run's ``inputs``: a model, data or region store kept in OUT) into
    ``OUT/previous/<time>/``: ``best/``, the checkpoint, metrics, predictions, exports and VisualDL logs are then
    this run's alone, and nothing is lost. A subfolder another command holds (``fileio.folder_lock``) stops it.
    Returns that folder, or None."""
    from paddle_unimo.training.trainer import CHECKPOINT
    if not any(os.path.exists(os.path.join(out, n)) for n in ("best", CHECKPOINT, "metrics.json")):
        return None
    used = [os.path.realpath(p) for p in inputs]

    def holds_input(name: str) -> bool:
        entry = os.path.realpath(os.path.join(out, name))
        return any(os.path.commonpath([entry, p]) == entry for p in used)
    names = [n for n in sorted(os.listdir(out)) if not re.fullmatch(r"train(\.rank\d+)?\.log|previous|\..*", n)
             and (outputs is None or n in outputs) and not holds_input(n)]
    if not names:
        return None
    from paddle_unimo.fileio import lock_holder
    for name in names:  # a folder another command is writing into (predict's OUT/predict) must stay
        holder = lock_holder(os.path.join(out, name)) if os.path.isdir(os.path.join(out, name)) else None
        if holder:
            raise DataError(f"{os.path.join(out, name)}: in use by {holder}; starting over would move it: wait for "
                            "it to end (or stop it)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = os.path.join(out, "previous", stamp), 1
    while os.path.exists(target):
        n += 1
        target = os.path.join(out, "previous", f"{stamp}-{n}")
    os.makedirs(target)
    for name in names:
        os.replace(os.path.join(out, name), os.path.join(target, name))
    logger.warning("%s: the earlier run's files (%s) are now in %s", out, ", ".join(names), target)
    return target


def data_path(data_dir: Optional[str], cfg, name: str) -> str:
    """A file or folder the data section names: in ``data_dir`` (``--data``), else in the config's ``default_dir``
    (the bundled demo data, relative to the repository, or the folder a fine-tuned model's run read)."""
    if not data_dir and not cfg.data.default_dir and not os.path.isabs(name):
        raise ConfigError(f"{cfg.task} has no bundled data: give DATA=dir (--data), the folder holding {name}")
    if data_dir and not os.path.isdir(data_dir):
        raise ConfigError(f"{data_dir}: no such data folder (DATA=, --data: the folder holding {name})")
    return os.path.join(data_dir or os.path.join(ROOT, cfg.data.default_dir), name)


def resolve_data_paths(cfg, data_dir: Optional[str] = None) -> None:
    """Makes the folders and files the data section names (its ``PATHS``: region stores, tag files) absolute."""
    for key in getattr(cfg.data, "PATHS", ()):
        if getattr(cfg.data, key):
            setattr(cfg.data, key, os.path.abspath(data_path(data_dir, cfg, getattr(cfg.data, key))))


PROMPT_KEYS = ("source_template", "target_prefix")  # data settings a generation model learns its inputs with


def warn_other_prompt(model_dir: str, config_path: str, config) -> None:
    """Predicting with another config than the model folder's ``task.yaml``: a prompt that differs from the one the
    model was trained with gives it inputs it never saw (and keeps or strips the wrong prefix); warn, naming it."""
    own = run_config_of(model_dir)
    if not own or os.path.abspath(own) == os.path.abspath(config_path):
        return
    trained = read_yaml(own).get("data") or {}
    for key in PROMPT_KEYS:
        if hasattr(config.data, key) and (trained.get(key) or "") != getattr(config.data, key):
            logger.warning("%s: data.%s is %r, but %s was trained with %r (its %s): predictions will suffer",
                           config_path, key, getattr(config.data, key), model_dir, trained.get(key) or "", own)


def longer_table_hint(check: Callable[[], Any]):
    """``check()`` for a training command: a length beyond the model's position table
    (``config.PositionLimitError``) also says how to train a longer one."""
    from paddle_unimo.config import PositionLimitError
    try:
        return check()
    except PositionLimitError as e:
        raise ConfigError(f"{e}; or train a longer table: -o model.overrides.max_position_embeddings={e.rows} (a "
                          "model folder's is grown from its trained rows)") from None


def folder_overrides(model_dir: str, section: ModelSection) -> dict:
    """What ``model.overrides`` changes in a model loaded from a folder: only a ``max_position_embeddings`` above
    the folder's, which grows its position table (``checkpoint.grow_positions``) for inputs longer than it was
    trained on. The other overrides describe the preset and are left aside, logged."""
    from paddle_unimo.checkpoint import find_config
    from paddle_unimo.config import UNIMOConfig
    overrides = dict(section.overrides)
    rows = overrides.pop("max_position_embeddings", None)
    trained = UNIMOConfig.from_file(find_config(model_dir)).max_position_embeddings
    if rows is not None and rows <= trained:
        overrides["max_position_embeddings"], rows = rows, None
    if overrides:
        logger.warning("model.overrides %s left aside: the model comes from %s", overrides, model_dir)
    if rows is None:
        return {}
    logger.warning("%s: its %d positions grown to %d (model.overrides.max_position_embeddings)", model_dir, trained,
                   rows)
    return {"max_position_embeddings": rows}


def build_model(model_dir: Optional[str], section: ModelSection, texts: Sequence[str], model_class=None,
                vocabulary: str = "characters", **settings):
    """``model_class`` (default the LM head model) from a checkpoint folder, or from the preset with a vocabulary
    built from ``texts``: characters (Chinese), or ``"words"``, the texts' words and characters (English).
    ``settings`` are UNIMOConfig values the task needs (e.g. ``num_labels``)."""
    import paddle
    from paddle_unimo import UNIMOLMHeadModel, WordPieceTokenizer, get_preset, load_tokenizer
    model_class = model_class or UNIMOLMHeadModel
    if model_dir:
        model, tokenizer = model_class.from_pretrained(model_dir, **settings, **folder_overrides(model_dir, section)), \
            load_tokenizer(model_dir)
        if tokenizer.vocab_size > model.config.vocab_size:
            raise ConfigError(f"{model_dir}: the tokenizer has ids up to {tokenizer.vocab_size - 1}, the model's "
                              f"embeddings only {model.config.vocab_size} rows (config.json vocab_size): a "
                              "vocabulary of another model?")
        return model, tokenizer
    tokenizer = load_tokenizer(section.vocab_dir) if section.vocab_dir else \
        WordPieceTokenizer.build_char_vocab(texts, words=vocabulary == "words")
    config = get_preset(section.preset, **{**section.overrides, **settings}).replace(
        vocab_size=tokenizer.vocab_size, unk_token_id=tokenizer.unk_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.eos_token_id,
        mask_token_id=tokenizer.mask_token_id)
    logger.log(logging.INFO if section.preset == "tiny" else logging.WARNING,
               "no MODEL given: preset %s with a %d-token %s, from random weights%s", section.preset,
               tokenizer.vocab_size, f"vocabulary from {section.vocab_dir}" if section.vocab_dir
               else f"{'word and character' if vocabulary == 'words' else 'character'} vocabulary from the "
                    "training data", "" if section.preset == "tiny" else
               " (a pretrained model is MODEL=, e.g. a folder of unimo-text-1.0 or a converted UNIMO)")
    paddle.seed(0)
    return model_class(config), tokenizer


RUNTIMES = {"paddle": "Paddle Inference", "onnx": "ONNX Runtime, its int8 programs where the export has them",
            "onnx_fp32": "ONNX Runtime, its float32 programs"}


def export_runtime(folder: str, runtime: Optional[str]) -> str:
    """Which programs of the export ``folder`` run (``RUNTIMES``): ``runtime`` (make ``RUNTIME=``, ``--runtime``),
    or by default ONNX Runtime for a folder converted to ONNX (``FORMAT=onnx``), else Paddle Inference."""
    from paddle_unimo.onnx_export import is_converted
    if runtime is None:
        return "onnx" if is_converted(folder) else "paddle"
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime {runtime!r}: allowed {', '.join(RUNTIMES)}")
    if runtime != "paddle" and not is_converted(folder):
        raise ConfigError(f"runtime {runtime}: {folder} has no ONNX programs (make export FORMAT=onnx writes them)")
    return runtime


def add_runtime_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runtime", choices=list(RUNTIMES), help="with an export folder as the model: the programs "
                        "to run (default: ONNX Runtime for an export converted to ONNX, its int8 programs where it "
                        "has them; else Paddle Inference)")


def refuse_runtime(folder: str, runtime: Optional[str]) -> None:
    if runtime is not None:
        raise ConfigError(f"runtime {runtime}: {folder} is a model folder, not an export; a runtime chooses the "
                          "programs of an export folder (make export, then MODEL=<run>/inference)")


class ExportedModel:
    """An understanding model's export (``make export``: its ``forward`` program) standing in for the model in
    ``predict``: called with the model's keyword tensors, it returns the logits as a tensor. The program runs on
    Paddle Inference (``export.InferenceForward``), or on ONNX Runtime (``onnx_export.OnnxForward``) as
    ``export_runtime`` chooses."""

    def __init__(self, folder: str, runtime: Optional[str] = None):
        from paddle_unimo.export import InferenceForward
        from paddle_unimo.onnx_export import OnnxForward
        runtime = export_runtime(folder, runtime)
        if runtime == "paddle":
            self.program, self.runtime = InferenceForward(folder), "Paddle Inference"
        else:
            self.program = OnnxForward(folder, int8=False if runtime == "onnx_fp32" else None)
            self.runtime = f"ONNX Runtime, {'int8' if self.program.int8 else 'float32'} program"
        self.config = self.program.config

    def eval(self) -> "ExportedModel":  # an export has no training mode
        return self

    def __call__(self, **inputs):
        import paddle
        arrays = {k: v.numpy() if isinstance(v, paddle.Tensor) else v for k, v in inputs.items()}
        return paddle.to_tensor(self.program(**arrays))


def load_model_or_export(folder: str, model_class, runtime: Optional[str] = None):
    """``model_class`` from a checkpoint folder (``OUT/best``), or an export folder's ``ExportedModel`` on
    ``runtime`` (``export_runtime``)."""
    from paddle_unimo.export import is_export
    if not is_export(folder):
        refuse_runtime(folder, runtime)
        return model_class.from_pretrained(folder)
    model = ExportedModel(folder, runtime)
    logger.info("%s is an export: predicting with its forward program (%s)", folder, model.runtime)
    return model


def load_generator(folder: str, runtime: Optional[str] = None):
    """The fine-tuned LM head model of a ``best/`` folder, or the stepper of an export folder: decoding then runs
    the exported programs, in their precision (``make export QUANT=int8`` decodes in int8), on Paddle Inference
    (``export.InferenceStepper``) or ONNX Runtime (``onnx_export.OnnxStepper``) as ``export_runtime`` chooses."""
    from paddle_unimo import UNIMOLMHeadModel
    from paddle_unimo.export import InferenceStepper, is_export
    from paddle_unimo.onnx_export import OnnxStepper
    if not is_export(folder):
        refuse_runtime(folder, runtime)
        return UNIMOLMHeadModel.from_pretrained(folder)
    if export_runtime(folder, runtime) == "paddle":
        stepper = InferenceStepper(folder)
        how = "Paddle Inference, " + (f"CPU kernels, {stepper.panel_dtype} weights" if stepper.cpu_kernels
                                      else "paddle's operators")
    else:
        stepper = OnnxStepper(folder, int8=False if runtime == "onnx_fp32" else None)
        how = f"ONNX Runtime, {'int8' if stepper.int8 else 'float32'} programs"
    logger.info("%s is an export: decoding with its programs (%s)", folder, how)
    stepper.runtime = how  # predict's metrics.json records it
    return stepper


FULL_HASH_LIMIT = 1 << 30  # files up to 1 GiB (data files, model weights) are hashed whole


def digest(path: str, whole_limit: int = FULL_HASH_LIMIT) -> str:
    """sha256 of what a run reads: a file's bytes; for a folder (a model, a region store), every file's name and
    bytes. A file above ``whole_limit`` (a region store's shards; a pretraining text shard, whatever its size) is
    represented by its size, modification time and first and last MiB, so resuming a run over a large store or
    corpus does not read all of it again."""
    h = hashlib.sha256()
    if os.path.isdir(path):
        for folder, _, names in sorted(os.walk(path)):
            for name in sorted(names):
                full = os.path.join(folder, name)
                h.update(f"{os.path.relpath(full, path)}\0{digest(full, whole_limit)}\0".encode())
        return h.hexdigest()[:16]
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if size <= whole_limit:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        else:
            h.update(f"{size}\0{os.stat(path).st_mtime_ns}\0".encode() + f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            h.update(f.read())
    return h.hexdigest()[:16]


def fingerprint(inputs: Dict[str, Optional[str]], sections: Dict[str, object], skip=()) -> Dict[str, Any]:
    """What a run came from, as a flat dict: ``input.<name>`` -> digest of each input file or folder (or the
    string it stands for, e.g. a preset), and ``<section>.<key>`` -> every setting except those in ``skip``."""
    out = {}
    for name, path in inputs.items():
        out[f"input.{name}"] = digest(path) if path and os.path.exists(path) else str(path)

    def flatten(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                flatten(f"{prefix}.{k}", v)
        elif prefix not in skip:
            out[prefix] = value
    for name, section in sections.items():
        flatten(name, to_dict(section))
    return out


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--override", action="append", default=[],
                        help="section.key=value (YAML value), e.g. train.lr=3e-5; repeatable")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--debug", action="store_true", help="show a traceback for every error")


def report(level: int, message: str, to_log: bool = True) -> None:
    """``message`` once on stderr and (``to_log``) into the run's train.log, when logging to one is set up."""
    print(message, file=sys.stderr)
    record = logger.makeRecord(logger.name, level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers if to_log else ():
        if getattr(handler, "paddle_unimo_run", False):
            handler.handle(record)


def run_command(command: Callable[[], Any], debug: bool = False):
    """Runs ``command``: a user's error becomes one line on stderr (and in train.log) and exit status 2,
    Ctrl-C a resume hint and exit status 130. ``debug`` re-raises everything."""
    from paddle_unimo.checkpoint import CheckpointError
    try:
        return command()
    except (*USER_ERRORS, CheckpointError, OSError) as e:
        if debug or (isinstance(e, OSError) and not isinstance(e, USER_ERRORS) and e.errno not in MACHINE_ERRNOS):
            raise
        message = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename else str(e)
        machine = isinstance(e, OSError) and e.errno in MACHINE_ERRNOS
        report(logging.ERROR, f"error: {message}", to_log=not machine)  # train.log may be what cannot be written
        raise SystemExit(2) from None
    except KeyboardInterrupt as e:
        if debug:
            raise
        from paddle_unimo.training import Interrupted
        message = str(e) if isinstance(e, Interrupted) else \
            "interrupted (no output file is left half-written; a training run resumes from its last checkpoint " \
            "when run again)"
        report(logging.WARNING, message)
        raise SystemExit(130) from None


def run_tool(run: Callable[[list], Any], argv: Optional[Sequence[str]] = None, status: bool = False) -> int:
    """``run(argv)`` of a ``tools`` script under ``run_command``: exit status 0 (with ``status``, the int ``run``
    returns), or one ``error:`` line and 2 for a user's error; ``--debug`` anywhere on the command line shows the
    traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    result = run_command(lambda: run([a for a in argv if a != "--debug"]), debug)
    return result if status else 0
