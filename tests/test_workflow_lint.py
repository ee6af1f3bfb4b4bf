"""The workflow's shape: one training rule over `{stage}` with its processes as `threads`, and the threads a job
is granted never reaching torch's intra-op threads (results would depend on them)."""
import os
import re
import subprocess
import sys

from mdetr_phrasecut.config import read_mapping


def run(repo_dir, *args):
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=repo_dir, capture_output=True, text=True)


def dry_run_jobs(repo_dir, *args):
    """[(rule, {field: value}, shell command)] of a dry run with 4 cores (so `threads` are not capped)."""
    out = run(repo_dir, "-n", "-p", "--forceall", "--cores", "4", *args)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out.stdout):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        if rule:
            fields = dict(re.findall(r"^    (\w+): (.*)$", block, re.M))
            fields["wildcards"] = dict(w.split("=") for w in fields.get("wildcards", "").split(", ") if w)
            jobs.append((rule[1], fields, re.search(r"^Shell command: (.*)$", block, re.M)[1]))
    return jobs


def test_one_training_rule_over_stage_with_its_processes_as_threads(repo_dir):
    jobs = dry_run_jobs(repo_dir, "results/runs/demo/test/metrics.json")
    train = {f["wildcards"]["stage"]: (f, command) for rule, f, command in jobs if rule == "train"}
    assert set(train) == {"stage1", "stage2"}
    for stage, init in (("stage1", "results/downloads/demo_pretrained/"), ("stage2", "results/runs/demo/stage1/")):
        fields, command = train[stage]
        assert fields["threads"] == "2"  # resources.default.tasks_per_node: torchrun's two processes
        assert "torchrun --standalone --nproc-per-node=2 -m mdetr_phrasecut.cli" in command
        assert f"train --stage {stage} " in command and f"--init {init}" in command
        assert f"--out-dir results/runs/demo/{stage} " in command and f"2> results/logs/{stage}_demo.log" in command
    evaluate = next(fields for rule, fields, _ in jobs if rule == "evaluate")
    workers = read_mapping(repo_dir / "config" / "config.yaml")["evaluate"]["workers"]
    assert evaluate["threads"] == str(workers) != "1"


def test_a_jobs_threads_do_not_reach_torchs_intra_op_threads(repo_dir):
    """Snakemake exports OMP_NUM_THREADS and MKL_NUM_THREADS = the job's threads (here 2, torchrun's processes);
    each training process still computes with one intra-op thread, as on two nodes of one process each."""
    code = ("import torch; from mdetr_phrasecut.engine.distributed import init_distributed; "
            "before = torch.get_num_threads(); init_distributed('cpu'); print(before, torch.get_num_threads())")
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "1"]
