"""Shared fixtures: the reference folder of the published release (tests/fixtures/reference, or $MDETR_REFERENCE) and
its tiny tokenizer."""
import pytest
import torch

from helpers.coco import indexed_coco
from helpers.markers import mark
from helpers.paths import REFERENCE, REPO, require
from helpers.phrasecut_run import evaluated_run as build_evaluated_run

torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    for item in items:
        mark(item)


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
