"""Test set-up: fast CPU matmul (set by importing paddle_unimo first), shared data, paddlenlp home."""
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("PPNLP_HOME", os.path.join(tempfile.gettempdir(), "paddle_unimo_ppnlp_home"))
import paddle_unimo  # noqa: E402,F401  (sets MKL_DEBUG_CPU_TYPE / OMP_NUM_THREADS before paddle loads)

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
