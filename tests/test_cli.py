"""The commands as a user meets them: runs that must never be silently wrong or lose work, typed configs, and a
corpus of broken inputs through finetune, predict, evaluate and pretrain.

Every user error must end with exit status 2 and one line ``error: <file>:<line> or key: <what>`` on stderr,
no traceback, and no file of the output folder changed (``train.log`` excepted: it records the error)."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from tasks import pretrain as pretrain_cli
from tasks import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "tasks", "configs", "dureader_qg_tiny.yaml")
FAST = ["-o", "train.max_steps=2", "-o", "train.progress=false", "-o", "train.eval_steps=100000",
        "-o", "decode.max_length=4", "-o", "decode.num_beams=2", "-o", "eval.max_examples=2",
        "-o", "model.overrides.hidden_size=16", "-o", "model.overrides.intermediate_size=16"]


def record(i, question=True, **extra):
    row = {"context": f"青石镇{i}号人口{i}万", "answer": f"{i}万", "id": i, **extra}
    if question:
        row["question"] = f"青石镇{i}号人口多少"
    return json.dumps(row, ensure_ascii=False)


def write_data(folder, train_lines=None, dev_lines=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.json").write_text("\n".join(train_lines or [record(i) for i in range(12)]) + "\n", "utf-8")
    (folder / "dev.json").write_text("\n".join(dev_lines or [record(i) for i in range(3)]) + "\n", "utf-8")
    return folder


def snapshot(folder):
    """Every file of ``folder`` but train.log and the output folder's lock file, with the sha256 of its bytes."""
    out = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            if name not in ("train.log", ".lock"):
                out[os.path.relpath(path, folder)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def user_error(capsys, argv, main=run.execute):
    """Runs a command expected to fail on the user's input; returns its one stderr line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert "Traceback" not in "\n".join(err)
    return errors[0]


def finetune(data, out, *extra):
    return run.execute(["finetune", "--config", CONFIG, "--data", str(data), "--out", str(out), *FAST, *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny fine-tune: its data folder and its output folder."""
    base = tmp_path_factory.mktemp("finished")
    data = write_data(base / "data")
    finetune(data, base / "out")
    return data, base / "out"


# ---- resuming into a folder --------------------------------------------------------------------------------

@pytest.mark.parametrize("change", ["data", "config", "model", "decode"])
def test_rerun_into_another_runs_folder_stops_before_doing_anything(finished, tmp_path, capsys, change):
    data, out = finished
    before = snapshot(out)
    argv = ["finetune", "--config", CONFIG, "--data", str(data), "--out", str(out), *FAST]
    if change == "data":
        other = write_data(tmp_path / "other", [record(i + 50) for i in range(12)])
        argv[argv.index(str(data))] = str(other)
        expected = "input.train"
    elif change == "config":
        argv += ["-o", "train.lr=0.01"]
        expected = "train.lr: 0.002 -> 0.01"
    elif change == "model":
        argv += ["-o", "model.overrides.num_hidden_layers=1"]
        expected = "model.overrides.num_hidden_layers: 2 -> 1"
    else:  # decoding chooses the best checkpoint, so it is part of the run
        argv += ["-o", "decode.num_beams=3"]
        expected = "decode.num_beams: 2 -> 3"
    line = user_error(capsys, argv)
    assert f"{out}/checkpoint" in line and expected in line and "--no-resume" in line, line
    assert snapshot(out) == before


def test_rerun_with_the_same_settings_resumes_and_changes_only_logging(finished, tmp_path):
    data, out = finished
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    stamp = os.stat(copy / "metrics.json").st_mtime_ns
    metrics = finetune(data, copy, "-o", "train.logging_steps=1", "-o", "train.progress=true")
    assert metrics["steps"] == 2  # nothing left to train: resumed at the end
    assert "resumed from" in (copy / "train.log").read_text("utf-8")
    assert "this run had finished" in (copy / "train.log").read_text("utf-8")
    assert os.stat(copy / "metrics.json").st_mtime_ns == stamp  # its results, not decoded again
    assert metrics == json.loads((copy / "metrics.json").read_text("utf-8"))
    finetune(data, copy, "--no-resume")  # trained again: decoded and written again
    assert os.stat(copy / "metrics.json").st_mtime_ns != stamp


def test_no_resume_starts_over_in_the_same_folder(finished, tmp_path, monkeypatch):
    """The earlier run's files move, unchanged, to OUT/previous/<time>/ before the new run writes anything: a
    new run stopped before its first evaluation leaves no best/ or metrics of the earlier one in OUT."""
    data, out = finished
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    before = snapshot(copy)
    assert {"best/task.yaml", "checkpoint/trainer_state.json", "metrics.json", "predictions.jsonl"} <= set(before)
    metrics = finetune(data, copy, "-o", "train.lr=0.01", "--no-resume")
    assert metrics["steps"] == 2
    state = json.loads((copy / "checkpoint" / "trainer_state.json").read_text("utf-8"))
    assert state["fingerprint"]["train.lr"] == 0.01
    assert "lr: 0.01" in (copy / "best" / "task.yaml").read_text("utf-8")
    (previous,) = (copy / "previous").iterdir()
    assert snapshot(previous) == before
    assert "the earlier run's files (best, checkpoint, metrics.json, predictions.jsonl" in \
        (copy / "train.log").read_text("utf-8")

    import signal
    from paddle_unimo.training.trainer import Trainer
    original = Trainer.accumulate_gradients

    def interrupt(self, *args, **kwargs):  # Ctrl-C at the first step of the new run
        signal.raise_signal(signal.SIGINT)
        return original(self, *args, **kwargs)
    monkeypatch.setattr(Trainer, "accumulate_gradients", interrupt)
    with pytest.raises(SystemExit):
        finetune(data, copy, "-o", "train.lr=0.02", "--no-resume")
    assert sorted(os.listdir(copy)) == [".lock", "checkpoint", "previous", "train.log"]
    assert len(os.listdir(copy / "previous")) == 2


def test_resume_loading_is_strict(finished, tmp_path, capsys):
    import paddle
    data, out = finished
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    weights = copy / "checkpoint" / "model_state.pdparams"
    state = paddle.load(str(weights))
    state["unimo.extra.weight"] = paddle.zeros([2])
    name = "unimo.encoder_norm.weight"
    state[name] = paddle.zeros([state[name].shape[0] + 1])
    paddle.save(state, str(weights))
    line = user_error(capsys, ["finetune", "--config", CONFIG, "--data", str(data), "--out", str(copy), *FAST])
    assert "model_state.pdparams: checkpoint does not match the model" in line


def test_malformed_trainer_state_names_the_file(finished, tmp_path, capsys):
    data, out = finished
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    (copy / "checkpoint" / "trainer_state.json").write_text('{"step": 2,', "utf-8")
    line = user_error(capsys, ["finetune", "--config", CONFIG, "--data", str(data), "--out", str(copy), *FAST])
    assert f"{copy}/checkpoint/trainer_state.json:1: malformed trainer state" in line
    (copy / "checkpoint" / "trainer_state.json").write_text("[]", "utf-8")
    line = user_error(capsys, ["finetune", "--config", CONFIG, "--data", str(data), "--out", str(copy), *FAST])
    assert f"{copy}/checkpoint/trainer_state.json: not a trainer state" in line


def test_digest_reads_every_byte_of_a_weights_file(tmp_path):
    from tasks.cli import digest
    for name, fill in (("a", 0), ("b", 1)):
        (tmp_path / name).mkdir()
        data = bytearray(3 << 20)
        data[2 << 20] = fill  # differs in the middle only: the same size, the same first and last MiB
        (tmp_path / name / "model_state.pdparams").write_bytes(bytes(data))
    assert digest(str(tmp_path / "a")) != digest(str(tmp_path / "b"))
    assert digest(str(tmp_path / "a")) == digest(str(tmp_path / "a"))


# ---- evaluate and predict ----------------------------------------------------------------------------------

def test_evaluate_never_touches_a_finetune_folders_results(finished, tmp_path):
    data, out = finished
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    before = snapshot(copy)
    metrics = run.execute(["evaluate", "--config", CONFIG, "--data", str(data), "--out", str(copy)])
    after = snapshot(copy)
    assert {k: v for k, v in after.items() if not k.startswith("eval")} == before
    finetuned = json.loads((copy / "metrics.json").read_text("utf-8"))
    assert {"loss_curve", "steps", "best_eval_bleu4", "best_step", "skipped_lines", "truncated"} <= set(finetuned)
    assert json.loads((copy / "eval" / "metrics.json").read_text("utf-8"))["bleu4"] == metrics["bleu4"]
    assert metrics["bleu4"] == pytest.approx(finetuned["bleu4"])  # the same predictions, scored again


def test_predict_skip_bad_keeps_one_output_line_per_input_line(finished, tmp_path):
    data, out = finished
    lines = [record(0), "{broken", record(1), "", record(2, context=5), record(3)]
    source = tmp_path / "input.json"
    source.write_text("\n".join(lines) + "\n", "utf-8")
    result = run.execute(["predict", "--config", CONFIG, "--model", str(out / "best"), "--input", str(source),
                       "--out", str(tmp_path / "pred"), "--skip-bad", *FAST])
    texts = (tmp_path / "pred" / "predictions.txt").read_text("utf-8").split("\n")[:-1]
    rows = [json.loads(x) for x in (tmp_path / "pred" / "predictions.jsonl").read_text("utf-8").splitlines()]
    assert len(texts) == len(rows) == len(lines)
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert texts[1] == texts[3] == texts[4] == ""
    assert all(texts[i] for i in (0, 2, 5)) and [rows[i]["id"] for i in (0, 2, 5)] == ["0", "1", "3"]
    assert [(s["line"], "malformed JSON" in s["reason"]) for s in result["skipped"]][0] == (2, True)
    assert [s["line"] for s in result["skipped"]] == [2, 5] and result["skipped_lines"] == 2
    skipped = [json.loads(x) for x in (tmp_path / "pred" / "skipped.jsonl").read_text("utf-8").splitlines()]
    assert [s["line"] for s in skipped] == [2, 5] and "'context' must be a string" in skipped[1]["reason"]


@pytest.mark.parametrize("content, expected", [
    ("", "no predictions (the file is empty)"),
    ('{"id": "0", "prediction": "a"}\n{"id": "1", "prediction": "b"}\n',
     "1 of 3 references in {data}/dev.json have no prediction (ids: 2); the references are the file the "
     "predictions were made for"),
    ('{"id": "0", "prediction": "a"}\n{"id": "1"}\n', "preds.jsonl:2: missing field 'prediction'"),
    ('{"id": "0", "prediction": 5}\n', "preds.jsonl:1: field 'prediction' must be a string, got int"),
    ('{"id": "0", "prediction": "a"}\n{"id": "0", "prediction": "b"}\n', "preds.jsonl:2: id '0' repeats"),
    ('{"id": "9", "prediction": "a"}\n', "preds.jsonl:1: id '9' is not in the references"),
    ('{"id": "0", "prediction": "a"\n', "preds.jsonl:1: malformed JSON"),
    ("a\nb\n", "preds.txt: evaluate reads predictions.jsonl, whose ids match predictions to references"),
    ("index\tprediction\n0\ta\n", "preds.tsv: evaluate reads predictions.jsonl, whose ids match predictions"),
])
def test_evaluate_refuses_broken_prediction_files(finished, tmp_path, capsys, content, expected):
    data, _ = finished
    path = tmp_path / next((n for n in ("preds.txt", "preds.tsv") if n in expected), "preds.jsonl")
    path.write_text(content, "utf-8")
    line = user_error(capsys, ["evaluate", "--config", CONFIG, "--data", str(data), "--predictions", str(path),
                               "--out", str(tmp_path / "eval")])
    assert expected.format(data=data) in line, line
    assert not (tmp_path / "eval" / "eval" / "metrics.json").exists()


# ---- typed configs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, expected", [
    ("train.batch_size=0", "train.batch_size: 0 is out of range (allowed: >= 1)"),
    ("train.epochs=0", "train.epochs: 0 is out of range"),
    ("train.accumulate=0", "train.accumulate: 0 is out of range"),
    ("train.logging_steps=0", "train.logging_steps: 0 is out of range"),
    ("train.max_steps=0", "train.max_steps: 0 trains nothing"),
    ("train.lr=-1e-3", "train.lr: -0.001 is out of range"),
    ("train.amp_level=O3", "train.amp_level: 'O3' is not one of ['O1', 'O2']"),
    ("decode.num_beams=0", "decode.num_beams: 0 is out of range"),
    ("decode.batch_size=0", "decode.batch_size: 0 is out of range"),
    ("decode.decode_strategy=beam", "decode.decode_strategy: 'beam' is not one of"),
    ("decode.max_length=0", "decode.max_length: 0 is out of range"),
    ("decode.num_return_sequences=5", "decode.num_return_sequences: 5 is above num_beams 2"),
    ("data.max_seq_len=400", "data.max_seq_len: 400 is above the model's 160 position embeddings"),
    ("decode.max_length=400", "decode.max_length: 400 is above the model's 160 position embeddings"),
    ("train.lr=fast", "train.lr: expected a number, got 'fast'"),
    ("train.recompute=maybe", "train.recompute: expected true or false, got 'maybe'"),
    ("model.preset=huge", "model.preset: unknown preset 'huge'"),
    ("model.overrides.hiden_size=3", "model.overrides: unknown key hiden_size"),
    ("model.overrides.hidden_size=big", "model.overrides.hidden_size: expected an integer, got 'big'"),
    ("decode.num_return_sequences=2", "decode.num_return_sequences: 2; a task writes one prediction per example"),
    ("data.max_titel_len=3", "data: unknown key max_titel_len; known: default_dir"),
    ("train.learning_rate=1e-3", "train: unknown key learning_rate; known: accumulate"),
    ("decode.beams=3", "decode: unknown key beams"),
    ("eval.max_example=3", "eval: unknown key max_example; known: batch_size, max_examples"),
    ("model.vocab=x", "model: unknown key vocab; known: overrides, preset, vocab_dir"),
    ("data.source_template={title}：{source}", "the value is not valid YAML (expected '<document start>', but found "
     "'<scalar>'); a text YAML would read as other syntax goes in quotes, -o 'data.source_template=\"...\"'"),
])
def test_every_bad_setting_is_one_clear_error_before_training(tmp_path, capsys, override, expected):
    data = write_data(tmp_path / "data")
    out = tmp_path / "out"
    line = user_error(capsys, ["finetune", "--config", CONFIG, "--data", str(data), "--out", str(out), *FAST,
                               "-o", override])
    # a value the config's types refuse names the -o that set it; one the model refuses, the config file
    assert expected in line and (f"error: -o {override}: " in line or CONFIG in line), line
    assert snapshot(out) == {}  # nothing but the log


