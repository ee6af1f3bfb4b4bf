"""Multi-node training on a real Slurm cluster (three slurmd on this host, see slurm_cluster.py): the embedded
stages 1 and 2 with `resources.<stage>.nodes: 2` through `snakemake --profile slurm` and `srun ... mdetr-phrasecut
launch` (torchrun, c10d rendezvous at the first node's NodeAddr, gloo on CPU, one process per node); pre-emption by
`scontrol requeue`; a node lost mid-job; the time-limit warning (`--signal=USR1@N`) and Snakemake's `retries`.
Plus the launcher's one-line failures, which need no cluster."""
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from helpers.slurm_cluster import _free_port, start_cluster
from helpers.resume import assert_same_result
from helpers.paths import BIN
from helpers.workflow import make_workspace, snakemake

NODES = ("n1", "n2", "n3")  # jobs take two; the third stands in for a lost one
STAGE1, STAGE2 = (f"results/runs/demo/{stage}/checkpoint.pth" for stage in ("stage1", "stage2"))
STEPS, EVERY = 16, 4  # stage 1: one epoch of 16 steps, batch 1 per process, checkpoint_last.pth every 4 steps
STEPS2 = 8  # stage 2: one epoch of 8 steps, batch 1 per process
# The names the workflow's rules give (workflow/rules/train.smk), in one place: a stage's log, its rule.
TRAIN_LOG, TRAIN_RULE = "results/logs/{stage}_demo.log", "train"
INPUTS = ("results/downloads/demo_pretrained/demo_pretrained.pth", "results/main/coco/finetune_phrasecut_train.json",
          "results/main/coco/finetune_phrasecut_miniv.json")


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory):
    with start_cluster(tmp_path_factory.mktemp("slurm3"), nodes=NODES) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A workspace with stage 1's inputs made locally; each test trains in a copy of it."""
    workspace = make_workspace(tmp_path_factory.mktemp("prepared") / "ws", stage1={
        "max_steps_per_epoch": STEPS, "batch_size": 1}, stage2={"max_steps_per_epoch": STEPS2, "batch_size": 1})
    snakemake(workspace, *INPUTS)
    return workspace


