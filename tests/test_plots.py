"""`plots` on a small run built here: images and records in the original PhraseCut format, predictions
written with PredictionWriter and scored by the real evaluator, training logs written by the engine's CsvLog."""
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mdetr_phrasecut import cli
from mdetr_phrasecut.engine.train_log import CsvLog
from mdetr_phrasecut.errors import InputError
from mdetr_phrasecut.evaluation.phrasecut_metrics import evaluate_predictions, rasterize_polygons
from mdetr_phrasecut.evaluation.plots import PLOT_FILES, pick_examples, write_plots
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


@pytest.fixture
def run(tmp_path):
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


def test_writes_every_plot_as_a_valid_png(run):
    paths = write_plots(run["run_dir"], run["root"], run["images"], run["out"], num_examples=4)
    assert {p.name for p in paths.values()} == set(PLOT_FILES.values())
    assert sorted(p.name for p in run["out"].iterdir()) == sorted(PLOT_FILES.values())  # no temp files left
    for path in paths.values():
        with Image.open(path) as im:
            assert im.format == "PNG"
            im.load()
            assert 300 <= im.width <= 2500 and 250 <= im.height <= 2500
            assert len(np.unique(np.asarray(im.convert("L")))) > 10  # something was drawn
    with Image.open(paths["examples"]) as im:  # a 4-wide grid of images
        assert im.width > im.height


def test_examples_span_best_to_worst_deterministically(run):
    per_task = run["per_task"]
    picked = pick_examples(per_task, 3)
    ious = [per_task[t]["mask_iou"] for t in picked]
    assert ious[0] == max(t["mask_iou"] for t in per_task.values()) == 1.0
    assert ious[-1] == min(t["mask_iou"] for t in per_task.values()) == 0.0
    assert ious == sorted(ious, reverse=True)
    assert pick_examples(dict(reversed(per_task.items())), 3) == picked
    assert sorted(pick_examples(per_task, 50)) == sorted(per_task)


def test_cli(run):
    argv = ["plots", "--run-dir", str(run["run_dir"]), "--root", str(run["root"]), "--images", str(run["images"]),
            "--out-dir", str(run["out"]), "--num-examples", "2"]
    assert cli.main(argv) == 0
    assert all((run["out"] / name).is_file() for name in PLOT_FILES.values())


@pytest.mark.parametrize("remove, message", [
    ("runs/demo/test/per_task.json", "per_task.json: file not found"),
    ("runs/demo/test/predictions.npz", "predictions.npz: file not found"),
    ("runs/demo/stage2/log.csv", "stage2/log.csv: training log not found"),
    ("images/2.jpg", "2.jpg: task_id 2__"),
    ("phrasecut/refer_test.json", "refer_test.json: file not found"),
])
def test_missing_input_is_an_input_error(run, remove, message, capsys):
    (run["run_dir"].parents[1] / remove).unlink()
    argv = ["plots", "--run-dir", str(run["run_dir"]), "--root", str(run["root"]), "--images", str(run["images"]),
            "--out-dir", str(run["out"])]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_prediction_not_at_image_size_is_an_input_error(run):
    image = run["images"] / "1.jpg"
    Image.open(image).resize((60, 45)).save(image)
    with pytest.raises(InputError, match=r"task_id 1__\d: mask shape \(90, 120\) differs"):
        write_plots(run["run_dir"], run["root"], run["images"], run["out"])


def test_every_figure_is_drawn_in_plots_py():
    from conftest import REPO

    drawing = {p.relative_to(REPO / "src").as_posix() for p in (REPO / "src").rglob("*.py")
               if "matplotlib" in p.read_text()}
    assert drawing == {"mdetr_phrasecut/evaluation/plots.py"}
