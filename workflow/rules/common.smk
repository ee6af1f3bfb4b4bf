# Config validation and helpers shared by the rules: paths, per-stage specs, Slurm resources, launchers.
import hashlib
import json
import re
import shlex
from pathlib import Path

from mdetr_phrasecut.config import run_model, run_train, validate_config
from mdetr_phrasecut.errors import InputError
from mdetr_phrasecut.evaluation.table import check_order
from mdetr_phrasecut.io import atomic_write_text

REPO = Path(workflow.basedir).resolve()
validate_config(config, ", ".join(map(str, workflow.configfiles)) or "config")

# The one ordered list of runs (config order): the {run} wildcard of every rule and the rows of both tables.
RUNS = list(config["runs"])
RELEASED_RUNS = [run for run in RUNS if config["runs"][run]["released"]]  # runs with a published checkpoint


def run_trainings(run):
    """{training: seed} of a run, in order: the run itself (seed None: train.<stage>.seed), or `{run}_seed{s}`
    for each of its `seeds`, each trained and evaluated by its own jobs."""
    seeds = config["runs"][run]["seeds"]
    return {run: None} if seeds is None else {f"{run}_seed{seed}": seed for seed in seeds}


TRAININGS = {name: (run, seed) for run in RUNS for name, seed in run_trainings(run).items()}  # the {run} of training
ROW_TRAINING = {run: next(iter(run_trainings(run))) for run in RUNS}  # the training a table row shows (first seed)
if len(TRAININGS) != sum(map(len, map(run_trainings, RUNS))):
    raise InputError("runs: a run's name is also the name of another run's seed training ({run}_seed{seed})")
SPLITS = sorted({config["dataset"][k] for k in ("train_split", "val_split", "test_split")})
SYNTH_SECTIONS = {"main": "synth", "pretrain": "pretrain_synth"}  # corpus -> config section

wildcard_constraints:
    run="|".join(map(re.escape, dict.fromkeys(RUNS + list(TRAININGS)))),
    corpus="main|pretrain",
    split="train|val|miniv|test",


def data_dir(corpus="main"):
    """Original PhraseCut files of a corpus: `main` (the dataset evaluated), `pretrain` (the demo's stage 0)."""
    return f"results/{corpus}/phrasecut"


def coco_dir(corpus="main"):
    return f"results/{corpus}/coco"


def quoted_json(obj):
    return shlex.quote(json.dumps(obj, sort_keys=True))


def json_file(obj):
    """`@FILE` holding the JSON of `obj`, for an option of `mdetr-phrasecut` (argparse reads the value from FILE in
    its place), so the job's command stays short. FILE is named by the hash of its content: a changed value is a
    changed param, and re-runs the job."""
    text = json.dumps(obj, sort_keys=True)
    path = Path(".snakemake", "args", f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.json")
    if not path.exists():
        atomic_write_text(path, text + "\n")
    return f"@{path}"


def table_runs(runs, results, names=None):
    """The table of `runs` (in RUNS order) from their metrics under `results`: (metrics.json paths, --runs-json
    entries), one list in one order; `names`: {run: the training its row shows} (default: the run). Checked with
    the table's own check as the DAG is built, so a mismatch fails before any job runs, not after all training."""
    names = names or {}
    metrics = [f"{results}/{names.get(run, run)}/test/metrics.json" for run in runs]
    rows = [{"run": names.get(run, run), "label": config["runs"][run]["label"],
             "published": config["runs"][run]["published"]} for run in runs]
    check_order([row["run"] for row in rows], metrics)
    return metrics, rows


def record(config_slice):
    """A `params` entry for `mdetr-phrasecut --record`: provenance of the job's outputs, made from its inputs
    and `config_slice(wildcards)` (nested as in the config file, so `audit` can compare it)."""

    def params(wildcards, input, output):
        return json_file({"outputs": list(output), "inputs": list(input), "config": config_slice(wildcards)})

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


def run_of(name):
    """The run a training (a {run} wildcard: a run, or one of its seeds) belongs to."""
    return TRAININGS.get(name, (name, None))[0]


def stage_spec(name, stage):
    """The JSON handed to `train`: the run's model and stage sections, the training's seed (also Snakemake's
    params, so a change of either re-runs that stage and what depends on it, nothing upstream)."""
    run, seed = TRAININGS.get(name, (name, None))
    splits = {k: config["dataset"][k] for k in ("train_split", "val_split")}
    train = {**run_train(config, run, stage), **splits, **({} if seed is None else {"seed": seed})}
    return {"model": run_model(config, run), "train": train}


def stage_slice(name, stage):
    """The config a stage's artifacts come from, nested as in the config file."""
    return {"model": config["model"], "train": {stage: config["train"][stage]},
            "runs": {run_of(name): config["runs"][run_of(name)]}}


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


def stage_processes(stage):
    """The training processes of a stage on each node (torchrun's --nproc-per-node): the job's `threads`."""
    r = stage_resources(stage)
    return r["gpus_per_node"] or r["tasks_per_node"]


def train_resources(stages):
    """The `resources` of a rule over `{stage}`: every key `slurm_resources` sets for any of `stages`, each
    resolved from the job's stage (None, unset, where that stage sets no such key)."""
    keys = dict.fromkeys(key for stage in stages for key in slurm_resources(stage))
    return {key: lambda w, key=key: slurm_resources(w.stage).get(key) for key in keys}


def launcher(stage):
    """How a training stage starts: one process; torchrun with a local rendezvous on one machine (or node); or
    `mdetr-phrasecut launch` on every allocated node (one srun task per node), which finds the first node's
    address through `scontrol` and runs torchrun there (see engine/distributed.py)."""
    r = stage_resources(stage)
    procs = stage_processes(stage)
    if r["nodes"] == 1:
        return "mdetr-phrasecut" if procs == 1 else f"torchrun --standalone --nproc-per-node={procs} -m mdetr_phrasecut.cli"
    # --nodes: Snakemake's job step strips SLURM_* from the environment, so srun would default to one node;
    # --kill-on-bad-exit: a node's torchrun that fails (or is lost) ends the step on every node at once
    n = r["nodes"]
    return (f"srun --nodes={n} --ntasks-per-node=1 --kill-on-bad-exit=1 mdetr-phrasecut launch --nnodes={n} "
            f"--nproc-per-node={procs} --")
