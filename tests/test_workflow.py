"""The embedded workflow end to end, as users drive it: locally and through a real Slurm cluster, partial
re-runs, artifact audits and faults (a killed training job, a corrupt download, a malformed annotation).

Each run works in a copy of the repository's workflow files with a CI-sized version of the embedded config
(a small synthetic set, a few training steps per stage).
"""
import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mdetr_phrasecut.infra.io import sha256_file
from helpers.paths import BIN, REPO
from helpers.workflow import audit, chromium, demo_run, make_workspace, snakemake

@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_run(tmp_path_factory)


def test_demo_ends_in_a_table_from_measured_metrics(demo):
    table = (demo / "results" / "table.md").read_text()
    metrics = json.loads((demo / "results" / "runs" / "demo" / "test" / "metrics.json").read_text())
    assert "synthetic PhraseCut" in table and "runs/demo/test/metrics.json" in table
    assert f"{100 * metrics['subsets']['all']['mean_mask_iou']:.1f}" in table
    assert metrics["num_phrases"] > 0 and metrics["missing"] == 0
    assert json.loads((demo / "results" / "audit.json").read_text())["ok"] is True
    for plot in ("precision_iou", "subset_miou", "training_curves", "examples"):
        assert (demo / "results" / "runs" / "demo" / "plots" / f"{plot}.png").stat().st_size > 1000


def test_demo_table_has_intervals_and_cost_and_subsets_report(demo):
    from mdetr_phrasecut.evaluation.statistics import intervals, load_per_task

    per_task = load_per_task(demo / "results" / "runs" / "demo" / "test" / "per_task.json")
    miou = {k: 100 * v for k, v in intervals(per_task, subsets=("all",))["all"]["miou"].items()}  # config defaults
    table = (demo / "results" / "table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| ResNet"))
    assert f"| {miou['value']:.1f} [{miou['lo']:.1f}, {miou['hi']:.1f}] |" in row
    assert re.search(r"\| \d+\.\d min; \d+\.\d\d CPU-h \(stage1, stage2, evaluate\) \|$", row)
    subsets = (demo / "results" / "subsets.md").read_text()
    assert f"| all | {miou['value']:.1f} [{miou['lo']:.1f}, {miou['hi']:.1f}] ({len(per_task.task_ids)}) |" in subsets
    assert (demo / "results" / "subsets.png").stat().st_size > 1000
    assert (demo / "results" / "subsets.md.prov.json").is_file()


def test_html_report_holds_the_table_and_plots(demo):
    snakemake(demo, "--report", "report.html")
    report = (demo / "report.html").read_text(errors="replace")
    for name in ("table.md", "precision_iou.png", "subset_miou.png", "training_curves.png", "examples.png",
                 "results/runs/demo/test/browser/index.html"):  # the failure browser: a link in the table's caption
        assert name in report


