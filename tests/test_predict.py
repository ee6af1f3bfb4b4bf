"""`mdetr-phrasecut predict` on a tiny random segmentation model and a generated image."""
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageDraw

from mdetr_phrasecut.cli import main as cli
from mdetr_phrasecut.model.build import build_model
from mdetr_phrasecut.model.checkpoint_file import save_checkpoint
from mdetr_phrasecut.model.ema import ModelEMA
from mdetr_phrasecut.model.postprocess import PostProcess, PostProcessPhrasecut, PostProcessSegm
from mdetr_phrasecut.predict import predict
from helpers.specs import model_config

SIZE, MAX_SIZE = 64, 96


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_roberta_dir):
    root = tmp_path_factory.mktemp("predict")
    (root / "tiny_roberta").symlink_to(tiny_roberta_dir)
    cfg = {"backbone": "resnet18", "hidden_dim": 128, "nheads": 8, "enc_layers": 1, "dec_layers": 1,
           "dim_feedforward": 64, "num_queries": 4, "dropout": 0.0, "masks": True, "contrastive_align_loss": False,
           "text_encoder_type": "tiny_roberta"}  # relative to the config file
    heads = ("masks", "contrastive_align_loss")  # a spec's model section does not say; the checkpoint does
    model = {k: v for k, v in cfg.items() if k not in heads}
    (root / "spec.json").write_text(json.dumps({"model": model, "train": {"epochs": 1}}))
    (root / "config.json").write_text(json.dumps(cfg))  # a Hub folder's config.json: build_model keys alone
    torch.manual_seed(0)
    model = build_model(model_config(**{**cfg, "text_encoder_type": str(tiny_roberta_dir)}))
    ema = ModelEMA(model, decay=0.9998)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.0)  # `model` weights are degenerate; only the EMA copy is the real model
    save_checkpoint(root / "ckpt.pth", model, ema, epoch=0, args=cfg)
    image = Image.new("RGB", (120, 90), (30, 90, 200))
    ImageDraw.Draw(image).ellipse([20, 15, 70, 60], fill=(220, 30, 30))
    image.save(root / "image.jpg")
    return root, ema.module.eval(), image


def run_predict(root, *extra, config=None):
    source = ["--config", str(root / config)] if config else ["--spec", str(root / "spec.json")]
    return cli(["predict", "--checkpoint", str(root / "ckpt.pth"), *source,
                "--image", str(root / "image.jpg"), "--phrase", "red circle", "--out-mask", str(root / "mask.png"),
                "--out-overlay", str(root / "overlay.png"), "--size", str(SIZE), "--max-size", str(MAX_SIZE),
                "--device", "cpu", *extra])


@pytest.mark.parametrize("threshold", [0.0, 0.5])
def test_predict_writes_the_phrasecut_mask_and_overlay(setup, threshold):
    root, model, _ = setup
    assert run_predict(root, "--threshold", str(threshold)) == 0
    mask = np.array(Image.open(root / "mask.png"))
    image = Image.open(root / "image.jpg").convert("RGB")
    post = {"bbox": PostProcess(), "segm": PostProcessSegm(), "phrasecut": PostProcessPhrasecut(threshold)}
    expected = predict(model, post, image, "red circle", SIZE, MAX_SIZE)
    assert mask.shape == (90, 120) and set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask == 255, expected["masks"].numpy())
    overlay = Image.open(root / "overlay.png")
    assert overlay.size == (120, 90) and overlay.mode == "RGB"
    changed = (np.array(overlay).astype(int) - np.array(image).astype(int)).any(-1)
    assert changed[mask == 255].all()  # every mask pixel is tinted
    if threshold == 0.0:  # every query kept: the answer is the union of all query masks
        assert len(expected["boxes"]) == 4


def test_predict_threshold_above_every_score_gives_an_empty_mask(setup):
    root, _, _ = setup
    assert run_predict(root, "--threshold", "1.0", config="config.json") == 0
    assert not np.array(Image.open(root / "mask.png")).any()


