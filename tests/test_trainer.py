"""Trainer details: non-finite steps are skipped and counted; Ctrl-C stops after a step with a checkpoint."""
import re

import numpy as np
import paddle
import pytest

from paddle_unimo import UNIMOLMHeadModel, get_preset, masks
from paddle_unimo.training import TrainConfig, Trainer


def tiny_model():
    paddle.seed(0)
    return UNIMOLMHeadModel(get_preset("tiny", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


def lm_batch(items):
    batch = masks.seq2seq_inputs([[3, 10, 11, 1]] * len(items), [[3, 12, 13, 4]] * len(items), 2, 0)
    batch.pop("valid")
    batch["labels"] = np.where(np.arange(8) >= 4, batch["input_ids"], -100)
    return batch


def test_non_finite_loss_skips_the_update_and_counts_it(tmp_path):
    model = tiny_model()
    poisoned = {2}

    def loss_fn(m, batch):
        loss, _ = m(batch["input_ids"], batch["token_type_ids"], batch["position_ids"], batch["attention_mask"],
                    labels=batch["labels"])
        return {"loss": loss * float("nan") if trainer.state["step"] + 1 in poisoned else loss}

    cfg = TrainConfig(max_steps=3, batch_size=2, lr=1e-2, progress=False, save_steps=1000)
    trainer = Trainer(model, cfg, list(range(8)), lm_batch, loss_fn, str(tmp_path))
    snapshots = []
    for stop in (1, 2, 3):
        trainer.train(resume=False, stop_after=stop)
        snapshots.append({k: v.numpy().copy() for k, v in model.state_dict().items()})
    assert trainer.state["nonfinite_skipped"] == 1
    assert all(np.array_equal(snapshots[0][k], snapshots[1][k]) for k in snapshots[0])  # step 2 changed nothing
    assert any(not np.array_equal(snapshots[1][k], snapshots[2][k]) for k in snapshots[1])  # step 3 did
    assert all(np.isfinite(v).all() for v in snapshots[2].values())


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_ctrl_c_finishes_the_step_saves_a_checkpoint_and_resumes_exactly(tmp_path, capsys, signum):
    """The first Ctrl-C (SIGINT sent during step 3; or SIGTERM, as a job scheduler sends) ends the run after step 3
    with a checkpoint of it; running again resumes there and ends with the parameters of an uninterrupted run."""
    import os
    import signal

    from paddle_unimo.training import Interrupted
    from tasks.cli import run_command

    def make(out, interrupt_at=None):
        model = tiny_model()
        sent = []

        def loss_fn(m, batch):
            if trainer.state["step"] + 1 == interrupt_at and not sent:
                sent.append(True)
                os.kill(os.getpid(), getattr(signal, signum))
            loss, _ = m(batch["input_ids"], batch["token_type_ids"], batch["position_ids"], batch["attention_mask"],
                        labels=batch["labels"])
            return {"loss": loss}
        cfg = TrainConfig(max_steps=5, batch_size=2, lr=1e-2, progress=False, save_steps=1000)
        trainer = Trainer(model, cfg, list(range(8)), lm_batch, loss_fn, str(out), fingerprint={"run": 1})
        return model, trainer

    straight, trainer = make(tmp_path / "straight")
    trainer.train()
    model, trainer = make(tmp_path / "resumed", interrupt_at=3)
    with pytest.raises(Interrupted, match="interrupted at step 3; run the same command to resume"):
        trainer.train()
    assert trainer.check_resumable() is not None
    with pytest.raises(SystemExit) as exit_info:
        run_command(lambda: make(tmp_path / "again", interrupt_at=2)[1].train())
    assert exit_info.value.code == 130
    assert "interrupted at step 2; run the same command to resume" in capsys.readouterr().err
    model, trainer = make(tmp_path / "resumed")
    state = trainer.train()
    assert state["step"] == 5
    for key, value in straight.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[key].numpy(), value.numpy(), err_msg=key)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are restored
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_checkpoint_without_the_logging_window_resumes(tmp_path):
    """trainer_state.json written before the logging window was part of the state: it resumes, with an empty
    window, to the parameters of an uninterrupted run."""
    import json

    def loss_fn(m, batch):
        loss, _ = m(batch["input_ids"], batch["token_type_ids"], batch["position_ids"], batch["attention_mask"],
                    labels=batch["labels"])
        return {"loss": loss}

    cfg = TrainConfig(max_steps=4, batch_size=2, lr=1e-2, progress=False, save_steps=2, logging_steps=3)
    straight = tiny_model()
    Trainer(straight, cfg, list(range(8)), lm_batch, loss_fn, str(tmp_path / "a")).train()
    Trainer(tiny_model(), cfg, list(range(8)), lm_batch, loss_fn, str(tmp_path / "b")).train(stop_after=2)
    state_file = tmp_path / "b" / "checkpoint" / "trainer_state.json"
    state = json.loads(state_file.read_text("utf-8"))
    assert state.pop("window")["losses"]  # steps 1-2 of the window that ends at step 3
    state_file.write_text(json.dumps(state), "utf-8")
    model = tiny_model()
    assert Trainer(model, cfg, list(range(8)), lm_batch, loss_fn, str(tmp_path / "b")).train()["step"] == 4
    for key, value in straight.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[key].numpy(), value.numpy(), err_msg=key)


