# Config validation and helpers shared by the rules: paths, per-stage specs, Slurm resources, launchers.
import hashlib
import json
import os
import re
import shlex
from pathlib import Path

from mdetr_phrasecut.config import run_model, run_train, validate_config
from mdetr_phrasecut.infra.launch import TORCHRUN_SIGNALS
from mdetr_phrasecut.arguments import NamedPathArg
from mdetr_phrasecut.errors import InputError
from mdetr_phrasecut.infra.io import atomic_write_text
from mdetr_phrasecut.stages import COST_STAGES, EVALUATED, LOGGED_STAGES, RUN_STAGES, STAGES

REPO = Path(workflow.basedir).resolve()
# Only the download jobs reach the network (they say HF_HUB_OFFLINE=0): every other job, here or submitted, finds
# what it needs under results/ (the text encoder: a `downloads` entry) or fails saying which entry to add.
os.environ.update(HF_HUB_OFFLINE="1")
CONDA_ENV = "../envs/mdetr-phrasecut.yaml"  # every rule's (`--use-conda`), relative to workflow/rules/
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


# Between a command's argument groups: the next group on its own line, so that no line of a job's command, as a
# dry run prints it, runs past 200 characters.
LINE = " \\\n  "


def quoted_json(obj):
    return shlex.quote(json.dumps(obj, sort_keys=True))


