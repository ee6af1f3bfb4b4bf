"""The one-node Slurm test cluster runs batch jobs and job steps, and the repo's Slurm profile drives
Snakemake through it end to end."""
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import start_cluster

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with start_cluster(tmp_path_factory.mktemp("slurm")) as c:
        yield c


def job_states(cluster, job_ids):
    out = cluster.run("squeue", "--noheader", "--states=all", "--format=%i|%T", "--jobs=" + ",".join(job_ids)).stdout
    return dict(line.split("|") for line in out.split())


def wait_for(cluster, job_ids, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        states = job_states(cluster, job_ids)
        if all(states.get(j) in {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"} for j in job_ids):
            return states
        assert time.monotonic() < deadline, f"jobs still {states} after {timeout}s\n{cluster.logs()}"
        time.sleep(0.3)


def test_sbatch_job_writes_a_file(cluster, tmp_path):
    out = tmp_path / "job.out"
    job = cluster.run("sbatch", "--parsable", f"--chdir={tmp_path}", f"--output={tmp_path}/slurm-%j.log",
                      "--wrap", f'echo "$SLURM_JOB_ID $SLURMD_NODENAME" > {out}').stdout.strip()
    assert wait_for(cluster, [job]) == {job: "COMPLETED"}
    assert out.read_text().split() == [job, "localhost"]


def test_srun_runs_a_job_step(cluster):
    result = cluster.run("srun", "sh", "-c", 'echo "$SLURM_JOB_ID $SLURM_STEP_ID $SLURMD_NODENAME"', timeout=60)
    job, step, node = result.stdout.split()
    assert job.isdigit() and step == "0" and node == "localhost"


SNAKEFILE = """
rule all:
    input: "b.txt"

rule a:
    output: "a.txt"
    shell: "echo $SLURM_JOB_ID > {output}"

rule b:
    input: "a.txt"
    output: "b.txt"
    shell: "cat {input} > {output} && echo $SLURM_JOB_ID >> {output}"
"""


@pytest.mark.slow
def test_snakemake_slurm_profile_end_to_end(cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    env = {**cluster.env, "PATH": f"{Path(sys.executable).parent}:{cluster.env['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "--profile", str(REPO / "slurm"),
           "--workflow-profile", str(REPO / "workflow" / "profiles" / "default"),
           "--slurm-init-seconds-before-status-checks", "1"]  # the profile keeps the plugin's 40 s
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + cluster.logs()
    job_a, = (tmp_path / "a.txt").read_text().split()
    from_a, job_b = (tmp_path / "b.txt").read_text().split()
    assert from_a == job_a != job_b
    assert job_states(cluster, [job_a, job_b]) == {job_a: "COMPLETED", job_b: "COMPLETED"}
    assert (tmp_path / ".snakemake" / "slurm_logs" / "rule_b" / f"{job_b}.log").is_file()