@pytest.mark.system_packages  # Debian's chromium and chromium-driver (make browser-deps, root)
def test_failure_browser_in_chromium(demo):
    """The page `make demo` writes, in headless Chromium from file://: one card per thumbnail, worst IoU first, a
    subset filter, the rest as rows; no request leaves file://."""
    from selenium.webdriver.support.ui import Select

    from mdetr_phrasecut.evaluation.statistics import load_per_task
    from mdetr_phrasecut.evaluation.subsets import SUBSETS

    page = demo / "results" / "runs" / "demo" / "test" / "browser" / "index.html"
    per_task = load_per_task(page.parent.parent / "per_task.json")
    assert "failure browser](runs/demo/test/browser/index.html)" in (demo / "results" / "table.md").read_text()
    ious = per_task.columns[:, 1] * 100
    with chromium() as driver:
        driver.get(page.as_uri())
        cards = driver.find_elements("css selector", "#cards .card")
        assert len(cards) == 6 < len(ious)  # worst 2 + best 2 + random 2 (tiny.yaml's browser section)
        shown = [float(c.get_attribute("data-iou")) for c in cards]
        assert shown == sorted(shown) and shown[0] == round(ious.min(), 2) and shown[-1] == round(ious.max(), 2)
        assert len(driver.find_elements("css selector", "#rest tr.row")) == len(ious) - 6
        assert driver.execute_script("return [...document.images].every(i => i.complete && i.naturalWidth > 0)")
        subset = "t_stuff" if per_task.members[:, SUBSETS.index("t_stuff")].any() else "t_obj"
        column = per_task.members[:, SUBSETS.index(subset)]
        Select(driver.find_element("id", "subset")).select_by_value(str(SUBSETS.index(subset)))
        tasks = [e.get_attribute("data-task") for e in driver.find_elements("css selector", ".card, tr.row")]
        assert sorted(tasks) == sorted(t for t, member in zip(per_task.task_ids, column) if member)
        driver.save_screenshot(str(demo / "browser.png"))
        requests = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    urls = {m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"}
    assert page.as_uri() in urls and all(url.startswith("file://") for url in urls), urls
    assert (demo / "browser.png").stat().st_size > 10_000


def test_model_card_and_hub_folder_round_trip_through_predict(demo, tmp_path):
    """MODEL_CARD.md's metadata holds the measured metrics; the exported Hub folder predicts as the checkpoint."""
    from huggingface_hub import ModelCard

    run = demo / "results" / "runs" / "demo"
    card = ModelCard.load(run / "MODEL_CARD.md")
    metrics = json.loads((run / "test" / "metrics.json").read_text())
    miou = next(r for r in card.data.eval_results if r.metric_type == "mean_iou")
    assert miou.metric_value == round(100 * metrics["subsets"]["all"]["mean_mask_iou"], 2)
    assert card.data.license == "apache-2.0" and metrics["checkpoint_sha256"] in card.text
    lo, hi = card.data.confidence_intervals["percent"]["miou"]
    assert lo <= miou.metric_value <= hi
    hub = tmp_path / "hub"
    from mdetr_phrasecut.cli import main as mdetr  # in this process: no interpreter start per command

    assert mdetr(["export-checkpoint", "--checkpoint", str(run / "stage2" / "checkpoint.pth"), "--hub-folder",
                  str(hub), "--card", str(run / "MODEL_CARD.md")]) == 0
    assert sorted(p.name for p in hub.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert (hub / "README.md").read_text() == (run / "MODEL_CARD.md").read_text()
    image = next((demo / "results" / "main" / "phrasecut" / "images").glob("*.jpg"))
    masks = []
    for checkpoint, config in ((run / "stage2" / "checkpoint.pth", demo / "config" / "tiny.yaml"),
                               (hub / "model.safetensors", hub / "config.json")):
        out = tmp_path / checkpoint.stem
        assert mdetr(["predict", "--checkpoint", str(checkpoint), "--config", str(config), "--image", str(image),
                      "--phrase", "circle", "--out-mask", f"{out}.png", "--out-overlay", f"{out}_overlay.png",
                      "--size", "128", "--max-size", "160", "--device", "cpu"]) == 0
        masks.append(Path(f"{out}.png").read_bytes())
    assert masks[0] == masks[1]


def test_every_artifact_has_provenance(demo):
    record = json.loads((demo / "results" / "runs" / "demo" / "stage2" / "checkpoint.pth.prov.json").read_text())
    assert record["config"]["train"]["stage2"]["max_steps_per_epoch"] == 3
    inputs = {Path(i["path"]).name: i for i in record["inputs"]}
    assert inputs["checkpoint.pth"]["sha256"] == sha256_file(demo / "results/runs/demo/stage1/checkpoint.pth")
    assert {"torch", "snakemake"} <= set(record["packages"]) and record["command"][0] == "mdetr-phrasecut"


AFTER_STAGE2 = {"stage2", "evaluate", "plots", "subsets", "browser", "model_card", "table", "audit"}
AFTER_STAGE1 = {"stage1", *AFTER_STAGE2}
PUBLISHED = {"miou": 50.0, "p50": 50.0, "p70": 30.0, "p90": 10.0}
# One config key changed alone in the finished demo -> the jobs Snakemake plans (a training by its stage). `audit`
# re-checks every record against the config, so it follows any change but those of HOW_JOBS_RUN (common.smk).
CHANGES = {
    "runs.demo.label": ("Another label", {"table", "subsets", "audit"}),
    "runs.demo.published": (PUBLISHED, {"table", "audit"}),
    "runs.demo.train.stage2.lr": (2.0e-3, AFTER_STAGE2),
    "runs.demo.train.stage1.lr": (1.0e-4, AFTER_STAGE1),
    "runs.demo.model.dropout": (0.2, AFTER_STAGE1),
    "model.dropout": (0.2, AFTER_STAGE1),
    "train.stage1.lr": (1.0e-4, AFTER_STAGE1),
    "train.stage2.lr": (2.0e-3, AFTER_STAGE2),
    "train.pretrain.epochs": (7, {"audit"}),  # the demo's stage 0 is a download, not trained here
    "evaluate.threshold": (0.5, {"evaluate", "plots", "subsets", "browser", "model_card", "table", "audit"}),
    "statistics.resamples": (200, {"subsets", "model_card", "table", "audit"}),
    "browser.worst": (3, {"browser", "table", "audit"}),
    "resources.stage1.runtime": (99, set()),
    "resources.evaluate.mem_mb": (9000, set()),
    "resources.default.tasks_per_node": (1, AFTER_STAGE1),  # processes per node: the effective batch
    "submit_downloads": (True, set()),
    "downloads.demo_pretrained.mirrors": (["file:///elsewhere/demo_pretrained.pth"], {"audit"}),  # sha256 pinned
    "downloads.demo_pretrained.sha256": ("0" * 64, {"download_demo_pretrained", *AFTER_STAGE1}),
    "downloads.unused": ({"url": "https://example.org/unused.pth", "sha256": None}, {"audit"}),
}


def changed(config, key, value):
    """A copy of `config` with the dotted `key` set to `value` (missing sections made)."""
    config = copy.deepcopy(config)
    *parents, last = key.split(".")
    section = config
    for name in parents:
        section = section.setdefault(name, {})
    section[last] = value
    return config


def test_a_config_change_reruns_exactly_what_depends_on_it(demo):
    """Snakemake's own plan (its summary) for each key of CHANGES changed alone, all in one process: a run's label
    reaches only the tables, a stage's settings that stage and what follows, resources nothing."""
    base = yaml.safe_load((demo / "config" / "tiny.yaml").read_text())
    files = {key: f"config/change_{i}.yaml" for i, key in enumerate(CHANGES)}
    for key, (value, _) in CHANGES.items():
        (demo / files[key]).write_text(yaml.safe_dump(changed(base, key, value)))
    try:
        run = subprocess.run([sys.executable, str(REPO / "tests" / "helpers" / "dry_run_plans.py"), "all",
                              "config/tiny.yaml", *files.values()], cwd=demo, env={**os.environ, "HF_HUB_OFFLINE": "0"},
                             capture_output=True, text=True, timeout=600)
    finally:
        for path in files.values():
            (demo / path).unlink()
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.splitlines()[-1])
    plans = {path: {Path(out).parent.name if rule == "train" else rule for rule, out in found[path]["plan"]}
             for path in found}
    assert plans.pop("config/tiny.yaml") == set()
    assert {key: plans[files[key]] for key in CHANGES} == {key: jobs for key, (_, jobs) in CHANGES.items()}
    # downloads run where Snakemake runs (no network on compute nodes), unless submit_downloads makes them jobs;
    # every job inherits the Hub offline from Snakemake (the download rule's command says HF_HUB_OFFLINE=0)
    assert "download_demo_pretrained" in found["config/tiny.yaml"]["local"]
    assert "download_demo_pretrained" not in found[files["submit_downloads"]]["local"]
    assert found["config/tiny.yaml"]["hub_offline"] == "1"


@pytest.mark.parametrize("key, value, folders", [("runs.demo.label", "Another label", {"results"}),
                                                 ("runs.demo.train.stage2.lr", 2.0e-3, {"stage2", "test"})])
def test_records_hold_only_what_each_artifact_depends_on(demo, tmp_path, key, value, folders):
    """The audit against a config changed in one key names the artifacts made from it, and no other: a run's label
    only the table, its own stage-2 settings stage 2 and its evaluation, never stage 1."""
    config = changed(yaml.safe_load((demo / "config" / "tiny.yaml").read_text()), key, value)
    subprocess.run([str(BIN / "mdetr-phrasecut"), "audit", "results/table.md", "--config-json", json.dumps(config),
                    "--out", str(tmp_path / "audit.json")], cwd=demo, capture_output=True, text=True)
    artifacts = json.loads((tmp_path / "audit.json").read_text())["artifacts"]
    flagged = {a["path"] for a in artifacts if any(p["kind"] == "different-config" for p in a["problems"])}
    assert {Path(path).parent.name for path in flagged} == folders, flagged


@pytest.mark.parametrize("artifact", ["results/runs/demo/stage1/checkpoint.pth",
                                      "results/main/coco/finetune_phrasecut_test.json"])
def test_audit_names_a_tampered_artifact(demo, artifact):
    path = demo / artifact
    original = path.read_bytes()
    path.write_bytes(original + b"tampered")
    try:
        run = audit(demo)
        assert run.returncode == 2
        assert artifact in run.stderr and "altered" in run.stderr
    finally:
        path.write_bytes(original)
    assert audit(demo).returncode == 0


def test_audit_names_an_artifact_made_from_another_config(demo):
    config = yaml.safe_load((demo / "config" / "tiny.yaml").read_text())
    config["train"]["stage1"]["lr"] = 1.0
    run = subprocess.run([str(BIN / "mdetr-phrasecut"), "audit", "results/table.md", "--config-json",
                          json.dumps(config)], cwd=demo, capture_output=True, text=True)
    assert run.returncode == 2 and "different-config" in run.stderr and "stage1" in run.stderr


def test_corrupt_download_is_detected_and_refetched(demo):
    """The audit names the corrupt file; the download step (re-run as recorded) detects it and fetches again."""
    download = demo / "results" / "downloads" / "demo_pretrained" / "demo_pretrained.pth"
    good = sha256_file(download)
    with open(download, "r+b") as f:
        f.seek(1000)
        f.write(b"\0" * 64)
    run = audit(demo)
    assert run.returncode == 2 and str(download.relative_to(demo)) in run.stderr and "altered" in run.stderr
    command = json.loads(download.with_name(download.name + ".prov.json").read_text())["command"]
    rerun = subprocess.run([str(BIN / command[0]), *command[1:]], cwd=demo, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert good[:12] in rerun.stderr and sha256_file(download) == good
    assert audit(demo).returncode == 0


def test_malformed_annotation_fails_clearly_and_keeps_earlier_artifacts(tmp_path):
    workspace = make_workspace(tmp_path)
    snakemake(workspace, "results/main/phrasecut/refer_test.json")
    refer = workspace / "results" / "main" / "phrasecut" / "refer_test.json"
    records = json.loads(refer.read_text())
    records[0]["instance_boxes"][0] = [1, 2, 3]
    refer.write_text(json.dumps(records))
    run = snakemake(workspace, "results/main/coco/finetune_phrasecut_test.json", check=False)
    assert run.returncode != 0
    log = (workspace / "results" / "logs" / "convert_main_test.log").read_text().strip().splitlines()
    assert log[-1].startswith("error: ") and "refer_test.json" in log[-1] and records[0]["task_id"] in log[-1]
    assert "instance_boxes" in log[-1]
    assert (workspace / "results" / "main" / "phrasecut" / "refer_train.json").is_file()
    assert not (workspace / "results" / "main" / "coco" / "finetune_phrasecut_test.json").exists()


def test_killed_training_job_resumes(tmp_path):
    """SIGKILL the stage-1 job (torchrun and its 2 processes) after a mid-epoch checkpoint; re-running the workflow
    resumes from it."""
    workspace = make_workspace(tmp_path, stage1={"max_steps_per_epoch": 40, "batch_size": 1,
                                                 "checkpoint_every_steps": 2})
    target = "results/runs/demo/stage1/checkpoint.pth"
    snakemake(workspace, "results/downloads/demo_pretrained/demo_pretrained.pth",
              "results/main/coco/finetune_phrasecut_train.json", "results/main/coco/finetune_phrasecut_miniv.json")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    job = subprocess.Popen([str(BIN / "snakemake"), "--cores", "2", "--configfile=config/tiny.yaml", target],
                           cwd=workspace, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    last = workspace / "results" / "runs" / "demo" / "stage1" / "checkpoint_last.pth"
    deadline = time.monotonic() + 300
    while not last.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert last.exists(), "no mid-epoch checkpoint was written"
    snakemake(workspace, "--unlock", target)  # a killed Snakemake leaves its lock, as on a cluster
    snakemake(workspace, "--rerun-incomplete", target)
    log = (workspace / "results" / "logs" / "stage1_demo.log").read_text()
    resumed_at = re.search(r"resuming from \S+: epoch 0, step (\d+)", log)
    assert resumed_at and int(resumed_at.group(1)) < 38, log[-2000:]  # mid-epoch: nothing trained on after the kill
    steps = [int(line.split(",")[1]) for line in
             (workspace / "results/runs/demo/stage1/log.csv").read_text().splitlines()[1:]]
    assert steps == list(range(40))


@pytest.mark.slow
def test_workflow_runs_through_slurm(cluster, tmp_path):
    """`snakemake --profile slurm` from the repo root, every job submitted to a real Slurm cluster. The training
    stages ask for GPUs (`resources.<stage>.gpus_per_node: 2`, the test cluster's fake GPUs): each job is submitted
    with its GRES per node, Slurm allocates it, and torchrun starts one process per GPU (gloo on CPU, no GPU)."""
    from helpers.slurm_cluster import GPUS_PER_NODE

    workspace = make_workspace(tmp_path)
    tiny = workspace / "config" / "tiny.yaml"
    config = yaml.safe_load(tiny.read_text())
    config["resources"].update({stage: {"gpus_per_node": GPUS_PER_NODE} for stage in ("stage1", "stage2")})
    tiny.write_text(yaml.safe_dump(config))
    run = snakemake(workspace, "--profile", "slurm", "--slurm-init-seconds-before-status-checks", "1", "--verbose",
                    "results/table.md", env=cluster.env, timeout=1200)
    assert (workspace / "results" / "table.md").is_file(), run.stdout[-3000:]
    slurm_logs = workspace / ".snakemake" / "slurm_logs"  # rule_<name>/[<wildcards>/]<job id>.log
    submitted = {p.relative_to(slurm_logs).parts[0] for p in slurm_logs.rglob("*.log")}
    assert submitted >= {"rule_synth", "rule_train", "rule_evaluate", "rule_table"}
    assert audit(workspace).returncode == 0

    gres = f"--gres=gpu:{GPUS_PER_NODE}"
    calls = re.findall(r"sbatch call: (.*)", run.stdout + run.stderr)
    assert sorted(gres in call for call in calls if "rule_train" in call) == [True, True], calls
    assert not any(gres in call for call in calls if "rule_train" not in call), calls
    for log in (slurm_logs / "rule_train").rglob("*.log"):
        job = cluster.run("scontrol", "show", "job", "--details", log.stem).stdout
        # asked for per node, and allocated (JOB_GRES: what the finished job held)
        assert f"TresPerNode=gres:gpu:{GPUS_PER_NODE}" in job and f"JOB_GRES=gpu:{GPUS_PER_NODE}" in job, job
    for stage in ("stage1", "stage2"):
        log = (workspace / f"results/logs/{stage}_demo.log").read_text(errors="replace")
        ranks = re.findall(r"rank (\d) of (\d) on node", log)
        assert sorted(ranks) == [("0", str(GPUS_PER_NODE)), ("1", str(GPUS_PER_NODE))], ranks