def args_file(obj):
    """A file holding the JSON of `obj` (a stage's `--spec`), so the job's command stays short. It is named by the
    hash of its content: a changed value is a changed param, and re-runs the job."""
    text = json.dumps(obj, sort_keys=True)
    path = Path(".snakemake", "args", f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.json")
    if not path.exists():
        atomic_write_text(path, f"{text}\n")
    return str(path)


def json_file(obj):
    """`@FILE` (see `args_file`) for a JSON option of `mdetr-phrasecut`: argparse reads the value from FILE."""
    return f"@{args_file(obj)}"


def named(names, paths):
    """`NAME=PATH` arguments, quoted: each file with the fact it is of (arguments.py's NamedPathArg), so that no
    command reads meaning out of a path. A name that cannot be one fails as the DAG is built."""
    names, paths = list(names), list(paths)
    if len(names) != len(paths):
        raise InputError(f"{len(names)} names for {len(paths)} files: {', '.join(names)}")
    return f"{LINE}  ".join(shlex.quote(NamedPathArg.argument(n, p)) for n, p in zip(names, paths))


def table_runs(runs, results, names=None):
    """The table of `runs` (in RUNS order) from their metrics under `results`: (metrics.json paths, --runs-json
    entries), one list in one order; `names`: {run: the training its row shows} (default: the run). Each row's
    name is checked as an argument name as the DAG is built, so a bad one fails before any job runs."""
    names = names or {}
    rows = [{"run": names.get(run, run), **shown(run)} for run in runs]
    metrics = [f"{results}/{row['run']}/test/metrics.json" for row in rows]
    named([row["run"] for row in rows], metrics)
    return metrics, rows


def record(config_slice):
    """A `params` entry for `mdetr-phrasecut --record`: provenance of the job's outputs, made from its inputs
    and `config_slice(wildcards)` (nested as in the config file, so `audit` can compare it)."""

    def params(wildcards, input, output):
        return json_file({"outputs": list(output), "inputs": list(input), "config": config_slice(wildcards)})

    return params


def download_path(name):
    """Where a `downloads` entry lands; an extracted archive's folder is this path with ".unpacked" appended."""
    entry = config["downloads"][name]
    if entry["dest"]:
        return f"results/{entry['dest']}"
    return f"results/downloads/{name}/{Path(entry['url'].split('?')[0]).name.split('@')[0] or name}"


def download_rule(name):
    """The name of a `downloads` entry's job, `download_<name>` with `_` for a character names cannot hold (`-`)."""
    return "download_{}".format(re.sub(r"\W", "_", name))


if len(set(map(download_rule, config["downloads"]))) != len(config["downloads"]):
    raise InputError("downloads: two entries' names differ only in characters other than letters, digits and _")


def download_args(name):
    """`download`'s arguments for a `downloads` entry: its sources (see `download_sources`), kind, checksum and
    extraction."""
    entry = config["downloads"][name]
    args = ["--archive-dir", "results/downloads/archives"]
    args += ["--kind", entry["kind"]] if entry["kind"] else []
    args += ["--sha256", entry["sha256"]] if entry["sha256"] else ["--allow-unverified"]
    if entry["extract"]:
        args += ["--extract-to", f"{download_path(name)}.unpacked"]
    return f"{download_sources(name)}{LINE}{' '.join(map(shlex.quote, args))}"


def download_sources(name):
    """`--url` and the `--mirror`s of a `downloads` entry. With a sha256 every source gives the same bytes, so they
    go through a file named by the entry (`@FILE`, one argument a line) rather than the job's params: a source
    added, replaced or removed re-runs nothing. Without one, they are what the file is, and are params."""
    entry = config["downloads"][name]
    expand = lambda url: url.replace("{repo}", str(REPO))
    groups = [["--url", expand(entry["url"])]]
    for mirror in entry["mirrors"]:
        groups.append(
            ["--mirror-member", expand(mirror["url"]), mirror["member"]]
            if isinstance(mirror, dict)
            else ["--mirror", expand(mirror)]
        )
    if not entry["sha256"]:
        return LINE.join(" ".join(map(shlex.quote, group)) for group in groups)
    args = [arg for group in groups for arg in group]
    path = Path(".snakemake", "args", f"download_{name}.sources")
    text = "".join(f"{arg}\n" for arg in args)
    if not path.exists() or path.read_text() != text:
        atomic_write_text(path, text)
    return f"@{path}"


def download_slice(name):
    """What a download's file depends on, nested as in the config: its checksum, kind and place, and its sources
    only when it has no checksum (see `download_sources`)."""
    entry = config["downloads"][name]
    keys = ("sha256", "kind", "dest", "extract") + (() if entry["sha256"] else ("url", "mirrors"))
    return {"downloads": {name: {key: entry[key] for key in keys}}}


def synth_args(section):
    s = config["dataset"][section]
    return (
        f"--seed {s['seed']} --train-images {s['train_images']} --val-images {s['val_images']} "
        f"--test-images {s['test_images']}{LINE}--min-size {s['min_size']} --max-size {s['max_size']}"
    )


def run_of(name):
    """The run a training (a {run} wildcard: a run, or one of its seeds) belongs to."""
    return TRAININGS.get(name, (name, None))[0]


def stage_spec(name, stage, downloaded=True):
    """The JSON handed to `train`: the run's model and stage sections, the training's seed (also Snakemake's
    params, so a change of either re-runs that stage and what depends on it, nothing upstream). The text encoder
    as the folder its `downloads` entry lands in (what a job loads), or with `downloaded=False` by the name the
    config gives it (what a released checkpoint's args name)."""
    run, seed = TRAININGS.get(name, (name, None))
    splits = {k: config["dataset"][k] for k in ("train_split", "val_split")}
    train = {**run_train(config, run, stage), **splits, **({} if seed is None else {"seed": seed})}
    model = {**run_model(config, run), **(text_encoder_download(run) if downloaded else {})}
    return {"model": model, "train": train}


def train_settings(name, stage):
    """A training job's key settings, short and readable, for its command line (the whole spec is its --spec)."""
    train = stage_spec(name, stage)["train"]
    return (
        f"{name} {stage}: {train['epochs']} epochs, lr {train['lr']:g}, batch {train['batch_size']} per process, "
        f"seed {train['seed']}"
    )


def text_encoder_download(run):
    """{"text_encoder_type": the folder of the `downloads` entry named by the run's text_encoder_type}, or {} when
    no entry has that name (an asset or a folder; a hub name then fails in the job, the Hub being offline)."""
    name = run_model(config, run)["text_encoder_type"]
    return {"text_encoder_type": download_path(name)} if name in config["downloads"] else {}


def text_encoder_input(wildcards):
    """The downloaded text encoder a training or evaluation job loads, if any (see `text_encoder_download`)."""
    return list(text_encoder_download(run_of(wildcards.run)).values())


def stage_slice(name, stage):
    """The config keys `stage_spec` makes a stage's spec of, nested as in the config file (so `audit` can compare
    them): the splits; the global model and stage sections less the keys the run overrides; under the run, both
    sections resolved (so a new override of the run is a difference too). Not the run's label, published numbers,
    seeds or other stages: a change of those leaves the stage as it is."""
    run = run_of(name)
    own = config["runs"][run]
    return {
        "dataset": {k: config["dataset"][k] for k in ("train_split", "val_split")},
        "model": {k: v for k, v in config["model"].items() if k not in own["model"]},
        "train": {stage: {k: v for k, v in config["train"][stage].items() if k not in own["train"].get(stage, {})}},
        "runs": {run: {"model": run_model(config, run), "train": {stage: run_train(config, run, stage)}}},
    }


# The config keys no record holds: where and with what the jobs run, not what they compute.
HOW_JOBS_RUN = ("resources", "submit_downloads")


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
        # else the plugin adds --ntasks-per-gpu=<tasks>: a task (and its cpus_per_task) per GPU, which Slurm refuses
        # ("Requested node configuration is not available") where a node has fewer than GPUs x cpus_per_task CPUs
        res["tasks_per_gpu"] = 0
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
    """The `resources` over `{stage}`: every key `slurm_resources` sets for any of `stages`, each resolved
    from the job's stage (None, unset, where that stage sets no such key)."""
    keys = dict.fromkeys(key for stage in stages for key in slurm_resources(stage))
    return {key: lambda w, key=key: slurm_resources(w.stage).get(key) for key in keys}


def launcher(stage):
    """How a training stage starts: one process; torchrun with a local rendezvous on one machine (or node); or
    `mdetr-phrasecut launch` on every allocated node (one srun task per node), which finds the first node's
    address through `scontrol` and runs torchrun there (see infra/launch.py). Each process computes with its
    share of the job's `threads` (engine/distributed.py, `share_threads_among_local_processes`)."""
    r = stage_resources(stage)
    procs = stage_processes(stage)
    if r["nodes"] == 1:
        return (
            "mdetr-phrasecut"
            if procs == 1
            else f"torchrun --standalone --nproc-per-node={procs} --signals-to-handle={TORCHRUN_SIGNALS} "
            "-m mdetr_phrasecut.cli"
        )
    # --nodes: Snakemake's job step strips SLURM_* from the environment, so srun would default to one node;
    # --kill-on-bad-exit: a node's torchrun that fails (or is lost) ends the step on every node at once
    n = r["nodes"]
    return (
        f"srun --nodes={n} --ntasks-per-node=1 --kill-on-bad-exit=1 mdetr-phrasecut launch --nnodes={n} "
        f"--nproc-per-node={procs} --"
    )


# Paths and arguments of the data, training, evaluation and table rules.
ORIGINAL_FILES = ["image_data_split.json", "name_att_rel_count.json", *(f"refer_{s}.json" for s in SPLITS)]
TEST = config["dataset"]["test_split"]


def original(name, corpus="main"):
    """An original PhraseCut file: written by `synth`, or the download entry named in dataset.originals."""
    if config["dataset"]["source"] == "synth":
        return f"{data_dir(corpus)}/{name}"
    return download_path(config["dataset"]["originals"][name])


def images_dir(corpus="main"):
    """The folder a rule depends on for the images (an extracted download, or synth's images/)."""
    if config["dataset"]["source"] == "synth":
        return f"{data_dir(corpus)}/images"
    return f"{download_path(config['dataset']['images'])}.unpacked"


def images_arg(wildcards, input):
    """The folder of {image_id}.jpg handed to the subcommands."""
    if config["dataset"]["source"] == "synth":
        return input.images
    return f"{input.images}/{config['dataset']['images_subdir']}"


def train_inputs(corpus="main"):
    split = config["dataset"]
    return dict(
        train=f"{coco_dir(corpus)}/finetune_phrasecut_{split['train_split']}.json",
        val=f"{coco_dir(corpus)}/finetune_phrasecut_{split['val_split']}.json",
        train_index=f"{coco_dir(corpus)}/finetune_phrasecut_{split['train_split']}.index",
        val_index=f"{coco_dir(corpus)}/finetune_phrasecut_{split['val_split']}.index",
        images=images_dir(corpus),
        text_encoder=text_encoder_input,
    )


def train_init(wildcards):
    """What a stage starts from (its `init` in STAGES): the run's pre-trained checkpoint, or the run's checkpoint
    of the stage it continues."""
    init = STAGES[wildcards.stage].init
    if init == "pretrained":
        return download_path(config["runs"][run_of(wildcards.run)]["pretrained"])
    return f"results/runs/{wildcards.run}/{init}/checkpoint.pth"


def evaluate_inputs(ckpt):
    return dict(
        ckpt=ckpt,
        coco=f"{coco_dir()}/finetune_phrasecut_{TEST}.json",
        index=f"{coco_dir()}/finetune_phrasecut_{TEST}.index",
        refer=original(f"refer_{TEST}.json"),
        split=original("image_data_split.json"),
        counts=original("name_att_rel_count.json"),
        images=images_dir(),
        text_encoder=text_encoder_input,
    )


EVALUATE_PARAMS = dict(
    spec=lambda w: args_file({**stage_spec(w.run, EVALUATED), "evaluate": config["evaluate"]}),
    record=record(lambda w: {**stage_slice(w.run, EVALUATED), "evaluate": config["evaluate"]}),
    out_dir=lambda w, output: Path(output.metrics).parent,
    root=lambda w, input: Path(input.refer).parent,
    images=images_arg,
    split=TEST,
    dataset=shlex.quote(config["dataset"]["name"]),
)
EVALUATE_SETTINGS = "threshold {threshold:g}, size {size}/{max_size}, batch {batch_size} x {processes}, {ema}".format(
    ema="EMA weights" if config["evaluate"]["use_ema"] else "model weights", **config["evaluate"]
)  # an evaluation's key settings, for its command line (the whole evaluate section is in its --spec)
EVALUATE_THREADS = config["evaluate"]["workers"]  # its scoring processes (the model runs before them)

# Bootstrap intervals and verdicts of the tables, cost per table row (statistics.smk, evaluate.smk).
STATISTICS_ARGS = "--resamples {resamples} --level {level} --seed {seed} --unit {unit}".format(**config["statistics"])
COST_GPUS = {s: stage_resources(s)["nodes"] * stage_resources(s)["gpus_per_node"] for s in COST_STAGES}
# {row's training: every seed's training, the row's first} of the runs with seeds (the table's --seeds-json)
SEEDS = {ROW_TRAINING[run]: list(run_trainings(run)) for run in RUNS if config["runs"][run]["seeds"]}
OTHER_SEEDS = [t for trainings in SEEDS.values() for t in trainings[1:]]  # the trainings a row does not show


def table_statistics_inputs(runs, kind):
    """A table rule's inputs beyond the metrics, in the order of `runs`: per-phrase results (intervals); for
    our runs (kind "runs", not "released"), the benchmark files of every training (cost) and the metrics of
    every seed of the runs that have seeds."""
    if kind == "released":
        return {"per_task": expand("results/released/{run}/test/per_task.json", run=runs)}
    return {
        "per_task": [f"results/runs/{ROW_TRAINING[run]}/test/per_task.json" for run in runs],
        "benchmarks": [f"results/benchmarks/{stage}_{t}.tsv" for t, stage in cost_benchmarks(runs)],
        "seeds": [f"results/runs/{t}/test/metrics.json" for t in OTHER_SEEDS],
    }


def cost_benchmarks(runs):
    """(training, stage) of every benchmark file behind the rows of `runs`: every seed's trainings."""
    return [(t, stage) for run in runs for t in run_trainings(run) for stage in COST_STAGES]


def table_statistics_args(kind):
    """`table` flags from the config: the bootstrap's and, for our runs (kind "runs", not "released"), the metrics
    of every seed. Not made from the job's input, so Snakemake compares them (it leaves out params made from input
    or output): a change re-runs the table."""
    seeds = f"--seeds-json {quoted_json(SEEDS)} " if kind == "runs" and SEEDS else ""
    return f"{seeds}{STATISTICS_ARGS}"


def table_job_args(rows, kind):
    """`table`'s files, each named by what it is of: the metrics of each row (and of the other seeds), the
    per-phrase results and browser of each row and, for our runs, the stages' benchmark files with the GPUs each
    stage's job holds (how its jobs ran, like `resources`: no reason to re-run the table)."""
    names = [row["run"] for row in rows]
    runs = [run_of(name) for name in names]

    def args(wildcards, input):
        text = f"--per-task {named(names, input.per_task)}{LINE}--browsers {named(names, input.browsers)}"
        if kind == "runs":
            benchmarks = named((f"{stage}:{t}" for t, stage in cost_benchmarks(runs)), input.benchmarks)
            text += f"{LINE}--benchmarks {benchmarks}{LINE}--gpus-json {quoted_json(COST_GPUS)}"
        return text

    return args


def table_metrics_args(rows, kind):
    """`--metrics`: each row's metrics.json and, for our runs, every other seed's, named by their training."""
    names = [row["run"] for row in rows] + (OTHER_SEEDS if kind == "runs" else [])
    return lambda wildcards, input: named(names, [*input.metrics, *getattr(input, "seeds", [])])


def shown(run, keys=("label", "published")):
    """What a table shows of a run beside its metrics, nested as in the config: only the table rules read it."""
    return {key: config["runs"][run][key] for key in keys}


def table_params(rows, kind):
    return dict(
        runs=json_file(rows),
        dataset=shlex.quote(config["dataset"]["name"]),
        record=record(
            lambda w: {
                "dataset": {"name": config["dataset"]["name"]},
                "runs": {run: shown(run) for run in map(run_of, (row["run"] for row in rows))},
                "statistics": config["statistics"],
            }
        ),
        statistics=table_statistics_args(kind),
        metrics=table_metrics_args(rows, kind),
        jobs=table_job_args(rows, kind),
    )


# The failure browser of an evaluation and the model card of a training (evaluate.smk).
BROWSER_ARGS = " ".join(f"--{key.replace('_', '-')} {value}" for key, value in config["browser"].items())


def browser_inputs(results):
    """The browser of an evaluation under `results` ("results/runs" or "results/released"): its per-phrase results
    and masks, the split's phrases and images; for our run of a run with a released checkpoint, the released
    evaluation too (the pair `compare --paired` reads)."""

    def inputs(wildcards):
        files = dict(
            per_task=f"{results}/{wildcards.run}/test/per_task.json",
            predictions=f"{results}/{wildcards.run}/test/predictions.npz",
            refer=original(f"refer_{TEST}.json"),
            split=original("image_data_split.json"),
            images=images_dir(),
        )
        released = config["runs"][run_of(wildcards.run)]["released"] if results == "results/runs" else None
        if released:
            files.update(
                paired_per_task=f"results/released/{run_of(wildcards.run)}/test/per_task.json",
                paired_predictions=f"results/released/{run_of(wildcards.run)}/test/predictions.npz",
            )
        return files

    return inputs


def browser_paired(wildcards, input):
    """The released evaluation a browser pairs with, each option on its own line after the one before; or ""."""
    if not hasattr(input, "paired_per_task"):
        return ""
    return (
        f"{LINE}--paired-per-task {shlex.quote(input.paired_per_task)}"
        f"{LINE}--paired-predictions {shlex.quote(input.paired_predictions)} --labels ours released"
    )
