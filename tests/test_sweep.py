"""``make sweep``: a grid of fine-tuning runs, resumable, summarised as the original's stat_res.py does."""
import json
import os
import shutil
import statistics

import pytest

from paddle_unimo.typed import ConfigError
from tasks import sweep

ARGS = ["--task", "snli_ve", "--grid", "train.lr=1e-3,2e-3 train.seed=1,2", "-o", "train.epochs=1",
        "-o", "train.progress=false", "-o", "data.max_text_len=8"]


def test_grid_parsing_and_refusals():
    assert sweep.parse_grid("train.lr=1e-5,2e-5 train.seed=1") == [("train.lr", ["1e-5", "2e-5"]),
                                                                   ("train.seed", ["1"])]
    assert sweep.combinations([("a", ["1", "2"]), ("b", ["x"])]) == [{"a": "1", "b": "x"}, {"a": "2", "b": "x"}]
    assert sweep.parse_grid("train.lr_decay_epochs=[1,2],[3] train.seed=1") == [
        ("train.lr_decay_epochs", ["[1,2]", "[3]"]), ("train.seed", ["1"])]  # a list value keeps its commas
    for bad in ("", "train.lr", "train.lr=", "train.lr=1,,2", "a=1 a=2", "a=[1,2],"):
        with pytest.raises(ConfigError):
            sweep.parse_grid(bad)


def test_sweep_runs_resumes_and_summarises(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep"
    calls = []
    real = sweep.run.execute
    monkeypatch.setattr(sweep.run, "execute", lambda argv: calls.append(argv) or real(argv))
    first = sweep.execute([*ARGS, "--out", str(out)])
    assert len(calls) == 4 and len(first["runs"]) == 4
    for row in first["runs"]:  # each run's best dev score is its own metrics.json's
        metrics = json.loads(open(row["metrics"], encoding="utf-8").read())
        assert row["best"] == metrics["best_eval_accuracy"]
    by_lr = {}
    for row in first["runs"]:
        by_lr.setdefault(row["settings"]["train.lr"], []).append(row["best"])
    for group in first["summary"][:2]:
        values = by_lr[group["setting"].split("=")[1]]
        assert group == {"setting": group["setting"], "max": max(values), "min": min(values),
                         "median": statistics.median(values), "mean": statistics.fmean(values), "runs": 2,
                         "undefined": 0}
    assert first["summary"][2]["setting"] == "(whole grid)" and first["summary"][2]["runs"] == 4
    calls.clear()  # a finished grid: each run returns its metrics.json, untouched
    stamps = {row["run"]: os.stat(row["metrics"]).st_mtime_ns for row in first["runs"]}
    assert sweep.execute([*ARGS, "--out", str(out)])["runs"] == first["runs"] and len(calls) == 4
    assert {row["run"]: os.stat(row["metrics"]).st_mtime_ns for row in first["runs"]} == stamps
    # the same grid with another setting is refused, naming it, and changes nothing
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        sweep.execute([*ARGS, "--out", str(out), "-o", "train.batch_size=3"])
    assert exit_info.value.code == 2 and "train.batch_size" in capsys.readouterr().err
    assert {row["run"]: os.stat(row["metrics"]).st_mtime_ns for row in first["runs"]} == stamps
    # a half-finished grid: one run lost its outputs (its checkpoint is kept) and one never started
    victim, lost = out / "train.lr=1e-3,train.seed=2", out / "train.lr=2e-3,train.seed=1"
    os.remove(victim / "metrics.json")
    shutil.rmtree(lost)
    again = sweep.execute([*ARGS, "--out", str(out)])
    kept = {row["run"] for row in first["runs"]} - {victim.name, lost.name}
    assert {row["run"]: os.stat(row["metrics"]).st_mtime_ns for row in again["runs"] if row["run"] in kept} == \
        {run: stamps[run] for run in kept}  # the two finished runs untouched, the others written anew
    assert [r["best"] for r in again["runs"]] == [r["best"] for r in first["runs"]]  # seeded: the same scores
    assert (out / "sweep.tsv").read_text("utf-8").startswith("run\tbest accuracy\n")
    # --no-resume, which the refusal above names, starts every combination over: the other setting is taken
    started = sweep.execute([*ARGS, "--out", str(out), "-o", "train.batch_size=3", "--no-resume"])
    assert len(started["runs"]) == 4 and all(len(os.listdir(out / r["run"] / "previous")) == 1 for r in started["runs"])


def test_a_grid_key_the_config_refuses_stops_the_sweep_first(tmp_path, capsys):
    with pytest.raises(SystemExit):
        sweep.main(["--task", "snli_ve", "--grid", "train.lr=1e-3 train.lerning_rate=1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "error: --grid train.lerning_rate=1: -o train.lerning_rate=1: train: unknown key lerning_rate" in err, err
    assert os.listdir(tmp_path) == []  # no run folder made


def test_runs_without_a_score_are_counted_not_summarised():
    """A run whose dev metric was never defined (best None: STS-B's Pearson of constant predictions) is
    n/a in the table and counted apart; the statistics are of the others."""
    groups = [{"setting": "lr=1", **sweep.summary([None, 2.0, 4.0])}, {"setting": "lr=2", **sweep.summary([None])}]
    assert groups[0] == {"setting": "lr=1", "max": 4.0, "min": 2.0, "median": 3.0, "mean": 3.0, "runs": 3,
                         "undefined": 1}
    assert groups[1]["max"] is None and groups[1]["undefined"] == 1
    rows = [{"run": "a", "best": None}, {"run": "b", "best": 2.0}]
    assert sweep.table(rows, groups, "pearson").splitlines() == [
        "run\tbest pearson", "a\tn/a", "b\t2.00", "", "setting\tmax\tmin\tmedian\tmean\truns\tundefined",
        "lr=1\t4.00\t2.00\t3.00\t3.00\t3\t1", "lr=2\tn/a\tn/a\tn/a\tn/a\t1\t1"]
