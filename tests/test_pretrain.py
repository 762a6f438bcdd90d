"""Pretraining end to end: 2 processes = 1 process, exact resume, the default run's losses all decrease."""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "tasks", "configs", "pretrain_tiny.yaml")

# multi-process runs of a minute each: `make test-all` (and CI) run them
pytestmark = pytest.mark.slow


def run(args, nproc=1, log_dir=None):
    launch = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc),
              "--log_dir", str(log_dir)] if nproc > 1 else [sys.executable]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(launch + args, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    logs = result.stdout + result.stderr
    if log_dir and os.path.isdir(log_dir):
        logs += "".join(open(os.path.join(log_dir, f), errors="replace").read() for f in sorted(os.listdir(log_dir)))
    assert result.returncode == 0, logs[-3000:]
    return logs


def mini_corpus(out):
    run(["-m", "tasks.pretrain_mini", "--out", str(out / "mini")])


def pretrain(out, *overrides, config=CONFIG, nproc=1, extra=()):
    args = [os.path.join(ROOT, "tasks", "pretrain.py"), "--config", str(config), "--out", str(out),
            "-o", "train.progress=false", *[x for o in overrides for x in ("-o", o)], *extra]
    return run(args, nproc, log_dir=str(out) + "_launch" if nproc > 1 else None)


def params(out):
    return paddle.load(os.path.join(str(out), "checkpoint", "model_state.pdparams"))


def test_two_processes_equal_one_process_on_the_doubled_batch(tmp_path):
    """Every objective: each example is masked by a generator seeded by its place in the global batch, and
    CMCL's in-batch negatives are gathered (with their gradients) from every process."""
    config = yaml.safe_load(open(CONFIG, encoding="utf-8"))
    config["model"]["overrides"].update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    outs = {}
    for name, batch, nproc in (("one", 8, 1), ("two", 4, 2)):
        outs[name] = tmp_path / name
        mini_corpus(outs[name])
        pretrain(outs[name], "train.max_steps=10", "train.logging_steps=1", "train.lr=5e-4", f"train.batch_size={batch}",
                 config=path, nproc=nproc)
    import json
    trained = json.loads((outs["one"] / "metrics.json").read_text("utf-8"))["loss_curves"]
    assert sorted(trained) == ["cmcl", "region", "seq2seq_lm", "span_mlm"]  # every objective took part
    logged = json.loads((outs["two"] / "metrics.json").read_text("utf-8"))["loss_curves"]
    assert sorted(logged) == sorted(trained)  # the step's loss over both processes' items, as one process logs it
    for name in trained:
        np.testing.assert_allclose(np.array(logged[name]), np.array(trained[name]), atol=2e-4, rtol=0, err_msg=name)
    one, two = params(outs["one"]), params(outs["two"])
    assert set(one) == set(two) and any(k.startswith("heads.region") for k in one)
    # Float rounding differs between the two runs, and Adam's normalised steps amplify it: changing only how the
    # loss rounds (a sum times 1/N instead of a mean) moved the largest parameter difference from 2e-6 to 5e-6, the
    # written-out loss gradient to 1.1e-5; with the captions' text objectives in the mix (CMCL drawn less often),
    # one image_pooler weight, trained by CMCL's tiny gradients alone, differed by 7.2e-5. A semantic difference
    # moves parameters by up to lr (5e-4) per step.
    for key in one:
        np.testing.assert_allclose(two[key].numpy(), one[key].numpy(), atol=1e-4, rtol=0, err_msg=key)


def test_a_killed_run_resumes_to_the_same_parameters(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for out in (straight, resumed):
        mini_corpus(out)
    common = ("train.max_steps=8", "train.save_steps=1")
    pretrain(straight, *common)
    pretrain(resumed, *common, extra=["--stop-after", "3"])
    assert "resumed from" in pretrain(resumed, *common)
    a, b = params(straight), params(resumed)
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy(), err_msg=key)
    assert "this run had finished (step 8): nothing left to train" in pretrain(resumed, *common)
    # starting over moves the run's outputs aside, not its corpus ({out}/mini) or the corpus index
    pretrain(resumed, *common, extra=["--no-resume", "--stop-after", "2"])
    (previous,) = (resumed / "previous").iterdir()
    assert sorted(os.listdir(previous)) == ["best", "checkpoint", "metrics.json", "vdl"]
    assert sorted(os.listdir(resumed)) == [".lock", "checkpoint", "index", "metrics.json", "mini", "previous",
                                           "train.log"]
    for key, value in params(previous).items():
        np.testing.assert_array_equal(value.numpy(), b[key].numpy(), err_msg=key)


def test_default_run_every_loss_decreases_and_is_logged(tmp_path):
    """The default of `make pretrain`: the mini corpus, the tiny preset, 2 processes on CPU."""
    out = tmp_path / "pretrain"
    mini_corpus(out)
    pretrain(out, nproc=2)
    import json
    metrics = json.loads((out / "metrics.json").read_text("utf-8"))
    assert sorted(metrics["loss_curves"]) == ["cmcl", "region", "seq2seq_lm", "span_mlm"]
    for name, curve in metrics["loss_curves"].items():
        losses = [loss for _, loss in curve]
        assert len(losses) >= 6, name
        assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), (name, losses)
    from visualdl import LogReader
    logs = [os.path.join(out, "vdl", f) for f in os.listdir(out / "vdl")]
    tags = set(LogReader(file_path=logs[0]).get_tags().get("scalar", []))
    assert {f"train/{n}_loss" for n in metrics["loss_curves"]} <= tags, tags
    assert metrics["nonfinite_skipped"] == 0


