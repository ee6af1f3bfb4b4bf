"""`recipe-audit` on small checkpoints: a released checkpoint's own args beside our config, each difference flagged,
missing and unknown arguments listed, never a crash on what `args` holds."""
import argparse
import json

import pytest
import torch

from mdetr_phrasecut.cli import main as cli

SPEC = {"model": {"backbone": "resnet101"}, "train": {"ema": False, "lr_drop": 25, "epochs": 35}}


def audit(tmp_path, args):
    ckpt = tmp_path / "released.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "args": args}, ckpt)
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    code = cli(["recipe-audit", "--checkpoint", str(ckpt), "--spec", str(tmp_path / "spec.json"), "--world-size", "32",
                "--run", "r101", "--out-md", str(tmp_path / "r.md"), "--out-json", str(tmp_path / "r.json")])
    assert code == 0
    return json.loads((tmp_path / "r.json").read_text()), (tmp_path / "r.md").read_text()


def test_each_difference_is_flagged_and_unknown_arguments_are_listed(tmp_path, capsys):
    args = argparse.Namespace(ema=True, lr_drop=25, epochs=35.0, lr=1e-4 * (1 + 1e-12), world_size=32,
                              frozen_weights="detection_r101/checkpoint.pth", eval_skip=1, set_loss="hungarian",
                              output_dir="out", schedule="step")
    report, md = audit(tmp_path, args)
    assert report["differences"] == ["ema", "schedule"]
    rows = {r["parameter"]: r for r in report["rows"]}
    assert rows["freeze_detr"]["status"] == rows["eval_every"]["status"] == rows["lr"]["status"] == "same"
    assert rows["positive_map"]["status"] == "not recorded" and "positive_map" in report["not_recorded"]
    assert report["unknown"] == {"set_loss": "hungarian"}  # output_dir: bookkeeping
    assert "| ema | true | false | **differs** |" in md
    assert "recipe audit r101: released checkpoint vs our stage2: differ: ema, schedule;" in capsys.readouterr().out


@pytest.mark.parametrize("args", [None, "not a namespace", {"ema": False, "weird": [1, 2]}])
def test_missing_or_odd_args_are_reported_not_fatal(tmp_path, args):
    report, _ = audit(tmp_path, args)
    assert report["differences"] == []
    if not isinstance(args, dict):
        assert report["args_kind"].startswith("no usable args") and report["unknown"] == {}
        assert all(r["status"] == "not recorded" for r in report["rows"])
    else:
        assert report["unknown"] == {"weird": [1, 2]}