@pytest.mark.parametrize("kinds", [("mlm", "cmcl"), ("mlm", "mlm")])
def test_accumulated_micro_batches_weigh_by_kind(tmp_path, kinds):
    """Two accumulated micro-batches counting 1 and 7 items: of two kinds (pretraining's objectives) each weighs
    1/2, whatever it counts; of one kind they weigh 1/8 and 7/8, the mean over the whole batch's items. The
    accumulated gradient and the logged loss equal the weighted sum of the micro-batches' own."""
    model = tiny_model()
    drawn = {0: {"kind": kinds[0], "count": 1, "targets": [3, 12, 13, 4]},
             1: {"kind": kinds[1], "count": 7, "targets": [3, 20, 21, 4]}}

    def make_batch(d):
        batch = masks.seq2seq_inputs([[3, 10, 11, 1]], [d["targets"]], 2, 0)
        batch.pop("valid")
        batch["labels"] = np.where(np.arange(8) >= 4, batch["input_ids"], -100)
        return {**batch, "kind": d["kind"], "count": d["count"]}

    def loss_fn(m, batch):
        loss, _ = m(batch["input_ids"], batch["token_type_ids"], batch["position_ids"], batch["attention_mask"],
                    labels=batch["labels"])
        return {"loss": loss}

    def gradients_and_loss(d):
        model.clear_gradients()
        batch = {k: paddle.to_tensor(v) if isinstance(v, np.ndarray) else v for k, v in make_batch(d).items()}
        loss = loss_fn(model, batch)["loss"]
        loss.backward()
        return {p.name: p.grad.numpy().copy() for p in model.parameters() if p.grad is not None}, float(loss)

    own = [gradients_and_loss(drawn[m]) for m in (0, 1)]
    weights = (0.5, 0.5) if kinds[0] != kinds[1] else (1 / 8, 7 / 8)
    cfg = TrainConfig(max_steps=1, batch_size=1, accumulate=2, lr=1e-2, progress=False, save_steps=1000)
    trainer = Trainer(model, cfg, [], make_batch, loss_fn, str(tmp_path), sampler=lambda micro: drawn[micro],
                      count=lambda b: b["count"], kind=lambda b: b["kind"])
    model.clear_gradients()
    loss, items, per_kind = trainer.accumulate_gradients()
    assert items == 8 and loss == pytest.approx(weights[0] * own[0][1] + weights[1] * own[1][1], rel=1e-6)
    if kinds[0] != kinds[1]:  # each objective's own loss, for its curve
        assert per_kind == pytest.approx({kinds[0]: own[0][1], kinds[1]: own[1][1]}, rel=1e-6)
    else:
        assert per_kind == pytest.approx({kinds[0]: loss}, rel=1e-6)
    assert own[0][1] != pytest.approx(own[1][1], rel=1e-3)  # the micro-batches differ
    for p in model.parameters():
        if p.grad is not None:
            expected = weights[0] * own[0][0][p.name] + weights[1] * own[1][0][p.name]
            np.testing.assert_allclose(p.grad.numpy(), expected, rtol=1e-4, atol=1e-7, err_msg=p.name)


