"""Benchmark the PhraseCut evaluator against a straightforward per-phrase loop on a synthetic split.

    python benchmarks/evaluate.py                 # 2,000 phrases, 2 workers
    python benchmarks/evaluate.py --phrases 14354 # PhraseCut test size
    python benchmarks/evaluate.py --smoke         # 100 phrases, memory on 20 and 40 (the test suite)

Reports phrases/second of `evaluate_predictions` (vectorised, process pool) and of a baseline written the
way the published evaluator works (all predictions loaded first, one PIL canvas and a float mask per polygon and
per box, per-subset lists of every score, list lookups for ranks), their ratio (`ratio`), and the peak memory
(tracemalloc) of both on two split sizes. Both must agree on every phrase. Last line: one JSON object.
"""
import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mdetr_phrasecut.evaluation.phrasecut_metrics import evaluate_predictions
from mdetr_phrasecut.evaluation.predictions import PredictionWriter, read_predictions
from mdetr_phrasecut.evaluation.subsets import ATTRIBUTE_TYPES, COCO_CATEGORIES, STUFF_NAMES, SUBSETS

NAMES = ["man", "wall", "sky", "tree", "dog", "car", "table", "shirt", "umbrella", "window frame", "cloud", "bus"]
ATTRIBUTES = ["white", "large", "wooden", "wet", "standing", "old", "distant", "many", "here", "shiny"]


def synthetic_split(n_phrases, seed=0):
    """(records, image_info, name_att_rel_count, predictions list) in the original PhraseCut layout."""
    rng = np.random.default_rng(seed)
    counts = {"cat": [[f"cat{i}", 10_000 - i] for i in range(300)] + [[n, 5] for n in NAMES[::2]],
              "att": [[f"att{i}", 10_000 - i] for i in range(150)] + [[a, 5] for a in ATTRIBUTES[::2]], "rel": []}
    records, image_info, predictions = [], {}, []
    image_id, phrases_left = 1_000_000, 0
    for k in range(n_phrases):
        if phrases_left == 0:
            image_id += 1
            phrases_left = int(rng.integers(1, 8))
            width, height = (int(v) for v in rng.integers(300, 641, size=2))
            image_info[image_id] = {"image_id": image_id, "width": width, "height": height, "split": "test",
                                    "coco_id": int(rng.integers(0, 3)) or None, "flickr_id": None, "url": None}
        phrases_left -= 1
        polygons, boxes = [], []
        for _ in range(int(rng.integers(1, 7))):
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            radius = rng.uniform(5, min(width, height) / 3)
            instance = []
            for _ in range(int(rng.integers(1, 3))):
                angles = np.sort(rng.uniform(0, 2 * np.pi, size=int(rng.integers(3, 12))))
                r = radius * rng.uniform(0.5, 1.0, size=len(angles))
                points = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1)
                instance.append(np.round(np.clip(points, 0, [width - 1, height - 1]), 2).tolist())
            polygons.append(instance)
            xy = np.concatenate(instance)
            x1, y1 = np.floor(xy.min(0))
            x2, y2 = np.floor(xy.max(0))
            boxes.append([int(x1), int(y1), int(x2 - x1 + 1), int(y2 - y1 + 1)])
        attributes = list(rng.choice(ATTRIBUTES + [f"att{i}" for i in range(0, 150, 10)],
                                     size=int(rng.integers(0, 3)), replace=False))
        relations = [["on", "thing"]] * int(rng.integers(0, 3))
        structure = {"name": str(rng.choice(NAMES + [f"cat{i}" for i in range(0, 300, 7)])),
                     "attributes": attributes, "attribute_ids": [], "relation_descriptions": relations,
                     "relation_ids": [], "type": str(rng.choice(["name", "attribute", "relation", "verbose"]))}
        task_id = f"{image_id}__{k}"
        records.append({"task_id": task_id, "image_id": image_id, "ann_ids": list(range(len(boxes))),
                        "instance_boxes": boxes, "Polygons": polygons, "phrase": structure["name"],
                        "phrase_structure": structure})
        shift = rng.normal(0, 8, size=2)
        canvas = Image.new("1", (width, height), 0)
        for instance in polygons[: len(polygons) - int(rng.integers(0, 2))]:
            for polygon in instance:
                ImageDraw.Draw(canvas).polygon([tuple(p) for p in np.asarray(polygon) + shift], fill=1)
        jitter = rng.normal(0, 4, size=(len(boxes), 4))
        predictions.append((task_id, np.asarray(canvas, dtype=bool), np.asarray(boxes) + jitter))
    return records, image_info, counts, predictions


