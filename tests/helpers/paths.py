"""Where the tests find the repository, the release's golden fixtures and the venv's commands."""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# golden data made with the published code (tests/fixtures/README.md); $MDETR_REFERENCE points the suite at another copy
REFERENCE = Path(os.environ.get("MDETR_REFERENCE") or REPO / "tests" / "fixtures" / "reference")
BIN = Path(sys.executable).parent


def require(path):
    """`path`, or a failure naming the missing fixture file or folder: a test never skips for want of data."""
    path = Path(path)
    if not path.exists():
        pytest.fail(f"test fixture not found: {path}", pytrace=False)
    return path


def env_paths(name):
    """Extra fixture paths from an os.pathsep-separated environment variable (e.g. MDETR_GOLDEN)."""
    return [Path(p) for p in os.environ.get(name, "").split(os.pathsep) if p]


# the published code's outputs on the golden inputs (reference folder; more from $MDETR_GOLDEN)
MDETR_GOLDEN = [REFERENCE / "official_mdetr_r50_seed0.pt", *env_paths("MDETR_GOLDEN")]
