"""The repository's workflow run in a scratch copy: copies, the CI-sized config, Snakemake, Chromium, audit."""
import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import yaml

from mdetr_phrasecut.infra.io import sha256_file

from .paths import BIN, REPO
WORKFLOW_FILES = ("Snakefile", "workflow", "config", "resources", "src/mdetr_phrasecut/assets", "slurm", "profiles")


def copy_workflow(path: Path) -> Path:
    """A copy of the repository's workflow files (Snakefile, rules, configs, profiles, ...) at `path`."""
    for name in WORKFLOW_FILES:
        src, dst = REPO / name, path / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        elif src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
    return path


def make_workspace(path: Path, **stage_overrides) -> Path:
    """A copy of the workflow with a CI-sized config at config/tiny.yaml."""
    copy_workflow(path)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["dataset"]["synth"].update(train_images=40, val_images=12, test_images=10)
    config["downloads"]["demo_pretrained"]["sha256"] = sha256_file(REPO / "resources" / "demo_pretrained.pth")
    for stage in ("stage1", "stage2"):
        config["train"][stage].update({"epochs": 1, "max_steps_per_epoch": 3, "batch_size": 4, "num_workers": 0,
                                       **stage_overrides.get(stage, {})})
    config["evaluate"].update(workers=1)
    config["browser"] = {"worst": 2, "best": 2, "random": 2}  # fewer thumbnails than phrases: some rows without
    (path / "config" / "tiny.yaml").write_text(yaml.safe_dump(config))
    return path


def snakemake(workspace: Path, *args, env=None, check=True, timeout=900, configfiles=("config/tiny.yaml",)):
    """`snakemake --cores 2` in `workspace` with `configfiles` (later ones override earlier ones key by key)."""
    env = {**os.environ, **(env or {})}
    env["PATH"] = f"{BIN}:{env['PATH']}"
    cmd = [str(BIN / "snakemake"), "--configfile", *configfiles, "--cores", "2", *args]  # (it takes every word)
    run = subprocess.run(cmd, cwd=workspace, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return run


@contextlib.contextmanager
def chromium():
    """Debian's headless Chromium through chromedriver (`make test` installs both), logging network events."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,800"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()


def audit(workspace: Path, target="results/table.md"):
    return subprocess.run([str(BIN / "mdetr-phrasecut"), "audit", target], cwd=workspace, capture_output=True,
                          text=True)


DEMO_STAGES = {"stage1": {"checkpoint_every_steps": 1}}  # test_chaos.py kills stage 1 after a mid-epoch checkpoint
_DEMO = []  # the one demo run of the session (test_chaos.py compares its killed runs with it)


def demo_run(tmp_path_factory) -> Path:
    """The embedded workflow run locally to results/table.md (and the audit), once per test session."""
    if not _DEMO:
        workspace = make_workspace(tmp_path_factory.mktemp("demo"), **DEMO_STAGES)
        snakemake(workspace, "all")
        _DEMO.append(workspace)
    return _DEMO[0]