def copy_with(workspace, path: Path, nodes: int, every=EVERY, stages=("stage1",)) -> Path:
    """A copy of `workspace` whose `stages` run on `nodes` nodes, two processes in all, with a checkpoint_last.pth
    every `every` steps."""
    shutil.copytree(workspace, path, symlinks=True)
    config = yaml.safe_load((path / "config" / "tiny.yaml").read_text())
    for stage in stages:
        config["resources"][stage] = {"nodes": nodes, "tasks_per_node": 2 // nodes}
        config["train"][stage]["checkpoint_every_steps"] = every
    (path / "config" / "tiny.yaml").write_text(yaml.safe_dump(config))
    return path


# The copies live elsewhere than the prepared workspace: the download rule's params (a file:// URL of the repo
# copy) differ, which must not re-run it.
SAME_INPUTS = ("--rerun-triggers=mtime",)


def start_slurm_snakemake(cluster, workspace, target=STAGE1, *args) -> subprocess.Popen:
    """`snakemake --profile slurm` to `target`; MASTER_PORT (a free port) reaches the jobs through sbatch."""
    env = {**cluster.env, "MASTER_PORT": str(_free_port()), "PATH": f"{BIN}:{cluster.env['PATH']}"}
    return subprocess.Popen([str(BIN / "snakemake"), "--cores", "2", "--configfile=config/tiny.yaml", "--profile",
                             "slurm", "--slurm-init-seconds-before-status-checks", "1", *SAME_INPUTS, *args, target],
                            cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def running_job_after(cluster, workspace, proc, done, stage="stage1") -> str:
    """The id of the running job of `stage` once `done(its output folder)` holds."""
    out_dir = workspace / "results" / "runs" / "demo" / stage
    deadline = time.monotonic() + 300  # a hang guard: the plugin's checks come up to a minute apart
    while not done(out_dir):
        assert proc.poll() is None and time.monotonic() < deadline, (proc.stdout.read()[-3000:], cluster.logs())
        time.sleep(0.1)
    jobs = cluster.run("squeue", "--noheader", "--states=RUNNING", "--format=%i").stdout.split()
    assert len(jobs) == 1, jobs
    return jobs[0]


def job_field(cluster, job, name) -> str:
    found = re.search(rf"\b{name}=(\S+)", cluster.run("scontrol", "show", "job", job).stdout)
    return found.group(1) if found else ""


def lift_requeue_hold(cluster, job, timeout=60):
    """Slurm makes a requeued job wait ~2 minutes (pending, Reason=BeginTime); let it start at once."""
    deadline = time.monotonic() + timeout
    while job_field(cluster, job, "Reason") != "BeginTime":
        assert time.monotonic() < deadline, cluster.run("scontrol", "show", "job", job).stdout
        time.sleep(0.2)
    cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now")


def finish(proc, timeout=300) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    assert proc.returncode == 0, out[-4000:]
    return out


def train_log(workspace, stage="stage1") -> str:
    # errors="replace": a progress bar may be cut inside a character
    return (workspace / TRAIN_LOG.format(stage=stage)).read_text(errors="replace")


def assert_bitwise_equal(got_ws, want_ws, target=STAGE1, steps=STEPS):
    """Weights, EMA, optimizer, schedule and log of a stage bitwise equal (as test_resume.py checks them)."""
    out_dir = Path(target).parent
    assert_same_result(got_ws / out_dir, want_ws / out_dir, epochs=1, steps_per_epoch=steps)


def steps_logged(out_dir) -> int:
    log = out_dir / "train_log.csv"
    return len(log.read_text().splitlines()) - 1 if log.exists() else 0


def resumed_at(workspace, stage="stage1", steps=STEPS) -> int:
    resumed = re.search(r"resuming from \S+: epoch 0, step (\d+)", train_log(workspace, stage))
    assert resumed and 0 < int(resumed.group(1)) < steps, train_log(workspace, stage)[-2000:]
    return int(resumed.group(1))


@pytest.fixture(scope="module")
def one_node_run(prepared, tmp_path_factory):
    """The reference: stages 1 and 2 uninterrupted on one machine, torchrun --standalone with 2 processes, no
    Slurm."""
    workspace = copy_with(prepared, tmp_path_factory.mktemp("one") / "ws", nodes=1, stages=("stage1", "stage2"))
    snakemake(workspace, *SAME_INPUTS, STAGE2)
    return workspace


def job_nodes(cluster, job) -> list:
    return cluster.run("scontrol", "show", "hostnames", job_field(cluster, job, "NodeList")).stdout.split()


def assert_two_nodes_took_part(workspace, nodes, stage="stage1"):
    """Each of the job's two nodes ran one of the two ranks (the rendezvous numbers nodes as they arrive)."""
    log = train_log(workspace, stage)
    ranks = re.findall(r"rank (\d) of (\d) on node (\S+)", log)
    assert sorted((node, world) for _, world, node in ranks) == [(n, "2") for n in sorted(nodes)], log[-3000:]
    assert sorted(rank for rank, _, _ in ranks) == ["0", "1"]


SIGNAL = "--signal=USR1@300"  # Slurm's time-limit warning, 300 s before the limit


def warn_before_time_limit(workspace, stage):
    """Submit `stage` with SIGNAL, as README says: the profile's `set-resources`, the job's `slurm_extra`."""
    profile = workspace / "slurm" / "config.yaml"
    extra = {"set-resources": {TRAIN_RULE: {"slurm_extra": f"'{SIGNAL}'"}}}
    profile.write_text(profile.read_text() + yaml.safe_dump(extra))


@pytest.mark.slow
def test_two_nodes_requeued_then_warned_and_retried_equal_the_one_node_run(cluster3, prepared, one_node_run, tmp_path):
    """One workflow run, stages 1 and 2 on two nodes each, both interrupted mid-epoch, each bitwise equal in the
    end to the uninterrupted one-node two-process run (so also within test_train_distributed.py's tolerance).

    Stage 1: `scontrol requeue` of the running job. SIGTERM reaches torchrun's workers on both nodes, rank 0 saves
    the current step and they exit 75; Slurm puts the same job back in the queue, its second run resumes.

    Stage 2, submitted with `--signal=USR1@300`, gets USR1 the way Slurm's time-limit warning delivers it: to every
    process of the job's steps, not to the batch shell (`scancel --signal=USR1`, neither --batch nor --full). Not a
    real limit: Slurm's limits are whole minutes, its warning comes up to a minute early, and the resubmitted job
    would be warned again. torchrun hands USR1 on to its workers (`launch`'s --signals-to-handle; without it USR1
    kills torchrun and the workers with it, unsaved), which save and exit 75; the job ends FAILED, not requeued
    (a time limit is no pre-emption), and Snakemake's `retries` submits a new job, which resumes."""
    # no periodic checkpoints: only the signals'
    workspace = copy_with(prepared, tmp_path / "ws", nodes=2, every=None, stages=("stage1", "stage2"))
    warn_before_time_limit(workspace, "stage2")
    proc = start_slurm_snakemake(cluster3, workspace, STAGE2, "--verbose")  # --verbose: the plugin's sbatch calls
    job = running_job_after(cluster3, workspace, proc, lambda d: steps_logged(d) >= 3)
    cluster3.run("scontrol", "requeue", job)
    lift_requeue_hold(cluster3, job)

    first = running_job_after(cluster3, workspace, proc, lambda d: steps_logged(d) >= 4, stage="stage2")
    cluster3.run("scancel", "--signal=USR1", first)
    deadline = time.monotonic() + 120
    while job_field(cluster3, first, "JobState") in ("RUNNING", "COMPLETING"):
        assert time.monotonic() < deadline, cluster3.run("scontrol", "show", "job", first).stdout
        time.sleep(0.1)
    stopped = train_log(workspace, "stage2")  # the first job's, before the retry's overwrites it
    out = finish(proc)

    assert resumed_at(workspace) >= 3
    assert job_field(cluster3, job, "Restarts") == "1"  # the same job, requeued once, not a resubmission
    assert_two_nodes_took_part(workspace, job_nodes(cluster3, job))
    assert_bitwise_equal(workspace, one_node_run)

    assert "stopped by a signal" in stopped and "exiting with 75" in stopped, stopped[-3000:]
    assert (job_field(cluster3, first, "JobState"), job_field(cluster3, first, "Restarts")) == ("FAILED", "0")
    # the training jobs (stage 2's inputs, the split indexes, are jobs of their own)
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: \S*/rule_train/", out)
    assert len(set(submitted)) == len(submitted) == 3 and submitted[:2] == [job, first], out[-4000:]
    assert job_field(cluster3, submitted[2], "JobState") == "COMPLETED"  # the retry: a new job
    calls = [call for call in re.findall(r"sbatch call: (.*)", out) if "/rule_train/" in call]
    assert len(calls) == 3 and all(SIGNAL in call for call in calls[1:]), calls
    assert resumed_at(workspace, "stage2", STEPS2) >= 4
    assert_two_nodes_took_part(workspace, job_nodes(cluster3, submitted[2]), "stage2")
    assert_bitwise_equal(workspace, one_node_run, STAGE2, STEPS2)


@pytest.mark.slow
def test_a_node_lost_mid_job_is_requeued_by_slurm_and_resumes(cluster3, prepared, one_node_run, tmp_path):
    """The job's second node dies after stage 1's checkpoint at step EVERY (SIGKILL of its slurmd and of the job's
    processes there). slurmctld finds it not responding (SlurmdTimeout), sets it DOWN and ends the job on the first
    node as well (NODE_FAIL); the job was submitted with --requeue (the profile's slurm-requeue), so Slurm puts it
    back in the queue and Snakemake's plugin leaves it there. The same job then runs on the nodes left and resumes
    from checkpoint_last.pth: bitwise the uninterrupted run."""
    workspace = copy_with(prepared, tmp_path / "ws", nodes=2)
    proc = start_slurm_snakemake(cluster3, workspace)
    job = running_job_after(cluster3, workspace, proc, lambda d: (d / "checkpoint_last.pth").exists())
    _, lost = job_nodes(cluster3, job)
    assert cluster3.lose_node(lost), f"no process of the job ran on {lost}"
    deadline = time.monotonic() + 60
    while cluster3.node_states()[lost] != "down*":  # not responding and DOWN
        assert time.monotonic() < deadline, cluster3.node_states()
        time.sleep(0.2)
    lift_requeue_hold(cluster3, job)
    finish(proc)
    assert job_field(cluster3, job, "Restarts") == "1"  # requeued by Slurm, not resubmitted by Snakemake
    assert lost not in job_nodes(cluster3, job)
    assert resumed_at(workspace) % EVERY == 0  # from a periodic checkpoint: nothing was saved on the way down
    assert_two_nodes_took_part(workspace, job_nodes(cluster3, job))
    assert_bitwise_equal(workspace, one_node_run)


@pytest.fixture
def scontrol_path(tmp_path):
    """PATH with a stand-in `scontrol` giving a real cluster's answers for gpu[07-08] (gpu09: no NodeAddr) and
    the real error of a client without its configuration for anything else."""
    scontrol = tmp_path / "scontrol"
    scontrol.write_text('#!/bin/sh\ncase "$2 $3" in\n'
                        '  "hostnames gpu[07-08]") printf "gpu07\\ngpu08\\n";;\n'
                        '  "hostnames gpu09") echo gpu09;;\n'
                        '  "node gpu07") echo "NodeName=gpu07 Arch=x86_64";'
                        ' echo "   NodeAddr=10.1.0.7 NodeHostName=gpu07";;\n'
                        '  "node gpu09") echo "NodeName=gpu09 Arch=x86_64";;\n'
                        '  "job 7") echo "JobId=7 JobName=train"; echo "   Requeue=1 Restarts=2 BatchFlag=1";;\n'
                        '  *) echo "scontrol: fatal: Could not establish a configuration source" >&2; exit 1;;\nesac\n')
    scontrol.chmod(0o755)
    return f"{tmp_path}{os.pathsep}{os.environ['PATH']}"


def launch(*args, env):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_"))}
    return subprocess.run([str(BIN / "mdetr-phrasecut"), "launch", *args], env={**base, **env}, capture_output=True,
                          text=True, timeout=120)


STEP = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_STEP_NUM_NODES": "2"}


@pytest.mark.parametrize("env, named", [
    ({}, "SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_STEP_NUM_NODES not set"),  # not started by srun
    ({**STEP, "SLURM_STEP_NODELIST": "n[1-2]"},  # the case: scontrol without SLURM_CONF inside the job
     "`scontrol show hostnames n[1-2]` failed: scontrol: fatal: Could not establish a configuration source"),
    ({**STEP, "SLURM_STEP_NODELIST": "gpu09"}, "`scontrol show node gpu09` gives no NodeAddr"),
    ({**STEP, "SLURM_STEP_NUM_NODES": "1"}, "--nnodes 2 but the job step runs on SLURM_STEP_NUM_NODES=1"),
])
def test_launcher_that_cannot_find_the_first_node_fails_with_one_line(scontrol_path, env, named):
    run = launch("--nnodes=2", "--nproc-per-node=1", "--", "train", "--help", env={**env, "PATH": scontrol_path})
    assert run.returncode == 2 and run.stderr.splitlines() == [run.stderr.strip()], run.stderr
    assert run.stderr.startswith("error: ") and named in run.stderr and "Traceback" not in run.stderr


def test_launcher_meets_at_the_first_nodes_slurm_address(scontrol_path, monkeypatch):
    """torchrun's arguments: every node meets at the first node's NodeAddr, on the job's port."""
    from mdetr_phrasecut.cli import build_parser
    from mdetr_phrasecut.infra.launch import torchrun_args

    monkeypatch.setenv("PATH", scontrol_path)
    args = build_parser("launch")[0].parse_args(["launch", "--nnodes=2", "--nproc-per-node=8", "--", "--record", "{}",
                                              "train", "--stage", "stage1"])
    assert torchrun_args(args, STEP) == [
        "--nnodes=2", "--nproc-per-node=8", "--rdzv-backend=c10d", "--rdzv-endpoint=10.1.0.7:20007",
        "--rdzv-id=7-2", "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1", "-m", "mdetr_phrasecut.cli",
        "--record", "{}", "train", "--stage", "stage1"]
    assert torchrun_args(args, {**STEP, "MASTER_PORT": "29611"})[3] == "--rdzv-endpoint=10.1.0.7:29611"
