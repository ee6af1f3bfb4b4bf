"""Shared fixtures: the reference folder of the published release (next to the repo) and its tiny tokenizer."""
import pytest
import torch

from helpers.coco import indexed_coco
from helpers.paths import REFERENCE, REPO, require
from helpers.phrasecut_run import evaluated_run as build_evaluated_run

torch.set_num_threads(1)

# `make test` spreads the suite over the cores (pytest-xdist, `--dist loadgroup`), a test module to a worker as a
# whole, so a module's fixtures are made once; modules sharing a run share a worker (test_chaos.py compares its
# killed runs with test_workflow.py's demo run).
XDIST_GROUPS = {"test_chaos": "test_workflow"}


def pytest_collection_modifyitems(items):
    for item in items:
        module = item.module.__name__
        item.add_marker(pytest.mark.xdist_group(XDIST_GROUPS.get(module, module)))


@pytest.fixture(scope="session")
def repo_dir():
    return REPO


@pytest.fixture(scope="session")
def reference_dir():
    return require(REFERENCE)


@pytest.fixture(scope="session")
def tiny_roberta_dir(reference_dir):
    return reference_dir / "tiny_roberta"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A real one-node Slurm cluster on loopback (fails where Slurm or root is missing)."""
    from helpers.slurm_cluster import start_cluster

    with start_cluster(tmp_path_factory.mktemp("slurm")) as c:
        yield c


@pytest.fixture(scope="session")
def mini_coco(reference_dir, tmp_path_factory):
    """phrasecut_mini's expected COCO files with their annotation indexes (what `train --coco-dir` reads)."""
    import shutil

    folder = tmp_path_factory.mktemp("mini_coco")
    for coco in (reference_dir / "phrasecut_mini" / "s0" / "expected_coco").glob("*.json"):
        shutil.copyfile(coco, folder / coco.name)
    return indexed_coco(folder)


@pytest.fixture
def evaluated_run(tmp_path):
    """A small PhraseCut root, its images and an evaluated run folder (helpers/phrasecut_run.py)."""
    return build_evaluated_run(tmp_path)
