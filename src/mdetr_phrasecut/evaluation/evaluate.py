"""`evaluate`: run a segmentation checkpoint on a split, post-process as the release does, score with PhraseCut's protocol.

Writes to --out-dir: `predictions.npz` (one merged mask + kept boxes per phrase, at the original image size),
`per_task.json` (I, U, IoU, box IoU, subsets per phrase) and `metrics.json` (per subset, plus the split file's and
the checkpoint's sha256 and the missing phrases).
"""
import json
from pathlib import Path

import torch
from tqdm import tqdm

from ..data.dataset import PhraseCutDetection, collate_fn
from ..arguments import IN_DIR, IN_FILE, OUT_DIR, POSITIVE_INT, PROBABILITY
from ..config import load_spec
from ..data.phrasecut_format import SPLITS, load_image_split, load_name_att_rel_count, load_refer, refer_path
from ..data.transforms import make_eval_transform
from ..io import atomic_write_json, sha256_file
from ..model.build import build_model
from ..errors import InputError
from ..model.checkpoint import describe, load_model_weights, read_checkpoint, select_weights
from ..model.postprocess import PostProcess, PostProcessPhrasecut, PostProcessSegm
from .phrasecut_metrics import evaluate_predictions
from .predictions import PredictionWriter, read_predictions


def segmentation_config(spec: dict) -> dict:
    """The stage-2 model (detector + smallconv head) described by a training spec."""
    return {**spec["model"], **spec.get("train", {}), "masks": True, "mask_model": "smallconv"}


@torch.no_grad()
def predict_split(model, dataset, out_path, threshold=0.7, batch_size=1, device="cpu", num_workers=0):
    """Write the PhraseCut answer (merged mask, kept boxes) of every phrase of `dataset` to `out_path`."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate_fn,
                                         num_workers=num_workers)
    boxes_post, masks_post, phrasecut_post = PostProcess(), PostProcessSegm(), PostProcessPhrasecut(threshold)
    model.eval().to(device)
    with PredictionWriter(out_path) as writer:
        for samples, targets in tqdm(loader, desc="evaluate", unit="batch"):
            outputs = model(samples.to(device), [t["caption"] for t in targets])
            orig_sizes = torch.stack([t["orig_size"] for t in targets]).to(device)
            sizes = torch.stack([t["size"] for t in targets]).to(device)
            results = masks_post(boxes_post(outputs, orig_sizes), outputs, orig_sizes, sizes)
            for target, answer in zip(targets, phrasecut_post(results)):
                writer.add(target["task_id"], answer["masks"].numpy(), answer["boxes"].numpy())


def evaluate(checkpoint, spec, coco, root, images, split, out_dir, threshold=0.7, size=800, max_size=1333,
             batch_size=1, workers=1, use_ema=True, device="cpu", dataset_name=None):
    out_dir = Path(out_dir)
    state_dict, key = select_weights(read_checkpoint(checkpoint), prefer_ema=use_ema)
    backbone, stage = describe(state_dict)
    if stage != "segmentation":
        raise InputError(f"checkpoint {checkpoint} is a {backbone} {stage} checkpoint; evaluation needs a "
                         "segmentation (stage-2) checkpoint")
    model = build_model(segmentation_config(spec))
    load_model_weights(model, state_dict, source=f"{checkpoint} [{key}]")
    tokenizer = model.detr.transformer.tokenizer
    dataset = PhraseCutDetection(images, coco, make_eval_transform(size=size, max_size=max_size),
                                 return_masks=False, tokenizer=tokenizer)
    predictions = out_dir / "predictions.npz"
    predict_split(model, dataset, predictions, threshold, batch_size, device)

    image_info = load_image_split(root)
    records = load_refer(root, split, image_info)
    result = evaluate_predictions(records, image_info, load_name_att_rel_count(root),
                                  read_predictions(predictions, packed=True), workers=workers,
                                  source=str(predictions))
    split_file = refer_path(root, split)
    metrics = {
        "dataset": dataset_name,
        "split": split,
        "split_file": str(split_file),
        "split_sha256": sha256_file(split_file),
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha256_file(checkpoint),
        "threshold": threshold,
        "num_phrases": len(records),
        "missing": len(result.missing),
        "missing_task_ids": result.missing,
        "subsets": result.metrics,
    }
    atomic_write_json(out_dir / "per_task.json", result.per_task)
    atomic_write_json(out_dir / "metrics.json", metrics, indent=1)
    return metrics


def add_arguments(parser):
    parser.add_argument("--checkpoint", required=True, type=IN_FILE, help="stage-2 (segmentation) checkpoint")
    parser.add_argument("--spec-json", required=True, help='{"model": {...}, "train": {...}} as given to `train`')
    parser.add_argument("--coco", required=True, type=IN_FILE, help="finetune_phrasecut_{split}.json")
    parser.add_argument("--root", required=True, type=IN_DIR, help="original PhraseCut files (refer_{split}.json, ...)")
    parser.add_argument("--images", required=True, type=IN_DIR, help="folder of {image_id}.jpg")
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--dataset", help="dataset name recorded in metrics.json (shown in the table)")
    parser.add_argument("--out-dir", required=True, type=OUT_DIR)
    parser.add_argument("--threshold", type=PROBABILITY, default=0.7,
                        help="keep queries scoring above this (release: 0.7)")
    parser.add_argument("--size", type=POSITIVE_INT, default=800, help="shorter image side at test time")
    parser.add_argument("--max-size", type=POSITIVE_INT, default=1333)
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=1)
    parser.add_argument("--workers", type=POSITIVE_INT, default=1, help="processes scoring phrases")
    parser.add_argument("--no-ema", dest="use_ema", action="store_false", help="use `model`, not `model_ema`")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def main(args):
    metrics = evaluate(args.checkpoint, load_spec(args.spec_json), args.coco, args.root, args.images, args.split,
                       args.out_dir, args.threshold, args.size, args.max_size, args.batch_size, args.workers,
                       args.use_ema, args.device, args.dataset)
    overall = metrics["subsets"].get("all", {})
    print(json.dumps({k: overall.get(k) for k in ("mean_mask_iou", "cum_mask_iou", "pred_mask_acc")}))
