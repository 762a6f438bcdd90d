"""UNIMO pretraining: span MLM and seq2seq LM on text, region masking on images and image-text pairs, CMCL.

    python tasks/pretrain_mini.py --out out/pretrain/mini           # the embedded mini corpus
    python -m paddle.distributed.launch --nproc_per_node 2 tasks/pretrain.py \
        --config tasks/configs/pretrain_tiny.yaml --out out/pretrain

Corpus paths in the config are relative to the repository; ``{out}`` stands for ``--out``. ``--model DIR``
starts from a checkpoint folder (e.g. one converted by tools/convert_checkpoint.py), or from the encoder of
a PaddleNLP RoBERTa/BERT folder (its tokenizer, or ``--vocab``; regions and heads start fresh); ``--vocab DIR`` from
scratch with a trained tokenizer (tools/train_tokenizer.py); with neither, from scratch with a character
vocabulary built from the corpora. ``OUT`` gets ``checkpoint/`` (exact resume: run the same command again),
``best/`` (the model folder plus ``pretraining_heads.pdparams``), ``train.log``, ``vdl/`` (a scalar per
objective) and ``metrics.json`` (the loss curve of each objective).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import paddle.distributed as dist  # noqa: E402

import paddle_unimo  # noqa: E402,F401  (CPU thread settings before paddle loads)
from paddle_unimo import load_tokenizer  # noqa: E402
from paddle_unimo.checkpoint import find_config, init_from_roberta  # noqa: E402
from paddle_unimo.fileio import atomic_write  # noqa: E402
from paddle_unimo.objectives import get_objective  # noqa: E402
from paddle_unimo.pretraining import (Mixture, PretrainModel, load_corpus, objective_configs,  # noqa: E402
                                      read_text_lines)
from paddle_unimo.training import TrainConfig, Trainer  # noqa: E402
from tasks.generation import build_model  # noqa: E402
from tasks.run import load_config, setup_logging  # noqa: E402


def corpus_texts(corpora, out: str):
    """Every text of the corpora, for a character vocabulary."""
    texts = []
    for spec in corpora:
        if spec["kind"] == "text":
            texts += [t for p in spec["paths"] for t in read_text_lines(os.path.join(ROOT, p), spec.get("fields", ()))]
        elif spec["kind"] == "pair":
            texts += [t for t in read_text_lines(resolve(spec["captions"], out), ("caption",))]
            texts += [t["text"] for rec in read_jsonl(resolve(spec["captions"], out))
                      for k in ("positive_texts", "negative_texts") for t in rec.get(k, [])]
    return texts


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def model_type(folder: str) -> str:
    with open(find_config(folder), encoding="utf-8") as f:
        return json.load(f).get("model_type", "unimo")


def roberta_init(args, config):
    """The encoder from a RoBERTa/BERT folder; regions, the image pooler and the LM head start fresh."""
    tokenizer = load_tokenizer(args.vocab or args.model)
    region = {k: v for k, v in config["model"]["overrides"].items() if k.startswith(("image_", "max_img"))}
    ids = dict(unk_token_id=tokenizer.unk_token_id, pad_token_id=tokenizer.pad_token_id,
               bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.mask_token_id,
               mask_token_id=tokenizer.mask_token_id)
    model, _ = init_from_roberta(args.model, **region, **ids)
    return model, tokenizer


def resolve(path: str, out: str) -> str:
    return os.path.join(ROOT, path.format(out=out))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("-o", "--override", action="append", help="section.key=value")
    parser.add_argument("--model", help="start from this checkpoint folder")
    parser.add_argument("--vocab", help="start from scratch with this tokenizer folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--stop-after", type=int, default=-1, help="stop after N steps, as if killed (tests)")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.override)
    setup_logging(args.out)
    out = os.path.abspath(args.out)
    for spec in config["corpora"]:
        for key in ("regions", "captions"):
            if key in spec:
                spec[key] = resolve(spec[key], out)
                if not os.path.exists(spec[key]):
                    raise SystemExit(f"corpus {spec['name']!r}: {spec[key]} not found "
                                     "(the mini corpus is made by tasks/pretrain_mini.py)")
    if args.vocab:
        config["model"]["vocab_dir"] = args.vocab
    if args.model and model_type(args.model) in ("roberta", "bert"):
        model, tokenizer = roberta_init(args, config)
    else:
        model, tokenizer = build_model(args.model, config["model"], corpus_texts(config["corpora"], out))
    corpora = [load_corpus(spec, tokenizer, ROOT, chinese=config.get("chinese", False)) for spec in config["corpora"]]
    names = sorted({o for c in corpora for o in c.objectives})
    train_cfg = TrainConfig.from_dict(config["train"])
    mixture = Mixture(corpora, objective_configs(names, config.get("objectives", {}), tokenizer, model.config),
                      train_cfg.batch_size, train_cfg.seed, dist.get_rank(), dist.get_world_size())
    trainer = Trainer(PretrainModel(model, names), train_cfg, [], mixture.make_batch, lambda m, batch: m(batch),
                      args.out, save_extra=tokenizer.save_pretrained, sampler=mixture,
                      count=lambda batch: get_objective(batch["objective"]).count(batch), find_unused_parameters=True,
                      tensor_inputs=False)
    state = trainer.train(resume=not args.no_resume, stop_after=args.stop_after)
    if trainer.rank == 0:
        curves = defaultdict(list)
        for step, name, loss in state.get("objective_losses", []):
            curves[name].append([step, round(loss, 5)])
        metrics = {"steps": state["step"], "nonfinite_skipped": state["nonfinite_skipped"], "objectives": names,
                   "corpora": {c.name: len(c.items) for c in corpora}, "loss_curves": curves}
        atomic_write(os.path.join(args.out, "metrics.json"), json.dumps(metrics, indent=1))
    return state


if __name__ == "__main__":
    main()
