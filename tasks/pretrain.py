r"""UNIMO pretraining: span MLM and seq2seq LM on text, region masking on images and image-text pairs, CMCL.

    python -m tasks.pretrain_mini --out out/pretrain/mini           # the embedded mini corpus
    python -m paddle.distributed.launch --nproc_per_node 2 tasks/pretrain.py \
        --config tasks/configs/pretrain_tiny.yaml --out out/pretrain

Corpus paths in the config are relative to the repository; ``{out}`` stands for ``--out``, ``{data}`` for
``--data`` (``make pretrain DATA=``), and a text corpus path may be a glob (``{data}/text/*.txt``: its shards).
``--model DIR`` starts from a checkpoint folder (e.g. one converted by tools/convert_checkpoint.py), or from the
encoder of a PaddleNLP RoBERTa/BERT folder (its tokenizer, or ``--vocab``; regions and heads start fresh);
``--vocab DIR`` from scratch with a trained tokenizer (tools/train_tokenizer.py); with neither, from scratch with a
character vocabulary built from the corpora. ``OUT`` gets ``checkpoint/`` (exact resume: run the same command again; a
folder holding another run's checkpoint is refused), ``best/`` (the model folder plus
``pretraining_heads.pdparams``), ``train.log``, ``vdl/`` (a scalar per objective), ``metrics.json`` (the
loss curve of each objective) and ``index/`` (where each text line is, memory-mapped: a text corpus is read when
drawn, so it may be larger than the memory; see ``paddle_unimo.pretraining``).
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List

from paddle_unimo import cpu_defaults

cpu_defaults()  # before anything below imports paddle

from paddle_unimo.fileio import DataError, read_json, read_jsonl, write_json  # noqa: E402
from paddle_unimo.pretraining import CorpusSpec  # noqa: E402
from paddle_unimo.training import TrainConfig  # noqa: E402
from paddle_unimo.typed import ConfigError, bounded, join, to_dict  # noqa: E402
from tasks.cli import (ROOT, ModelSection, add_common_arguments, blame_overrides, build_model, digest,  # noqa: E402
                       fingerprint, load_config, longer_table_hint, output_folder, run_command, set_aside_earlier_run,
                       setup_logging)

logger = logging.getLogger("paddle_unimo")


@dataclass
class PretrainConfig:
    task: str = bounded("pretrain", choices=("pretrain",))
    chinese: bool = False  # whole-word masking of Chinese text uses jieba words
    model: ModelSection = field(default_factory=ModelSection)
    corpora: List[CorpusSpec] = field(default_factory=list)
    objectives: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # per objective: its config's keys
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self, where: str) -> None:
        if not self.corpora:
            raise ConfigError(f"{join(where, 'corpora')}: no corpus given")


def resolve(path: str, out: str, data: str = "", where: str = "", escape=lambda part: part) -> str:
    """A config path: ``{out}`` the run's folder, ``{data}`` the ``--data`` folder; relative to the repository.
    ``escape`` is applied to those folders (``glob.escape``: their names are no pattern)."""
    if "{data}" in path and not data:
        raise ConfigError(f"{where}: {path!r} reads {{data}}: give the corpora folder (DATA=, --data)")
    return os.path.join(escape(ROOT), path.replace("{out}", escape(out)).replace("{data}", escape(data)))


def expand(path: str, out: str, data: str, where: str) -> List[str]:
    """The files a text corpus path names: itself, or the files a glob in the config's path (``{data}/text/*.txt``:
    the shards) matches, sorted."""
    if not glob.has_magic(path):
        return [resolve(path, out, data, where)]
    pattern = resolve(path, out, data, where, glob.escape)
    found = sorted(f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f))
    if not found:
        raise DataError(f"{where}: {resolve(path, out, data, where)}: no file matches")
    return found


def corpus_texts(cfg: PretrainConfig):
    """Every text of the corpora, for a character vocabulary."""
    from paddle_unimo.pretraining import read_text_lines
    texts = []
    for spec in cfg.corpora:
        if spec.kind == "text":
            texts += [t for p in spec.paths for t in read_text_lines(os.path.join(ROOT, p), spec.fields)]
        elif spec.kind == "pair":
            for _, row in read_jsonl(spec.captions):
                texts += [row["caption"]] if isinstance(row.get("caption"), str) else []
                texts += [t["text"] for k in ("positive_texts", "negative_texts") for t in row.get(k, [])
                          if isinstance(t, dict) and isinstance(t.get("text"), str)]
    return texts


def roberta_init(args, cfg: PretrainConfig):
    """The encoder from a RoBERTa/BERT folder; regions, the image pooler and the LM head start fresh (sized by the
    ``image_*``/``max_img_len`` overrides, the visual objective by ``overlap_ratio``'s). A
    ``max_position_embeddings`` override above the folder's grows its position table."""
    from paddle_unimo import load_tokenizer
    from paddle_unimo.checkpoint import find_config, init_from_roberta
    from paddle_unimo.fileio import read_json
    tokenizer = load_tokenizer(args.vocab or args.model)
    settings = {k: v for k, v in cfg.model.overrides.items() if k.startswith(("image_", "max_img", "overlap_ratio"))}
    rows, trained = (cfg.model.overrides.get("max_position_embeddings"),
                     read_json(find_config(args.model), "model config").get("max_position_embeddings", 0))
    if rows is not None and rows > trained:
        settings["max_position_embeddings"] = rows
    ids = dict(unk_token_id=tokenizer.unk_token_id, pad_token_id=tokenizer.pad_token_id,
               bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.mask_token_id,
               mask_token_id=tokenizer.mask_token_id)
    model, _ = init_from_roberta(args.model, **settings, **ids)
    return model, tokenizer


def model_type(folder: str) -> str:
    from paddle_unimo.checkpoint import find_config
    return read_json(find_config(folder), "model config").get("model_type", "unimo")


def pretrain(args) -> dict:
    import paddle
    import paddle.distributed as dist
    from paddle_unimo.objectives import get_objective
    from paddle_unimo.pretraining import Mixture, PretrainModel, load_corpus, objective_configs
    from paddle_unimo.training import Trainer
    cfg = load_config(args.config, args.override, PretrainConfig)
    out, data = os.path.abspath(args.out), os.path.abspath(args.data) if args.data else ""
    # the run's identity: the corpora as written and (below) their files' digests, not where DATA or OUT now are
    configured = {spec.name: dataclasses.replace(spec) for spec in cfg.corpora}
    if data and not any("{data}" in p for spec in cfg.corpora for p in [*spec.paths, spec.regions or "",
                                                                         spec.captions or ""]):
        raise ConfigError(f"--data {args.data}: {args.config} reads no path from {{data}} (its corpora name their "
                          "own files): leave DATA= out, or write the corpora's paths as {data}/...")
    for i, spec in enumerate(cfg.corpora):
        where = f"{args.config}: corpora[{i}]"
        spec.paths = [f for p in spec.paths for f in expand(p, out, data, f"{where}.paths")]
        for key in ("regions", "captions"):
            if getattr(spec, key):
                setattr(spec, key, resolve(getattr(spec, key), out, data, f"{where}.{key}"))
                if not os.path.exists(getattr(spec, key)):
                    raise DataError(f"{where}.{key}: {getattr(spec, key)} not found"
                                    + ("" if "mini" not in getattr(spec, key) else
                                       " (the mini corpus is made by python -m tasks.pretrain_mini)"))
    if args.vocab:
        cfg.model.vocab_dir = args.vocab
    if not args.model and not cfg.model.vocab_dir and cfg.model.preset != "tiny":
        raise ConfigError(f"{args.config}: model.preset {cfg.model.preset} from scratch needs a vocabulary: give "
                          "MODEL= (e.g. a RoBERTa folder, the paper's start) or VOCAB= (make train-tokenizer); a "
                          "character vocabulary of the corpora is for the tiny preset")
    paddle.seed(cfg.train.seed)  # the parts a start draws (regions and heads beside RoBERTa, the pretraining heads)
    if args.model and model_type(args.model) in ("roberta", "bert"):
        model, tokenizer = roberta_init(args, cfg)
    else:
        texts = () if args.model or cfg.model.vocab_dir else corpus_texts(cfg)  # a character vocabulary's
        model, tokenizer = build_model(args.model, cfg.model, texts)
    check_region_stores(cfg, model.config, args.config)
    names = sorted({o for spec in cfg.corpora for o in spec.objectives})
    objectives = blame_overrides(lambda: longer_table_hint(lambda: objective_configs(
        names, cfg.objectives, tokenizer, model.config, f"{args.config}: ")), args.config, args.override)
    corpora = [load_corpus(to_dict(spec), tokenizer, ROOT, chinese=cfg.chinese, cache=os.path.join(out, "index"))
               for spec in cfg.corpora]  # after every check of the config: a failed start leaves OUT empty
    mixture = Mixture(corpora, objectives, cfg.train.batch_size, cfg.train.seed, dist.get_rank(), dist.get_world_size())
    inputs = {f"{s.name}.{k}": p for s in cfg.corpora
              for k, p in [*((f"path{j}", digest(q, whole_limit=0)) for j, q in enumerate(s.paths)),
                           ("regions", s.regions or ""), ("captions", s.captions or "")] if p}  # text: stamped
    run_id = fingerprint({**inputs, "model": args.model or f"preset {cfg.model.preset}", "vocab": args.vocab},
                         {"model": cfg.model, "corpora": configured,
                          "objectives": cfg.objectives, "train": cfg.train, "chinese": cfg.chinese},
                         skip={f"train.{k}" for k in cfg.train.RESUMABLE_CHANGES})
    trainer = Trainer(PretrainModel(model, names), cfg.train, [], mixture.make_batch, lambda m, batch: m(batch),
                      args.out, save_extra=tokenizer.save_pretrained, sampler=mixture,
                      count=lambda batch: get_objective(batch["objective"]).count(batch), unit="items",
                      kind=lambda batch: batch["objective"], find_unused_parameters=True, tensor_inputs=False,
                      fingerprint=run_id)
    if trainer.rank == 0 and (args.no_resume or trainer.check_resumable() is None):
        set_aside_earlier_run(args.out, ("best", "checkpoint", "metrics.json", "vdl"))  # not its corpora ({out})
    state = trainer.train(resume=not args.no_resume, stop_after=args.stop_after)
    if trainer.started_at == state["step"]:
        logger.info("%s: this run had finished (step %d): nothing left to train; --no-resume (make: NO_RESUME=1) "
                    "starts over", args.out, state["step"])
    if trainer.rank == 0:
        curves = defaultdict(list)
        for step, name, loss in state.get("objective_losses", []):
            curves[name].append([step, round(loss, 5)])
        write_json(os.path.join(args.out, "metrics.json"), {
            "steps": state["step"], "nonfinite_skipped": state["nonfinite_skipped"], "objectives": names,
            "corpora": {c.name: len(c.items) for c in corpora}, "loss_curves": curves})
    return state


def execute(argv=None):
    """Runs the command line ``argv``; returns its result (metrics, state, rows)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--model", help="start from this checkpoint folder")
    parser.add_argument("--vocab", help="start from scratch with this tokenizer folder")
    parser.add_argument("--data", help="the corpora folder, {data} in the config's paths")
    parser.add_argument("--no-resume", action="store_true", help="ignore OUT/checkpoint and start again (best/, "
                        "checkpoint/, metrics.json and vdl/ move to OUT/previous/<time>/)")
    parser.add_argument("--stop-after", type=int, default=-1, help="stop after N steps, as if killed (tests)")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    def command():  # inside: an OUT that cannot be written is one error line
        with output_folder(args.out):  # first: a command refused there writes nothing into the running one's log
            setup_logging(args.out)
            return pretrain(args)
    return run_command(command, args.debug)


def check_region_stores(cfg, model_config, where: str) -> None:
    """Every region store a corpus reads holds features of the width the model's region embedding takes."""
    from paddle_unimo.data.regions import RegionStore
    for spec in cfg.corpora:
        if not spec.regions:
            continue
        if not model_config.has_regions:
            raise ConfigError(f"{where}: corpus {spec.name!r} reads regions, but the model has no region "
                              "embeddings (image_embedding_size 0)")
        dim = RegionStore(spec.regions).feature_dim
        if dim is not None and dim != model_config.image_embedding_size:
            raise ConfigError(f"{where}: corpus {spec.name!r}: the region store {spec.regions} holds {dim}-d "
                              f"features but the model takes {model_config.image_embedding_size}-d ones")


def main(argv=None) -> int:
    """The console entry point: exit status 0 (a user's error exits with 2, Ctrl-C with 130)."""
    execute(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
