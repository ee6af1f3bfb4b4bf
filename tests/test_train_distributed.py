"""Two CPU processes (gloo) x batch 1 train the same weights as one process x batch 2; rank/world come from
torchrun's or Slurm's environment (a worker dying with its launcher: test_orphans.py)."""
import json
import os
import socket
import stat
from collections import Counter

import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from mdetr_phrasecut.engine import train as train_mod
from mdetr_phrasecut.model import build as build_mod
from mdetr_phrasecut.engine.distributed import DistEnv, env_from_environ
from helpers.coco import indexed_coco
from helpers.specs import tiny_spec
from mdetr_phrasecut.config import resolve_stage

LR = 3e-4


def _without_dropout(build_model):
    """The text encoder and text resizer keep dropout 0.1 whatever the config; masks drawn per process
    cannot match one process's, so switch every dropout off."""
    def build(cfg):
        model = build_model(cfg)
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        return model

    return build


def _worker(rank, world, port, spec, coco, images, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    build_mod.build_model = _without_dropout(build_mod.build_model)
    train_mod.run(resolve_stage(spec, "pretrain"),
                  coco_dir=coco, images=images, out_dir=out, device="cpu", progress=False)


@pytest.fixture
def one_image_split(tmp_path, reference_dir):
    """The four phrases of one training image: all items share a size, so no batch layout pads differently."""
    mini = reference_dir / "phrasecut_mini" / "s0"
    coco = json.loads((mini / "expected_coco" / "finetune_phrasecut_train.json").read_text())
    image = next(i for i, n in Counter(im["original_id"] for im in coco["images"]).items() if n == 4)
    coco["images"] = [im for im in coco["images"] if im["original_id"] == image]
    ids = {im["id"] for im in coco["images"]}
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in ids]
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "finetune_phrasecut_miniv.json").write_text(json.dumps(coco))
    return indexed_coco(tmp_path / "coco"), mini / "images"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path, monkeypatch, tiny_roberta_dir,
                                                                    one_image_split):
    coco, images = one_image_split

    def spec(batch_size):
        # Not "train": evaluation transforms (deterministic). Contrastive align is off because the release's loss
        # takes a logsumexp over padded text tokens, so it depends on how captions are batched.
        return tiny_spec(tiny_roberta_dir, epochs=2, batch_size=batch_size, train_split="miniv", val_split="miniv",
                         eval_every=1, contrastive_align_loss=False, lr=LR, lr_backbone=LR / 10,
                         text_encoder_lr=LR / 10)

    mp.spawn(_worker, args=(2, free_port(), spec(1), coco, images, tmp_path / "two"), nprocs=2, join=True)
    monkeypatch.setattr(build_mod, "build_model", _without_dropout(build_mod.build_model))
    train_mod.run(resolve_stage(spec(2), "pretrain"),
                  coco_dir=coco, images=images, out_dir=tmp_path / "one", device="cpu", progress=False)

    two = torch.load(tmp_path / "two" / "checkpoint.pth", weights_only=True)
    one = torch.load(tmp_path / "one" / "checkpoint.pth", weights_only=True)
    assert two["position"] == one["position"] == {"epoch": 2, "step": 0, "global_step": 4}
    assert two["layout"] == {"world_size": 2, "batch_size": 1} and len(two["rng"]) == 2
    # Rounding differs between one batch of 2 and two batches of 1; where a gradient is comparable to Adam's
    # eps (1e-8) its update amplifies that, so a few weights may differ by a fraction of the learning rate.
    for key in ("model", "model_ema"):
        diffs = [(two[key][n] - w).abs() for n, w in one[key].items() if w.is_floating_point()]
        off = sum(int((d > LR / 100).sum()) for d in diffs) / sum(d.numel() for d in diffs)
        assert off < 1e-3, (key, off)
    moved = [(one["model"][n] - w).abs().max() for n, w in one["model_ema"].items() if w.is_floating_point()]
    assert max(moved) > LR  # training moved the weights away from their (lagging) average

    drop = ["images_per_s"]
    for log in ("log.csv", "val.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "two" / log).drop(columns=drop, errors="ignore"),
                                      pd.read_csv(tmp_path / "one" / log).drop(columns=drop, errors="ignore"),
                                      rtol=1e-3)
    written = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert written == ["checkpoint.pth", "checkpoint_last.pth", "curves.png", "log.csv", "train_log.csv", "val.csv",
                       "val_log.csv"]


def test_rank_and_world_come_from_torchrun_or_slurm(tmp_path, monkeypatch):
    assert env_from_environ({}) == DistEnv(0, 1, 0)
    assert env_from_environ({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "SLURM_PROCID": "0",
                             "SLURM_NTASKS": "2"}) == DistEnv(5, 8, 1)  # torchrun inside a Slurm job wins
    assert env_from_environ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == DistEnv()  # a single task

    scontrol = tmp_path / "scontrol"  # what `scontrol show hostnames gpu[07-08]` prints
    scontrol.write_text('#!/bin/sh\n[ "$1 $2 $3" = "show hostnames gpu[07-08]" ] && printf "gpu07\\ngpu08\\n"\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    slurm = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]",
             "SLURM_JOB_ID": "123"}
    assert env_from_environ(slurm) == DistEnv(3, 4, 1)
    assert os.environ["MASTER_ADDR"] == "gpu07" and os.environ["MASTER_PORT"] == "20123"
