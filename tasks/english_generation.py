"""The English generation benchmarks of the UNIMO paper (section 4.2, Table 2): CNN/DailyMail and Gigaword
summarisation, SQuAD question generation, CoQA conversational QA -- with the original's input encoding and
decoding (PaddlePaddle/Research NLP/UNIMO ``src/reader/seq2seq_reader.py``, ``src/finetune/seq2seq.py``).

Registered as ``cnn_dm``, ``gigaword``, ``squad_qg``, ``coqa``. Inputs as the original reader
(``paddle_unimo.data.english_seq2seq.OriginalSeq2SeqEncoder``): ``[CLS] src [SEP] | [CLS] tgt [MASK]``, each
segment's positions restarting, a fixed source budget ``data.max_src_len``, a cut target without the end token.
Decoding as the original by default in these configs (``decode.convention: original``: the eos banned before
``min_length`` on the logits, the GNMT length penalty counting the eos, word-trigram blocking where the original
uses it); eos ``[MASK]``.

Files (``data.train`` / ``data.dev`` name a split or a file in ``DATA=dir``): line-aligned ``<split>.src`` /
``<split>.tgt`` (UniLM), ``src-<split>.txt`` / ``tgt-<split>.txt`` (SQuAD-QG of Du et al.) or ``<split>.pa.tok.txt`` /
``<split>.q.tok.txt`` (UniLM's SQuAD-QG: ``paragraph [SEP] answer``, split by ``data.source_separator``), JSON lines
``{"src", "tgt"}``, the original UNIMO TSV (GPT-2 BPE ids), CNN/DM's raw stories (``cnn_stories/`` and/or
``dailymail_stories/`` beside ``url_lists/``; the split names ``all_<split>.txt``) and CoQA's official JSON.

Metrics (x100), on texts (the original TSV's targets decoded by the model's tokenizer,
``EnglishRunner.text_targets``): ROUGE-1/2/L F1 with ``rouge-score`` and stemming for CNN/DM and Gigaword, and for
CNN/DM also the summary-level ``rougeLsum`` over sentences (the highlights; predictions split at sentence ends),
which is what the paper's ROUGE-L is (Perl ROUGE-1.5.5 through pyrouge on one sentence per line; its tokenisation
differs slightly); ``rougeL`` is rouge-score's sentence-level LCS of the whole texts, several points lower on
CNN/DM; CNN/DM's best checkpoint is chosen by ``rougeLsum``, Gigaword's (one sentence) by ``rougeL``. BLEU-4 /
METEOR / ROUGE-L as UniLM's SQuAD-QG evaluation (pycocoevalcap, needs Java; during training the best checkpoint is
chosen by that BLEU-4 alone); CoQA F1 and EM as the official ``evaluate-v1.0.py``.
CoQA adds the original's role and turn embeddings (``role_type_size`` 3, ``turn_type_size`` 16) to the model, new
parameters when it starts from a pretrained folder.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Callable, List, Sequence

from paddle_unimo.config import check_positions
from paddle_unimo.data import english_seq2seq as data
from paddle_unimo.fileio import DataError, read_text_lines
from paddle_unimo.training import TrainConfig
from paddle_unimo.typed import bounded

from tasks.cli import EvalSection, ModelSection, load_generator
from tasks.generation import GenerationDecode, decoder


@dataclass
class EnglishData:
    default_dir: str = ""  # no bundled data: DATA=dir
    train: str = "train"  # a split name (train.src, src-train.txt, url_lists/all_train.txt) or a file name
    dev: str = "dev"
    max_src_len: int = bounded(512, min=3)  # the source budget, [CLS] and [SEP]s included
    max_tgt_len: int = bounded(128, min=2)  # [CLS] target [MASK]
    source_key: str = "src"  # the fields of a JSON-lines file (e.g. XSum's document / summary)
    target_key: str = "tgt"
    source_separator: str = ""  # splits a source text into segments (squad_qg: " [SEP] ", UniLM's paragraph/answer)
    skip_bad: bool = False


@dataclass
class EnglishGenerationConfig:
    task: str
    model: ModelSection = field(default_factory=ModelSection)
    data: EnglishData = field(default_factory=EnglishData)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: GenerationDecode = field(default_factory=GenerationDecode)
    eval: EvalSection = field(default_factory=EvalSection)


def read_any(path: str, cfg: EnglishGenerationConfig, need_target: bool, dialog: bool):
    """``(examples, report)`` of a file (.tsv = the original, .json = CoQA, the source side of a line-aligned
    pair such as ``test.src`` or ``src-test.txt``, else JSON lines) or a split of a folder."""
    skip, separator = cfg.data.skip_bad, cfg.data.source_separator
    folder, split = os.path.split(path)
    if dialog and not os.path.isfile(path):
        raise DataError(f"{path}: file not found (CoQA's official JSON, e.g. coqa-dev-v1.0.json)")
    if os.path.isfile(path):
        if path.lower().endswith(".tsv"):
            return data.read_unimo_tsv(path, dialog=dialog, need_target=need_target, skip_bad=skip)
        if dialog:
            return data.read_coqa(path)
        pair = data.pair_of_source_file(path)
        if pair is None:
            first = None if skip else next(((where, text) for where, text in read_text_lines(path)), None)
            if first is not None and not first[1].lstrip().startswith("{"):  # (--skip-bad skips such a line)
                raise DataError(f"{first[0]}: not a JSON line ({{\"{cfg.data.source_key}\": ..., "
                                f"\"{cfg.data.target_key}\": ...}}); a file of one text a line is read by its name, "
                                "as the source of a line-aligned pair (test.src, test.source, src-test.txt or "
                                "test.pa.tok.txt, its target beside it if any), and CNN/DM's .story files through "
                                "their folder: <folder>/<split>, beside url_lists/")
            return data.read_jsonl_pairs(path, cfg.data.source_key, cfg.data.target_key, need_target=need_target,
                                         skip_bad=skip, separator=separator)
        return data.read_line_aligned(*pair, need_target=need_target, skip_bad=skip, separator=separator)
    if os.path.isdir(os.path.join(folder, "url_lists")):
        stories = [os.path.join(folder, d) for d in ("cnn_stories", "dailymail_stories", "cnn/stories",
                                                     "dailymail/stories") if os.path.isdir(os.path.join(folder, d))]
        return data.read_cnn_dm(stories, os.path.join(folder, "url_lists"), split, skip_bad=skip)
    source, target = data.line_aligned_paths(folder, split)
    return data.read_line_aligned(source, target, need_target=need_target, skip_bad=skip, separator=separator)


class EnglishRunner:
    def __init__(self, task: "EnglishGenerationTask", model, tokenizer, cfg: EnglishGenerationConfig):
        self.task, self.model, self.tokenizer, self.cfg = task, model, tokenizer, cfg
        self.encoder = data.OriginalSeq2SeqEncoder(tokenizer, cfg.data.max_src_len, cfg.data.max_tgt_len,
                                                   model.config.position_start)

    def report(self) -> dict:
        return {"truncated": self.encoder.counted()}

    def text_targets(self, examples) -> list:
        """The examples with their targets as text: those of the original TSV, GPT-2 BPE ids, decoded by the model's
        tokenizer as the predictions are (``output_text``); the metrics compare texts, as the original's evaluation
        compares its decoded predictions with the text of the gold files."""
        from paddle_unimo.decoding_original import output_text
        from paddle_unimo.tokenization import from_original_ids
        out = []
        for e in examples:
            if e.pretokenized and e.target_ids:
                try:
                    ids = from_original_ids(self.tokenizer, e.target_ids)
                except ValueError as error:  # ids of another vocabulary
                    raise DataError(f"line {e.line}: column 'tgt': {error}") from None
                e = dataclasses.replace(e, target=output_text(self.tokenizer, ids))
            out.append(e)
        return out

    def make_batch(self, encoded):
        return data.original_training_batch(encoded, self.model.config.pad_token_id)

    def loss(self, model, batch):
        from paddle_unimo.losses import label_smoothed_cross_entropy
        logits = model(batch["input_ids"], batch["token_type_ids"], batch["position_ids"], batch["attention_mask"],
                       masked_positions=batch["masked_positions"], role_ids=batch.get("role_ids"),
                       turn_ids=batch.get("turn_ids"))
        return {"loss": label_smoothed_cross_entropy(logits, batch["labels"], self.cfg.train.label_smoothing)}

    def predict(self, examples: Sequence, model=None) -> List[str]:
        import paddle
        from paddle_unimo.decoding_original import output_text, word_start_table
        from paddle_unimo.generation import generate
        model, stepper = decoder(model or self.model)
        settings = {k: v for k, v in vars(self.cfg.decode).items() if k != "batch_size"}
        if settings.get("trigram_blocking"):
            settings["word_starts"] = word_start_table(self.tokenizer, stepper.config.vocab_size)
        eos, size = self.tokenizer.mask_token_id, self.cfg.decode.batch_size
        encoded = self.encoder.encode_all(examples, with_target=False, where="decoding inputs")
        out = []
        for start in range(0, len(encoded), size):
            batch = data.original_decoding_batch(encoded[start:start + size], stepper.config.pad_token_id)
            ids, _ = generate(model, **{k: paddle.to_tensor(v) for k, v in batch.items()}, eos_token_id=eos,
                              stepper=stepper, **settings)
            for row in ids.numpy().tolist():
                out.append(output_text(self.tokenizer, row[:row.index(eos)] if eos in row else row))
        return out

    def trainer(self, train_examples, dev_examples, out_dir: str, fingerprint=None):
        from paddle_unimo.training import Trainer
        limit = self.cfg.eval.max_examples
        dev = dev_examples[:limit] if limit else dev_examples
        metric = self.task.metric

        def evaluate(model):
            model.eval()
            return {metric: self.task.quick_score(dev, self.predict(dev, model))}
        encoded = self.encoder.encode_all(train_examples, where="training data")
        return Trainer(self.model, self.cfg.train, encoded, self.make_batch, self.loss, out_dir,
                       evaluate=evaluate if dev else None, metric=metric, greater_is_better=True,
                       save_extra=self.tokenizer.save_pretrained, count=lambda batch: len(batch["labels"]),
                       fingerprint=fingerprint)


def references(examples) -> List:
    return [getattr(e, "references", None) or e.target for e in examples]


def rouge(examples, predictions) -> dict:
    from paddle_unimo.metrics.english import rouge_scores
    return rouge_scores(predictions, references(examples))


def summary_rouge(examples, predictions) -> dict:
    """CNN/DM: also ``rougeLsum`` over sentences (the highlights, or the target split as the predictions are)."""
    from paddle_unimo.metrics.english import split_sentences, summary_rouge_scores
    return summary_rouge_scores(predictions, [getattr(e, "target_sentences", None) or split_sentences(e.target)
                                              for e in examples])


def squad_qg(examples, predictions) -> dict:
    from paddle_unimo.metrics.english import squad_qg_scores
    return squad_qg_scores(predictions, [e.source for e in examples], [e.target for e in examples])


def coqa(examples, predictions) -> dict:
    from paddle_unimo.metrics.english import coqa_f1_em
    return coqa_f1_em(predictions, references(examples))


@dataclass(frozen=True)
class EnglishGenerationTask:
    name: str
    description: str
    metric: str  # chooses the best checkpoint
    scorer: Callable  # (examples, predictions) -> metrics
    dialog: bool = False
    config_class: type = EnglishGenerationConfig
    model_class = None  # the LM head model
    vocabulary = "words"

    def read(self, path: str, cfg: EnglishGenerationConfig, need_target: bool = True, role: str = "dev"):
        examples, report = read_any(path, cfg, need_target, self.dialog)
        if not examples:
            raise DataError(f"{path}: no examples")
        return examples, report

    def pipeline_example(self, record, index: int, cfg: EnglishGenerationConfig):
        """The example of ``tasks.pipeline``'s input ``index``: the source text (``paragraph [SEP] answer`` for
        SQuAD-QG, split at ``data.source_separator`` as the files are) or a mapping of ``data.source_key``; for
        CoQA a mapping ``{"story": passage, "history": [q1, a1, ..., qk]}``, the turns so far ending with the
        question to answer. A bad one is a ``DataError`` naming the input."""
        where = f"input {index}"
        if self.dialog:
            story, history = (record.get("story"), record.get("history")) if isinstance(record, dict) else (None, None)
            if not isinstance(story, str) or not isinstance(history, list) or not history:
                raise DataError(f"{where}: {self.name} reads {{'story': passage, 'history': [question 1, answer 1, "
                                "..., question]} (the turns so far, ending with the question)")
            if not story.strip() or not all(isinstance(t, str) and t.strip() for t in history):
                raise DataError(f"{where}: an empty story or turn, or a turn that is not a text")
            return data.dialog_example(str(index), story, history, line=index)
        key = cfg.data.source_key
        if isinstance(record, dict):  # as a JSON-lines file gives it (unstripped)
            if key not in record:
                raise DataError(f"{where}: missing field {key!r} (has {sorted(record)}; data.source_key)")
            source = record[key]
        else:  # as a line of a line-aligned file (stripped)
            source = record.strip() if isinstance(record, str) else record
        if not isinstance(source, str) or not source.strip():
            raise DataError(f"{where}: expected a non-empty source text (or {{{key!r}: text}}), got {source!r:.60}")
        return data.EnglishExample(str(index), source, None, line=index,
                                   segments=data.source_segments(where, source, cfg.data.source_separator))

    @staticmethod
    def texts(examples, cfg=None) -> List[str]:
        return [t for e in examples for t in (e.source, e.target, getattr(e, "knowledge", None))
                if isinstance(t, str) and t]

    def model_settings(self, cfg, train, from_folder: bool) -> dict:
        """A dialog task adds the original's role and turn embeddings (new parameters of a pretrained model)."""
        return {"role_type_size": data.ROLE_TYPE_SIZE, "turn_type_size": data.TURN_TYPE_SIZE} if self.dialog else {}

    def bind(self, model, tokenizer, cfg) -> EnglishRunner:
        return EnglishRunner(self, model, tokenizer, cfg)

    @staticmethod
    def load_model(folder: str, runtime: str | None = None):
        return load_generator(folder, runtime)

    @staticmethod
    def check(cfg, model_config, where: str) -> None:
        data, decode = cfg.data, cfg.decode
        check_positions(model_config, where, {"data.max_src_len": (data.max_src_len, data.max_src_len + 1),
                                              "data.max_tgt_len": (data.max_tgt_len, data.max_tgt_len + 1),
                                              "decode.max_length": (decode.max_length, decode.max_length + 2)})

    @staticmethod
    def prediction_row(example, prediction: str) -> dict:
        return {"id": example.id, "line": example.line, "source": example.source, "target": example.target,
                "prediction": prediction}

    def score(self, examples, predictions, train_examples=()) -> dict:
        return {**self.scorer(examples, predictions), "examples": len(examples)}

    def quick_score(self, examples, predictions) -> float:
        """The checkpoint-choosing number during training, without Java (SQuAD-QG: its BLEU-4 without METEOR)."""
        if self.scorer is squad_qg:
            from paddle_unimo.metrics.english import squad_qg_bleu4
            return squad_qg_bleu4(predictions, [e.source for e in examples], [e.target for e in examples])
        return self.scorer(examples, predictions)[self.metric]

    def evaluate(self, path: str, references_path: str, cfg) -> dict:
        """predictions.jsonl (or, for CoQA, a file in the official submission format) against the references."""
        from tasks.evaluation import match_predictions, read_predictions
        refs, _ = self.read(references_path, cfg)
        if any(e.pretokenized and e.target_ids for e in refs):
            raise DataError(f"{references_path}: the targets are GPT-2 BPE ids (the original TSV) and the metrics "
                            "compare texts, which needs the model's tokenizer: `make predict INPUT=` this file "
                            "decodes its targets and scores the predictions (OUT/predict/metrics.json)")
        rows = read_coqa_submission(path) if self.dialog and path.endswith(".json") else read_predictions(path)
        examples, predictions = match_predictions(rows, refs, path, references_path)
        return self.score(examples, predictions)

    def write_outputs(self, out_dir: str, examples, predictions) -> None:
        """CoQA: ``coqa_submission.json`` too, the format ``evaluate-v1.0.py --pred-file`` reads. The other tasks
        need nothing besides predictions.jsonl/.txt (one prediction per source line, the benchmarks' format)."""
        if self.dialog:
            from paddle_unimo.fileio import write_json
            rows = []
            for e, p in zip(examples, predictions):
                story, turn = e.id.rsplit("_", 1)
                rows.append({"id": story, "turn_id": int(turn), "answer": p})
            write_json(os.path.join(out_dir, COQA_SUBMISSION), rows)


