"""`browser` on the small run of test_plots (real images, predictions scored by the real evaluator): the phrases it
lists, the thumbnails it draws, the paired view, and bad input (one line, no half-written page). Chromium loads the
page the embedded workflow writes in tests/test_workflow.py."""
import json
import re

import numpy as np
import pytest
from PIL import Image
from helpers.phrasecut_run import SIZES, numpy_scalar

from mdetr_phrasecut import cli
from mdetr_phrasecut.data.phrasecut_format import load_refer
from mdetr_phrasecut.evaluation.browser import select, thumbnails
from mdetr_phrasecut.evaluation.phrasecut_metrics import evaluate_predictions, rasterize_polygons
from mdetr_phrasecut.evaluation.plots import BOTH_COLOR, GT_COLOR, PRED_COLOR
from mdetr_phrasecut.evaluation.predictions import PredictionWriter

NONE = {"worst": 0, "best": 0, "different": 0, "random": 0}


def page_data(folder):
    text = (folder / "index.html").read_text()
    return json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S)[1])


def browser(run_dir, root, out, *extra):
    test = run_dir / "test"
    return cli.main(["browser", "--per-task", str(test / "per_task.json"), "--predictions",
                     str(test / "predictions.npz"), "--root", str(root), "--images", str(root.parent / "images"),
                     "--out-dir", str(out), *map(str, extra)])


def released(tmp_path, root):
    """A second evaluation of the same phrases: every prediction the ground truth shifted by 3 px."""
    records = load_refer(root, "test")
    rows = {r["image_id"]: r for r in json.loads((root / "image_data_split.json").read_text())}
    counts = json.loads((root / "name_att_rel_count.json").read_text())
    folder = tmp_path / "released"
    folder.mkdir()
    preds = {}
    with PredictionWriter(folder / "predictions.npz") as out:
        for rec in records:
            gt = rasterize_polygons(rec["Polygons"], *SIZES[rec["image_id"]])
            preds[rec["task_id"]] = (np.roll(gt, 3, axis=0), np.zeros((0, 4)))
            out.add(rec["task_id"], *preds[rec["task_id"]])
    result = evaluate_predictions(records, rows, counts, ((t, m, b) for t, (m, b) in preds.items()))
    (folder / "per_task.json").write_text(json.dumps(result.per_task, default=numpy_scalar))
    return folder, result.per_task


def test_select_picks_worst_best_most_different_and_a_seeded_sample_once_each():
    ids = [f"t{i:02d}" for i in range(20)]
    ious = np.linspace(0, 1, 20)
    diffs = np.zeros(20)
    diffs[[7, 12]] = [-0.9, 0.5]
    chosen = select(ids, ious, {"worst": 3, "best": 2, "different": 2, "random": 4}, seed=1, diffs=diffs)
    assert [t for t, r in chosen.items() if r == "worst"] == ["t00", "t01", "t02"]
    assert [t for t, r in chosen.items() if r == "best"] == ["t19", "t18"]
    assert [t for t, r in chosen.items() if r == "different"] == ["t07", "t12"]
    sample = [t for t, r in chosen.items() if r == "random"]
    assert len(sample) == 4 and not set(sample) & {"t00", "t01", "t02", "t19", "t18", "t07", "t12"}
    assert select(ids, ious, {"worst": 3, "best": 2, "different": 2, "random": 4}, seed=1, diffs=diffs) == chosen
    assert len(select(ids, ious, {"worst": 30, "best": 30, "different": 0, "random": 30}, seed=0)) == 20


def test_thumbnail_overlays_ground_truth_and_prediction_in_their_colours():
    image = Image.new("RGB", (400, 200), (0, 0, 0))
    gt, pred = np.zeros((200, 400), bool), np.zeros((200, 400), bool)
    gt[:, :200], pred[:, 100:300] = True, True
    thumb, = (np.asarray(t).astype(float) for t in thumbnails(image, gt, [pred], 100))
    assert thumb.shape == (50, 100, 3)
    for x, color in ((10, GT_COLOR), (60, PRED_COLOR), (35, BOTH_COLOR)):  # gt: x < 25, pred: 25 <= x < 75
        assert np.allclose(thumb[25, x], np.array(color[:3]) * color[3] * 255, atol=1)
    assert not thumb[25, 90].any()


