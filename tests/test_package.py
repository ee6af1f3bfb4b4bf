"""The package stands on its own: a wheel installed into a fresh venv (not the editable source tree) validates
configs with its shipped schema, and the demo config's text encoder resolves from any working directory."""
import json
import os
import shutil
import site
import subprocess
import sys

import pytest
import yaml

from helpers.paths import REPO
from mdetr_phrasecut.model.text_encoder import load_text_encoder

BAD_SPEC = {"model": {"backbone": "resnet18"}, "train": {"lr": "fast"}}
PROBE = """import json, sys
import mdetr_phrasecut
from mdetr_phrasecut.config import load_config
cfg = load_config(sys.argv[1])
print(json.dumps({"file": mdetr_phrasecut.__file__, "runs": sorted(cfg["runs"]),
                  "text_encoder_type": cfg["model"]["text_encoder_type"]}))
"""


def test_demo_text_encoder_is_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["model"]["text_encoder_type"]
    tokenizer, encoder = load_text_encoder(name)
    assert tokenizer.is_fast and tokenizer("small red circle")["input_ids"][0] == tokenizer.cls_token_id
    assert encoder.config.hidden_size == 64


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_validates_configs_and_runs(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "pyproject.toml", source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", source], check=True)
    (wheel,) = (tmp_path / "dist").glob("mdetr_phrasecut-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", venv], check=True)
    python = venv / "bin" / "python"
    subprocess.run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], check=True)
    # the shared venv's packages (torch, ...) as a plain path: its .pth files, the editable install's among them,
    # are not processed, so `mdetr_phrasecut` can only come from the wheel
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (venv / purelib.removeprefix(str(venv) + "/") / "shared.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    shutil.rmtree(source)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = lambda *cmd: subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)  # noqa: E731

    probe = run(python, "-c", PROBE, REPO / "config" / "config.yaml")
    assert probe.returncode == 0, probe.stderr
    loaded = json.loads(probe.stdout)
    assert loaded["file"].startswith(str(venv)) and loaded["runs"] and loaded["text_encoder_type"]

    cli = venv / "bin" / "mdetr-phrasecut"
    (tmp_path / "bad_spec.json").write_text(json.dumps(BAD_SPEC))
    bad = run(cli, "train", "--stage", "stage1", "--spec", tmp_path / "bad_spec.json", "--coco-dir", tmp_path,
              "--images", tmp_path, "--out-dir", tmp_path / "out")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "train.lr" in bad.stderr and "'fast' is not of type 'number'" in bad.stderr
    usage = run(cli, "evaluate", "--help")
    assert usage.returncode == 0 and "--checkpoint" in usage.stdout, usage.stderr