def test_predict_bad_inputs_exit_2(setup, capsys, tmp_path):
    root, _, _ = setup
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"backbone": "resnet18", "num_queries": 7, "masks": True,
                                                       "hidden_dim": 128, "nheads": 8, "enc_layers": 1,
                                                       "dec_layers": 1, "dim_feedforward": 64,
                                                       "contrastive_align_loss": False,
                                                       "text_encoder_type": str(root / "tiny_roberta")}))
    assert cli(["predict", "--checkpoint", str(root / "ckpt.pth"), "--config", str(tmp_path / "bad.yaml"),
                "--image", str(root / "image.jpg"), "--phrase", "x", "--out-mask", str(tmp_path / "m.png"),
                "--out-overlay", str(tmp_path / "o.png")]) == 2
    assert "query_embed.weight [4, 128] vs [7, 128]" in capsys.readouterr().err
    assert cli(["predict", "--checkpoint", str(root / "ckpt.pth"), "--spec", str(root / "spec.json"),
                "--image", str(tmp_path / "absent.jpg"), "--phrase", "x", "--out-mask", str(tmp_path / "m.png"),
                "--out-overlay", str(tmp_path / "o.png")]) == 2
    assert "absent.jpg" in capsys.readouterr().err
    assert not (tmp_path / "m.png").exists()


def test_heads_follow_the_checkpoint_not_the_config(setup, capsys):
    """A spec's model section does not say whether the checkpoint has a mask head or projections; --run belongs
    to a workflow config."""
    root, _, _ = setup
    assert "masks" not in json.loads((root / "spec.json").read_text())["model"]
    assert run_predict(root, "--threshold", "0.0") == 0
    assert (np.array(Image.open(root / "mask.png")) == 255).any()
    assert run_predict(root, "--run", "x") == 2
    assert "--run x: belongs to a workflow --config" in capsys.readouterr().err


def predict_args(root, config, *extra, checkpoint="ckpt.pth"):
    return ["predict", "--checkpoint", str(root / checkpoint), "--config", str(root / config), "--image",
            str(root / "image.jpg"), "--phrase", "red circle", "--out-mask", str(root / "mask.png"), "--out-overlay",
            str(root / "overlay.png"), "--device", "cpu", *extra]


def test_a_workflow_config_gives_the_runs_model_and_its_evaluation_size(setup, capsys, monkeypatch):
    """`--config` a workflow config, `--run NAME`: that run's model (its overrides of the model section) and the
    evaluate section's image size, not a default model at 800/1333."""
    import mdetr_phrasecut.predict as module

    root, _, _ = setup
    model = json.loads((root / "spec.json").read_text())["model"]
    (root / "workflow.yaml").write_text(yaml.safe_dump({
        "dataset": {"name": "x", "source": "synth"}, "downloads": {"p": {"url": "file:///p.pth", "sha256": None}},
        "model": {**model, "num_queries": 9},
        "runs": {"other": {"label": "O", "pretrained": "p"},
                 "this": {"label": "T", "pretrained": "p", "model": {"num_queries": 4}}},
        "evaluate": {"size": SIZE, "max_size": MAX_SIZE}}))
    sizes = []
    monkeypatch.setattr(module, "predict", lambda *a: sizes.append(a[4:6]) or predict(*a))
    assert cli(predict_args(root, "workflow.yaml", "--run", "this")) == 0
    assert sizes == [(SIZE, MAX_SIZE)]
    capsys.readouterr()
    assert cli(predict_args(root, "workflow.yaml", "--run", "other")) == 2
    assert "query_embed.weight [4, 128] vs [9, 128]" in capsys.readouterr().err  # the top-level model: 9 queries
    assert cli(predict_args(root, "workflow.yaml")) == 2
    assert "runs: other, this: name the run to build with --run" in capsys.readouterr().err
    assert cli(predict_args(root, "config.json", "--run", "this")) == 2
    assert "is no workflow config" in capsys.readouterr().err


def test_a_detector_checkpoint_warns_once_and_its_mask_is_the_union_of_its_boxes(setup, capsys, tiny_roberta_dir):
    root, _, image = setup
    cfg = {**yaml.safe_load((root / "config.json").read_text()), "masks": False}
    torch.manual_seed(1)
    detector = build_model(model_config(**{**cfg, "text_encoder_type": str(tiny_roberta_dir)})).eval()
    save_checkpoint(root / "detector.pth", detector, None, epoch=0, args=cfg)
    assert cli(predict_args(root, "config.json", "--threshold", "0.0", "--size", str(SIZE), "--max-size",
                            str(MAX_SIZE), checkpoint="detector.pth")) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [f"warning: {root / 'detector.pth'} is a detector without mask head: the mask is the union of the "
                   "kept boxes"], err
    post = {"bbox": PostProcess(), "phrasecut": PostProcessPhrasecut(0.0)}
    boxes = predict(detector, post, image, "red circle", SIZE, MAX_SIZE)["boxes"]
    union = np.zeros((90, 120), bool)
    for x, y, w, h in boxes.tolist():
        union[int(y):int(y + h), int(x):int(x + w)] = True
    assert union.any() and np.array_equal(np.array(Image.open(root / "mask.png")) == 255, union)