def test_browser_lists_every_phrase_and_draws_the_chosen_thumbnails(evaluated_run, tmp_path):
    root, run_dir = tmp_path / "phrasecut", tmp_path / "runs" / "demo"
    out = run_dir / "test" / "browser"
    assert browser(run_dir, root, out, "--worst", 1, "--best", 1, "--random", 1, "--thumb-size", 64) == 0
    data = page_data(out)
    per_task = json.loads((run_dir / "test" / "per_task.json").read_text())
    phrases = {r["task_id"]: r["phrase"] for r in load_refer(root, "test")}
    assert {row[0]: (row[1], row[3]) for row in data["phrases"]} == {
        t: (phrases[t], round(100 * v["mask_iou"], 2)) for t, v in per_task.items()}
    assert [data["subsets"][i] for i in data["phrases"][0][4]] == per_task[data["phrases"][0][0]]["subsets"]
    thumbs = sorted(p.name for p in (out / "thumbs").iterdir())
    assert thumbs == ["0.jpg", "1.jpg", "2.jpg"] and data["selected"] == {"worst": 1, "best": 1, "different": 0,
                                                                         "random": 1}
    assert sum(row[5] >= 0 for row in data["phrases"]) == 3 and data["labels"] == ["ours"]
    assert max(Image.open(out / "thumbs" / "0.jpg").size) == 64
    html = (out / "index.html").read_text()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # nothing fetched
    (out / "stale.txt").write_text("from an earlier run")
    assert browser(run_dir, root, out, *sum((["--" + k, 0] for k in NONE), [])) == 0  # replaces the folder
    assert not (out / "stale.txt").exists() and not list((out / "thumbs").iterdir())
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_paired_view_holds_both_ious_and_thumbnails_of_the_most_different(evaluated_run, tmp_path):
    root, run_dir = tmp_path / "phrasecut", tmp_path / "runs" / "demo"
    other, other_per_task = released(tmp_path, root)
    out = tmp_path / "paired"
    assert browser(run_dir, root, out, "--paired-per-task", other / "per_task.json", "--paired-predictions",
                   other / "predictions.npz", *sum((["--" + k, 0] for k in NONE if k != "different"), []),
                   "--different", 2) == 0
    data = page_data(out)
    assert data["labels"] == ["ours", "released"]
    ours = json.loads((run_dir / "test" / "per_task.json").read_text())
    diff = {t: 100 * (ours[t]["mask_iou"] - other_per_task[t]["mask_iou"]) for t in ours}
    assert {row[0]: row[6] for row in data["phrases"]} == {t: round(100 * v["mask_iou"], 2)
                                                           for t, v in other_per_task.items()}
    thumbed = {row[0] for row in data["phrases"] if row[5] >= 0}
    assert thumbed == set(sorted(diff, key=lambda t: (-abs(diff[t]), t))[:2])
    assert sorted(p.name for p in (out / "thumbs").iterdir()) == ["0.jpg", "0.paired.jpg", "1.jpg", "1.paired.jpg"]


@pytest.mark.parametrize("fault", ["missing image", "empty split", "no predictions", "other phrases"])
def test_bad_input_is_one_line_and_leaves_no_page(evaluated_run, tmp_path, capsys, fault):
    root, run_dir = tmp_path / "phrasecut", tmp_path / "runs" / "demo"
    test = run_dir / "test"
    out = test / "browser"
    extra = []
    if fault == "missing image":
        (tmp_path / "images" / "2.jpg").unlink()
    elif fault == "empty split":
        (test / "per_task.json").write_text("{}")
    elif fault == "no predictions":
        (test / "predictions.npz").unlink()
    else:
        other, _ = released(tmp_path, root)
        per_task = json.loads((other / "per_task.json").read_text())
        per_task.pop(next(iter(per_task)))
        (other / "per_task.json").write_text(json.dumps(per_task))
        extra = ["--paired-per-task", other / "per_task.json", "--paired-predictions", other / "predictions.npz"]
    assert browser(run_dir, root, out, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = {"missing image": "2.jpg", "empty split": "per_task.json", "no predictions": "predictions.npz",
                "other phrases": "task_ids differ"}[fault]
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    kept = {"metrics.json", "per_task.json"} | (set() if fault == "no predictions" else {"predictions.npz"})
    assert sorted(p.name for p in test.iterdir()) == sorted(kept)
