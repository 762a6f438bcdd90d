"""Test set-up: fast CPU matmul (set by importing paddle_unimo first), shared data, paddlenlp home."""
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("PPNLP_HOME", os.path.join(tempfile.gettempdir(), "paddle_unimo_ppnlp_home"))
import paddle_unimo  # noqa: E402

paddle_unimo.cpu_defaults()  # MKL_DEBUG_CPU_TYPE / OMP_NUM_THREADS, before any test imports paddle

SHARED_DATA = Path(os.environ.get("PADDLE_UNIMO_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))
REQUIRE_SHARED = os.environ.get("PADDLE_UNIMO_REQUIRE_SHARED") == "1"


def shared_path(*parts) -> Path:
    """A file under ../shared/data; skips the test when it is absent, fails when CI requires it."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        message = f"shared data {path} is absent"
        if REQUIRE_SHARED:
            pytest.fail(message + " (PADDLE_UNIMO_REQUIRE_SHARED=1)")
        pytest.skip(message + "; set PADDLE_UNIMO_SHARED_DATA to its folder")
    return path


def loss_and_gradients(loss, layer):
    """(loss value, {parameter name: gradient}) after ``loss.backward()``, for equivalence tests."""
    return float(loss), {n: p.grad.numpy().copy() for n, p in layer.named_parameters() if p.grad is not None}


def assert_same_loss_and_gradients(first, second, atol=1e-6):
    """Two (loss, gradients) runs agree: the same loss, the same parameters with gradients, equal gradients."""
    import numpy as np
    (loss_a, grads_a), (loss_b, grads_b) = first, second
    assert loss_b == pytest.approx(loss_a, rel=1e-6) and loss_a > 1.0
    assert set(grads_b) == set(grads_a) and len(grads_a) > 20
    for name, grad in grads_a.items():
        np.testing.assert_allclose(grads_b[name], grad, atol=atol, err_msg=name)


def assert_exported_step_matches(model, stepper, args):
    """The exported ``stepper``'s prefill and one step equal dynamic mode's on ``args``: logits, cache, the
    decode state; returns the exported state after the step."""
    import numpy as np
    import paddle

    from paddle_unimo.generation import ModelStepper, advance
    with paddle.no_grad():
        ref_logits, ref_state = ModelStepper(model).prefill(*args)
        logits, state = stepper.prefill(*args)
        np.testing.assert_allclose(logits.numpy(), ref_logits.numpy(), atol=1e-5)
        for part in ("source_k", "source_v", "source_bias"):
            np.testing.assert_allclose(np.stack([t.numpy() for t in getattr(state.cache, part)]),
                                       np.stack([t.numpy() for t in getattr(ref_state.cache, part)]), atol=1e-5)
        for field in ("position", "token_type"):
            np.testing.assert_array_equal(getattr(state, field).numpy(), getattr(ref_state, field).numpy())
        tokens = paddle.argmax(ref_logits, axis=-1, keepdim=True)
        ref_next = advance(ModelStepper(model), tokens, ref_state)
        np.testing.assert_allclose(advance(stepper, tokens, state).numpy(), ref_next.numpy(), atol=1e-5)
    return state
