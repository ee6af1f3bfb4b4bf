"""The published recipe (config/phrasecut.yaml) end to end against loopback imitations of its real sources.

`FakeHosts` (tests/helpers/fake_hosts.py) plays Zenodo, Google Drive, Stanford and the Hugging Face Hub; they serve
small files in the real layouts (tests/helpers/release_artifacts.py). One override file changes only the hosts (every
URL of the
published config through `hosts.localize`), the model's size, epochs/steps and what it takes to run on 2 CPU cores;
with it the published config, both runs in config order, reaches both tables, the audit and every annotation audit
in one `snakemake` call.

Smaller backbones of the same families stand in for the published ones (ResNet-101's checkpoints alone would be
350 MB each and its training too slow for the suite): torchvision's ResNet-18 for ResNet-101 (same code path and
key layout) and timm's tf_efficientnet_b0 for tf_efficientnet_b3_ns (same timm family, BatchNormAct2d norms).
"""
import json
import re
import shlex
import urllib.parse
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from helpers.fake_hosts import FakeHosts
from snakemake.utils import update_config
from helpers.evaluations import write_benchmark, write_evaluation
from helpers.workflow import copy_workflow, snakemake

from helpers import release_artifacts
from mdetr_phrasecut import cli
from mdetr_phrasecut.config import validate_config

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = "config/phrasecut.yaml"
OVERRIDE = "rehearsal.yaml"
BACKBONES = {"resnet101": "resnet18", "efficientnet_b3": "timm_tf_efficientnet_b0"}
SMALL_MODEL = dict(hidden_dim=128, nheads=8, enc_layers=1, dec_layers=1, dim_feedforward=128, num_queries=8)
TINY_ENCODER = REPO / "src" / "mdetr_phrasecut" / "assets" / "tiny_text_encoder"  # served as roberta-base
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


def localized(obj, localize):
    """`obj` with every URL in it localized."""
    if is_url(obj):
        return localize(obj)
    if isinstance(obj, dict):
        return {k: localized(v, localize) for k, v in obj.items()}
    if isinstance(obj, list):
        return [localized(v, localize) for v in obj]
    return obj


def url_keys(entry, localize):
    """What the override says of a downloads entry: its keys that hold URLs, localized (a list whole, as the
    override replaces it whole)."""
    return {k: localized(v, localize) for k, v in entry.items() if any(True for _ in urls(v))}