def baseline_evaluate(records, image_info, counts, predictions_path):
    """Per-phrase loop in the style of the published evaluator: every prediction loaded up front, a float
    canvas per polygon and per box, every score kept in per-subset lists, ranks found by list.index."""
    predictions = {task_id: (mask, boxes) for task_id, mask, boxes in read_predictions(predictions_path)}
    cat_sorted = [name for name, _ in counts["cat"]]
    att_sorted = [name for name, _ in counts["att"]]
    stats = {s: {"mask_iou": [], "box_iou": [], "i": [], "u": []} for s in SUBSETS}
    per_task = {}

    def polygons_mask(polygons, width, height):
        mask = np.zeros((height, width))
        for polygon in polygons:
            canvas = Image.new("L", (width, height), 0)
            ImageDraw.Draw(canvas).polygon([(int(x), int(y)) for x, y in polygon], outline=1, fill=1)
            mask += np.array(canvas)
        return mask > 0

    def boxes_mask(boxes, width, height):
        mask = np.zeros((height, width))
        for x, y, w, h in boxes:
            mask[int(y):int(y + h - 1), int(x):int(x + w - 1)] = 1
        return mask

    for record in records:
        if record["task_id"] not in predictions:
            continue
        pred_mask, pred_boxes = predictions[record["task_id"]]
        image = image_info[record["image_id"]]
        gt = polygons_mask([p for instance in record["Polygons"] for p in instance], image["width"], image["height"])
        i = int(np.sum(np.logical_and(gt, pred_mask)))
        u = int(np.sum((gt + pred_mask) > 0))
        every = list(pred_boxes) + list(record["instance_boxes"])
        width = int(max(b[0] + b[2] - 1 for b in every) + 1)
        height = int(max(b[1] + b[3] - 1 for b in every) + 1)
        pb, gb = boxes_mask(pred_boxes, width, height), boxes_mask(record["instance_boxes"], width, height)
        bi, bu = np.sum(np.logical_and(pb, gb)), np.sum((pb + gb) > 0)
        structure = record["phrase_structure"]
        name, attributes = structure["name"], structure["attributes"]
        cat_rank = cat_sorted.index(name) if name in cat_sorted else 501
        att_rank = min([att_sorted.index(a) for a in attributes if a in att_sorted] + [201])
        n, n_att, n_rel = len(record["instance_boxes"]), len(attributes), len(structure["relation_descriptions"])
        size = np.sum(gt) / (image["width"] * image["height"])
        member = {
            "all": True, "c_coco": name in COCO_CATEGORIES,
            "c20": cat_rank < 20, "c100": cat_rank < 100, "c500": cat_rank < 500,
            "c21-100": 20 <= cat_rank < 100, "c101-500": 100 <= cat_rank < 500, "c500+": cat_rank >= 500,
            "i_single": n == 1, "i_multi": 1 < n < 5, "i_many": n >= 5,
            "p_name": structure["type"] == "name", "p_att": n_att > 0, "p_att+": structure["type"] == "attribute",
            "p_rel": n_rel > 0, "p_rel+": structure["type"] == "relation", "p_verbose": structure["type"] == "verbose",
            "p_attm": n_att > 1, "p_relm": n_rel > 1,
            "t_stuff": any(s in name for s in STUFF_NAMES), "t_obj": not any(s in name for s in STUFF_NAMES),
            "s_small": size < 0.02, "s_mid": 0.02 <= size <= 0.2, "s_large": size > 0.2,
            "a20": att_rank < 20, "a100": att_rank < 100, "a200": att_rank < 200,
            "a21-100": 20 <= att_rank < 100, "a101-200": 100 <= att_rank < 200, "a200+": att_rank >= 200,
            **{kind: any(a in vocabulary for a in attributes) for kind, vocabulary in ATTRIBUTE_TYPES.items()},
            "p_att_rel": n_att > 0 and n_rel > 0,
            "d_cocotv": bool(image["coco_id"]), "d_notcocotv": not image["coco_id"],
        }
        subsets = [s for s in SUBSETS if member[s]]
        task = {"mask_i": i, "mask_u": u, "mask_iou": i / u if i else 0.0,
                "box_iou": float(bi / bu) if bi else 0.0, "subsets": subsets}
        per_task[record["task_id"]] = task
        for s in subsets:
            for key, value in (("mask_iou", task["mask_iou"]), ("box_iou", task["box_iou"]), ("i", i), ("u", u)):
                stats[s][key].append(value)
    metrics = {}
    for s, v in stats.items():
        if v["mask_iou"]:
            ious = np.array(v["mask_iou"])
            metrics[s] = {"mean_mask_iou": float(np.mean(ious)), "cum_mask_iou": np.sum(v["i"]) / np.sum(v["u"]),
                          "mean_box_iou": float(np.mean(v["box_iou"])),
                          "pred_mask_acc": {str(t): float(np.mean(ious > t)) for t in (0.5, 0.6, 0.7, 0.8, 0.9)}}
    return metrics, per_task


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def peak_memory(function, *args, **kwargs):
    """Peak bytes allocated (tracemalloc) while `function` runs, above what was allocated before."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    function(*args, **kwargs)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def write_predictions(path, predictions):
    with PredictionWriter(path) as out:
        for phrase in predictions:
            out.add(*phrase)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phrases", type=int, default=2000, help="synthetic split size (PhraseCut test: 14354)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--memory-sizes", type=int, nargs=2, default=(250, 1000),
                        help="two split sizes for the peak-memory comparison (evaluated with 1 worker)")
    parser.add_argument("--smoke", action="store_true", help="smallest size: 100 phrases, memory on 20 and 40")
    args = parser.parse_args(argv)
    if args.smoke:
        args.phrases, args.memory_sizes = 100, (20, 40)

    records, image_info, counts, predictions = synthetic_split(max(args.phrases, *args.memory_sizes))
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for n in {args.phrases, *args.memory_sizes}:
            paths[n] = Path(tmp) / f"predictions_{n}.npz"
            write_predictions(paths[n], predictions[:n])
        del predictions
        subset_records = records[: args.phrases]

        fast, fast_s = timed(evaluate_predictions, subset_records, image_info, counts,
                             read_predictions(paths[args.phrases], packed=True), workers=args.workers)
        (base_metrics, base_tasks), base_s = timed(baseline_evaluate, subset_records, image_info, counts,
                                                   paths[args.phrases])
        assert fast.per_task.keys() == base_tasks.keys()
        for task_id, want in base_tasks.items():
            got = fast.per_task[task_id]
            assert got["subsets"] == want["subsets"], task_id
            assert (got["mask_i"], got["mask_u"]) == (want["mask_i"], want["mask_u"]), task_id
            assert abs(got["box_iou"] - want["box_iou"]) < 1e-12, task_id
        for subset, want in base_metrics.items():
            got = fast.metrics[subset]
            for key in ("mean_mask_iou", "cum_mask_iou", "mean_box_iou"):
                assert abs(got[key] - want[key]) < 1e-9, (subset, key)
            assert all(abs(got["pred_mask_acc"][t] - v) < 1e-9 for t, v in want["pred_mask_acc"].items()), subset

        memory = {}
        for n in args.memory_sizes:
            memory[n] = {
                "evaluator_peak_mib": peak_memory(evaluate_predictions, records[:n], image_info, counts,
                                                  read_predictions(paths[n], packed=True), workers=1) / 2**20,
                "baseline_peak_mib": peak_memory(baseline_evaluate, records[:n], image_info, counts, paths[n]) / 2**20,
            }
    small, large = args.memory_sizes
    growth = {key.split("_")[0]: (memory[large][key] - memory[small][key]) * 2**10 / (large - small)
              for key in memory[small]}
    result = {
        "phrases": args.phrases,
        "workers": args.workers,
        "evaluator_phrases_per_s": args.phrases / fast_s,
        "baseline_phrases_per_s": args.phrases / base_s,
        "ratio": base_s / fast_s,
        "ratio_of": "baseline / evaluator time",
        "mean_mask_iou": fast.metrics["all"]["mean_mask_iou"],
        "memory_mib": {str(n): m for n, m in memory.items()},
        "memory_growth_kib_per_phrase": growth,
    }
    print(f"evaluator {result['evaluator_phrases_per_s']:.0f} phrases/s ({args.workers} workers), baseline "
          f"{result['baseline_phrases_per_s']:.0f} phrases/s, speedup x{result['ratio']:.2f}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