COQA_SUBMISSION = "coqa_submission.json"


def read_coqa_submission(path: str):
    """``(where, example id, answer, {})`` of a CoQA submission ``[{"id": story id, "turn_id": int, "answer"},
    ...]``."""
    from paddle_unimo.fileio import read_json
    data = read_json(path, "CoQA predictions file")
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a non-empty JSON list of {{id, turn_id, answer}}")
    rows = []
    for i, row in enumerate(data):
        if not (isinstance(row, dict) and isinstance(row.get("answer"), str) and "id" in row and "turn_id" in row):
            raise DataError(f"{path}: entry {i}: expected {{\"id\", \"turn_id\", \"answer\": str}}, got {row!r}"[:300])
        rows.append((f"{path}: entry {i}", f"{row['id']}_{row['turn_id']}", row["answer"], {}))
    return rows


TASKS = [
    EnglishGenerationTask("cnn_dm", "CNN/DailyMail summarisation", "rougeLsum", summary_rouge),
    EnglishGenerationTask("gigaword", "Gigaword headline generation", "rougeL", rouge),
    EnglishGenerationTask("squad_qg", "SQuAD question generation (Du et al. split)", "bleu4", squad_qg),
    EnglishGenerationTask("coqa", "CoQA conversational question answering", "f1", coqa, dialog=True),
]