def test_lr_steps_down_at_the_listed_epochs(tmp_path):
    """``train.lr_decay_epochs``: after the warmup the lr is constant and x``lr_decay_rate`` from the first step
    made entirely of each listed epoch's micro-batches (8 examples, batch 2: 4 micro-batches an epoch; 3 per
    step: epoch 1 starts at step 2, epoch 2 at step 3); without it, the linear decay to 0."""
    from paddle_unimo.training.trainer import linear_warmup_decay
    cfg = TrainConfig(epochs=4, batch_size=2, accumulate=3, lr=1e-2, warmup=1, lr_decay_epochs=[1, 2],
                      lr_decay_rate=0.5, progress=False)
    trainer = Trainer(tiny_model(), cfg, list(range(8)), lm_batch, lambda m, b: None, str(tmp_path))
    assert trainer.total_steps == 6
    factors = [trainer.scheduler.lr_lambda(step) for step in range(7)]
    assert factors == [0.0, 1.0, 0.5, 0.25, 0.25, 0.25, 0.25]
    linear = linear_warmup_decay(6, 1)
    assert [linear(step) for step in range(7)] == [0.0, 1.0, 0.8, 0.6, 0.4, 0.2, 0.0]
    from paddle_unimo.typed import ConfigError
    late = TrainConfig(epochs=4, batch_size=2, accumulate=3, lr_decay_epochs=[2, 4], progress=False)
    with pytest.raises(ConfigError, match=r"lr_decay_epochs: epoch 4 starts at or after the run's last step \(6 "):
        Trainer(tiny_model(), late, list(range(8)), lm_batch, lambda m, b: None, str(tmp_path))


def test_a_checkpoint_of_an_older_version_is_named_as_such(tmp_path):
    """Resuming under settings the checkpoint's fingerprint lacks (a key a later version added) is refused like
    any other difference, and the message says which keys the checkpoint predates."""
    from paddle_unimo.training.trainer import ResumeMismatch

    def loss_fn(m, batch):
        loss, _ = m(batch["input_ids"], batch["token_type_ids"], batch["position_ids"], batch["attention_mask"],
                    labels=batch["labels"])
        return {"loss": loss}

    cfg = TrainConfig(max_steps=2, batch_size=2, lr=1e-3, progress=False, save_steps=1)
    Trainer(tiny_model(), cfg, list(range(8)), lm_batch, loss_fn, str(tmp_path),
            fingerprint={"train.lr": 1e-3}).train(resume=False, stop_after=1)
    newer = Trainer(tiny_model(), cfg, list(range(8)), lm_batch, loss_fn, str(tmp_path),
                    fingerprint={"train.lr": 1e-3, "train.lr_decay_epochs": []})
    with pytest.raises(ResumeMismatch, match=r"train.lr_decay_epochs: \(none\) -> \[\]\); settings this checkpoint "
                                             r"predates, from a later paddle_unimo: train.lr_decay_epochs; run with"):
        newer.train()


