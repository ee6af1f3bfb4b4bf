"""`export-checkpoint` keeps the EMA weights in float16, and stage 1 loads them back (`load` semantics)."""
import torch

from mdetr_phrasecut.cli import main as cli
from mdetr_phrasecut.model.build import build_model
from mdetr_phrasecut.model.checkpoint_file import load_weights, read_checkpoint, save_checkpoint
from mdetr_phrasecut.model.ema import ModelEMA
from helpers.specs import model_config


def small_config(tiny_roberta_dir, **extra):
    return dict(backbone="timm_resnet10t", hidden_dim=32, nheads=2, enc_layers=1, dec_layers=1, dim_feedforward=32,
                num_queries=4, text_encoder_type=str(tiny_roberta_dir), **extra)


def small(tiny_roberta_dir, **extra):
    return build_model(model_config(**small_config(tiny_roberta_dir, **extra)))


def test_export_keeps_ema_weights_in_float16_and_loads_back(tiny_roberta_dir, tmp_path):
    torch.manual_seed(0)
    model = small(tiny_roberta_dir)
    ema = ModelEMA(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)  # the EMA now differs from the model
    save_checkpoint(tmp_path / "train.pth", model, model_ema=ema, epoch=3)
    assert cli(["export-checkpoint", "--checkpoint", str(tmp_path / "train.pth"),
                "--out", str(tmp_path / "s0.pth")]) == 0

    exported = read_checkpoint(tmp_path / "s0.pth")
    assert set(exported) == {"model", "epoch", "args"} and exported["args"]["weights"] == "model_ema"
    key = "class_embed.weight"
    assert exported["model"][key].dtype == torch.float16
    assert torch.allclose(exported["model"][key].float(), ema.state_dict()[key], atol=1e-2)
    assert (tmp_path / "s0.pth").stat().st_size < 0.6 * (tmp_path / "train.pth").stat().st_size

    fresh = small(tiny_roberta_dir)
    load_weights(tmp_path / "s0.pth", lambda _: (fresh,))
    assert fresh.state_dict()[key].dtype == torch.float32
    assert torch.equal(fresh.state_dict()[key], exported["model"][key].float())


def test_dilation_puts_the_last_level_at_stride_16(tiny_roberta_dir):
    from mdetr_phrasecut.model.nested_tensor import nested_tensor_from_tensor_list

    images = nested_tensor_from_tensor_list([torch.randn(3, 64, 96)])
    for dilation, stride in ((False, 32), (True, 16)):
        features, pos = small(tiny_roberta_dir, dilation=dilation).backbone(images)
        assert features[-1].tensors.shape[-2:] == (64 // stride, 96 // stride)
        assert [f.tensors.shape[-1] for f in features[:3]] == [24, 12, 6]
    assert small(tiny_roberta_dir, dilation=True).state_dict().keys() == small(tiny_roberta_dir).state_dict().keys()


def test_pretrain_trains_batchnorm_and_its_export_loads_into_the_frozen_stage1_backbone(tiny_roberta_dir, tmp_path):
    from mdetr_phrasecut.config import resolve_stage
    from mdetr_phrasecut.model.backbone import FrozenBatchNorm2d

    model_cfg = small_config(tiny_roberta_dir)
    train_cfg = dict(lr_backbone=1e-4, aux_loss=True, contrastive_align_loss=True)
    torch.manual_seed(0)
    pretrain = build_model(resolve_stage({"model": model_cfg, "train": train_cfg}, "pretrain").model)
    body = pretrain.backbone[0].body
    norms = [m for m in body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.weight.requires_grad for m in norms)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())
    body.train()
    body(torch.randn(2, 3, 64, 64) * 3 + 1)  # a training-mode forward moves the running statistics
    assert not torch.allclose(norms[0].running_mean, torch.zeros_like(norms[0].running_mean))

    save_checkpoint(tmp_path / "train.pth", pretrain, model_ema=ModelEMA(pretrain, decay=0.0), epoch=1)
    assert cli(["export-checkpoint", "--checkpoint", str(tmp_path / "train.pth"),
                "--out", str(tmp_path / "s0.pth")]) == 0
    stage1 = build_model(resolve_stage({"model": model_cfg, "train": train_cfg}, "stage1").model)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in stage1.modules())
    load_weights(tmp_path / "s0.pth", lambda _: (stage1,))  # strict
    key = next(k for k in stage1.state_dict() if k.endswith("running_mean"))
    assert torch.allclose(stage1.state_dict()[key], pretrain.state_dict()[key], atol=1e-2)


def test_hub_folder_needs_the_trained_config_and_a_new_folder(tiny_roberta_dir, tmp_path, capsys):
    """`--hub-folder` takes the model config from the checkpoint `train` wrote; a bare one, or an existing folder,
    is one line and no folder (the round trip through predict: tests/test_workflow.py)."""
    save_checkpoint(tmp_path / "bare.pth", small(tiny_roberta_dir), epoch=1)
    assert cli(["export-checkpoint", "--checkpoint", str(tmp_path / "bare.pth"),
                "--hub-folder", str(tmp_path / "hub")]) == 2
    assert "args.train is missing" in capsys.readouterr().err and not (tmp_path / "hub").exists()
    model_cfg = small_config(tiny_roberta_dir)
    save_checkpoint(tmp_path / "trained.pth", small(tiny_roberta_dir), epoch=1,
                    args={"stage": "stage1", "train": {**model_cfg, "lr": 1e-4}})
    (tmp_path / "taken").mkdir()
    assert cli(["export-checkpoint", "--checkpoint", str(tmp_path / "trained.pth"),
                "--hub-folder", str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli(["export-checkpoint", "--checkpoint", str(tmp_path / "trained.pth"),
                "--hub-folder", str(tmp_path / "hub")]) == 0
    assert __import__("json").loads((tmp_path / "hub" / "config.json").read_text()) == model_cfg
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
