"""`evaluate`: run a segmentation checkpoint on a split, post-process as the release does, score with PhraseCut's
protocol.

Writes to --out-dir: `predictions.npz` (one merged mask + kept boxes per phrase, at the original image size),
`per_task.json` (I, U, IoU, box IoU, subsets per phrase) and `metrics.json` (per subset, plus the split file's and
the checkpoint's sha256 and the missing phrases).
"""
import json
from pathlib import Path

import torch
from tqdm import tqdm

from ..data.annotation_index import AnnotationIndex
from ..data.dataset import PhraseCutDetection, collate_fn
from ..arguments import IN_DIR, IN_FILE, OUT_DIR
from ..config import StageConfig, load_spec, resolve_stage
from ..data.phrasecut_format import PHRASECUT_SPLITS, refer_path
from ..data.transforms import make_eval_transform
from ..engine.sampling import release_eval_batches
from ..infra.io import atomic_write_json, sha256_file
from ..model.build import build
from ..model.checkpoint_file import load_weights
from ..model.postprocess import phrasecut_answers
from ..stages import EVALUATED
from .phrasecut_metrics import evaluate_split
from .predictions import PredictionWriter


@torch.no_grad()
def predict_split(model, postprocessors, dataset, out_path, *, batch_size, device, num_workers=0, processes=1):
    """Write the PhraseCut answer (merged mask, kept boxes) of every phrase of `dataset` to `out_path`, with
    the stage-2 post-processors of `model.build.build`, batched as the release's evaluation on `processes`
    processes of `batch_size` (`engine.sampling.release_eval_batches`, run here one batch after another). An item
    the release evaluates twice (a repeated one) keeps its last answer, as the release's evaluator does."""
    batches = release_eval_batches(len(dataset), processes, batch_size)
    last = {index: b for b, batch in enumerate(batches) for index in batch}
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate_fn,
                                         num_workers=num_workers)
    model.eval().to(device)
    with PredictionWriter(out_path) as writer:
        for b, (samples, targets) in enumerate(tqdm(loader, desc="evaluate", unit="batch")):
            outputs = model(samples.to(device), [t["caption"] for t in targets])
            orig_sizes = torch.stack([t["orig_size"] for t in targets]).to(device)
            sizes = torch.stack([t["size"] for t in targets]).to(device)
            answers = phrasecut_answers(postprocessors, outputs, orig_sizes, sizes)
            for index, target, answer in zip(batches[b], targets, answers):
                if last[index] == b:
                    writer.add(target["task_id"], answer["masks"].numpy(), answer["boxes"].numpy())


def evaluate(cfg: StageConfig, *, checkpoint, coco, index, root, images, split, out_dir, device, dataset_name=None):
    """Run the model of the evaluated stage's config `cfg` (`config.resolve_stage`; its `evaluate` section: threshold,
    image size, batching, scoring workers, EMA weights) with `checkpoint`'s weights on `split`, score it; writes and
    returns metrics.json's content."""
    out_dir = Path(out_dir)
    ev = cfg.evaluate
    model, _, postprocessors = load_weights(checkpoint, lambda _: build(cfg), ev["use_ema"], need="segmentation",
                                            needed_by="evaluate")
    tokenizer = model.detr.transformer.tokenizer
    dataset = PhraseCutDetection(images, AnnotationIndex(index, coco),
                                 make_eval_transform(size=ev["size"], max_size=ev["max_size"]), return_masks=False,
                                 tokenizer=tokenizer)
    predictions = out_dir / "predictions.npz"
    predict_split(model, postprocessors, dataset, predictions, batch_size=ev["batch_size"], device=device,
                  processes=ev["processes"])

    result = evaluate_split(root, split, predictions, ev["workers"])
    split_file = refer_path(root, split)
    metrics = {
        "dataset": dataset_name,
        "split": split,
        "split_file": str(split_file),
        "split_sha256": sha256_file(split_file),
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha256_file(checkpoint),
        "threshold": ev["threshold"],
        "num_phrases": len(result.per_task) + len(result.missing),
        "missing": len(result.missing),
        "missing_task_ids": result.missing,
        "subsets": result.metrics,
    }
    atomic_write_json(out_dir / "per_task.json", result.per_task)
    atomic_write_json(out_dir / "metrics.json", metrics, indent=1)
    return metrics


def add_arguments(parser):
    parser.add_argument("--checkpoint", required=True, type=IN_FILE, help="stage-2 (segmentation) checkpoint")
    parser.add_argument("--spec", required=True, type=IN_FILE,
                        help='JSON file {"model": {...}, "train": {...}, "evaluate": {...}}: the spec given to `train` '
                             "and the evaluate section (threshold, size, max_size, batch_size, processes, workers, "
                             "use_ema; default: the schema's)")
    parser.add_argument("--coco", required=True, type=IN_FILE, help="finetune_phrasecut_{split}.json")
    parser.add_argument("--index", required=True, type=IN_DIR, help="its annotation index (`mdetr-phrasecut index`)")
    parser.add_argument("--root", required=True, type=IN_DIR, help="original PhraseCut files (refer_{split}.json, ...)")
    parser.add_argument("--images", required=True, type=IN_DIR, help="folder of {image_id}.jpg")
    parser.add_argument("--split", default="test", choices=PHRASECUT_SPLITS)
    parser.add_argument("--dataset", help="dataset name recorded in metrics.json (shown in the table)")
    parser.add_argument("--out-dir", required=True, type=OUT_DIR)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def main(args):
    metrics = evaluate(resolve_stage(load_spec(args.spec), EVALUATED), checkpoint=args.checkpoint, coco=args.coco,
                       index=args.index, root=args.root, images=args.images, split=args.split, out_dir=args.out_dir,
                       device=args.device, dataset_name=args.dataset)
    overall = metrics["subsets"].get("all", {})
    print(json.dumps({k: overall.get(k) for k in ("mean_mask_iou", "cum_mask_iou", "pred_mask_acc")}))