def test_scientific_notation_in_a_yaml_file_trains(tmp_path):
    config = yaml.safe_load(open(CONFIG, encoding="utf-8"))
    text = yaml.safe_dump(config, allow_unicode=True).replace("lr: 0.002", "lr: 3e-3").replace(
        "eps: 1.0e-06", "eps: 1e-8").replace("label_smoothing: 0.1", "label_smoothing: 1e-1")
    assert "lr: 3e-3" in text and "eps: 1e-8" in text and "label_smoothing: 1e-1" in text
    assert yaml.safe_load(text)["train"]["lr"] == "3e-3"  # PyYAML reads it as a string
    path = tmp_path / "config.yaml"
    path.write_text(text, "utf-8")
    cfg = run.load_config(str(path), [], run.get_task("dureader_qg").config_class)
    assert (cfg.train.lr, cfg.train.eps, cfg.train.label_smoothing) == (3e-3, 1e-8, 0.1)
    metrics = run.execute(["finetune", "--config", str(path), "--data", str(write_data(tmp_path / "data")),
                        "--out", str(tmp_path / "out"), *FAST])
    state = json.loads((tmp_path / "out" / "checkpoint" / "trainer_state.json").read_text("utf-8"))
    assert metrics["steps"] == 2 and state["fingerprint"]["train.lr"] == 0.003


