"""Shared fixtures: the reference folder of the published release (tests/fixtures/reference, or $MDETR_REFERENCE) and
its tiny tokenizer."""
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# golden data made with the published code (tests/fixtures/README.md); $MDETR_REFERENCE points the suite at another copy
REFERENCE = Path(os.environ.get("MDETR_REFERENCE") or REPO / "tests" / "fixtures" / "reference")

torch.set_num_threads(1)

# `make test` spreads the suite over the cores (pytest-xdist, `--dist loadgroup`), a test module to a worker as a
# whole, so a module's fixtures are made once; modules sharing a run share a worker (test_chaos.py compares its
# killed runs with test_workflow.py's demo run).
XDIST_GROUPS = {"test_chaos": "test_workflow"}


# Tests on a real Slurm cluster need Debian's slurm-wlm and munge (`make slurm-deps`, root): marked
# `system_packages` like the Chromium test, so `make test-without-root` deselects them by name (never skips them).
SYSTEM_FIXTURES = {"cluster", "cluster3"}


def pytest_collection_modifyitems(items):
    for item in items:
        module = item.module.__name__
        item.add_marker(pytest.mark.xdist_group(XDIST_GROUPS.get(module, module)))
        if SYSTEM_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.system_packages)


@pytest.fixture(scope="session")
def repo_dir():
    return REPO


def require(path):
    """`path`, or a failure naming the missing fixture file or folder: a test never skips for want of data."""
    path = Path(path)
    if not path.exists():
        pytest.fail(f"test fixture not found: {path}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def reference_dir():
    return require(REFERENCE)


@pytest.fixture(scope="session")
def tiny_roberta_dir(reference_dir):
    return reference_dir / "tiny_roberta"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A real one-node Slurm cluster on loopback (fails where Slurm or root is missing)."""
    from slurm_cluster import start_cluster

    with start_cluster(tmp_path_factory.mktemp("slurm")) as c:
        yield c


def env_paths(name):
    """Extra fixture paths from an os.pathsep-separated environment variable (e.g. MDETR_GOLDEN)."""
    return [Path(p) for p in os.environ.get(name, "").split(os.pathsep) if p]


# the published code's outputs on the golden inputs (reference folder; more from $MDETR_GOLDEN)
MDETR_GOLDEN = [REFERENCE / "official_mdetr_r50_seed0.pt", *env_paths("MDETR_GOLDEN")]


def indexed_coco(folder):
    """`folder` with the annotation index of each finetune_phrasecut_{split}.json in it built beside it."""
    from mdetr_phrasecut.data.annotation_index import build_index

    for coco in Path(folder).glob("finetune_phrasecut_*.json"):
        build_index(coco, coco.with_suffix(".index"))
    return Path(folder)


@pytest.fixture(scope="session")
def mini_coco(reference_dir, tmp_path_factory):
    """phrasecut_mini's expected COCO files with their annotation indexes (what `train --coco-dir` reads)."""
    import shutil

    folder = tmp_path_factory.mktemp("mini_coco")
    for coco in (reference_dir / "phrasecut_mini" / "s0" / "expected_coco").glob("*.json"):
        shutil.copyfile(coco, folder / coco.name)
    return indexed_coco(folder)
