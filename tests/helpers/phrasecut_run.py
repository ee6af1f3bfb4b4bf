"""A small PhraseCut root with an evaluated run folder (the `evaluated_run` fixture of the plot and browser tests)."""
import json

import numpy as np
from PIL import Image, ImageDraw

from mdetr_phrasecut.engine.train_log import CsvLog
from mdetr_phrasecut.evaluation.phrasecut_metrics import evaluate_predictions, rasterize_polygons
from mdetr_phrasecut.evaluation.predictions import PredictionWriter

DATASET = "synthetic test run"
SIZES = {1: (120, 90), 2: (100, 130)}  # image_id -> (width, height)


def numpy_scalar(value):
    return value.item()  # the evaluator's counts may be numpy integers


def square(x, y, side):
    return [[x, y], [x + side, y], [x + side, y + side], [x, y + side]]


def record(image_id, index, phrase, name, polygons):
    boxes = []
    for instance in polygons:
        xs, ys = [p[0] for poly in instance for p in poly], [p[1] for poly in instance for p in poly]
        boxes.append([min(xs), min(ys), max(xs) - min(xs) + 1, max(ys) - min(ys) + 1])
    return {"task_id": f"{image_id}__{index}", "image_id": image_id, "ann_ids": list(range(len(polygons))),
            "instance_boxes": boxes, "Polygons": polygons, "phrase": phrase,
            "phrase_structure": {"name": name, "attributes": [], "attribute_ids": [], "relation_descriptions": [],
                                 "relation_ids": [], "type": "name"}}


def evaluated_run(tmp_path):
    """A PhraseCut root, an images folder and results/runs/demo with test/ and stage{1,2}/log.csv."""
    root, images, run_dir = tmp_path / "phrasecut", tmp_path / "images", tmp_path / "runs" / "demo"
    for d in (root, images, run_dir / "test"):
        d.mkdir(parents=True)
    rows = [{"image_id": i, "split": "test", "width": w, "height": h, "coco_id": None, "flickr_id": None,
             "url": None} for i, (w, h) in SIZES.items()]
    records = [
        record(1, 0, "red square", "square", [[square(10, 10, 30)]]),
        record(1, 1, "squares", "square", [[square(10, 10, 30)], [square(60, 40, 25)]]),
        record(2, 0, "circle", "circle", [[square(20, 30, 40)]]),
        record(2, 1, "sky", "sky", [[[[0, 0], [99, 0], [99, 20], [0, 20]]]]),
        record(2, 2, "bar", "bar", [[square(5, 80, 10), square(50, 80, 12)]]),
    ]
    (root / "image_data_split.json").write_text(json.dumps(rows))
    (root / "refer_test.json").write_text(json.dumps(records))
    counts = {"cat": [["square", 3], ["circle", 1], ["sky", 1], ["bar", 1]], "att": [], "rel": []}
    (root / "name_att_rel_count.json").write_text(json.dumps(counts))
    rng = np.random.default_rng(0)
    for image_id, (w, h) in SIZES.items():
        im = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        ImageDraw.Draw(im).rectangle([10, 10, 40, 40], fill=(200, 30, 30))
        im.save(images / f"{image_id}.jpg")

    # predictions of varying quality: the GT itself, a shifted GT, an empty mask
    preds = {}
    with PredictionWriter(run_dir / "test" / "predictions.npz") as out:
        for i, rec in enumerate(records):
            w, h = SIZES[rec["image_id"]]
            gt = rasterize_polygons(rec["Polygons"], w, h)
            mask = [gt, np.roll(gt, 6 * i, axis=1), np.zeros_like(gt)][i % 3]
            preds[rec["task_id"]] = (mask, np.array(rec["instance_boxes"], dtype=float))
            out.add(rec["task_id"], mask, preds[rec["task_id"]][1])
    result = evaluate_predictions(records, {r["image_id"]: r for r in rows}, counts,
                                  ((t, m, b) for t, (m, b) in preds.items()))
    metrics = {"dataset": DATASET, "split": "test", "split_file": str(root / "refer_test.json"),
               "split_sha256": "0" * 64, "checkpoint": "ckpt.pth", "checkpoint_sha256": "1" * 64,
               "num_phrases": len(records), "missing": 0, "missing_task_ids": [], "subsets": result.metrics}
    (run_dir / "test" / "metrics.json").write_text(json.dumps(metrics, default=numpy_scalar))
    (run_dir / "test" / "per_task.json").write_text(json.dumps(result.per_task, default=numpy_scalar))

    for stage, groups in (("stage1", ("lr", "lr_backbone", "lr_text_encoder")), ("stage2", ("lr",))):
        (run_dir / stage).mkdir()
        log = CsvLog(run_dir / stage / "log.csv")
        for step in range(30):
            loss_terms = {"loss_ce": 1 / (step + 1), "loss_mask": 0.5 / (step + 1), "loss_ce_0": 2.0,
                          "cardinality_error": 3.0}
            log.write({"epoch": step // 10, "step": step, "loss": sum(loss_terms.values()), **loss_terms,
                       **{g: 1e-4 * (0.1 if step >= 20 else 1) for g in groups}, "images_per_s": 5.0})
    return {"run_dir": run_dir, "root": root, "images": images, "out": tmp_path / "plots", "per_task": result.per_task}
