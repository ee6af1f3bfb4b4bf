"""Small stand-ins for the files the published recipe downloads, in the real layouts (tests/test_rehearsal.py).

- the six PhraseCut originals (image_data_split.json, name_att_rel_count.json, refer_{train,val,miniv,test}.json),
  tiny but in the exact format (`mdetr_phrasecut.data.synth`), and their images as GQA's images.zip (top folder
  `images/`, {image_id}.jpg);
- MDETR's annotation tarball (zenodo record 5519755): top folder `mdetr_annotations/` holding
  finetune_phrasecut_{split}.json (the published conversion of those originals) among other datasets' files; and
  record 4729015's tarball, which holds no PhraseCut files;
- the four checkpoints in the release's pickle layout: `model`, `model_ema`, `optimizer`, `epoch`, `args` (an
  argparse.Namespace), the 2021 `transformer.text_encoder.embeddings.position_ids` buffer, detector keys bare,
  segmentation keys under `detr.`; built from our own model with the sizes a config gives.
"""
import argparse
import io
import json
import pickle
import tempfile
from pathlib import Path

import torch

from mdetr_phrasecut.config import resolve_stage, run_model, run_train
from mdetr_phrasecut.data.convert import split_coco_json
from mdetr_phrasecut.data.phrasecut_format import PHRASECUT_SPLITS
from mdetr_phrasecut.data.synth import write_synthetic_phrasecut
from mdetr_phrasecut.model.build import build_model
from mdetr_phrasecut.model.checkpoint_file import LEGACY_BUFFER
from .archives import tar_gz_bytes, zip_bytes  # archives of given members

ORIGINALS = ("image_data_split.json", "name_att_rel_count.json") + tuple(f"refer_{s}.json" for s in PHRASECUT_SPLITS)


def phrasecut(num_images, seed=0, min_size=64, max_size=96, miniv_images=2):
    """({original file name: bytes}, {image file name: bytes}, {finetune_phrasecut_{split}.json: bytes}): the
    synthetic originals, their images, and their conversion as MDETR published it (`compat`)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "phrasecut"
        write_synthetic_phrasecut(root, seed=seed, num_images=num_images, min_size=min_size, max_size=max_size,
                                  miniv_images=miniv_images)
        originals = {name: (root / name).read_bytes() for name in ORIGINALS}
        images = {p.name: p.read_bytes() for p in sorted((root / "images").glob("*.jpg"))}
        annotations = {f"finetune_phrasecut_{s}.json": "".join(split_coco_json(root, s, "compat")[0]).encode()
                       for s in PHRASECUT_SPLITS}
    return originals, images, annotations


def gqa_images_zip(images: dict) -> bytes:
    """GQA's images.zip: images/{image_id}.jpg."""
    return zip_bytes({f"images/{name}": data for name, data in images.items()})


OTHER_DATASET = json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "object"}]}).encode()


def annotations_tarball(phrasecut_annotations: dict) -> bytes:
    """Record 5519755's mdetr_annotations.tar.gz: mdetr_annotations/ with the PhraseCut files among others."""
    members = {"mdetr_annotations/finetune_refcoco_testA.json": OTHER_DATASET,
               **{f"mdetr_annotations/{name}": data for name, data in phrasecut_annotations.items()}}
    return tar_gz_bytes(members)


def annotations_tarball_4729015() -> bytes:
    """Record 4729015's mdetr_annotations.tar.gz (the one the release's README links): no PhraseCut files."""
    return tar_gz_bytes({"mdetr_annotations/finetune_refcoco_testA.json": OTHER_DATASET,
                         "mdetr_annotations/phrase_cut_unsafe_ids.pkl": pickle.dumps([])})


OURS_ONLY = ("stage", "threshold", "positive_map", "scales", "max_size", "max_steps_per_epoch",
             "checkpoint_every_steps",
             "bf16", "compile", "train_split", "val_split", "backbone_pretrained", "train_batchnorm", "freeze_detr",
             "eval_every")  # keys of our stage config the release's main.py has no argument for


def training_args(config: dict, run: str, stage: str, **differ) -> argparse.Namespace:
    """The `args` the release's main.py saves in a checkpoint of `stage`: our resolved config of that stage under
    its argument names, its bookkeeping (paths, world size), an argument we have no counterpart for (`set_loss`),
    the release's text encoder by its name (a fake is built with a tiny stand-in for it), and `differ` on top (a
    deliberate difference for the recipe audit to flag)."""
    cfg = resolve_stage({"model": run_model(config, run), "train": run_train(config, run, stage)}, stage).as_args()
    res = {**config["resources"]["default"], **config["resources"][stage]}
    args = {k: v for k, v in cfg.items() if k not in OURS_ONLY}
    args.update(eval_skip=cfg["eval_every"], world_size=res["nodes"] * (res["gpus_per_node"] or res["tasks_per_node"]),
                frozen_weights="detection/checkpoint.pth" if cfg["freeze_detr"] else None,
                dataset_config="configs/phrasecut.json", output_dir="phrasecut", set_loss="hungarian",
                text_encoder_type="roberta-base", **differ)
    return argparse.Namespace(**args)


def release_checkpoint(config: dict, run: str, stage: str, seed: int = 0, args_differ: dict = None) -> bytes:
    """A published checkpoint of `run` (a validated config): the pre-trained detector (`stage1`, what stage 1
    starts from) or the PhraseCut segmentation model (`stage2`, its `args` from `training_args` with
    `args_differ`), random weights, the release's layout."""
    torch.manual_seed(seed)
    model_cfg = run_model(config, run)
    model = build_model(resolve_stage({"model": model_cfg, "train": run_train(config, run, stage)}, stage).model)
    text_encoder = model.detr.transformer.text_encoder if stage == "stage2" else model.transformer.text_encoder
    prefix = "detr." if stage == "stage2" else ""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state[prefix + LEGACY_BUFFER] = torch.arange(text_encoder.config.max_position_embeddings)[None]
    ema = {k: v + 0.01 if v.is_floating_point() else v.clone() for k, v in state.items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-4)
    args = training_args(config, run, stage, **(args_differ or {})) if stage == "stage2" else argparse.Namespace(
        backbone=model_cfg["backbone"], hidden_dim=model_cfg.get("hidden_dim", 256), text_encoder_type="roberta-base",
        masks=False, dataset_config="configs/pretrain.json", lr=1e-4, epochs=10, ema=True)
    buf = io.BytesIO()
    torch.save({"model": state, "model_ema": ema, "optimizer": optimizer.state_dict(), "epoch": 9, "args": args}, buf)
    return buf.getvalue()
