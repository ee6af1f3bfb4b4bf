"""Checkpoint I/O in the release's layout (both directions), the tolerated legacy differences, clear errors for the
wrong backbone/stage, and the EMA."""
import argparse
import json

import pytest
import torch
from torch import nn

from mdetr_phrasecut.errors import InputError
from mdetr_phrasecut.model.build import build_model
from mdetr_phrasecut.model.checkpoint_file import (describe, load_model_weights, load_weights, read_checkpoint,
                                                   save_checkpoint)
from mdetr_phrasecut.model.ema import ModelEMA
from helpers.specs import model_config

POSITION_IDS = "transformer.text_encoder.embeddings.position_ids"


@pytest.fixture(scope="module")
def tiny_cfg(tiny_roberta_dir):
    return {"backbone": "resnet18", "hidden_dim": 128, "nheads": 8, "enc_layers": 1, "dec_layers": 1,
            "dim_feedforward": 64, "num_queries": 4, "dropout": 0.0, "text_encoder_type": str(tiny_roberta_dir)}


def build(cfg, seed=0, **overrides):
    torch.manual_seed(seed)
    return build_model(model_config(**{**cfg, **overrides}))


def load_checkpoint(model, path, prefer_ema=True):
    """What train, evaluate and predict do (`load_weights`: read, pick the (EMA) weights, load them strictly)."""
    return load_weights(path, lambda _: (model,), prefer_ema)[0]


def assert_state_equal(got: dict, want: dict):
    assert sorted(got) == sorted(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key


def test_save_and_load_roundtrip_in_release_layout(tmp_path, tiny_cfg):
    model = build(tiny_cfg)
    ema = ModelEMA(model, decay=0.5)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 10)
    path = tmp_path / "checkpoint.pth"
    save_checkpoint(path, model, ema, optimizer, scheduler, epoch=3, args={"backbone": "resnet18"})

    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt) == {"model", "model_ema", "optimizer", "lr_scheduler", "epoch", "args"}
    assert ckpt["epoch"] == 3 and ckpt["lr_scheduler"]["step_size"] == 10
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file

    plain = build(tiny_cfg, seed=1)
    load_checkpoint(plain, path, prefer_ema=False)
    assert_state_equal(plain.state_dict(), model.state_dict())

    averaged = build(tiny_cfg, seed=1)
    load_checkpoint(averaged, path)  # EMA preferred by default
    name = "class_embed.weight"
    assert_state_equal(averaged.state_dict(), ema.state_dict())
    assert torch.allclose(averaged.state_dict()[name], initial[name] + 0.5)


@pytest.mark.parametrize("masks", [False, True])
def test_published_checkpoint_with_legacy_position_ids_and_namespace_args(tmp_path, tiny_cfg, masks):
    source = build(tiny_cfg, masks=masks, contrastive_align_loss=not masks)
    state = dict(source.state_dict())
    prefix = "detr." if masks else ""
    state[prefix + POSITION_IDS] = torch.arange(66)[None]
    path = tmp_path / "published.pth"
    torch.save({"model": state, "optimizer": {}, "epoch": 9, "args": argparse.Namespace(backbone="resnet18")}, path)

    target = build(tiny_cfg, seed=1, masks=masks, contrastive_align_loss=not masks)
    load_checkpoint(target, path)
    assert read_checkpoint(path)["args"].backbone == "resnet18"
    assert_state_equal(target.state_dict(), source.state_dict())


def test_detector_checkpoint_loads_into_segmentation_detector(tmp_path, tiny_cfg):
    detector = build(tiny_cfg, contrastive_align_loss=True)
    path = tmp_path / "stage1.pth"
    save_checkpoint(path, detector, ModelEMA(detector, decay=0.9998), epoch=0)

    segm = build(tiny_cfg, seed=1, masks=True, contrastive_align_loss=False, freeze_detr=True)
    head_before = {k: v.clone() for k, v in segm.state_dict().items() if not k.startswith("detr.")}
    load_checkpoint(segm, path)
    expected = {k: v for k, v in detector.state_dict().items() if not k.startswith("contrastive_align_projection")}
    assert_state_equal(segm.detr.state_dict(), expected)
    after = segm.state_dict()
    assert all(torch.equal(after[k], v) for k, v in head_before.items())
    assert not any(p.requires_grad for p in segm.detr.parameters())
    assert all(p.requires_grad for p in segm.mask_head.parameters())


