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
    from slurm_cluster import start_cluster

    with start_cluster(tmp_path, nodes=("n1", "n2")) as two:
        result = two.run("srun", "--nodes=2", "--ntasks-per-node=1", "sh", "-c",
                         'echo "$SLURM_NODEID $SLURMD_NODENAME $(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1)"',
                         timeout=60)
        assert sorted(result.stdout.splitlines()) == ["0 n1 n1", "1 n2 n1"]
        two.wait_idle()  # fails unless both nodes return to idle once the step has completed
