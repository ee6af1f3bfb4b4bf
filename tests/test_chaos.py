"""kill -9 anywhere: the tiny embedded workflow, killed (SIGKILL to Snakemake's whole process group) in conversion,
in stage 1 after a row logged past its last checkpoint and in evaluation -- each re-run as documented, and each
re-run killed at the next moment -- ends exactly as an uninterrupted run: same metrics, per-phrase results, training
logs and checkpoint tensors, a clean audit; no process outlives a kill, and no temp, part or Snakemake temp folder
is left. (A fresh start over a killed run's rows: tests/test_train.py.)"""
import pytest
from helpers.chaos_trials import (MOMENTS, differences, kill_when, outcome, processes_in, snakemake_args, start,
                                  stray_files)
from helpers.workflow import DEMO_STAGES, demo_run, make_workspace


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """What the uninterrupted run (test_workflow.py's, shared) ends with."""
    return outcome(demo_run(tmp_path_factory))


@pytest.mark.slow
def test_killed_anywhere_then_rerun_ends_as_the_uninterrupted_run(tmp_path, reference):
    workspace = make_workspace(tmp_path, **DEMO_STAGES)
    for moment, holds in MOMENTS.items():
        kill = kill_when(workspace, start(workspace, snakemake_args()), moment, holds)
        assert kill is not None, f"the run ended before the kill ({moment}): " + \
            (workspace / "chaos.log").read_text()[-3000:]
        assert not kill.orphans, f"killed in {moment}: these processes outlived the kill: {kill.orphans}"
        assert not kill.written, f"killed in {moment}: written after the kill: {kill.written}"
    rerun = start(workspace, snakemake_args())
    assert rerun.wait(timeout=900) == 0, (workspace / "chaos.log").read_text()[-4000:]
    assert processes_in(workspace) == {}
    assert stray_files(workspace) == []
    assert differences(outcome(workspace), reference) == []
