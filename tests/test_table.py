"""results/table.md and .csv from metrics.json files: rounding, published values and differences, links,
provenance, and one-line InputErrors for missing or malformed metrics."""
import json

import pandas as pd
import pytest

from mdetr_phrasecut import cli
from mdetr_phrasecut.errors import InputError
from mdetr_phrasecut.evaluation.table import parse_runs, write_table

DATASET = "synthetic PhraseCut (embedded demo, not the PhraseCut test set)"
RUNS = {
    "r101": {"label": "ResNet-101", "published": {"miou": 53.1, "p50": 56.1, "p70": 38.9, "p90": 11.9}},
    "demo": {"label": "ResNet-18 (demo)", "published": None},
}
RUNS_JSON = json.dumps([{"run": run, **spec} for run, spec in RUNS.items()])  # --runs-json: the rows in order


def metrics_json(miou, p50, p70, p90, cum, missing=0, dataset=DATASET):
    acc = {"0.5": p50, "0.6": (p50 + p70) / 2, "0.7": p70, "0.8": (p70 + p90) / 2, "0.9": p90}
    stats = {"count": 40 - missing, "mean_mask_iou": miou, "cum_mask_iou": cum, "pred_mask_acc": acc,
             "mean_box_iou": 0.6, "pred_box_acc": acc, "box_acc": 0.0}
    return {"dataset": dataset, "split": "test", "split_file": "results/phrasecut/refer_test.json",
            "split_sha256": "ab" * 32, "checkpoint": "results/runs/x/stage2/checkpoint.pth",
            "checkpoint_sha256": "cd" * 32, "num_phrases": 40, "missing": missing,
            "missing_task_ids": [f"1__{i}" for i in range(missing)], "subsets": {"all": stats, "c20": stats}}


def write_metrics(root, run, metrics):
    path = root / "runs" / run / "test" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics))
    return path


@pytest.fixture
def two_runs(tmp_path):
    """{run: its metrics.json}, as `--metrics RUN=PATH` gives them."""
    return {
        "r101": write_metrics(tmp_path, "r101", metrics_json(0.53449, 0.56162, 0.38, 0.11, 0.32051)),
        "demo": write_metrics(tmp_path, "demo", metrics_json(0.41251, 0.4, 0.2, 0.051, 0.3, missing=3)),
    }


def named(paths):
    return [f"{name}={path}" for name, path in paths.items()]


def test_markdown_rounds_and_shows_published_and_difference(tmp_path, two_runs):
    write_table(two_runs, RUNS, DATASET, tmp_path / "table.md")
    md = (tmp_path / "table.md").read_text()
    r101 = next(line for line in md.splitlines() if line.startswith("| ResNet-101 |"))
    cells = [c.strip() for c in r101.strip("|").split("|")]
    assert cells[1:6] == ["53.4 (pub. 53.1, +0.3)", "56.2 (pub. 56.1, +0.1)", "38.0 (pub. 38.9, -0.9)",
                          "11.0 (pub. 11.9, -0.9)", "32.1"]
    assert cells[6:8] == ["40", "0"]
    demo = next(line for line in md.splitlines() if line.startswith("| ResNet-18 (demo) |"))
    cells = [c.strip() for c in demo.strip("|").split("|")]
    assert cells[1:8] == ["41.3", "40.0", "20.0", "5.1", "30.0", "40", "3"]
    assert "pub." not in demo
    assert "3 of 40 phrases of ResNet-18 (demo) have no prediction" in md


def test_markdown_names_dataset_links_metrics_and_records_provenance(tmp_path, two_runs):
    write_table(two_runs, RUNS, DATASET, tmp_path / "table.md")
    md = (tmp_path / "table.md").read_text()
    assert f"**Dataset: {DATASET}**" in md
    for run in RUNS:
        assert f"[runs/{run}/test/metrics.json](runs/{run}/test/metrics.json)" in md
        assert (tmp_path / f"runs/{run}/test/metrics.json").is_file()  # the relative link resolves
    assert "ab" * 32 in md and "cd" * 32 in md and "results/phrasecut/refer_test.json" in md
    header = next(line for line in md.splitlines() if line.startswith("| Backbone"))
    assert [c.strip() for c in header.strip("|").split("|")][:6] == [
        "Backbone", "M-IoU", "Precision@0.5", "Precision@0.7", "Precision@0.9", "cum-IoU"]


def test_csv_has_ours_published_and_difference_per_run(tmp_path, two_runs):
    write_table(two_runs, RUNS, DATASET, tmp_path / "table.md", tmp_path / "table.csv")
    df = pd.read_csv(tmp_path / "table.csv").set_index("run")
    assert list(df.index) == ["r101", "demo"]
    assert df.loc["r101", "miou"] == pytest.approx(53.449)
    assert df.loc["r101", "miou_published"] == 53.1
    assert df.loc["r101", "miou_diff"] == pytest.approx(53.449 - 53.1)
    assert df.loc["r101", "p90_diff"] == pytest.approx(11.0 - 11.9)
    assert df.loc["demo", "cum_iou"] == pytest.approx(30.0)
    assert df.loc["demo", "missing"] == 3
    assert pd.isna(df.loc["demo", "p50_published"]) and pd.isna(df.loc["demo", "p50_diff"])
    assert df.loc["demo", "split_sha256"] == "ab" * 32


