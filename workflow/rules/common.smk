# Config validation and helpers shared by the rules: paths, per-stage specs, Slurm resources, launchers.
import json
import shlex
from pathlib import Path

from mdetr_phrasecut.config import run_model, run_train, validate_config

REPO = Path(workflow.basedir).resolve()
validate_config(config, ", ".join(map(str, workflow.configfiles)) or "config")

RUNS = list(config["runs"])
SPLITS = sorted({config["dataset"][k] for k in ("train_split", "val_split", "test_split")})
SYNTH_SECTIONS = {"main": "synth", "pretrain": "pretrain_synth"}  # corpus -> config section

wildcard_constraints:
    corpus="main|pretrain",
    split="train|val|miniv|test",


def data_dir(corpus="main"):
    """Original PhraseCut files of a corpus: `main` (the dataset evaluated), `pretrain` (the demo's stage 0)."""
    return f"results/{corpus}/phrasecut"


def coco_dir(corpus="main"):
    return f"results/{corpus}/coco"


def quoted_json(obj):
    return shlex.quote(json.dumps(obj, sort_keys=True))


def record(config_slice):
    """A `params` entry for `mdetr-phrasecut --record`: provenance of the job's outputs, made from its inputs
    and `config_slice(wildcards)` (nested as in the config file, so `audit` can compare it)."""

    def params(wildcards, input, output):
        return quoted_json({"outputs": list(output), "inputs": list(input), "config": config_slice(wildcards)})

    return params


def download_path(name):
    """Where a `downloads` entry lands; an extracted archive's folder is this path + ".unpacked"."""
    entry = config["downloads"][name]
    if entry["dest"]:
        return f"results/{entry['dest']}"
    return f"results/downloads/{name}/{Path(entry['url'].split('?')[0]).name or name}"


def download_args(name):
    """`download`'s arguments for a `downloads` entry: its URL, mirrors, kind, checksum and extraction."""
    entry = config["downloads"][name]
    expand = lambda url: url.replace("{repo}", str(REPO))
    args = ["--url", expand(entry["url"]), "--archive-dir", "results/downloads/archives"]
    for mirror in entry["mirrors"]:
        args += ["--mirror-member", expand(mirror["url"]), mirror["member"]] if isinstance(mirror, dict) else \
            ["--mirror", expand(mirror)]
    args += ["--kind", entry["kind"]] if entry["kind"] else []
    args += ["--sha256", entry["sha256"]] if entry["sha256"] else ["--allow-unverified"]
    if entry["extract"]:
        args += ["--extract-to", download_path(name) + ".unpacked"]
    return " ".join(map(shlex.quote, args))


def synth_args(section):
    s = config["dataset"][section]
    return (f"--seed {s['seed']} --train-images {s['train_images']} --val-images {s['val_images']} "
            f"--test-images {s['test_images']} --min-size {s['min_size']} --max-size {s['max_size']}")


def stage_spec(run, stage):
    """The JSON handed to `train`: the run's model and stage sections (also Snakemake's params, so a change
    of either re-runs that stage and what depends on it, nothing upstream)."""
    splits = {k: config["dataset"][k] for k in ("train_split", "val_split")}
    return {"model": run_model(config, run), "train": {**run_train(config, run, stage), **splits}}


def stage_slice(run, stage):
    """The config a stage's artifacts come from, nested as in the config file."""
    return {"model": config["model"], "train": {stage: config["train"][stage]},
            "runs": {run: config["runs"][run]}}


def stage_resources(stage):
    """`resources.default` overridden by the keys `resources.<stage>` sets."""
    return {**config["resources"]["default"], **config["resources"].get(stage, {})}


def slurm_resources(stage):
    """Resources of a stage from config, in the Slurm executor plugin's terms."""
    r = stage_resources(stage)
    res = {
        "nodes": r["nodes"],
        "tasks": r["nodes"],  # one task per node: torchrun starts the per-GPU processes
        "cpus_per_task": r["cpus_per_task"],
        "mem_mb": r["mem_mb"],
        "runtime": r["runtime"],
    }
    if r["gpus_per_node"]:
        res["gres"] = f"gpu:{r['gpus_per_node']}"  # per node (the plugin's `gpu` would count the whole job)
    if r["partition"]:
        res["slurm_partition"] = r["partition"]
    if r["nodes"] > 1:
        res["mpi"] = "srun"  # the job step plugin then leaves the `srun` to the rule's command (see launcher)
    return res


def launcher(stage):
    """How a training stage starts: one process; torchrun with a local rendezvous on one machine (or node); or
    `mdetr-phrasecut launch` on every allocated node (one srun task per node), which finds the first node's
    address through `scontrol` and runs torchrun there (see engine/distributed.py)."""
    r = stage_resources(stage)
    procs = r["gpus_per_node"] or r["tasks_per_node"]
    if r["nodes"] == 1:
        return "mdetr-phrasecut" if procs == 1 else f"torchrun --standalone --nproc-per-node={procs} -m mdetr_phrasecut.cli"
    # --nodes: Snakemake's job step strips SLURM_* from the environment, so srun would default to one node;
    # --kill-on-bad-exit: a node's torchrun that fails (or is lost) ends the step on every node at once
    n = r["nodes"]
    return (f"srun --nodes={n} --ntasks-per-node=1 --kill-on-bad-exit=1 mdetr-phrasecut launch --nnodes={n} "
            f"--nproc-per-node={procs} --")
