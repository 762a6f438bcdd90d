"""Two processes (fleet, gloo on CPU) train exactly like one process on the concatenated batch."""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "tasks", "configs", "dureader_qg_tiny.yaml")
COMMON = ["-o", "train.max_steps=4", "-o", "train.logging_steps=1", "-o", "train.progress=false", "-o", "train.eval_steps=100000",
          "-o", "eval.max_examples=2", "-o", "decode.decode_strategy=greedy_search", "-o", "decode.max_length=4",
          "-o", "model.overrides.hidden_dropout_prob=0.0", "-o", "model.overrides.attention_probs_dropout_prob=0.0"]

# multi-process runs of a minute each: `make test-all` (and CI) run them
pytestmark = pytest.mark.slow


def finetune(out, batch_size, nproc, *extra):
    launch = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc),
              "--log_dir", str(out) + "_log"] if nproc > 1 else [sys.executable]
    cmd = launch + [os.path.join(ROOT, "tasks", "run.py"), "finetune", "--config", CONFIG, "--out", str(out),
                    "-o", f"train.batch_size={batch_size}", *COMMON, *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    logs = result.stdout + result.stderr
    if nproc > 1 and os.path.isdir(str(out) + "_log"):
        logs += "".join(open(os.path.join(str(out) + "_log", f), errors="replace").read()
                        for f in sorted(os.listdir(str(out) + "_log")))
    assert result.returncode == 0, logs[-3000:]
    with open(os.path.join(str(out), "metrics.json"), encoding="utf-8") as f:
        curve = np.array(json.load(f)["loss_curve"])
    return paddle.load(os.path.join(str(out), "checkpoint", "model_state.pdparams")), curve


def test_two_processes_equal_one_process_on_the_doubled_batch(tmp_path):
    one, one_curve = finetune(tmp_path / "one", batch_size=8, nproc=1)
    two, two_curve = finetune(tmp_path / "two", batch_size=4, nproc=2)
    # guards the test: a different batch differs (and rank 0's half of the batch is that batch)
    half, half_curve = finetune(tmp_path / "half", batch_size=4, nproc=1)
    assert set(one) == set(two)
    for key in one:
        np.testing.assert_allclose(two[key].numpy(), one[key].numpy(), atol=1e-5, rtol=0, err_msg=key)
    assert max(float(np.abs(half[k].numpy() - one[k].numpy()).max()) for k in one) > 1e-4
    # the logged loss is the step's over both processes' items, as the one process logs it
    assert len(one_curve) == 4 and np.array_equal(two_curve[:, 0], one_curve[:, 0])
    np.testing.assert_allclose(two_curve[:, 1], one_curve[:, 1], atol=2e-5, rtol=0)
    assert np.abs(half_curve[:, 1] - one_curve[:, 1]).max() > 1e-3


def test_two_processes_with_recompute_equal_one_process(tmp_path):
    """Recompute runs each layer's forward again in backward, which DataParallel's hooks cannot follow: the
    gradients are then averaged by hand, to the same parameters as one process without recompute."""
    one, one_curve = finetune(tmp_path / "one", 8, 1)
    two, two_curve = finetune(tmp_path / "two", 4, 2, "-o", "train.recompute=true")
    for key in one:
        np.testing.assert_allclose(two[key].numpy(), one[key].numpy(), atol=1e-5, rtol=0, err_msg=key)
    np.testing.assert_allclose(two_curve[:, 1], one_curve[:, 1], atol=2e-5, rtol=0)
