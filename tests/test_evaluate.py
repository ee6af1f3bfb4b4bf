"""`evaluate` end to end on the reference mini dataset with a small random segmentation checkpoint."""
import json

import numpy as np
import pytest
import torch

from mdetr_phrasecut.cli import main as cli
from mdetr_phrasecut.config import resolve_stage
from mdetr_phrasecut.data.phrasecut_format import load_image_split, load_refer
from mdetr_phrasecut.evaluation.phrasecut_metrics import evaluate_split
from mdetr_phrasecut.evaluation.predictions import read_predictions
from mdetr_phrasecut.engine import train as train_mod
from mdetr_phrasecut.engine.sampling import release_eval_batches
from mdetr_phrasecut.model.build import build, build_model
from mdetr_phrasecut.model.checkpoint_file import save_checkpoint
from helpers.specs import model_config, spec_file, tiny_spec


@pytest.fixture(scope="module")
def spec(tiny_roberta_dir):
    model = dict(backbone="resnet18", hidden_dim=128, nheads=8, enc_layers=1, dec_layers=1, dim_feedforward=64,
                 dropout=0.0, num_queries=4, text_encoder_type=str(tiny_roberta_dir))
    return {"model": model, "train": {"aux_loss": False, "contrastive_align_loss": False}}


@pytest.fixture(scope="module")
def checkpoint(spec, tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(model_config(**spec["model"], **spec["train"], masks=True))
    with torch.no_grad():  # make some queries score above the threshold so masks are not all empty
        model.detr.class_embed.bias[-1] = -3.0
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pth"
    save_checkpoint(path, model, epoch=0)
    return path


def test_evaluate_writes_predictions_and_metrics(reference_dir, mini_coco, spec, checkpoint, tmp_path):
    root = reference_dir / "phrasecut_mini" / "s0"
    out = tmp_path / "test"
    evaluate = {"size": 64, "max_size": 96, "batch_size": 2, "processes": 2, "workers": 1, "use_ema": False}
    code = cli(["evaluate", "--checkpoint", str(checkpoint),
                "--spec", spec_file(tmp_path, {**spec, "evaluate": evaluate}),
                "--coco", str(mini_coco / "finetune_phrasecut_test.json"), "--index",
                str(mini_coco / "finetune_phrasecut_test.index"), "--root", str(root),
                "--images", str(root / "images"), "--split", "test", "--out-dir", str(out), "--dataset", "mini"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    image_info = load_image_split(root)
    records = load_refer(root, "test", image_info)
    assert metrics["num_phrases"] == len(records) and metrics["missing"] == 0
    assert metrics["dataset"] == "mini" and len(metrics["split_sha256"]) == 64

    # every phrase has one mask at its image's original size
    seen = 0
    by_task = {r["task_id"]: r for r in records}
    for task_id, mask, boxes in read_predictions(out / "predictions.npz"):
        image = image_info[by_task[task_id]["image_id"]]
        assert mask.shape == (image["height"], image["width"]) and boxes.shape[1] == 4
        seen += 1
    assert seen == len(records)
    assert any(m.any() for _, m, _ in read_predictions(out / "predictions.npz"))

    # the metrics are the PhraseCut evaluator's on those predictions
    again = evaluate_split(root, "test", out / "predictions.npz")
    assert np.isclose(metrics["subsets"]["all"]["mean_mask_iou"], again.metrics["all"]["mean_mask_iou"])
    per_task = json.loads((out / "per_task.json").read_text())
    assert set(per_task) == set(by_task)


def test_release_evaluation_batches_follow_its_distributed_sampler():
    """2 processes x batch 2, as the release evaluates: rank 0 takes items 0, 2, 4, ..., rank 1 items 1, 3, ...;
    the first items repeat to even the shares (item 0 shares a batch with item 5 of 7)."""
    assert release_eval_batches(7, 2, 2) == [[0, 2], [4, 6], [1, 3], [5, 0]]
    assert release_eval_batches(5, 2, 2) == [[0, 2], [4], [1, 3], [0]]
    assert release_eval_batches(5, 1, 2) == [[0, 1], [2, 3], [4]]


def test_wrong_stage_checkpoint_is_refused(reference_dir, mini_coco, spec, tmp_path, capsys):
    detector = build_model(model_config(**spec["model"], **spec["train"]))
    path = tmp_path / "detector.pth"
    save_checkpoint(path, detector)
    root = reference_dir / "phrasecut_mini" / "s0"
    code = cli(["evaluate", "--checkpoint", str(path), "--spec", spec_file(tmp_path, spec),
                "--coco", str(mini_coco / "finetune_phrasecut_test.json"), "--index",
                str(mini_coco / "finetune_phrasecut_test.index"), "--root", str(root),
                "--images", str(root / "images"), "--out-dir", str(tmp_path / "o")])
    assert code == 2
    assert capsys.readouterr().err == (f"error: checkpoint {path} [model] is a resnet18 detector checkpoint; evaluate "
                                       "needs a segmentation (stage-2) checkpoint\n")
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_a_stage2_checkpoint_trained_with_the_schema_defaults_evaluates(reference_dir, mini_coco, tiny_roberta_dir,
                                                                        tmp_path):
    """train and evaluate build the stage-2 model from one resolved config: with train.contrastive_align_loss and
    aux_loss left at the schema's defaults (true), stage 2 trains without those heads and evaluate, given the
    same spec, builds the same model (it used to expect contrastive-align projections the checkpoint lacks)."""
    root = reference_dir / "phrasecut_mini" / "s0"
    spec = tiny_spec(tiny_roberta_dir, max_steps_per_epoch=1, train_split="miniv", val_split="miniv")
    assert spec["train"]["contrastive_align_loss"] and spec["train"]["aux_loss"]
    torch.manual_seed(0)
    detector, _, _ = build(resolve_stage(spec, "stage1"))
    save_checkpoint(tmp_path / "stage1.pth", detector, epoch=0)
    checkpoint = train_mod.run(resolve_stage(spec, "stage2"),
                               coco_dir=mini_coco, images=root / "images", out_dir=tmp_path / "stage2",
                               init=tmp_path / "stage1.pth", device="cpu", progress=False)
    weights = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    assert not any("contrastive_align_projection" in k for k in weights)
    out = tmp_path / "test"
    evaluate = {"size": 64, "max_size": 96, "batch_size": 4, "workers": 1}
    code = cli(["evaluate", "--checkpoint", str(checkpoint),
                "--spec", spec_file(tmp_path, {**spec, "evaluate": evaluate}),
                "--coco", str(mini_coco / "finetune_phrasecut_test.json"), "--index",
                str(mini_coco / "finetune_phrasecut_test.index"), "--root", str(root),
                "--images", str(root / "images"), "--out-dir", str(out), "--device", "cpu"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["missing"] == 0 and metrics["num_phrases"] == len(load_refer(root, "test", load_image_split(root)))
    assert metrics["threshold"] == 0.7  # the schema's evaluate.threshold
