"""The published recipe (config/phrasecut.yaml) end to end against loopback imitations of its real sources.

`FakeHosts` (tests/fake_hosts.py) plays Zenodo, Google Drive, Stanford and the Hugging Face Hub; they serve small
files in the real layouts (tests/release_artifacts.py). One override file changes only the hosts (every URL of the
published config through `hosts.localize`), the model's size, epochs/steps and what it takes to run on 2 CPU cores;
with it the published config, both runs in config order, reaches both tables, the audit and every annotation audit
in one `snakemake` call.

Smaller backbones of the same families stand in for the published ones (ResNet-101's checkpoints alone would be
350 MB each and its training too slow for the suite): torchvision's ResNet-18 for ResNet-101 (same code path and
key layout) and timm's tf_efficientnet_b0 for tf_efficientnet_b3_ns (same timm family, BatchNormAct2d norms).
"""
import re
import shlex
import subprocess
import urllib.parse
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config
from test_statistics import write_benchmark, write_evaluation
from test_workflow import BIN, copy_workflow, planned_jobs, snakemake

import release_artifacts
from mdetr_phrasecut import cli
from mdetr_phrasecut.config import validate_config

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = "config/phrasecut.yaml"
OVERRIDE = "rehearsal.yaml"
BACKBONES = {"resnet101": "resnet18", "efficientnet_b3": "timm_tf_efficientnet_b0"}
SMALL_MODEL = dict(hidden_dim=128, nheads=8, enc_layers=1, dec_layers=1, dim_feedforward=128, num_queries=8,
                   text_encoder_type="src/mdetr_phrasecut/assets/tiny_text_encoder")
SHORT = dict(epochs=1, max_steps_per_epoch=2, batch_size=2, num_workers=0, scales=[64], max_size=96)
ON_THIS_MACHINE = dict(nodes=1, gpus_per_node=0, tasks_per_node=1, cpus_per_task=1, mem_mb=2000, runtime=30)
NUM_IMAGES = {"train": 8, "val": 4, "test": 4}


def published_config():
    return yaml.safe_load((REPO / PUBLISHED).read_text())


def is_url(value):
    return isinstance(value, str) and re.match(r"(https?|hf)://", value) is not None


def urls(obj):
    """Every URL in a config section (a downloads entry's source and its mirrors), in order."""
    if is_url(obj):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from urls(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from urls(value)


def only_urls(obj, localize):
    """The parts of `obj` that hold URLs, each URL localized (what the override file says of a downloads entry)."""
    if is_url(obj):
        return localize(obj)
    if isinstance(obj, dict):
        kept = {k: only_urls(v, localize) for k, v in obj.items()}
        return {k: v for k, v in kept.items() if v is not None}
    if isinstance(obj, list) and any(True for _ in urls(obj)):
        return [only_urls(v, localize) if any(True for _ in urls(v)) else v for v in obj]
    return None


def override(localize):
    """The one override file: hosts, model size, epochs/steps, resources to run here; nothing else."""
    published = published_config()
    return {
        "downloads": {name: only_urls(entry, localize) for name, entry in published["downloads"].items()},
        "model": {**SMALL_MODEL, "backbone": BACKBONES["resnet101"]},
        "runs": {run: {"model": {"backbone": BACKBONES[run]}} for run in published["runs"]},
        "train": {stage: dict(SHORT) for stage in ("stage1", "stage2")},
        "evaluate": {"size": 64, "max_size": 96, "batch_size": 4, "workers": 1},
        "resources": {stage: dict(ON_THIS_MACHINE) for stage in ("default", "stage1", "stage2", "evaluate")},
    }


def merged(override_config):
    """The config Snakemake runs: the published one updated key by key by the override, validated."""
    config = published_config()
    update_config(config, override_config)
    return validate_config(config, f"{PUBLISHED} + {OVERRIDE}")


def serve_at(hosts, url, data, quota=False):
    """Serve `data` where the real `url` points, on that host's imitation."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "hf":
        kind, owner, name, path = f"{parts.netloc}{parts.path}".split("/", 3)
        hosts.hf.add(f"{kind}/{owner}/{name}", path, data)
    elif parts.netloc == "zenodo.org":
        record, name = re.fullmatch(r"/records?/(\d+)/files/(.+)", parts.path).groups()
        hosts.zenodo.add(int(record), name, data)
    elif parts.netloc == "drive.google.com":
        hosts.drive.add(urllib.parse.parse_qs(parts.query)["id"][0], data, quota=quota)
    elif parts.netloc == "nlp.stanford.edu":
        hosts.stanford.add(parts.path, data)
    else:
        raise AssertionError(f"no imitation of the host of {url}")


def dry_run_commands(workspace, *targets, configfiles=(PUBLISHED,)):
    """{rule: [shell command, ...]} of a dry run (`-n -p`) to `targets`."""
    out = snakemake(workspace, "-n", "-p", "--forceall", "--", *targets, configfiles=configfiles).stdout
    commands = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        command = re.search(r"^Shell command: (.*)$|^\s{4}(mdetr-phrasecut .*)$", block, re.M)
        if rule and command:
            commands.setdefault(rule[1], []).append(command[1] or command[2])
    return commands


def test_both_tables_follow_the_config_order(tmp_path):
    """The published config's two runs: the table commands the DAG holds run, and list the rows in config order
    (the release's runs-json sorted by key used to crash them after all training)."""
    workspace = copy_workflow(tmp_path / "ws")
    commands = dry_run_commands(workspace, "results/table.md", "results/released/table.md")
    labels = [run["label"] for run in published_config()["runs"].values()]
    assert labels == ["ResNet-101", "EfficientNet-B3"]
    for rule, out in (("table", "results/table.md"), ("released_table", "results/released/table.md")):
        argv = shlex.split(commands[rule][0].split(" 2> ")[0])[1:]
        del argv[argv.index("--record"):argv.index("--record") + 2]
        metrics = argv[argv.index("--metrics") + 1:argv.index("--runs-json")]
        for path in metrics:  # an evaluation's per_task.json and metrics.json, and the benchmarks of the stages
            write_evaluation((workspace / path).parent, dataset=argv[argv.index("--dataset") + 1], n=40)
        for path in argv[argv.index("--benchmarks") + 1:argv.index("--gpus-json")] if "--benchmarks" in argv else []:
            write_benchmark(workspace / path, 60, 30)
        argv = [str(workspace / a) if a.startswith("results/") else a for a in argv]
        assert cli.main(argv) == 0
        rows = [line.split("|")[1].strip() for line in (workspace / out).read_text().splitlines()
                if line.startswith("| ") and "pub." in line]
        assert rows == labels


def test_a_run_the_tables_cannot_follow_fails_when_the_dag_is_built(tmp_path):
    """A run whose metrics path would not name it (a `/` in its name) fails the dry run, before any job."""
    workspace = copy_workflow(tmp_path / "ws")
    config = published_config()
    config["runs"]["efficientnet_b3/v2"] = config["runs"].pop("efficientnet_b3")
    (workspace / "config" / "renamed.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(workspace, "-n", "results/table.md", configfiles=("config/renamed.yaml",), check=False)
    assert run.returncode != 0
    assert "expected the metrics of run efficientnet_b3/v2" in run.stdout + run.stderr
    assert "Job stats" not in run.stdout
