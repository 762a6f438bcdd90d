"""Trainer details: non-finite steps are skipped and counted; recompute gives the same gradients."""
import numpy as np
import paddle

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


def test_recompute_gives_the_same_gradients():
    grads = []
    for recompute in (False, True):
        model = tiny_model()
        model.train()
        model.unimo.encoder.recompute = recompute
        batch = {k: paddle.to_tensor(v) for k, v in lm_batch([0, 1]).items()}
        loss, _ = model(batch["input_ids"], batch["token_type_ids"], batch["position_ids"], batch["attention_mask"],
                        labels=batch["labels"])
        loss.backward()
        grads.append({n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None})
    assert set(grads[0]) == set(grads[1]) and len(grads[0]) > 20
    for name in grads[0]:
        np.testing.assert_allclose(grads[1][name], grads[0][name], atol=1e-6, err_msg=name)