def override(localize):
    """The one override file: hosts, model size, epochs/steps, resources to run here; nothing else."""
    published = published_config()
    return {
        "downloads": {name: url_keys(entry, localize) for name, entry in published["downloads"].items()},
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
    """{rule: [shell command, ...]} of a dry run (`-n -p`) to `targets`, each command's continued lines joined as the
    shell joins them."""
    out = snakemake(workspace, "-n", "-p", "--forceall", "--", *targets, configfiles=configfiles).stdout
    commands = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        command = re.search(r"^Shell command: ((?:.*\\\n)*.*)$|^\s{4}(mdetr-phrasecut (?:.*\\\n)*.*)$", block, re.M)
        if rule and command:
            commands.setdefault(rule[1], []).append((command[1] or command[2]).replace("\\\n", ""))
    return commands


def test_both_tables_follow_the_config_order(tmp_path):
    """The published config's two runs: the table commands the DAG holds run, and list the rows in config order
    (runs sorted by key against metrics in config order used to crash them after all training)."""
    workspace = copy_workflow(tmp_path / "ws")
    commands = dry_run_commands(workspace, "results/table.md", "results/released/table.md")
    labels = [run["label"] for run in published_config()["runs"].values()]
    assert labels == ["ResNet-101", "EfficientNet-B3"]
    for rule, out in (("table", "results/table.md"), ("released_table", "results/released/table.md")):
        argv = shlex.split(commands[rule][0].split(" 2> ")[0])[1:]
        del argv[argv.index("--record"):argv.index("--record") + 2]
        metrics = argv[argv.index("--metrics") + 1:argv.index("--runs-json")]  # RUN=PATH each
        for path in (m.partition("=")[2] for m in metrics):  # an evaluation's files, its browser, the benchmarks
            write_evaluation((workspace / path).parent, dataset=argv[argv.index("--dataset") + 1], n=40)
            (workspace / path).parent.joinpath("browser").mkdir()
        benchmarks = argv[argv.index("--benchmarks") + 1:argv.index("--gpus-json")] if "--benchmarks" in argv else []
        for path in (b.partition("=")[2] for b in benchmarks):
            write_benchmark(workspace / path, 60, 30)
        argv = [re.sub(r"^(@|[^=@]*=)?(results/|\.snakemake/)", lambda m: f"{m[1] or ''}{workspace}/{m[2]}", a)
                for a in argv]  # the workspace's files (--runs-json: an @FILE under .snakemake/)
        assert cli.main(argv) == 0
        rows = [line.split("|")[1].strip() for line in (workspace / out).read_text().splitlines()
                if line.startswith("| ") and "pub." in line]
        assert rows == labels


def test_a_run_the_tables_cannot_follow_fails_when_the_dag_is_built(tmp_path):
    """A run whose name cannot name its files (`--metrics RUN=PATH`: a `=` in it) fails the dry run, before any
    job."""
    workspace = copy_workflow(tmp_path / "ws")
    config = published_config()
    config["runs"]["efficientnet_b3=v2"] = config["runs"].pop("efficientnet_b3")
    (workspace / "config" / "renamed.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(workspace, "-n", "results/table.md", configfiles=("config/renamed.yaml",), check=False)
    assert run.returncode != 0
    assert "efficientnet_b3=v2: a name given as NAME=PATH cannot hold '='" in run.stdout + run.stderr
    assert "Job stats" not in run.stdout


def release_files(config):
    """{downloads key: bytes} of every file the published recipe downloads, small, in the real layouts."""
    originals, images, annotations = release_artifacts.phrasecut(NUM_IMAGES)
    dataset = config["dataset"]
    files = {key: originals[name] for name, key in dataset["originals"].items()}
    files[dataset["images"]] = release_artifacts.gqa_images_zip(images)
    files[dataset["mdetr_annotations"]] = release_artifacts.annotations_tarball(annotations)
    files[config["model"]["text_encoder_type"]] = {p.name: p.read_bytes() for p in TINY_ENCODER.iterdir()}
    tiny = {**config, "model": {**config["model"], "text_encoder_type": str(TINY_ENCODER)}}
    for seed, (run, spec) in enumerate(config["runs"].items()):
        files[spec["pretrained"]] = release_artifacts.release_checkpoint(tiny, run, "stage1", seed)
        files[spec["released"]] = release_artifacts.release_checkpoint(tiny, run, "stage2", seed,
                                                                       args_differ=ARGS_DIFFER.get(run))
    return files


# one released checkpoint trained stage 2 with EMA: the recipe audit flags it
ARGS_DIFFER = {"resnet101": {"ema": True}}


def host_requests(hosts):
    return [list(host.requests) for host in hosts.hosts]


def download_windows(results):
    """{command: (start, end) in epoch seconds} of every download job, from its provenance records (whole seconds)."""
    records = [json.loads(path.read_text()) for path in results.rglob("*.prov.json")]
    seconds = lambda iso: datetime.fromisoformat(iso).timestamp()  # noqa: E731
    return {tuple(r["command"]): (seconds(r["started"]), seconds(r["finished"])) for r in records
            if "download" in r["command"]}


# Variants, in the same run: the first source of one original serves Drive's quota page, another's Drive id is
# dead (both -> the HF mirror); a third is dead on Drive and missing on the Hub (-> the authors' zip on Drive).
QUOTA, DEAD, ZIP_ONLY = "refer_miniv.json", "refer_test.json", "name_att_rel_count.json"


def serve_release(hosts, published, files):
    """Serve every source and mirror of the published config's downloads (with the variants above), and record
    4729015's annotation tarball; archive mirrors ({url, member}) as one zip per URL."""
    originals = {key: name for name, key in published["dataset"]["originals"].items()}
    archives = {}
    for key, entry in published["downloads"].items():
        name = originals.get(key)
        if entry.get("kind") == "snapshot":  # a Hub repository at its pinned revision: {path: bytes}
            repo, commit = entry["url"].removeprefix("hf://").split("@")
            for path, data in files[key].items():
                hosts.hf.add(repo, path, data, commit=commit)
            continue
        for i, source in enumerate([entry["url"], *entry.get("mirrors", [])]):
            if isinstance(source, dict):
                archives.setdefault(source["url"], {})[source["member"]] = files[key]
            elif i == 0 and name in (DEAD, ZIP_ONLY) or i == 1 and name == ZIP_ONLY:
                continue  # a dead Drive id (404), a file the Hub lacks
            else:
                serve_at(hosts, source, files[key], quota=i == 0 and name == QUOTA)
    for url, members in archives.items():
        serve_at(hosts, url, release_artifacts.zip_bytes(members))
    hosts.zenodo.add(4729015, "mdetr_annotations.tar.gz", release_artifacts.annotations_tarball_4729015())


@pytest.mark.slow
def test_published_recipe_reaches_both_tables_and_audits_in_one_call(tmp_path):
    workspace = copy_workflow(tmp_path / "ws")
    published = published_config()
    with FakeHosts(drive_scan_limit=4096) as hosts:  # refer_train.json and others go through the scan page
        settings = override(hosts.localize)
        config = merged(settings)
        loopback = tuple(f"{host.base}/" for host in hosts.hosts) + ("hf://",)  # hf://: through HF_ENDPOINT
        assert all(url.startswith(loopback) for url in urls(config["downloads"]))  # nothing reaches a real host
        files = release_files(config)
        serve_release(hosts, published, files)
        (workspace / OVERRIDE).write_text(yaml.safe_dump(settings))

        # one call, `all`
        first = snakemake(workspace, env=hosts.env(), configfiles=(PUBLISHED, OVERRIDE), timeout=1500)
        requests = host_requests(hosts)
        # the network only in download jobs: every request any host got came while one ran
        windows = download_windows(workspace / "results")
        outside = [(host.base, request) for host in hosts.hosts for t, request in zip(host.times, host.requests)
                   if not any(start - 1 <= t <= end + 1 for start, end in windows.values())]
        assert len(windows) == len(list((workspace / "results" / "logs").glob("download_*.log")))
        assert outside == [], outside
        again = snakemake(workspace, env=hosts.env(), configfiles=(PUBLISHED, OVERRIDE), timeout=120)
        assert "Nothing to be done" in again.stdout + again.stderr
        assert host_requests(hosts) == requests  # nothing fetched again

    results = workspace / "results"
    labels = [spec["label"] for spec in published["runs"].values()]
    for table in ("table.md", "released/table.md"):
        rows = [line.split("|")[1].strip() for line in (results / table).read_text().splitlines()
                if line.startswith("| ") and "pub." in line]
        assert rows == labels, table  # both runs, in config order
    released = (results / "released" / "table.md").read_text()
    for spec in published["runs"].values():
        assert spec["released"] in released  # the published checkpoints evaluated, each in its row's provenance
    assert json.loads((results / "audit.json").read_text())["ok"] is True
    for run in published["runs"]:  # the released checkpoints' own args judge our recipe: the difference flagged
        recipe = json.loads((results / "audit" / f"recipe_{run}.json").read_text())
        assert recipe["differences"] == list(ARGS_DIFFER.get(run, {})), run
        assert "set_loss" in recipe["unknown"] and "positive_map" in recipe["not_recorded"]
        differ = ", ".join(ARGS_DIFFER.get(run, {})) or "none"
        assert f"recipe audit {run}: released checkpoint vs our stage2: differ: {differ};" in first.stdout
    assert "| ema | true | false | **differs** |" in (results / "audit" / "recipe_resnet101.md").read_text()
    for run in published["runs"]:  # our failure browser pairs each run with its released checkpoint's evaluation
        page = (results / "runs" / run / "test" / "browser" / "index.html").read_text()
        assert '"labels":["ours","released"]' in page and (results / "released" / run / "test" / "browser").is_dir()
        assert (results / "runs" / run / "MODEL_CARD.md").is_file()
    splits = {config["dataset"][k] for k in ("train_split", "val_split", "test_split")}
    for split in splits:
        report = json.loads((results / "audit" / f"mdetr_annotations_{split}.json").read_text())
        assert report["identical"] is True and report["images"]["matched"] > 0, split
        assert "/mdetr_annotations/finetune_phrasecut_" in report["mdetr_file"]
    for name in ["image_data_split.json", "name_att_rel_count.json", *(f"refer_{s}.json" for s in splits)]:
        assert (results / "main" / "phrasecut" / name).read_bytes() == files[published["dataset"]["originals"][name]]
    # the variants: each file came from the next source that had it
    log = lambda name: (results / "logs" / f"download_{published['dataset']['originals'][name]}.log").read_text()  # noqa: E731
    assert "quota exceeded" in log(QUOTA) and "404" in log(DEAD) and "404" in log(ZIP_ONLY)
    hf = [path for _, path, _, status in requests[hosts.hosts.index(hosts.hf)] if status in (200, 206)]
    assert any(p.endswith(QUOTA) for p in hf) and any(p.endswith(DEAD) for p in hf)
    assert not any(p.endswith(ZIP_ONLY) for p in hf)
    assert (workspace / "results" / "downloads" / "archives").is_dir()
    usercontent = [path for _, path, _, _ in requests[hosts.hosts.index(hosts.drive.usercontent)]]
    assert any("confirm=t" in path for path in usercontent)  # above the scan limit: through Drive's form
    # the text encoder: its pinned revision fetched by its download job, the folder every training job loads
    encoder = results / "downloads" / "roberta-base" / "roberta-base"
    assert {p.name for p in encoder.glob("[!.]*")} == {p.name for p in TINY_ENCODER.iterdir()}
    assert any(p.startswith("/api/models/FacebookAI/roberta-base/tree/e2da8e2") for _, p, _, _ in
               requests[hosts.hosts.index(hosts.hf)])
    stage1 = json.loads((results / "runs" / "resnet101" / "stage1" / "checkpoint.pth.prov.json").read_text())
    assert any(i["path"].endswith("downloads/roberta-base/roberta-base") for i in stage1["inputs"])
    zenodo = [path for _, path, _, _ in requests[hosts.hosts.index(hosts.zenodo)]]
    assert zenodo and not any("4729015" in p for p in zenodo)  # the annotations come from record 5519755