def recipe_corpora(data, rng):
    """A corpora folder laid out as tasks/configs/pretrain_base.yaml and pretrain_large.yaml read it: two text shards,
    an image store and a pair store (2048-d features, 1601 class columns as the recipe's model), a captions file."""
    import json
    from paddle_unimo.data.regions import RegionRecord, RegionStore
    words = "a the cat dog red blue ball box sits runs near under on big small".split()
    (data / "text").mkdir(parents=True)
    for shard in ("part-000.txt", "part-001.txt"):
        (data / "text" / shard).write_text("".join(" ".join(rng.choice(words, 12)) + "\n" for _ in range(20)),
                                           "utf-8")
    for store, ids in (("images", [f"img{i}" for i in range(4)]), ("pairs", [f"pair{i}" for i in range(4)])):
        records = []
        for image_id in ids:
            xy = rng.uniform(0, 300, (5, 2))
            probs = rng.dirichlet(np.ones(1601), 5).astype(np.float32)
            records.append(RegionRecord(image_id, 640, 480, np.concatenate([xy, xy + 50], 1).astype(np.float32),
                                        rng.normal(size=(5, 2048)).astype(np.float32), probs))
        RegionStore(data / "regions" / store).append(records)
    (data / "pairs").mkdir()
    rows = [{"image_id": f"pair{i}", "caption": f"a {words[3 + i]} near a box",
             "negative_texts": [{"text": f"a {words[7 + i]} near a box"}]} for i in range(4)]
    (data / "pairs" / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    return [line for f in sorted((data / "text").iterdir()) for line in f.read_text("utf-8").splitlines()]


@pytest.mark.parametrize("size, overlap", [("base", 0.4), ("large", 0.3)])
def test_the_papers_recipe_runs_as_written_from_a_roberta_folder(tmp_path, size, overlap):
    """``make pretrain SIZE=base|large MODEL=roberta DATA=corpora``: the recipe configs as written (512 tokens, 101
    region rows, every objective on its corpus, fp16 logged as inactive on a CPU, the large one's accumulation and
    recompute) from a small random RoBERTa folder (type_vocab_size 1, as roberta-base), 12 steps of micro-batches of
    2 that draw every objective, stopped after 5 and resumed from a moved corpora folder to the parameters of an
    uninterrupted run (objective heads first drawn after the checkpoint included); the model keeps RoBERTa's sizes
    and takes the recipe's region settings; a {data} path without DATA= and a glob matching nothing are errors."""
    import json
    pnlp = pytest.importorskip("paddlenlp.transformers")
    from paddle_unimo import WordPieceTokenizer
    from tasks.pretrain import execute
    corpora = tmp_path / "corpora [v1]"  # a folder name that is a glob pattern: taken literally
    texts = recipe_corpora(corpora, np.random.default_rng(0))
    vocab = tmp_path / "vocab"
    tokenizer = WordPieceTokenizer.build_char_vocab(texts + ["near box"], words=True)
    tokenizer.save_pretrained(str(vocab))
    paddle.seed(0)
    roberta = tmp_path / "roberta"
    pnlp.RobertaModel(pnlp.RobertaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=4, intermediate_size=37, max_position_embeddings=514,
                                         type_vocab_size=1, pad_token_id=1)).save_pretrained(str(roberta))
    out = tmp_path / "out"
    config = os.path.join(ROOT, "tasks", "configs", f"pretrain_{size}.yaml")
    argv = ["--config", config, "--out", str(out), "--model", str(roberta), "--vocab", str(vocab),
            "-o", "train.max_steps=12", "-o", "train.batch_size=2", "-o", "train.progress=false",
            "-o", "train.logging_steps=1", "-o", "train.save_steps=5"]
    assert execute(argv + ["--data", str(corpora), "--stop-after", "5"])["step"] == 5  # as if killed, then
    moved = tmp_path / "moved"  # the corpora moved: the run resumes (its identity: the config and the files)
    corpora.rename(moved)
    state = execute(argv + ["--data", str(moved)])
    assert state["step"] == 12 and "resumed from" in (out / "train.log").read_text("utf-8")
    straight = tmp_path / "straight"  # exactly as a run that was not stopped, the heads first drawn after step 5 too
    execute([a if a != str(out) else str(straight) for a in argv] + ["--data", str(moved)])
    a, b = params(out), params(straight)
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy(), err_msg=key)
    metrics = json.loads((out / "metrics.json").read_text("utf-8"))
    assert metrics["corpora"] == {"text": 40, "images": 4, "pairs": 4} and metrics["nonfinite_skipped"] == 0
    assert sorted(metrics["loss_curves"]) == ["cmcl", "region", "seq2seq_lm", "span_mlm"]  # every objective ran
    saved = json.loads((out / "best" / "config.json").read_text("utf-8"))
    assert (saved["num_hidden_layers"], saved["hidden_size"], saved["max_position_embeddings"]) == (2, 32, 514)
    assert (saved["image_embedding_size"], saved["image_class_size"], saved["overlap_ratio"]) == (2048, 1601, overlap)
    assert len(list((out / "index").glob("*.npy"))) == 4  # one memory-mapped index per text shard and folder
    log = (out / "train.log").read_text("utf-8")
    assert "mixed precision (O1 float16) requested but inactive: no float16 kernels on cpu" in log
    with pytest.raises(SystemExit):
        execute(argv[:2] + ["--out", str(tmp_path / "no_data")] + argv[4:])
    assert "reads {data}: give the corpora folder (DATA=, --data)" in (tmp_path / "no_data" / "train.log").read_text()
    with pytest.raises(SystemExit):  # from scratch, the recipe's preset needs a real vocabulary
        execute(argv[:2] + ["--out", str(tmp_path / "no_vocab"), "--data", str(moved)])
    assert f"model.preset unimo-{size}-en from scratch needs a vocabulary: give MODEL=" in \
        (tmp_path / "no_vocab" / "train.log").read_text()
    (tmp_path / "empty").mkdir()  # a glob that matches nothing
    with pytest.raises(SystemExit):
        execute(argv[:2] + ["--out", str(tmp_path / "empty_out")] + argv[4:] + ["--data", str(tmp_path / "empty")])
    assert "text/*.txt: no file matches" in (tmp_path / "empty_out" / "train.log").read_text()
