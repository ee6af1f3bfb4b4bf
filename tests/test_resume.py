"""A run killed with SIGKILL after a mid-epoch checkpoint, or stopped by SIGTERM, and then resumed, ends with
weights, EMA, optimizer and logs bitwise equal to an uninterrupted run (CPU; dropout and random augmentations on)."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from mdetr_phrasecut.engine.resume_state import EXIT_REQUEUE
from helpers.specs import spec_file, tiny_spec
from helpers.resume import assert_same_result

STEPS_PER_EPOCH = 4


@pytest.fixture(scope="module")
def command(reference_dir, mini_coco, tiny_roberta_dir, tmp_path_factory):
    mini = reference_dir / "phrasecut_mini" / "s0"
    spec = tiny_spec(tiny_roberta_dir, epochs=2, scales=[48, 64], max_steps_per_epoch=STEPS_PER_EPOCH,
                     checkpoint_every_steps=2)
    spec["model"]["dropout"] = 0.1
    spec_path = spec_file(tmp_path_factory.mktemp("spec"), spec)

    def command(out_dir):
        return [sys.executable, "-m", "mdetr_phrasecut.cli", "train", "--stage", "pretrain", "--spec",
                spec_path, "--coco-dir", str(mini_coco), "--images", str(mini / "images"),
                "--out-dir", str(out_dir), "--no-progress"]

    return command


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run(cmd, expect=0):
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == expect, done.stderr[-2000:]
    return done


def start_and_wait_for_checkpoint(cmd, out_dir):
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out_dir / "checkpoint_last.pth").exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.02)
    return proc


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, command):
    out = tmp_path_factory.mktemp("uninterrupted")
    run(command(out))
    return out


def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path, command, uninterrupted):
    proc = start_and_wait_for_checkpoint(command(tmp_path), tmp_path)
    proc.kill()  # SIGKILL: no chance to save anything more
    proc.wait()
    killed_at = torch.load(tmp_path / "checkpoint_last.pth", weights_only=True)["position"]
    assert 0 < killed_at["step"] < STEPS_PER_EPOCH and not (tmp_path / "checkpoint.pth").exists()

    run(command(tmp_path))  # resumes from checkpoint_last.pth automatically
    assert_same_result(tmp_path, uninterrupted, 2, STEPS_PER_EPOCH)


def test_sigterm_saves_at_the_next_step_exits_for_requeue_and_resumes(tmp_path, command, uninterrupted):
    proc = start_and_wait_for_checkpoint(command(tmp_path), tmp_path)
    first = torch.load(tmp_path / "checkpoint_last.pth", weights_only=True)["position"]["global_step"]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_REQUEUE, err[-2000:]
    assert "stopped by a signal" in err
    stopped_at = torch.load(tmp_path / "checkpoint_last.pth", weights_only=True)["position"]["global_step"]
    assert first <= stopped_at < 2 * STEPS_PER_EPOCH

    run(command(tmp_path))
    assert_same_result(tmp_path, uninterrupted, 2, STEPS_PER_EPOCH)
