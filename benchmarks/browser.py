"""Benchmark `mdetr-phrasecut browser` on a synthetic split: its time and size on PhraseCut's 14,354 test phrases.

    python benchmarks/browser.py                  # 120 phrases (the suite runs this)
    python benchmarks/browser.py --phrases 14354  # PhraseCut test size (docs/browser.md)

Writes a split in the original PhraseCut layout (images of 300-640 px, polygons, phrases), two evaluations of it
(predictions.npz streamed with PredictionWriter, per_task.json scored by the real evaluator), then times the paired
browser at the schema's default bounds (the worst, best, most different and random phrases), against a baseline
measured in the same run: reading the inputs it needs (per_task.json twice, refer and image split, both
predictions files) without drawing anything. Reports seconds, the ratio, the folder's MB (index.html alone too)
the thumbnails, and the process's peak RSS (data generation included). Wall and CPU seconds both: on a shared
machine the CPU seconds are the steadier figure. Last line: one JSON object.
"""
import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mdetr_phrasecut.config import schema_defaults
from mdetr_phrasecut.data.phrasecut_format import load_image_split, load_refer
from mdetr_phrasecut.evaluation.browser import SELECTIONS, write_browser
from mdetr_phrasecut.evaluation.phrasecut_metrics import evaluate_predictions, rasterize_polygons
from mdetr_phrasecut.evaluation.predictions import PredictionWriter, read_predictions
from mdetr_phrasecut.evaluation.statistics import load_per_task

NAMES = ["man", "wall", "sky", "tree", "dog", "car", "table", "shirt", "umbrella", "window", "cloud", "bus"]


def write_split(root, images, n_phrases, seed=0):
    """refer_test.json, image_data_split.json, name_att_rel_count.json under `root` and {image_id}.jpg under
    `images`; returns the records."""
    rng = np.random.default_rng(seed)
    records, rows, image_id, left = [], [], 0, 0
    for k in range(n_phrases):
        if left == 0:
            image_id, left = image_id + 1, int(rng.integers(1, 8))
            width, height = (int(v) for v in rng.integers(300, 641, size=2))
            rows.append({"image_id": image_id, "split": "test", "width": width, "height": height, "coco_id": None,
                         "flickr_id": None, "url": None})
            image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 256, 3)))
            for _ in range(4):
                x, y = rng.uniform(0, width), rng.uniform(0, height)
                colour = tuple(int(v) for v in rng.integers(0, 256, 3))
                ImageDraw.Draw(image).ellipse([x, y, x + 80, y + 60], fill=colour)
            image.save(images / f"{image_id}.jpg", quality=90)
        left -= 1
        x, y = rng.uniform(0, width - 40), rng.uniform(0, height - 40)
        w, h = rng.uniform(10, width - x), rng.uniform(10, height - y)
        polygon = [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]
        name = str(rng.choice(NAMES))
        records.append({"task_id": f"{image_id}__{k}", "image_id": image_id, "ann_ids": [0],
                        "instance_boxes": [[int(x), int(y), int(w), int(h)]], "Polygons": [[polygon]],
                        "phrase": f"{name} {k}", "phrase_structure": {
                            "name": name, "attributes": [], "attribute_ids": [], "relation_descriptions": [],
                            "relation_ids": [], "type": "name"}})
    (root / "refer_test.json").write_text(json.dumps(records))
    (root / "image_data_split.json").write_text(json.dumps(rows))
    (root / "name_att_rel_count.json").write_text(json.dumps({"cat": [[n, 1] for n in NAMES], "att": [], "rel": []}))
    return records, {row["image_id"]: row for row in rows}


def write_evaluation(folder, records, image_info, seed):
    """predictions.npz (each ground truth shifted at random) and per_task.json scored by the evaluator."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)

    def predictions(out):
        for record in records:
            info = image_info[record["image_id"]]
            gt = rasterize_polygons(record["Polygons"], info["width"], info["height"])
            mask = np.roll(gt, tuple(int(v) for v in rng.normal(0, 30, 2)), axis=(0, 1))
            out.add(record["task_id"], mask, np.zeros((0, 4)))
            yield record["task_id"], mask, np.zeros((0, 4))

    counts = json.loads((folder.parent.parent / "phrasecut" / "name_att_rel_count.json").read_text())
    with PredictionWriter(folder / "predictions.npz") as out:
        result = evaluate_predictions(records, image_info, counts, predictions(out), workers=1)
    (folder / "per_task.json").write_text(json.dumps(result.per_task, default=lambda v: v.item()))


def read_inputs(root, evaluations):
    """What the browser reads, without drawing: the baseline."""
    load_refer(root, "test", load_image_split(root))
    for folder in evaluations:
        load_per_task(folder / "per_task.json")
        for _ in read_predictions(folder / "predictions.npz", packed=True):
            pass


def megabytes(path):
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 2**20, 2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phrases", type=int, default=120, help="synthetic split size (PhraseCut test: 14354)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root, images = tmp / "phrasecut", tmp / "images"
        root.mkdir(), images.mkdir()
        records, image_info = write_split(root, images, args.phrases)
        ours, released = tmp / "runs" / "ours", tmp / "runs" / "released"
        for seed, folder in enumerate((ours, released)):
            write_evaluation(folder, records, image_info, seed)

        start, cpu = time.perf_counter(), time.process_time()
        read_inputs(root, (ours, released))
        baseline_s, baseline_cpu = time.perf_counter() - start, time.process_time() - cpu

        defaults = schema_defaults("browser")
        out = ours / "browser"
        start, cpu = time.perf_counter(), time.process_time()
        thumbnails = write_browser(ours / "per_task.json", ours / "predictions.npz", root, images, "test", out,
                                   {k: defaults[k] for k in SELECTIONS}, defaults["seed"], defaults["thumb_size"],
                                   released / "per_task.json", released / "predictions.npz")
        browser_s, browser_cpu = time.perf_counter() - start, time.process_time() - cpu
        result = {"phrases": args.phrases, "thumbnailed_phrases": thumbnails, "browser_s": round(browser_s, 2),
                  "browser_cpu_s": round(browser_cpu, 2), "baseline_read_inputs_s": round(baseline_s, 2),
                  "baseline_cpu_s": round(baseline_cpu, 2), "ratio": round(browser_s / baseline_s, 2),
                  "cpu_ratio": round(browser_cpu / baseline_cpu, 2),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "folder_mb": megabytes(out), "index_html_mb": megabytes(out / "index.html"),
                  "bounds": {k: defaults[k] for k in SELECTIONS}, "thumb_size": defaults["thumb_size"]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