def test_an_undefined_metric_is_never_the_best(tmp_path):
    """Dev scores nan, 5, nan, 7, nan, 6 (a regressor whose correlation is undefined at some steps): best/ holds the
    model of the first nan until a score exists, then the step-4 model; trainer_state.json is valid JSON (null)."""
    import json
    import os
    scores = [float("nan"), 5.0, float("nan"), 7.0, float("nan"), 6.0]
    saved = {}

    def evaluate(m):
        step = trainer.state["step"]
        saved[step] = {k: v.numpy().copy() for k, v in m.state_dict().items()}
        return {"pearson": scores[step - 1]}

    def loss_fn(m, batch):
        return {"loss": m(batch["input_ids"], batch["token_type_ids"], batch["position_ids"], batch["attention_mask"],
                          labels=batch["labels"])[0]}

    cfg = TrainConfig(max_steps=6, batch_size=2, lr=1e-2, progress=False, eval_steps=1, save_steps=1)
    trainer = Trainer(tiny_model(), cfg, list(range(8)), lm_batch, loss_fn, str(tmp_path), evaluate=evaluate,
                      metric="pearson", greater_is_better=True)
    best_at = []
    for stop in range(1, 7):
        state = trainer.train(resume=True, stop_after=stop)
        best = paddle.load(str(tmp_path / "best" / "model_state.pdparams"))
        best_at.append(next(s for s, params in saved.items()
                            if all(np.array_equal(params[k], best[k].numpy()) for k in params)))
    assert best_at == [1, 2, 2, 4, 4, 4] and state["best"] == 7.0
    with open(os.path.join(tmp_path, "checkpoint", "trainer_state.json")) as f:
        history = json.load(f, parse_constant=lambda name: pytest.fail(f"{name} in trainer_state.json"))["history"]
    assert [h["pearson"] for h in history if "pearson" in h] == [None, 5.0, None, 7.0, None, 6.0]
    scores[:] = [float("nan")] * 6  # never a score: no best, but the run still ends with a model
    saved.clear()
    trainer = Trainer(tiny_model(), cfg, list(range(8)), lm_batch, loss_fn, str(tmp_path / "never"),
                      evaluate=evaluate, metric="pearson", greater_is_better=True)
    assert trainer.train()["best"] is None and (tmp_path / "never" / "best" / "model_state.pdparams").is_file()


def test_a_damaged_checkpoint_file_is_named(tmp_path):
    """A checkpoint file cut short (a full disk while copying a run) stops the resume with its name, not paddle's
    traceback."""
    from paddle_unimo.fileio import DataError

    def loss_fn(m, batch):
        return {"loss": m(batch["input_ids"], batch["token_type_ids"], batch["position_ids"], batch["attention_mask"],
                          labels=batch["labels"])[0]}

    cfg = TrainConfig(max_steps=2, batch_size=2, lr=1e-2, progress=False, save_steps=1)
    Trainer(tiny_model(), cfg, list(range(8)), lm_batch, loss_fn, str(tmp_path)).train(resume=True, stop_after=1)
    for name in ("optimizer.pdopt", "model_state.pdparams"):
        path = tmp_path / "checkpoint" / name
        kept = path.read_bytes()
        path.write_bytes(kept[:len(kept) // 2])
        with pytest.raises(DataError, match=f"^{path}: not a readable paddle state file"):
            Trainer(tiny_model(), cfg, list(range(8)), lm_batch, loss_fn, str(tmp_path)).train(resume=True)
        path.write_bytes(kept)


def test_the_rate_is_logged_in_the_unit_count_counts(tmp_path, caplog):
    import logging

    def loss_fn(m, batch):
        return {"loss": m(batch["input_ids"], batch["token_type_ids"], batch["position_ids"], batch["attention_mask"],
                          labels=batch["labels"])[0]}

    cfg = TrainConfig(max_steps=2, batch_size=2, lr=1e-2, progress=False, logging_steps=1)
    with caplog.at_level(logging.INFO, logger="paddle_unimo"):
        Trainer(tiny_model(), cfg, list(range(8)), lm_batch, loss_fn, str(tmp_path),
                count=lambda batch: len(batch["input_ids"]), unit="ex").train()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert len(lines) == 2 and all(re.search(r" \d+ ex/s$", line) for line in lines), lines


def test_a_setting_of_infinity_resumes(tmp_path):
    """trainer_state.json writes a non-finite setting as null; the run it came from still resumes."""
    def loss_fn(m, batch):
        return {"loss": m(batch["input_ids"], batch["token_type_ids"], batch["position_ids"], batch["attention_mask"],
                          labels=batch["labels"])[0]}

    cfg = TrainConfig(max_steps=2, batch_size=2, lr=1e-2, progress=False, save_steps=1)
    run = {"train.grad_clip": float("inf"), "train.lr": 0.01}
    Trainer(tiny_model(), cfg, list(range(8)), lm_batch, loss_fn, str(tmp_path), fingerprint=run).train(
        stop_after=1)
    state = Trainer(tiny_model(), cfg, list(range(8)), lm_batch, loss_fn, str(tmp_path), fingerprint=run).train()
    assert state["step"] == 2