def test_bom_at_the_start_of_a_data_file_is_accepted(tmp_path):
    data = write_data(tmp_path / "data")
    train = data / "train.json"
    train.write_bytes(b"\xef\xbb\xbf" + train.read_bytes())
    metrics = finetune(data, tmp_path / "out")
    assert metrics["skipped_lines"] == 0 and metrics["steps"] == 2


# ---- the corpus of broken inputs ---------------------------------------------------------------------------

BROKEN_DATA = {  # name -> (train file content or None for a folder, expected text)
    "malformed": ("\n".join([record(i) for i in range(5)] + ['{"context": "x",']), "train.json:6: malformed JSON"),
    "missing_field": ("\n".join([record(i) for i in range(5)] + [record(9, question=False)]),
                      "train.json:6: missing field 'question'"),
    "empty_target": ("\n".join([record(i) for i in range(3)] + [record(7, question=False, question_="")]).replace(
        '"question_"', '"question"'), "train.json:4: empty target 'question'"),
    "not_utf8": (b"\n".join([record(i).encode() for i in range(3)] + ['{"context": "'.encode() + b"\xff\xfe" +
                                                                      b'"}']), "train.json:4: not UTF-8"),
    "directory": (None, "train.json: is a folder, not a file"),
    "empty_file": ("", "train.json: empty file"),
    "wrong_type": ("\n".join([record(i) for i in range(3)] + [record(5, context=["a"])]),
                   "train.json:4: field 'context' must be a string"),
}


def write_broken(folder, content):
    folder.mkdir(parents=True)
    (folder / "dev.json").write_text(record(1) + "\n", "utf-8")
    if content is None:
        (folder / "train.json").mkdir()
    elif isinstance(content, bytes):
        (folder / "train.json").write_bytes(content + b"\n")
    else:
        (folder / "train.json").write_text(content + ("\n" if content else ""), "utf-8")