def test_wrong_stage_or_backbone_is_an_input_error(tmp_path, tiny_cfg, reference_dir):
    segm = build(tiny_cfg, masks=True, contrastive_align_loss=False)
    path = tmp_path / "segm.pth"
    save_checkpoint(path, segm)
    detector = build(tiny_cfg)
    with pytest.raises(InputError, match="resnet18 segmentation checkpoint; config expects resnet18 detector"):
        load_checkpoint(detector, path)

    official = json.loads((reference_dir / "official_state_dict_shapes.json").read_text())
    eb3 = {k: torch.empty(s, device="meta") for k, s in official["efficientnet_b3/segm"]["keys"].items()}
    with pytest.raises(InputError, match="efficientnet_b3 segmentation checkpoint; config expects resnet18 detector"):
        load_model_weights(detector, eb3, source="phrasecut_EB3_checkpoint.pth")


def test_load_weights_checks_the_stage_before_building_and_builds_from_the_chosen_weights(tmp_path, tiny_cfg):
    detector = build(tiny_cfg)
    ema = ModelEMA(detector, decay=0.5)
    with torch.no_grad():
        for p in detector.parameters():
            p.add_(1.0)
    path = tmp_path / "stage1.pth"
    save_checkpoint(path, detector, ema)
    built = []

    def make(weights):
        built.append(weights)
        return build(tiny_cfg, seed=1), "criterion", "postprocessors"

    with pytest.raises(InputError, match=rf"^checkpoint {path} \[model_ema\] is a resnet18 detector checkpoint; "
                                         r"evaluate needs a segmentation \(stage-2\) checkpoint$"):
        load_weights(path, make, need="segmentation", needed_by="evaluate")
    assert not built  # refused before any model was built
    model, criterion, postprocessors = load_weights(path, make, prefer_ema=False, need="detector")
    assert (criterion, postprocessors) == ("criterion", "postprocessors")
    assert_state_equal(built[0], detector.state_dict())
    assert_state_equal(model.state_dict(), detector.state_dict())


def test_describe_official_state_dicts(reference_dir):
    official = json.loads((reference_dir / "official_state_dict_shapes.json").read_text())
    for name, entry in official.items():
        backbone, stage = name.split("/")
        state = {k: torch.empty(s, device="meta") for k, s in entry["keys"].items()}
        assert describe(state) == (backbone, {"detector": "detector", "segm": "segmentation"}[stage])


def test_shape_mismatch_names_the_keys(tmp_path, tiny_cfg):
    path = tmp_path / "q4.pth"
    save_checkpoint(path, build(tiny_cfg))
    with pytest.raises(InputError, match=r"1 mismatched \(query_embed.weight \[4, 128\] vs \[6, 128\]\)"):
        load_checkpoint(build(tiny_cfg, num_queries=6), path)


def test_missing_or_corrupt_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_checkpoint(tmp_path / "absent.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot be read"):
        read_checkpoint(corrupt)
    torch.save({"weights": {}}, tmp_path / "other.pth")
    with pytest.raises(InputError, match="no 'model' entry"):
        read_checkpoint(tmp_path / "other.pth")


def test_ema_average_and_state_dict_roundtrip():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = ModelEMA(model, decay=0.9)
    start = {k: v.clone() for k, v in ema.state_dict().items()}
    model.train()
    model(torch.randn(8, 3))  # moves running stats, counts a batch
    with torch.no_grad():
        model[0].weight.mul_(3.0)
    ema.update(model)
    current = model.state_dict()
    for key, value in ema.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, 0.9 * start[key] + 0.1 * current[key], atol=1e-6), key
        else:
            assert torch.equal(value, current[key]), key
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training

    wrapped = argparse.Namespace(module=model)  # DDP-like wrapper
    ema.update(wrapped)
    restored = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    restored.load_state_dict(ema.state_dict())
    copy = ModelEMA(restored, decay=0.9)
    copy.load_state_dict(ema.state_dict())
    assert_state_equal(copy.state_dict(), ema.state_dict())
