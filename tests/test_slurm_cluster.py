"""The one-node Slurm test cluster runs batch jobs and job steps (the workflow runs through it in
test_workflow.py)."""
import time


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


def test_two_node_cluster_runs_one_task_on_each_node(tmp_path):
    from helpers.slurm_cluster import start_cluster

    with start_cluster(tmp_path, nodes=("n1", "n2")) as two:
        result = two.run("srun", "--nodes=2", "--ntasks-per-node=1", "sh", "-c",
                         'echo "$SLURM_NODEID $SLURMD_NODENAME"'
                         ' "$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1)"',
                         timeout=60)
        assert sorted(result.stdout.splitlines()) == ["0 n1 n1", "1 n2 n1"]
        two.wait_idle()  # fails unless both nodes return to idle once the step has completed


def test_gpus_are_a_gres_scheduled_per_node(cluster):
    """Each node declares GPUS_PER_NODE GPUs (Slurm 22.05 keeps only GPUs with device files: fake ones here): a
    step that asks for them gets them (SLURM_GPUS_ON_NODE, the job's GRES), one that asks for more is refused."""
    from helpers.slurm_cluster import GPUS_PER_NODE

    result = cluster.run("srun", f"--gres=gpu:{GPUS_PER_NODE}", "sh", "-c",
                         'echo "$SLURM_GPUS_ON_NODE"; scontrol show job "$SLURM_JOB_ID"', timeout=60)
    gpus, job = result.stdout.split("\n", 1)
    assert gpus == str(GPUS_PER_NODE) and f"TresPerNode=gres:gpu:{GPUS_PER_NODE}" in job, result.stdout
    refused = cluster.run("srun", f"--gres=gpu:{GPUS_PER_NODE + 1}", "true", check=False, timeout=60)
    assert refused.returncode != 0 and "Requested node configuration is not available" in refused.stderr