@pytest.mark.parametrize("case", sorted(BROKEN_DATA))
def test_broken_inputs_through_finetune_and_predict(finished, tmp_path, capsys, case):
    content, expected = BROKEN_DATA[case]
    folder = tmp_path / "data"
    write_broken(folder, content)
    out = tmp_path / "out"
    shutil.copytree(finished[1], out)  # a folder with results that must survive
    before = snapshot(out)
    line = user_error(capsys, ["finetune", "--config", CONFIG, "--data", str(folder), "--out", str(out), *FAST])
    assert expected in line, line
    if re.match(r"train\.json:\d+: ", expected) and case != "not_utf8":  # a line's error: how to leave such lines out
        assert line.endswith("(--skip-bad, or -o data.skip_bad=true, leaves such lines out and lists them in "
                             "OUT/skipped.jsonl)"), line
    if case not in ("empty_target", "missing_field"):  # predict needs no target
        line = user_error(capsys, ["predict", "--config", CONFIG, "--model", str(finished[1] / "best"),
                                   "--input", str(folder / "train.json"), "--out", str(out), *FAST])
        assert expected in line, line
    line = user_error(capsys, ["evaluate", "--config", CONFIG, "--references", str(folder / "train.json"),
                               "--predictions", str(finished[1] / "predictions.jsonl"), "--out", str(out)])
    assert expected in line, line
    assert snapshot(out) == before


def test_broken_config_types_through_every_command(finished, tmp_path, capsys):
    config = yaml.safe_load(open(CONFIG, encoding="utf-8"))
    config["train"]["batch_size"] = "sixteen"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), "utf-8")
    out = tmp_path / "out"
    shutil.copytree(finished[1], out)
    before = snapshot(out)
    for argv in (["finetune"], ["predict", "--model", str(finished[1] / "best")], ["evaluate"]):
        line = user_error(capsys, [*argv, "--config", str(path), "--data", str(finished[0]), "--out", str(out)])
        assert f"{path}: train.batch_size: expected an integer, got 'sixteen'" in line, line
    assert snapshot(out) == before


@pytest.mark.parametrize("case", ["malformed", "directory", "not_utf8", "empty_file", "no_field", "config_type",
                                  "unknown_key", "length", "override", "data_unused"])
def test_broken_inputs_through_pretrain(tmp_path, capsys, case):
    config = yaml.safe_load(open(os.path.join(ROOT, "tasks", "configs", "pretrain_tiny.yaml"), encoding="utf-8"))
    corpus = tmp_path / "corpus.json"
    config["corpora"] = [{"name": "text", "kind": "text", "paths": [str(corpus)], "fields": ["context"],
                          "objectives": ["span_mlm"], "ratio": 1.0}]
    good = [record(i) for i in range(4)]
    expected = {"malformed": "corpus.json:5: malformed JSON", "directory": "corpus.json: is a folder, not a file",
                "not_utf8": "corpus.json:5: not UTF-8", "config_type": "corpora[0].ratio: expected a number",
                "unknown_key": "corpora[0]: unknown key path; known:",
                "empty_file": "corpus.json: corpus 'text' has no usable item",
                "no_field": "corpus.json: corpus 'text' has no usable item (no non-blank text in the fields",
                "length": "objectives.span_mlm.max_seq_len: 400 is above the model's 160 position embeddings",
                "override": "error: -o objectives.span_mlm.mask_ratio=2: objectives.span_mlm.mask_ratio: 2.0 is out "
                            "of range",
                "data_unused": "pretrain.yaml reads no path from {data} (its corpora name their own files): leave "
                               "DATA= out"}[case]
    if case == "directory":
        corpus.mkdir()
    elif case == "empty_file":
        corpus.write_bytes(b"")
    elif case == "no_field":
        corpus.write_text("\n".join(json.dumps({"question": f"q{i}"}) for i in range(4)) + "\n", "utf-8")
    else:
        corpus.write_bytes("\n".join(good).encode() + (b"\n{broken" if case == "malformed" else b"\n\xff"
                                                      if case == "not_utf8" else b""))
    if case == "config_type":
        config["corpora"][0]["ratio"] = "lots"
    if case == "unknown_key":
        config["corpora"][0]["path"] = config["corpora"][0].pop("paths")
    if case == "length":
        config["objectives"]["span_mlm"]["max_seq_len"] = 400
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), "utf-8")
    out = tmp_path / "out"
    extra = {"override": ["-o", "objectives.span_mlm.mask_ratio=2"], "data_unused": ["--data", str(tmp_path)]}.get(
        case, [])
    line = user_error(capsys, ["--config", str(path), "--out", str(out), "-o", "train.max_steps=2",
                               "-o", "train.progress=false", *extra], main=pretrain_cli.execute)
    assert expected in line, line
    assert snapshot(out) == {}