def test_cli_writes_both_files(tmp_path, two_runs):
    argv = ["table", "--metrics", *named(two_runs), "--runs-json", RUNS_JSON, "--dataset", DATASET,
            "--out", str(tmp_path / "t.md"), "--csv", str(tmp_path / "t.csv")]
    assert cli.main(argv) == 0
    assert "53.4 (pub. 53.1, +0.3)" in (tmp_path / "t.md").read_text()
    assert len(pd.read_csv(tmp_path / "t.csv")) == 2


def test_missing_metrics_file_names_it(tmp_path, two_runs, capsys):
    two_runs["demo"].unlink()
    with pytest.raises(InputError, match=str(two_runs["demo"])):
        write_table(two_runs, RUNS, DATASET, tmp_path / "table.md")
    argv = ["table", "--metrics", *named(two_runs), "--runs-json", RUNS_JSON, "--dataset", DATASET,
            "--out", str(tmp_path / "t.md")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(two_runs["demo"]) in err and err.count("\n") == 1
    assert not (tmp_path / "t.md").exists() and not (tmp_path / "table.md").exists()


@pytest.mark.parametrize("corrupt, field", [
    (lambda m: m["subsets"]["all"]["pred_mask_acc"].pop("0.7"), "subsets.all.pred_mask_acc.0.7 is missing"),
    (lambda m: m["subsets"]["all"].update(mean_mask_iou="high"), "subsets.all.mean_mask_iou must be a number"),
    (lambda m: m["subsets"]["all"].update(cum_mask_iou=32.1), "subsets.all.cum_mask_iou must be a number in"),
    (lambda m: m["subsets"].pop("all"), "subsets.all is missing"),
    (lambda m: m.pop("split_sha256"), "split_sha256 is missing"),
    (lambda m: m.update(missing=-1), "missing must be a non-negative integer"),
    (lambda m: m.update(dataset=None), "dataset must be a string"),
    (lambda m: m.update(dataset="PhraseCut test (VGPhraseCut_v0)"), "dataset is 'PhraseCut test"),
])
def test_malformed_metrics_name_the_field(tmp_path, two_runs, corrupt, field):
    metrics = json.loads(two_runs["r101"].read_text())
    corrupt(metrics)
    two_runs["r101"].write_text(json.dumps(metrics))
    with pytest.raises(InputError) as info:
        write_table(two_runs, RUNS, DATASET, tmp_path / "table.md")
    assert str(two_runs["r101"]) in str(info.value) and field in str(info.value)


def test_rows_follow_runs_json_whatever_the_order_and_names_of_the_files(tmp_path, two_runs, capsys):
    """Each file is named by its run (`RUN=PATH`): the rows follow --runs-json, and no path is read for a run."""
    anywhere = {"demo": two_runs["demo"].rename(tmp_path / "a.json"), "r101": two_runs["r101"]}
    argv = ["table", "--metrics", *named(anywhere), "--runs-json", RUNS_JSON, "--dataset", DATASET,
            "--out", str(tmp_path / "t.md"), "--csv", str(tmp_path / "t.csv")]
    assert cli.main(argv) == 0
    assert list(pd.read_csv(tmp_path / "t.csv")["run"]) == ["r101", "demo"]
    with pytest.raises(InputError, match="--metrics: expected one file for each of r101, demo, got r101"):
        write_table({"r101": two_runs["r101"]}, RUNS, DATASET, tmp_path / "table.md")
    for bad, message in ((str(two_runs["r101"]), "expected NAME=PATH"), ("r101=", "expected NAME=PATH"),
                         (f"r101={two_runs['r101']}", "r101 is given twice")):
        assert cli.main([*argv[:2], f"r101={two_runs['r101']}", bad, *argv[2:]]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("{", "invalid JSON"),
    ('{"a": {"label": "A", "published": null}}', "must be a non-empty list"),
    ('[{"label": "A", "published": null}]', "entry 0: run is missing"),
    ('[{"run": "a", "published": null}]', "run a: label is missing"),
    ('[{"run": "a", "label": "A", "published": null}, {"run": "a", "label": "B", "published": null}]',
     "run a: run must be a string named once"),
    ('[{"run": "a", "label": "A", "published": {"miou": 1, "p50": 2, "p70": 3}}]', "run a: published: p90 is missing"),
    ('[{"run": "a", "label": "A", "published": {"miou": "x", "p50": 2, "p70": 3, "p90": 4}}]',
     "published.miou must be"),
])
def test_bad_runs_json(text, message):
    with pytest.raises(InputError, match=message):
        parse_runs(text)


def test_runs_json_keeps_the_rows_in_its_order():
    """The order is the list's, whatever order a serialiser gives the keys (the workflow sorts them)."""
    text = json.dumps([{"run": "zeta", "label": "Z", "published": None}, {"run": "alpha", "label": "A",
                                                                           "published": None}], sort_keys=True)
    assert list(parse_runs(text)) == ["zeta", "alpha"]
