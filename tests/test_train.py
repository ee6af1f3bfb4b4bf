"""The training engine on a tiny model and a few PhraseCut-mini phrases: both stages learn, stage 2 leaves the
detector bit-identical, `--init` loads EMA weights only, NaN losses stop cleanly, logs and spec checks."""
import math
import random

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import Subset

from mdetr_phrasecut import cli
from mdetr_phrasecut.data.dataset import build_dataset
from mdetr_phrasecut.engine import train as train_mod
from mdetr_phrasecut.engine.distributed import DistEnv
from mdetr_phrasecut.engine.train_log import CsvLog
from mdetr_phrasecut.engine.loop import Preempted
from mdetr_phrasecut.engine.optim import build_optimizer, build_scheduler, param_groups
from mdetr_phrasecut.engine.sampling import SeededItems, epoch_batches
from mdetr_phrasecut.errors import InputError
from mdetr_phrasecut.config import resolve_stage, validate_spec
from mdetr_phrasecut.model import build as build_mod
from mdetr_phrasecut.model.build import build_model
from helpers.specs import spec_file, tiny_spec


@pytest.fixture(scope="module")
def mini(reference_dir):
    return reference_dir / "phrasecut_mini" / "s0"


@pytest.fixture(scope="module")
def repeated_batch(mini, mini_coco, tiny_roberta_dir):
    """Two phrases with deterministic (evaluation) transforms: every epoch is one step on the same batch."""
    ds = build_dataset("miniv", mini_coco, mini / "images", str(tiny_roberta_dir),
                       {"scales": [64], "max_size": 64, "masks": True})
    return Subset(ds, [0, 1])


def losses(out_dir, column="loss"):
    return pd.read_csv(out_dir / "log.csv")[column].to_numpy()


def state(path, key="model"):
    return torch.load(path, map_location="cpu", weights_only=True)[key]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, tiny_roberta_dir, repeated_batch):
    out = tmp_path_factory.mktemp("pretrain")
    train_mod.run(resolve_stage(tiny_spec(tiny_roberta_dir, epochs=8), "pretrain"),
                  coco_dir=None, images=None, out_dir=out,
                  datasets=(repeated_batch, repeated_batch), progress=False)
    return out


