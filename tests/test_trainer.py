"""Trainer details: non-finite steps are skipped and counted; Ctrl-C stops after a step with a checkpoint."""
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