def test_the_real_command_prints_one_line_and_exits_2(tmp_path):
    """As a shell user sees it: no traceback, status 2, the line also in train.log."""
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "tasks.run", "finetune", "--task", "dureader_qg", "--out",
                             str(out), "-o", "train.batch_size=0"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stderr
    errors = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    assert errors == ["error: -o train.batch_size=0: train.batch_size: 0 is out of range (allowed: >= 1)"], \
        result.stderr
    assert "Traceback" not in result.stderr
    assert errors[0] in (out / "train.log").read_text("utf-8")
    debug = subprocess.run([sys.executable, "-m", "tasks.run", "finetune", "--task", "dureader_qg", "--out",
                            str(out), "-o", "train.batch_size=0", "--debug"], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_a_full_disk_or_read_only_folder_is_one_line_other_os_errors_a_traceback(capsys):
    import errno
    from tasks.cli import run_command
    for number, text in ((errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system")):
        def fail():
            raise OSError(number, text, "/runs/a/train.log")
        with pytest.raises(SystemExit) as stop:
            run_command(fail)
        assert stop.value.code == 2 and capsys.readouterr().err == f"error: /runs/a/train.log: {text}\n"
    with pytest.raises(OSError, match="Input/output error"):
        run_command(lambda: (_ for _ in ()).throw(OSError(errno.EIO, "Input/output error")))


def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    """Opening OUT/train.log is the first write of a command: a read-only folder fails there, as one line."""
    import errno
    import logging

    def read_only(filename, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", filename)
    monkeypatch.setattr(logging, "FileHandler", read_only)
    line = user_error(capsys, ["finetune", "--config", CONFIG, "--out", str(tmp_path / "run"), *FAST])
    assert line == f"error: {tmp_path / 'run' / 'train.log'}: Read-only file system"


def test_a_missing_config_lists_the_tasks_configs(tmp_path, capsys):
    """make builds CONFIG from TASK and SIZE: a task without that size's YAML (a new task with only a tiny one)."""
    missing = os.path.join(ROOT, "tasks", "configs", "dureader_qg_huge.yaml")
    line = user_error(capsys, ["finetune", "--task", "dureader_qg", "--config", missing, "--out", str(tmp_path)])
    assert line == f"error: {missing}: no such config; tasks/configs has dureader_qg_base.yaml, " \
                   "dureader_qg_large.yaml, dureader_qg_tiny.yaml: give one with --config (make: CONFIG=file, or " \
                   "SIZE=tiny|base|large)"


def test_malformed_model_config_names_the_file(finished, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(finished[1] / "best", model)
    (model / "config.json").write_text('{"vocab_size": 40,\n "hidden_size": }', "utf-8")
    line = user_error(capsys, ["predict", "--config", CONFIG, "--model", str(model), "--out", str(tmp_path / "p"),
                               "--data", str(finished[0])])
    assert f"{model}/config.json:2: malformed model config" in line, line


def test_an_unknown_task_is_named_before_its_config_is_looked_for(tmp_path, capsys):
    """``make finetune TASK=dureader`` passes --config tasks/configs/dureader_tiny.yaml, which does not exist: the
    error is the unknown task with the known ones, not the missing file."""
    line = user_error(capsys, ["finetune", "--task", "dureader", "--config", "tasks/configs/dureader_tiny.yaml",
                               "--out", str(tmp_path / "out")])
    assert "unknown task 'dureader'; known: advertisegen, " in line and "dureader_qg" in line, line


def test_predict_with_the_base_config_names_size_tiny_for_a_tiny_model(finished, tmp_path, capsys):
    """``make predict MODEL=OUT/best`` reads the base config (SIZE=base with a model): a model fine-tuned from the
    tiny preset has fewer positions than its max_seq_len, and the error says SIZE=tiny."""
    data, out = finished
    base = CONFIG.replace("_tiny.yaml", "_base.yaml")
    line = user_error(capsys, ["predict", "--task", "dureader_qg", "--config", base, "--model", str(out / "best"),
                               "--data", str(data), "--out", str(tmp_path / "pred")])
    assert "above the model's" in line and "needs SIZE=tiny" in line, line


def test_a_model_folder_that_does_not_exist_says_so(tmp_path, capsys):
    """``make predict`` before ``make finetune``: the folder is missing, not merely without config.json."""
    line = user_error(capsys, ["predict", "--task", "dureader_qg", "--config", CONFIG, "--model",
                               str(tmp_path / "out" / "best"), "--out", str(tmp_path / "pred")])
    assert f"{tmp_path / 'out' / 'best'}: no such model folder" in line and "make finetune" in line, line
    (tmp_path / "empty").mkdir()
    line = user_error(capsys, ["predict", "--task", "dureader_qg", "--config", CONFIG, "--model",
                               str(tmp_path / "empty"), "--out", str(tmp_path / "pred")])
    assert "no config.json" in line and "is this a model folder?" in line, line
    run_folder = tmp_path / "run"
    (run_folder / "best").mkdir(parents=True)
    (run_folder / "best" / "config.json").write_text("{}", "utf-8")
    line = user_error(capsys, ["predict", "--task", "dureader_qg", "--config", CONFIG, "--model", str(run_folder),
                               "--out", str(tmp_path / "pred")])
    assert f"{run_folder}: a fine-tuning run's folder, not a model folder: its model is {run_folder / 'best'}" \
        in line, line
    weights = run_folder / "best" / "model_state.pdparams"  # the weights file given for the folder
    weights.write_bytes(b"")
    line = user_error(capsys, ["predict", "--task", "dureader_qg", "--config", CONFIG, "--model", str(weights),
                               "--out", str(tmp_path / "pred")])
    assert line == f"error: {weights}: a file; a model is the folder holding its config and weights " \
                   f"({run_folder / 'best'})"
    (run_folder / "checkpoint").mkdir()
    (run_folder / "checkpoint" / "trainer_state.json").write_text("{}", "utf-8")
    for model, expected in [("checkpoint", "a training checkpoint (to resume from), not a model folder: the run's "
                             f"model is {run_folder / 'best'}"),
                            ("inference", f"no export yet (make export writes it from {run_folder / 'best'})")]:
        line = user_error(capsys, ["predict", "--task", "dureader_qg", "--config", CONFIG, "--model",
                                   str(run_folder / model), "--out", str(tmp_path / "pred")])
        assert f"{run_folder / model}: {expected}" in line, line
    shutil.rmtree(run_folder / "best")  # interrupted before its first evaluation
    line = user_error(capsys, ["predict", "--task", "dureader_qg", "--config", CONFIG, "--model",
                               str(run_folder / "best"), "--out", str(tmp_path / "pred")])
    assert "the run has no best model yet (it is saved at the first evaluation): run the same finetune" in line


def test_longer_sources_than_a_models_position_table_train_a_grown_table(finished, tmp_path, capsys):
    """Fine-tuning a model folder (160 positions) on longer sources: the error says how to grow the table; with
    that override the run trains the new rows, which start as copies of the trained ones, and saves the longer
    table, which predict then reads."""
    import numpy as np
    import paddle
    data, out = finished
    long = write_data(tmp_path / "long", [record(i, context="青石镇" * 70 + f"{i}号") for i in range(12)],
                      [record(i, context="青石镇" * 70 + f"{i}号") for i in range(3)])
    argv = ["--config", CONFIG, "--data", str(long), *FAST, "--model", str(out / "best"), "-o", "data.max_seq_len=240"]
    line = user_error(capsys, ["finetune", "--out", str(tmp_path / "refused"), *argv])
    assert line == ("error: -o data.max_seq_len=240: data.max_seq_len: 240 is above the model's 160 position "
                    "embeddings (allowed: <= 160); or train a longer table: -o model.overrides.max_position_embeddings"
                    "=240 (a model folder's is grown from its trained rows)"), line
    line = user_error(capsys, ["finetune", "--task", "dureader_qg", "--model", str(out / "best"), "--data", str(data),
                               "--out", str(tmp_path / "refused")])  # the base config's lengths
    own = out / "best" / "task.yaml"
    assert "data.max_seq_len: 360 is above the model's 160" in line and line.endswith(
        f"or go on with the settings {out / 'best'} was fine-tuned with: --config {own} (make: CONFIG={own})"), line
    grow = ["-o", "model.overrides.max_position_embeddings=240", "-o", "train.weight_decay=0.0"]
    run.execute(["finetune", "--out", str(tmp_path / "grown"), *argv, *grow])
    best = tmp_path / "grown" / "best"
    assert json.loads((best / "config.json").read_text())["max_position_embeddings"] == 240
    written = yaml.safe_load((best / "task.yaml").read_text("utf-8"))
    assert written["data"]["default_dir"] == str(long) and written["data"]["max_seq_len"] == 240
    assert f"starting from {out / 'best'};" in (best / "task.yaml").read_text("utf-8")
    key = "unimo.embeddings.position_embeddings.weight"
    before = paddle.load(str(out / "best" / "model_state.pdparams"))[key].numpy()
    after = paddle.load(str(best / "model_state.pdparams"))[key].numpy()
    assert after.shape == (240, before.shape[1])
    # [CLS] answer [SEP] context [SEP] of 216-219 tokens: rows 160..215 (copies of rows 0..55) were trained,
    # rows 220..239 (copies of 60..79) never used (no weight decay), so still the copies
    assert (np.abs(after[160:216] - before[0:56]).max(axis=1) > 1e-4).all()
    np.testing.assert_array_equal(after[220:240], before[60:80])
    result = run.execute(["predict", "--config", CONFIG, "--model", str(best), "--data", str(long),
                          "--out", str(tmp_path / "pred"), "-o", "data.max_seq_len=240", "-o", "decode.max_length=4"])
    assert result["examples"] == 3


def test_predict_reads_the_settings_a_model_was_fine_tuned_with(finished, tmp_path, caplog):
    """finetune writes its config into best/ (task.yaml), and export copies it: predict with the folder and no
    --config (nor --task) decodes with the run's settings -- here the -o overrides of FAST (max_length 4, 2
    beams) -- exactly as with the run's YAML and overrides given again."""
    import logging
    data, out = finished
    written = yaml.safe_load((out / "best" / "task.yaml").read_text("utf-8"))
    assert written["task"] == "dureader_qg" and written["decode"]["max_length"] == 4
    assert written["decode"]["num_beams"] == 2 and written["model"]["overrides"]["hidden_size"] == 16
    with caplog.at_level(logging.INFO, logger="paddle_unimo"):
        own = run.execute(["predict", "--model", str(out / "best"), "--data", str(data), "--out", str(tmp_path / "a")])
    assert f"config: {out / 'best' / 'task.yaml'}" in caplog.text
    given = run.execute(["predict", "--config", CONFIG, *FAST, "--model", str(out / "best"), "--data", str(data),
                         "--out", str(tmp_path / "b")])
    default = run.execute(["predict", "--config", CONFIG, "--model", str(out / "best"), "--data", str(data),
                           "--out", str(tmp_path / "c"), "-o", "decode.num_beams=1"])
    rows = {name: (tmp_path / name / "predictions.txt").read_text("utf-8") for name in "abc"}
    assert own["examples"] == given["examples"] == default["examples"] == 3
    assert own["config"] == str(out / "best" / "task.yaml") and given["overrides"] == FAST[1::2]
    assert rows["a"] == rows["b"] != rows["c"]  # the YAML's own max_length (24) and greedy search give others
    assert max(len(line) for line in rows["a"].splitlines()) <= 4 < max(len(line) for line in rows["c"].splitlines())
    from tools import export_model
    export_model.main(["--model", str(out / "best"), "--out", str(tmp_path / "inference")])
    assert (tmp_path / "inference" / "task.yaml").read_bytes() == (out / "best" / "task.yaml").read_bytes()


@pytest.mark.parametrize("name", sorted(n[:-len(".yaml")] for n in os.listdir(os.path.join(ROOT, "tasks", "configs"))
                                        if not n.startswith("pretrain")))
def test_a_written_run_config_reads_back_as_the_same_config(tmp_path, name):
    from tasks.cli import load_config, write_run_config
    from tasks.registry import get_task
    path = os.path.join(ROOT, "tasks", "configs", f"{name}.yaml")
    config = load_config(path, (), get_task(yaml.safe_load(open(path, encoding="utf-8"))["task"]).config_class)
    write_run_config(str(tmp_path), config, "preset tiny")
    again = load_config(str(tmp_path / "task.yaml"), (), type(config))
    assert again == config


# ---- make's command lines --------------------------------------------------------------------------------------

def make_command(*args) -> str:
    """The command ``make -n args`` would run, as one line."""
    import subprocess
    out = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k not in ("TASK", "OUT", "MODEL", "CONFIG")})
    assert out.returncode == 0, out.stderr
    return " ".join(out.stdout.replace("\\\n", " ").split())


def test_make_follows_the_model_folder_for_its_task_and_outputs(tmp_path):
    """With MODEL=<run>/best (or /inference) and no OUT=, predict, evaluate and export work in <run>; without
    TASK= the task is that of the folder's task.yaml; TASK= and OUT= still choose."""
    run_dir = tmp_path / "run"
    (run_dir / "best").mkdir(parents=True)
    (run_dir / "best" / "task.yaml").write_text("task: flickr30k_retrieval\nmodel: {}\n", "utf-8")
    best = f"{run_dir}/best"
    assert (f'tasks.run predict --task flickr30k_retrieval --out "{run_dir}/predict" --model "{best}"'
            in make_command("predict", f"MODEL={best}"))
    assert (f'tasks.run evaluate --task flickr30k_retrieval --config "{best}/task.yaml" --out "{run_dir}/predict" '
            f'--predictions "{run_dir}/predict/scores.npy"' in make_command("evaluate", f"MODEL={best}/"))
    assert (f'tools.export_model --model "{best}" --out "{run_dir}/inference"'
            in make_command("export", f"MODEL={best}"))
    assert f'--task flickr30k_retrieval --out "{run_dir}/predict" --model "{best}"' in make_command(
        "predict", f"OUT={run_dir}")
    assert '--task dureader_qg --out "other/predict"' in make_command("predict", f"MODEL={best}", "TASK=dureader_qg",
                                                                      "OUT=other")
    assert ('--task dureader_qg --config "tasks/configs/dureader_qg_base.yaml" --out "out/dureader_qg/predict" '
            '--model "models/unimo"' in make_command("predict", "MODEL=models/unimo"))  # not a run folder
    assert '--out "out/my run/predict" --model "out/my run/best"' in make_command("predict", "MODEL=out/my run/best/")


def test_predicting_a_model_of_another_task_names_the_fix(finished, tmp_path, capsys):
    _, out = finished
    line = user_error(capsys, ["predict", "--task", "advertisegen", "--model", str(out / "best"), "--out",
                               str(tmp_path / "pred")])
    assert line.endswith("task: the config is for 'dureader_qg', not --task 'advertisegen'; the model was fine-tuned "
                         "for it: leave --task out (make: TASK=dureader_qg or no TASK), or give --config FILE to "
                         "predict with another task's settings"), line
    assert sorted(os.listdir(tmp_path / "pred")) == [".lock", "train.log"]  # the error, logged; nothing predicted


def test_a_data_folder_that_does_not_exist_says_so(tmp_path, capsys):
    line = user_error(capsys, ["finetune", "--config", CONFIG, "--data", str(tmp_path / "nope"), "--out",
                               str(tmp_path / "out"), *FAST])
    assert line == f"error: {tmp_path / 'nope'}: no such data folder (DATA=, --data: the folder holding train.json)"


def test_metrics_name_the_step_best_was_saved_at(tmp_path):
    """A large learning rate: the best model is an early one, which predict and the metrics are of."""
    data = write_data(tmp_path / "data")
    metrics = finetune(data, tmp_path / "out", "-o", "train.eval_steps=1", "-o", "train.max_steps=4",
                       "-o", "train.lr=0.2")
    saved = re.findall(r"new best bleu4 \S+ at step (\d+)", (tmp_path / "out" / "train.log").read_text("utf-8"))
    assert saved and metrics["best_step"] == int(saved[-1]) < metrics["steps"] == 4, saved


def test_starting_over_leaves_the_runs_own_inputs_in_out(finished, tmp_path):
    """A model and data kept in OUT (fine-tuning OUT/best again, a data folder inside OUT) are the new run's
    inputs: they stay where it reads them; the rest of the earlier run moves aside."""
    data, out = finished
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    shutil.copytree(data, copy / "data")
    (copy / "train.rank1.log").write_text("a second process's log\n", "utf-8")
    finetune(copy / "data", copy, "--model", str(copy / "best"), "--no-resume")
    (previous,) = (copy / "previous").iterdir()
    assert "best" not in os.listdir(previous) and "data" not in os.listdir(previous)
    assert {"checkpoint", "metrics.json", "predictions.jsonl"} <= set(os.listdir(previous))
    assert {"best", "data", "train.rank1.log"} <= set(os.listdir(copy))
    assert "starting from" in (copy / "best" / "task.yaml").read_text("utf-8")


def test_predicting_again_sets_the_earlier_predictions_and_their_scores_aside(finished, tmp_path):
    """A second predict into the same folder moves the first one's files (and evaluate's eval/) into
    previous/<time>/, so no file of the folder describes other predictions; predicting into the fine-tuning run's
    own folder keeps its best/ and checkpoint/ where they are."""
    data, out = finished
    pred = tmp_path / "predict"
    run.execute(["predict", "--model", str(out / "best"), "--data", str(data), "--out", str(pred)])
    run.execute(["evaluate", "--model", str(out / "best"), "--predictions", str(pred / "predictions.jsonl"),
                 "--out", str(pred), "--task", "dureader_qg"])
    first = snapshot(pred)
    assert "eval/metrics.json" in first and "predictions.txt" in first
    two = tmp_path / "two.json"
    two.write_text("\n".join(record(i) for i in (7, 8)) + "\n", "utf-8")
    run.execute(["predict", "--model", str(out / "best"), "--input", str(two), "--out", str(pred)])
    (earlier,) = (pred / "previous").iterdir()
    assert snapshot(earlier) == first  # moved whole, unchanged
    now = snapshot(pred)
    assert not any(k.startswith("eval") for k in now)
    assert len((pred / "predictions.jsonl").read_text("utf-8").splitlines()) == 2
    run_copy = tmp_path / "run"
    shutil.copytree(out, run_copy)
    run.execute(["predict", "--model", str(run_copy / "best"), "--input", str(two), "--out", str(run_copy)])
    assert {"best", "checkpoint"} <= {p.name for p in run_copy.iterdir()}
    (moved,) = (run_copy / "previous").iterdir()
    assert "metrics.json" in {p.name for p in moved.iterdir()} and not (moved / "best").exists()
    model = tmp_path / "model"  # predictions written into the model's own folder, twice: only they move
    shutil.copytree(out / "best", model)
    files = sorted(p.name for p in model.iterdir())
    for _ in range(3):
        run.execute(["predict", "--model", str(model), "--input", str(two), "--out", str(model)])
    assert sorted(p.name for p in model.iterdir()) == sorted(files + [".lock", "metrics.json", "predictions.jsonl",
                                                                       "predictions.txt", "previous", "train.log"])
    assert all(sorted(p.name for p in moved.iterdir()) == ["metrics.json", "predictions.jsonl", "predictions.txt"]
               for moved in (model / "previous").iterdir())


def test_a_second_run_into_a_folder_in_use_is_refused_and_a_killed_saves_leftovers_go(finished, tmp_path, capsys):
    """Another process holding OUT (a run still going, or its orphaned workers) stops the command before it
    touches anything; once it has ended, the hidden temporary folder a killed checkpoint save left is removed."""
    data, out = finished
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom paddle_unimo.fileio import folder_lock\n"
                               "with folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)",
                               str(copy)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        leftover = copy / ".checkpoint.0123456789ab.tmp"  # as if the holder had been killed while saving
        leftover.mkdir()
        (leftover / "model_state.pdparams").write_bytes(b"half")
        before = snapshot(copy)
        for command in (["finetune", "--config", CONFIG, "--data", str(data), *FAST, "--no-resume"],
                        ["predict", "--model", str(out / "best"), "--data", str(data)]):
            error = user_error(capsys, [*command, "--out", str(copy)])
            assert error.startswith(f"error: {copy}: in use by process {holder.pid} (-c {copy}), since ") and \
                "choose another output folder" in error, error
        assert snapshot(copy) == before and leftover.is_dir()
        assert "in use by" not in (copy / "train.log").read_text("utf-8")  # the running run's log, left alone
    finally:
        holder.kill()
        holder.wait(timeout=30)
    exporting = copy / ".inference.0123456789ab.tmp"  # an export being written (no lock): not the run's to remove
    exporting.mkdir()
    finetune(data, copy, "--no-resume")
    assert not leftover.exists() and exporting.is_dir() and (copy / ".lock").is_file()
    assert not any(p.name == ".lock" for moved in (copy / "previous").iterdir() for p in moved.iterdir())


def test_starting_over_leaves_a_subfolder_in_use_and_says_so(finished, tmp_path, capsys):
    """A predict still writing into OUT/predict: finetune --no-resume into OUT stops, moving nothing."""
    data, out = finished
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    (copy / "predict").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom paddle_unimo.fileio import folder_lock\n"
                               "with folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)",
                               str(copy / "predict")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        before = snapshot(copy)
        line = user_error(capsys, ["finetune", "--config", CONFIG, "--data", str(data), *FAST, "--no-resume", "--out",
                                   str(copy)])
        assert line.startswith(f"error: {copy / 'predict'}: in use by process {holder.pid} (-c ") and \
            line.endswith("starting over would move it: wait for it to end (or stop it)"), line
        assert snapshot(copy) == before and not (copy / "previous").exists()
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_a_file_system_without_flock_runs_unlocked_with_a_warning(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl
    from paddle_unimo.fileio import folder_lock

    def unsupported(*args):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", unsupported)
    ran = []
    with folder_lock(tmp_path / "out"):
        ran.append(True)
    assert ran == [True] and "cannot be locked (No locks available)" in caplog.text


def test_an_id_twice_in_the_file_to_predict_for_is_a_warning_and_in_the_references_an_error(finished, tmp_path,
                                                                                          capsys, caplog):
    """evaluate matches predictions to references by id: predict still writes the predictions of a file with an id
    twice (one per line) and warns that they cannot be evaluated; references with an id twice are an error."""
    data, out = finished
    twice = tmp_path / "twice.json"
    twice.write_text("\n".join([record(1), record(2), record(1, answer="5万")]) + "\n", "utf-8")
    result = run.execute(["predict", "--model", str(out / "best"), "--input", str(twice), "--out",
                          str(tmp_path / "pred")])
    assert result["examples"] == 3 and len((tmp_path / "pred" / "predictions.txt").read_text().splitlines()) == 3
    assert f"{twice}:3: id '1' repeats line 1: evaluate cannot match these predictions to references by id" \
        in caplog.text
    line = user_error(capsys, ["evaluate", "--task", "dureader_qg", "--out", str(tmp_path / "pred"), "--predictions",
                               str(tmp_path / "pred" / "predictions.jsonl"), "--references", str(twice)])
    assert line == f"error: {twice}:3: id '1' repeats line 1: the references must name each example once, as the " \
                   "predictions do"


def test_evaluate_without_references_says_which_file_to_give(finished, tmp_path, capsys):
    """Predictions of a file without targets, evaluated as they are: the references are what is missing (not an id
    of another file); references without their targets: the line, with no --skip-bad hint."""
    data, out = finished
    inputs = tmp_path / "new.json"
    inputs.write_text("\n".join(record(i, question=False) for i in (3, 4)) + "\n", "utf-8")
    pred = tmp_path / "pred"
    run.execute(["predict", "--model", str(out / "best"), "--input", str(inputs), "--out", str(pred)])
    line = user_error(capsys, ["evaluate", "--model", str(out / "best"), "--task", "dureader_qg", "--out", str(pred),
                               "--predictions", str(pred / "predictions.jsonl")])
    assert line == f"error: {pred / 'predictions.jsonl'}: predicted for {inputs}, which holds no targets to score " \
                   "them against: the references are REFS= (--references), a file of the same examples with their " \
                   "targets"
    line = user_error(capsys, ["evaluate", "--task", "dureader_qg", "--out", str(pred), "--predictions",
                               str(pred / "predictions.jsonl"), "--references", str(inputs)])
    assert line.startswith(f"error: {inputs}:1: missing field 'question'") and "skip-bad" not in line
    assert line.endswith("(a line of the references, which need the targets: REFS=, --references, names them)")
