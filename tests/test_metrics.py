"""The metric registry (evaluation/metrics.py): a metric registered there, and nowhere else, is in metrics.json,
gets bootstrap intervals, and is a column of the table and a row of compare."""
import numpy as np
import pandas as pd
import pytest

from mdetr_phrasecut.evaluation import metrics
from mdetr_phrasecut.evaluation.compare import compare
from mdetr_phrasecut.evaluation.statistics import intervals, load_per_task
from mdetr_phrasecut.evaluation.table import write_table
from helpers.evaluations import write_evaluation

P95 = metrics.Metric("p95", "Precision@0.95", ("pred_mask_acc", "0.95"), metrics.Per("mask_iou", above=0.95),
                     shown=True)


def test_a_metric_registered_in_one_file_flows_everywhere(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "METRICS", metrics.METRICS + (P95,))
    test = tmp_path / "runs" / "r1" / "test"
    content, written = write_evaluation(test, n=400)  # metrics.json through SubsetStats
    iou = np.array([task["mask_iou"] for task in content.values()])
    assert written["subsets"]["all"]["pred_mask_acc"]["0.95"] == np.mean(iou > 0.95)

    options = {"resamples": 200, "level": 0.95, "seed": 0, "unit": "phrase"}
    stats = intervals(load_per_task(test / "per_task.json"), subsets=("all",), resamples=200)["all"]
    assert stats["p95"]["value"] == pytest.approx(np.mean(iou > 0.95), abs=1e-12)
    assert stats["p95"]["lo"] < stats["p95"]["value"] < stats["p95"]["hi"]

    runs = {"r1": {"label": "R", "published": None}}
    write_table({"r1": test / "metrics.json"}, runs, "d", tmp_path / "table.md", tmp_path / "table.csv",
                {"r1": test / "per_task.json"}, options)
    head = next(line for line in (tmp_path / "table.md").read_text().splitlines() if line.startswith("| Backbone"))
    assert head.split(" | ")[1:7] == ["M-IoU", "Precision@0.5", "Precision@0.7", "Precision@0.9", "cum-IoU",
                                      "Precision@0.95"]
    row = pd.read_csv(tmp_path / "table.csv").iloc[0]
    assert row["p95"] == pytest.approx(100 * np.mean(iou > 0.95)) and row["p95_lo"] < row["p95"] < row["p95_hi"]

    rows = compare([test / "per_task.json"], ["R"], tmp_path / "c.md", options)
    assert [r["metric"] for r in rows if r["subset"] == "all"] == ["miou", "p50", "p60", "p70", "p80", "p90", "p95",
                                                                   "cum_iou"]  # the means, then the ratio of sums


def test_metrics_json_keeps_the_published_evaluators_layout(tmp_path):
    _, written = write_evaluation(tmp_path, n=50)
    assert list(written["subsets"]["all"]) == ["count", "mean_mask_iou", "cum_mask_iou", "pred_mask_acc",
                                               "mean_box_iou", "pred_box_acc", "box_acc"]
    assert list(written["subsets"]["all"]["pred_mask_acc"]) == ["0.5", "0.6", "0.7", "0.8", "0.9"]
    assert written["subsets"]["all"]["box_acc"] == 0.0 and written["subsets"]["all"]["mean_box_iou"] == 0.5
