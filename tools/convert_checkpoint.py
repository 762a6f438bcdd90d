r"""Convert an original English UNIMO checkpoint into a paddle_unimo / PaddleNLP-layout model folder.

    python -m tools.convert_checkpoint --params unimo_base_en/params --config unimo_base_en.json \
        --out models/unimo-base-en --dict-dir model_files/dict

The source is the folder of legacy static-graph parameter files (one file per parameter: ``word_embedding``,
``encoder_layer_0_multi_head_att_query_fc.w_0``, ``image_emb.w_0``, ...) from the released tarballs.
Every file must map onto a parameter, be optimizer state (skipped and counted), or match --allow-unused;
every model parameter must be present. The LM head is kept when the checkpoint has one; a model fine-tuned on
retrieval (``match_fc``), visual entailment (``cls_out_w_0``...) or a GLUE task (``cls_out_<num_labels>_w``, e.g. the
released MNLI models) becomes ``UNIMOForRetrieval`` / ``UNIMOForVisualEntailment`` /
``UNIMOForSequenceClassification`` with its head; a CoQA model's ``role_embedding``/``turn_embedding`` set the
config's ``role_type_size``/``turn_type_size``.
"""
from __future__ import annotations

import argparse
import os
import sys

import paddle_unimo
from paddle_unimo.legacy_io import read_dense_tensor


def read_param_dir(path: str):
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: parameter folder not found")
    names = sorted(n for n in os.listdir(path) if not n.startswith(".") and os.path.isfile(os.path.join(path, n)))
    if not names:
        raise FileNotFoundError(f"{path}: no parameter files")
    return {name: read_dense_tensor(os.path.join(path, name)) for name in names}


def convert(params: str, config_path: str, out: str, dict_dir: str | None = None, allow_unused: str | None = None):
    """The converted model, also saved to ``out`` (with the tokenizer files of ``dict_dir`` when given)."""
    from paddle_unimo import GptBpeTokenizer, UNIMOConfig  # these import paddle
    from paddle_unimo.checkpoint import TIED_ALIAS, map_original_state, set_state
    from paddle_unimo.modeling import (UNIMOForRetrieval, UNIMOForSequenceClassification, UNIMOForVisualEntailment,
                                       UNIMOLMHeadModel, UNIMOModel)

    from paddle_unimo.fileio import DataError, atomic_dir
    if os.path.isfile(out) or (os.path.isdir(out) and os.listdir(out)):
        raise FileExistsError(f"{out} exists and is not empty: converting into it would mix two models' files; "
                              "give a new folder")
    config = UNIMOConfig.from_original_json(config_path)
    # the tokenizer first, so that a bad --dict-dir fails before anything is written
    tokenizer = GptBpeTokenizer.from_dir(dict_dir, prefix="unimo_en.") if dict_dir else None
    if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
        raise DataError(f"--dict-dir {dict_dir}: {tokenizer.vocab_size} tokens, but {config_path} has vocab_size "
                        f"{config.vocab_size}: the dictionary of another model")
    state, skipped, origins = map_original_state(read_param_dir(params), params, allow_unused)
    if "match_fc.weight" in state:  # a model fine-tuned on retrieval
        model_class = UNIMOForRetrieval
    elif "cls_out_1.weight" in state:  # ... on visual entailment
        model_class = UNIMOForVisualEntailment
        config = config.replace(num_labels=int(state["cls_out_1.weight"].shape[1]))
    elif "classifier.weight" in state:  # ... on a GLUE task (e.g. the released unimo_mnli_*_en)
        model_class = UNIMOForSequenceClassification
        config = config.replace(num_labels=int(state["classifier.weight"].shape[1]))
    else:
        model_class = UNIMOLMHeadModel if any(k.startswith("lm_head.") for k in state) else UNIMOModel
    for key, name in (("role_type_size", "unimo.embeddings.role_embeddings.weight"),
                      ("turn_type_size", "unimo.embeddings.turn_embeddings.weight")):
        if name in state:  # a model fine-tuned on CoQA (task_type=dialog)
            config = config.replace(**{key: int(state[name].shape[0])})
    model = model_class(config)
    if model_class is UNIMOModel:
        state = {k[len("unimo."):]: v for k, v in state.items()}
        origins = {k[len("unimo."):]: v for k, v in origins.items()}
    set_state(model, state, params, optional=[TIED_ALIAS], origins=origins)
    with atomic_dir(out) as tmp:  # the folder appears whole, or not at all
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    print(f"converted {len(state)} tensors from {params} into {out} "
          f"({model_class.__name__}); left out {len(skipped)} files (optimizer state, --allow-unused)")
    return model


def run(argv=None):
    """Parses the command line and converts; returns the model."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", required=True, help="folder of legacy parameter files")
    parser.add_argument("--config", required=True, help="original unimo_{base,large}_en.json")
    parser.add_argument("--out", required=True, help="output model folder")
    parser.add_argument("--dict-dir", help="folder with unimo_en.vocab.txt, unimo_en.encoder.json, unimo_en.vocab.bpe")
    parser.add_argument("--allow-unused", help="regex of parameter files to leave out (e.g. task heads 'cls_out_.*')")
    args = parser.parse_args(argv)
    return convert(args.params, args.config, args.out, args.dict_dir, args.allow_unused)


def main(argv=None) -> int:
    paddle_unimo.cpu_defaults()
    from tasks.cli import run_tool
    return run_tool(run, argv)


if __name__ == "__main__":
    sys.exit(main())