def test_pretrain_loss_decreases_on_a_repeated_batch(pretrained):
    loss = losses(pretrained)
    assert len(loss) == 8 and np.isfinite(loss).all()
    assert loss[-3:].mean() < 0.9 * loss[:2].mean()
    log = pd.read_csv(pretrained / "log.csv")
    assert {"loss_ce", "loss_bbox", "loss_giou", "loss_contrastive_align", "lr", "lr_backbone",
            "lr_text_encoder", "images_per_s"} <= set(log.columns)
    assert (pretrained / "curves.png").stat().st_size > 0
    ckpt = torch.load(pretrained / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert {"model", "model_ema", "optimizer", "lr_scheduler", "epoch", "args"} <= set(ckpt)
    assert ckpt["epoch"] == 7 and ckpt["position"] == {"epoch": 8, "step": 0, "global_step": 8}


def test_stage2_trains_the_mask_head_and_keeps_the_detector_bit_identical(tmp_path, tiny_roberta_dir,
                                                                          repeated_batch, pretrained):
    spec = tiny_spec(tiny_roberta_dir, epochs=6, lr=1e-3, eval_every=3)
    train_mod.run(resolve_stage(spec, "stage2"),
                  coco_dir=None, images=None, out_dir=tmp_path, init=pretrained / "checkpoint.pth",
                  datasets=(repeated_batch, repeated_batch), progress=False)
    log = pd.read_csv(tmp_path / "log.csv")
    assert "loss_contrastive_align" not in log.columns and not [c for c in log.columns if c.endswith("_0")]
    mask = (log["loss_mask"] + log["loss_dice"]).to_numpy()
    assert mask[-1] < 0.9 * mask[0]

    detector = state(pretrained / "checkpoint.pth", "model_ema")  # --init prefers the EMA weights
    for key in ("model", "model_ema"):
        segm = state(tmp_path / "checkpoint.pth", key)
        assert any(k.startswith("mask_head.") for k in segm)
        for k, v in detector.items():
            # the segmentation model has no such head, nor BatchNorm counters (its backbone's are frozen)
            if not k.startswith("contrastive_align_projection_") and not k.endswith(".num_batches_tracked"):
                assert torch.equal(segm[f"detr.{k}"], v), (key, k)
    val = pd.read_csv(tmp_path / "val.csv")
    assert list(val["epoch"]) == [2, 5] and val["mask_iou"].between(0, 1).all()


def test_stage1_init_loads_ema_weights_only_and_stage2_refuses_a_segmentation_checkpoint(
        tmp_path, tiny_roberta_dir, pretrained, repeated_batch, monkeypatch):
    spec = tiny_spec(tiny_roberta_dir)
    first = {}

    def first_epoch(net, model, *args, **kwargs):  # the weights training starts from, then stop
        first.update({k: v.clone() for k, v in model.state_dict().items()})
        raise Preempted("seen")

    monkeypatch.setattr(train_mod, "train_one_epoch", first_epoch)
    with pytest.raises(Preempted):
        train_mod.run(resolve_stage(spec, "stage1"),
                      coco_dir=None, images=None, out_dir=tmp_path / "s1", init=pretrained / "checkpoint.pth",
                      datasets=(repeated_batch, repeated_batch), progress=False)
    ema = state(pretrained / "checkpoint.pth", "model_ema")
    assert all(torch.equal(v, ema[k]) for k, v in first.items())  # frozen BatchNorms: no step counters
    assert not all(torch.equal(v, state(pretrained / "checkpoint.pth")[k]) for k, v in first.items())

    segm = build_model(resolve_stage(spec, "stage2").model)
    torch.save({"model": segm.state_dict()}, tmp_path / "segm.pth")
    with pytest.raises(InputError, match=r"^checkpoint .*segm\.pth \[model\] is a resnet18 segmentation checkpoint; "
                                         r"train --stage stage2 needs a detector \(stage-1\) checkpoint$"):
        train_mod.run(resolve_stage(spec, "stage2"),
                      coco_dir=None, images=None, out_dir=tmp_path / "s2", init=tmp_path / "segm.pth",
                      datasets=(repeated_batch, repeated_batch), progress=False)
    assert not (tmp_path / "s2").exists()


def test_a_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(
        tmp_path, monkeypatch, capsys, mini, mini_coco, tiny_roberta_dir):
    build_criterion = build_mod.build_criterion

    def build_poisoned(model, train):
        criterion, weights = build_criterion(model, train)
        calls = {"n": 0}

        def poisoned(outputs, targets, positive_map):
            out = criterion(outputs, targets, positive_map)
            calls["n"] += 1
            if calls["n"] == 3:
                out["loss_giou"] = out["loss_giou"] * math.nan
            return out

        poisoned.to = lambda device: poisoned
        poisoned.train = poisoned.eval = lambda: None
        return poisoned, weights

    monkeypatch.setattr(build_mod, "build_criterion", build_poisoned)
    spec = tiny_spec(tiny_roberta_dir, epochs=2, max_steps_per_epoch=3, checkpoint_every_steps=1,
                     val_split="miniv")
    code = cli.main(["train", "--stage", "pretrain", "--spec", spec_file(tmp_path, spec), "--coco-dir",
                     str(mini_coco), "--images", str(mini / "images"), "--out-dir", str(tmp_path),
                     "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert err.startswith("error: non-finite loss nan at step 2 ") and "loss_giou=nan" in err
    ckpt = torch.load(tmp_path / "checkpoint_last.pth", map_location="cpu", weights_only=True)
    assert ckpt["position"]["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (tmp_path / "checkpoint.pth").exists()
    assert list(pd.read_csv(tmp_path / "train_log.csv")["step"]) == [0, 1]  # log.csv is published at the end


def test_spec_errors_name_the_field(tiny_roberta_dir):
    good = tiny_spec(tiny_roberta_dir)
    with pytest.raises(InputError, match=r"train\.lr"):
        validate_spec({"model": good["model"], "train": {"lr": "fast"}})
    with pytest.raises(InputError, match=r"train\.schedule"):
        validate_spec({"model": good["model"], "train": {"schedule": "cosine"}})
    with pytest.raises(InputError, match="--init is required"):
        train_mod.run(resolve_stage(good, "stage1"), coco_dir=None, images=None, out_dir=None)


def test_param_groups_and_schedules(tiny_roberta_dir):
    spec = tiny_spec(tiny_roberta_dir)
    model = build_model(resolve_stage(spec, "stage1").model)
    names = {id(p): n for n, p in model.named_parameters()}
    rest, backbone, text = ([names[id(p)] for p in g["params"]] for g in param_groups(model, 1, 2, 3))
    assert backbone and all("backbone" in n for n in backbone)
    assert text and all("text_encoder" in n for n in text)
    assert rest and not any("backbone" in n or "text_encoder" in n for n in rest)
    assert not any(n.startswith("backbone.0.body.layer1.") for n in backbone)  # frozen in the release

    def lrs(schedule, steps):
        cfg = {**spec["train"], "lr": 1.0, "lr_backbone": 0.5, "text_encoder_lr": 2.0, "lr_drop": 2, "epochs": 4,
               "schedule": schedule, "fraction_warmup_steps": 0.25}
        opt = build_optimizer(model, cfg)
        sched = build_scheduler(opt, cfg, steps_per_epoch=2)
        seen = []
        for _ in range(steps):
            seen.append([g["lr"] for g in opt.param_groups])
            opt.step()
            sched.step()
        return np.array(seen)

    # The release sets the rate after optimizer.step() for the next step: step 0 trains at the base rate,
    # step k at the factor of step k - 1, so the drop at epoch 2 (step 4) lands on step 5.
    step = lrs("step", 8)
    assert np.allclose(step[:5], [1.0, 0.5, 2.0]) and np.allclose(step[5:], [0.1, 0.05, 0.2])
    warm = lrs("linear_with_warmup", 8)  # 8 steps in all, 2 of warm-up
    assert np.allclose(warm[:, 2], [2, 0, 1, 2, 5 / 3, 4 / 3, 1, 2 / 3])
    assert np.allclose(warm[:, :2], step[:, :2])


def test_batches_split_across_processes_and_items_are_seeded_by_epoch_and_index():
    data = list(range(10))
    single = epoch_batches(data, 2, DistEnv(), seed=3, epoch=1)
    ranks = [epoch_batches(data, 1, DistEnv(r, 2), seed=3, epoch=1) for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == single  # the same global batches
    assert epoch_batches(data, 2, DistEnv(), seed=3, epoch=2) != single

    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return random.random(), np.random.rand(), torch.rand(()).item()

    items = SeededItems(Noisy(), seed=0)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first = [items[i] for i in range(4)]
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is untouched
    assert [items[i] for i in reversed(range(4))] == first[::-1]
    items.set_epoch(1)
    assert items[0] != first[0]


def test_csv_log_rewinds_to_a_resume_point(tmp_path):
    log = CsvLog(tmp_path / "log.csv")
    for step in range(5):
        log.write({"epoch": 0, "step": step, "loss": float(step)})
    log.truncate(3)
    log = CsvLog(tmp_path / "log.csv")
    log.write({"epoch": 0, "step": 3, "loss": 9.0})
    frame = pd.read_csv(tmp_path / "log.csv")
    assert list(frame["step"]) == [0, 1, 2, 3] and frame["loss"].iloc[-1] == 9.0


def test_a_fresh_start_rewinds_the_logs_of_a_run_killed_before_its_first_checkpoint(tmp_path, tiny_roberta_dir,
                                                                                    repeated_batch):
    """A killed run that saved no checkpoint leaves working logs; the next run starts afresh, and so do its logs."""
    leftover = CsvLog(tmp_path / "train_log.csv")
    for step in range(3):
        leftover.write({"epoch": 0, "step": step, "loss": 9.0, "gone": 1})
    CsvLog(tmp_path / "val_log.csv").write({"epoch": 0, "loss": 9.0})
    train_mod.run(resolve_stage(tiny_spec(tiny_roberta_dir, eval_every=1), "pretrain"),
                  coco_dir=None, images=None, out_dir=tmp_path,
                  datasets=(repeated_batch, repeated_batch), progress=False)
    steps, val = pd.read_csv(tmp_path / "log.csv"), pd.read_csv(tmp_path / "val.csv")
    assert list(steps["step"]) == [0] and "gone" not in steps and 9.0 not in list(steps["loss"])
    assert list(val["epoch"]) == [0] and 9.0 not in list(val["loss"])
