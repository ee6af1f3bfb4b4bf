"""Bootstrap intervals and paired comparisons on synthetic per-phrase results with known answers: normal-theory
intervals of a mean and a proportion, scipy's percentile bootstrap, image resampling of duplicated phrases, the
evaluator's own point estimates, a planted shift found and a null one not; the compare subcommand's files and
one-line errors; the table's intervals, verdicts and cost."""
import json
import math
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mdetr_phrasecut import cli
from mdetr_phrasecut.errors import InputError
from mdetr_phrasecut.evaluation.cost import costs
from mdetr_phrasecut.evaluation.phrasecut_metrics import SubsetStats
from mdetr_phrasecut.evaluation.statistics import intervals, load_per_task, paired, verdict
from mdetr_phrasecut.evaluation.table import write_table
from helpers.evaluations import tasks, write, write_benchmark, write_evaluation

Z = stats.norm.ppf(0.975)


def per_phrase(tmp_path, content, name="per_task.json"):
    return load_per_task(write(tmp_path / name, content))


def test_intervals_of_a_mean_and_a_proportion_match_normal_theory(tmp_path):
    rng = np.random.default_rng(0)
    iou = rng.uniform(0, 1, 4000)
    result = intervals(per_phrase(tmp_path, tasks(iou)), resamples=2000, seed=1)["all"]
    values = np.array([t["mask_iou"] for t in tasks(iou).values()])
    half = Z * values.std() / math.sqrt(len(values))  # sd of a mean of n uniforms: ~ 1 / sqrt(12 n)
    assert result["miou"]["value"] == pytest.approx(values.mean(), abs=1e-12)
    assert result["miou"]["lo"] == pytest.approx(values.mean() - half, abs=0.1 * half)
    assert result["miou"]["hi"] == pytest.approx(values.mean() + half, abs=0.1 * half)
    p = np.mean(values > 0.7)
    half = Z * math.sqrt(p * (1 - p) / len(values))
    assert result["p70"]["value"] == pytest.approx(p)
    assert (result["p70"]["hi"] - result["p70"]["lo"]) / 2 == pytest.approx(half, rel=0.1)
    assert result["p70"]["lo"] < p < result["p70"]["hi"]


def test_intervals_agree_with_scipy_percentile_bootstrap(tmp_path):
    rng = np.random.default_rng(2)
    iou = rng.beta(2, 3, 1500)
    evaluation = per_phrase(tmp_path, tasks(iou))
    ours = intervals(evaluation, resamples=3000, seed=3, level=0.9)["all"]["miou"]
    ref = stats.bootstrap((evaluation.columns[:, 1],), np.mean, n_resamples=3000, confidence_level=0.9,
                          method="percentile", random_state=4).confidence_interval
    width = ref.high - ref.low
    assert ours["lo"] == pytest.approx(ref.low, abs=0.05 * width)
    assert ours["hi"] == pytest.approx(ref.high, abs=0.05 * width)


def test_image_resampling_widens_intervals_of_correlated_phrases(tmp_path):
    """Four identical phrases per image carry the information of one: the image bootstrap's interval is about
    sqrt(4) = 2 times the phrase bootstrap's, and equals the phrase bootstrap of one phrase per image."""
    rng = np.random.default_rng(5)
    per_image = rng.uniform(0, 1, 1000)
    copies = per_phrase(tmp_path, tasks(np.repeat(per_image, 4), images=np.repeat(np.arange(1000), 4)), "a.json")
    single = per_phrase(tmp_path, tasks(per_image), "b.json")

    def width(evaluation, unit):
        r = intervals(evaluation, resamples=2000, seed=6, unit=unit)["all"]["miou"]
        return r["hi"] - r["lo"]

    assert width(copies, "image") / width(copies, "phrase") == pytest.approx(2, rel=0.12)
    assert width(copies, "image") == pytest.approx(width(single, "phrase"), rel=0.12)


def test_point_estimates_are_the_evaluators_metrics_for_every_subset(tmp_path):
    rng = np.random.default_rng(7)
    iou, union = rng.uniform(0, 1, 300), rng.integers(50, 5000, 300)
    content = tasks(iou, union, subsets=lambda k: ["all", "c20"] if k % 3 else ["all", "i_single"])
    result = intervals(per_phrase(tmp_path, content), resamples=200)
    for subset in ("all", "c20", "i_single"):
        expected = SubsetStats()
        for task in content.values():
            if subset in task["subsets"]:
                expected.add(task)
        m = expected.metrics()
        got = result[subset]
        assert got["count"] == m["count"]
        assert got["miou"]["value"] == pytest.approx(m["mean_mask_iou"], abs=1e-12)
        assert got["cum_iou"]["value"] == pytest.approx(m["cum_mask_iou"], abs=1e-12)
        for t in ("0.5", "0.6", "0.7", "0.8", "0.9"):
            assert got[f"p{t[2]}0"]["value"] == pytest.approx(m["pred_mask_acc"][t], abs=1e-12)
            assert got[f"p{t[2]}0"]["lo"] <= got[f"p{t[2]}0"]["value"] <= got[f"p{t[2]}0"]["hi"]
    assert set(result) == {"all", "c20", "i_single"}


def test_resampling_is_seeded(tmp_path):
    evaluation = per_phrase(tmp_path, tasks(np.random.default_rng(8).uniform(0, 1, 200)))
    assert intervals(evaluation, resamples=300, seed=1) == intervals(evaluation, resamples=300, seed=1)
    assert intervals(evaluation, resamples=300, seed=1) != intervals(evaluation, resamples=300, seed=2)


def test_paired_test_finds_a_planted_shift_and_not_a_null_one(tmp_path):
    rng = np.random.default_rng(9)
    n = 800
    difficulty = rng.uniform(0.2, 0.8, n)  # shared by both evaluations: what pairing removes
    base = per_phrase(tmp_path, tasks(np.clip(difficulty + rng.normal(0, 0.05, n), 0, 1)), "base.json")
    shifted = per_phrase(tmp_path, tasks(np.clip(difficulty + 0.02 + rng.normal(0, 0.05, n), 0, 1)), "shift.json")
    found = paired(shifted, base, resamples=1000, seed=0)["all"]["miou"]
    assert found["diff"] == pytest.approx(0.02, abs=0.006)
    assert 0 < found["lo"] < found["diff"] < found["hi"] and found["p"] < 0.01
    # unpaired, the same shift drowns in the spread of difficulty (interval of one run ~ +-0.012)
    single = intervals(base, resamples=1000)["all"]["miou"]
    assert single["hi"] - single["lo"] > found["hi"] - found["lo"]

    p_values = []
    for replicate in range(20):  # two evaluations of the same quality: p roughly uniform
        a, b = (per_phrase(tmp_path, tasks(np.clip(difficulty + rng.normal(0, 0.05, n), 0, 1)), f"n{replicate}{s}.json")
                for s in "ab")
        null = paired(a, b, resamples=300, seed=replicate)["all"]["miou"]
        p_values.append(null["p"])
        assert null["lo"] <= null["diff"] <= null["hi"]
    assert sum(p < 0.05 for p in p_values) <= 3 and 0.3 < np.mean(p_values) < 0.7


def test_paired_aligns_phrase_order_and_refuses_other_phrases(tmp_path):
    content = tasks(np.random.default_rng(10).uniform(0, 1, 100))
    a = per_phrase(tmp_path, content, "a.json")
    b = per_phrase(tmp_path, dict(reversed(content.items())), "b.json")
    result = paired(a, b, resamples=200)["all"]["miou"]
    assert result["diff"] == 0 and result["lo"] == result["hi"] == 0 and result["p"] == 1
    other = per_phrase(tmp_path, dict(list(content.items())[1:]), "c.json")
    with pytest.raises(InputError, match="c.json: task_ids differ from .*a.json"):
        paired(a, other)


@pytest.mark.parametrize("corrupt, field", [
    (lambda t: t.update(mask_iou=1.5), "mask_iou must be a number in [0, 1], got 1.5"),
    (lambda t: t.pop("mask_u"), "mask_u must be a non-negative integer, got None"),
    (lambda t: t.pop("image_id"), "image_id is missing"),
    (lambda t: t.update(subsets=["all", "nope"]), "subsets must be a list of PhraseCut subsets"),
])
def test_malformed_per_task_names_file_task_and_field(tmp_path, capsys, corrupt, field):
    content = tasks([0.5, 0.6])
    corrupt(content["1__1"])
    path = write(tmp_path / "per_task.json", content)
    with pytest.raises(InputError) as info:
        load_per_task(path)
    assert f"{path}: 1__1.{field}" in str(info.value)
    argv = ["compare", "--per-task", str(path), "--labels", "x", "--out", str(tmp_path / "s.md")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(path) in err and err.count("\n") == 1
    assert not (tmp_path / "s.md").exists()


def test_compare_writes_subsets_side_by_side_and_a_plot(tmp_path):
    rng = np.random.default_rng(11)

    def members(k):
        return ["all", "c20" if k % 2 else "c21-100"] + (["i_multi"] if k % 5 == 0 else [])

    good = write(tmp_path / "runs/a/test/per_task.json", tasks(rng.uniform(0.4, 1, 400), subsets=members))
    bad = write(tmp_path / "runs/b/test/per_task.json", tasks(rng.uniform(0, 0.6, 400), subsets=members))
    argv = ["compare", "--per-task", str(good), str(bad), "--labels", "A", "B", "--resamples", "200",
            "--out", str(tmp_path / "subsets.md"), "--csv", str(tmp_path / "subsets.csv"),
            "--plot", str(tmp_path / "subsets.png")]
    assert cli.main(argv) == 0
    df = pd.read_csv(tmp_path / "subsets.csv")
    assert set(df["subset"]) == {"all", "c20", "c21-100", "i_multi"} and set(df["label"]) == {"A", "B"}
    row = df[(df.subset == "i_multi") & (df.label == "A") & (df.metric == "miou")].iloc[0]
    assert row["count"] == 80 and row["lo"] < row["value"] < row["hi"]
    md = (tmp_path / "subsets.md").read_text()
    line = next(line for line in md.splitlines() if line.startswith("| i_multi |"))
    assert f"{row['value']:.1f} [{row['lo']:.1f}, {row['hi']:.1f}] (80)" in line
    assert "[runs/a/test/per_task.json](runs/a/test/per_task.json)" in md
    assert (tmp_path / "subsets.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_paired_writes_differences_p_and_q_values(tmp_path):
    rng = np.random.default_rng(12)
    difficulty = rng.uniform(0.2, 0.8, 600)
    ours = write(tmp_path / "ours.json", tasks(np.clip(difficulty + 0.05 + rng.normal(0, .03, 600), 0, 1)))
    released = write(tmp_path / "released.json", tasks(np.clip(difficulty + rng.normal(0, .03, 600), 0, 1)))
    argv = ["compare", "--paired", "--per-task", str(ours), str(released), "--labels", "ours", "released",
            "--resamples", "300", "--out", str(tmp_path / "vs.md"), "--csv", str(tmp_path / "vs.csv"),
            "--plot", str(tmp_path / "vs.png")]
    assert cli.main(argv) == 0
    df = pd.read_csv(tmp_path / "vs.csv").set_index(["subset", "metric"])
    miou = df.loc[("all", "miou")]
    assert miou["diff"] == pytest.approx(5, abs=0.5) and miou["lo"] > 0 and miou["p"] < 0.01
    assert miou["p"] <= miou["q"] <= 1
    assert "| all | 600 | +5." in (tmp_path / "vs.md").read_text() and "p<=0.003" in (tmp_path / "vs.md").read_text()
    assert (tmp_path / "vs.png").read_bytes()[:4] == b"\x89PNG"
    assert cli.main(argv[:2] + ["--per-task", str(ours)] + argv[5:]) == 2  # --paired with one file


def test_table_shows_intervals_verdicts_and_cost(tmp_path):
    _, metrics = write_evaluation(tmp_path / "runs/r101/test")
    per_task, metrics_path = tmp_path / "runs/r101/test/per_task.json", tmp_path / "runs/r101/test/metrics.json"
    m = metrics["subsets"]["all"]
    miou = 100 * m["mean_mask_iou"]
    published = {"miou": round(miou, 1), "p50": round(100 * m["pred_mask_acc"]["0.5"], 1), "p70": 1.0, "p90": 99.0}
    runs = {"r101": {"label": "ResNet-101", "published": published}}
    benchmarks = [("r101", stage, write_benchmark(tmp_path / "benchmarks" / f"{i}.tsv", seconds, cpu))
                  for i, (stage, seconds, cpu) in enumerate((("stage1", 3600, 7200), ("stage2", 1800, 3600),
                                                              ("evaluate", 600, 600)))]
    options = {"resamples": 500, "level": 0.95, "seed": 0, "unit": "phrase"}
    rows = write_table({"r101": metrics_path}, runs, "d", tmp_path / "table.md", tmp_path / "table.csv",
                       {"r101": per_task}, options, benchmarks, {"stage1": 32, "stage2": 32})
    row = rows[0]
    assert row["miou_lo"] < miou < row["miou_hi"] and row["miou_verdict"] == "reproduced"
    assert row["p70_verdict"] == row["p90_verdict"] == "differs"
    assert row["verdict"] == "differs (Precision@0.7, Precision@0.9)"
    assert row["wall_s"] == 6000 and row["cpu_h"] == pytest.approx(11400 / 3600) and row["gpu_h"] == pytest.approx(48)
    md = (tmp_path / "table.md").read_text()
    line = next(line for line in md.splitlines() if line.startswith("| ResNet-101 |"))
    assert f"{miou:.1f} [{row['miou_lo']:.1f}, {row['miou_hi']:.1f}] (pub. {published['miou']:.1f}" in line
    assert "differs (Precision@0.7, Precision@0.9)" in line and "1 h 40 min; 3.17 CPU-h; 48.0 GPU-h" in line
    assert "500 resamples of the test phrases (seed 0)" in md
    assert pd.read_csv(tmp_path / "table.csv").loc[0, "p90_verdict"] == "differs"

    metrics["num_phrases"] += 3  # a per_task.json of another evaluation
    write(metrics_path, metrics)
    with pytest.raises(InputError, match="per_task.json: 2000 phrases, but .* scored 2003: not the same evaluation"):
        write_table({"r101": metrics_path}, runs, "d", tmp_path / "t.md", per_task={"r101": per_task}, options=options)
    with pytest.raises(InputError, match="--per-task: expected one file for each of r101, got other"):
        write_table({"r101": metrics_path}, runs, "d", tmp_path / "t.md", per_task={"other": per_task}, options=options)


def test_verdict_compares_with_the_interval_as_shown():
    assert verdict(53.1, 53.06, 54.0) == "reproduced"  # shown as [53.1, 54.0]
    assert verdict(53.1, 53.16, 54.0) == "differs"
    assert verdict(54.0, 52.0, 53.96) == "reproduced"


def test_cost_names_a_bad_benchmark_file(tmp_path):
    path = write(tmp_path / "stage1_r101.tsv", "")
    path.write_text("s\tcpu_time\nslow\t1\n")
    with pytest.raises(InputError, match="stage1_r101.tsv: column s must hold non-negative numbers"):
        costs([("r101", "stage1", path)], ["r101"], {})
    with pytest.raises(InputError, match="x.tsv: the benchmark of stage1 of r50, not a training of a run of the table"):
        costs([("r50", "stage1", write(tmp_path / "x.tsv", ""))], ["r101"], {})


def test_published_dag_compares_with_the_released_checkpoint_and_costs_each_row(repo_dir):
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--forceall",
                          "--configfile=config/phrasecut.yaml", "results/table.md",
                          "results/compare/resnet101_vs_released.md"], cwd=repo_dir, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    commands = " ".join(out.stdout.replace("\\\n", " ").split())  # continued lines joined, as the shell reads them
    assert ("compare --paired --per-task results/runs/resnet101/test/per_task.json "
            "results/released/resnet101/test/per_task.json") in commands
    assert ("--per-task resnet101=results/runs/resnet101/test/per_task.json "
            "efficientnet_b3=results/runs/efficientnet_b3/test/per_task.json") in commands
    assert ("--benchmarks stage1:resnet101=results/benchmarks/stage1_resnet101.tsv "
            "stage2:resnet101=results/benchmarks/stage2_resnet101.tsv "
            "evaluate:resnet101=results/benchmarks/evaluate_resnet101.tsv") in commands
    assert """--gpus-json '{"evaluate": 1, "stage1": 32, "stage2": 32}'""" in commands
    assert "--resamples 1000 --level 0.95 --seed 0 --unit phrase" in commands


def test_table_shows_mean_and_std_over_seeds_and_costs_every_seed(tmp_path):
    trainings = ["r101_seed0", "r101_seed1", "r101_seed2"]
    miou = [100 * write_evaluation(tmp_path / "runs" / t / "test", seed=i)[1]["subsets"]["all"]["mean_mask_iou"]
            for i, t in enumerate(trainings)]
    metrics = {t: tmp_path / "runs" / t / "test" / "metrics.json" for t in trainings}
    benchmarks = [(t, stage, write_benchmark(tmp_path / "benchmarks" / f"{stage}_{t}.tsv", 600, 600))
                  for t in trainings for stage in ("stage1", "evaluate")]
    runs = {"r101_seed0": {"label": "ResNet-101", "published": None}}
    options = {"resamples": 200, "level": 0.95, "seed": 0, "unit": "phrase"}
    row, = write_table(metrics, runs, "d", tmp_path / "table.md", None,
                       {"r101_seed0": metrics["r101_seed0"].with_name("per_task.json")}, options, benchmarks, {},
                       seeds={"r101_seed0": trainings})
    assert row["miou"] == pytest.approx(miou[0]) and row["seeds"] == 3
    assert row["miou_seed_mean"] == pytest.approx(np.mean(miou))
    assert row["miou_seed_std"] == pytest.approx(np.std(miou, ddof=1))
    assert row["wall_s"] == 3600 and row["cpu_h"] == pytest.approx(1)
    line = next(line for line in (tmp_path / "table.md").read_text().splitlines() if line.startswith("| ResNet-101 |"))
    assert (f"| {miou[0]:.1f} [{row['miou_lo']:.1f}, {row['miou_hi']:.1f}], {np.mean(miou):.1f} ± "
            f"{np.std(miou, ddof=1):.1f} (3 seeds) |") in line
    assert "| 1 h 0 min; 1.00 CPU-h (stage1, evaluate, 3 seeds) |" in line
    with pytest.raises(InputError, match="expected at least two seeds' trainings, r101_seed0 among them"):
        write_table(metrics, runs, "d", tmp_path / "t.md", seeds={"r101_seed0": trainings[1:]})
    with pytest.raises(InputError, match="--metrics: expected one file for each of r101_seed0, r101_seed1, r101_seed2"):
        write_table({t: metrics[t] for t in trainings[:2]}, runs, "d", tmp_path / "t.md",
                    seeds={"r101_seed0": trainings})


def test_seeds_train_and_evaluate_as_their_own_jobs_and_reach_the_table(repo_dir, tmp_path):
    import yaml

    config = yaml.safe_load((repo_dir / "config" / "config.yaml").read_text())
    config["runs"]["demo"]["seeds"] = [3, 5]
    (tmp_path / "seeds.yaml").write_text(yaml.safe_dump(config))
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "results/table.md",
                          f"--configfile={tmp_path / 'seeds.yaml'}"], cwd=repo_dir, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    for seed in (3, 5):
        for stage in ("stage1", "stage2"):
            spec = re.search(rf"train --stage {stage} --spec (\S+) (?:[^\n]|\\\n)*? "  # lines continued with \\
                             rf"--out-dir results/runs/demo_seed{seed}/", out.stdout)  # the CLI reads the spec file
            assert json.loads((repo_dir / spec[1]).read_text())["train"]["seed"] == seed
        assert f"--out-dir results/runs/demo_seed{seed}/test" in out.stdout
    commands = re.findall(r"^Shell command: ((?:.*\\\n)*.*)$", out.stdout, re.M)  # lines continued with \
    table = next(c for c in (" ".join(c.replace("\\\n", " ").split()) for c in commands) if " table --metrics " in c)
    assert ("--metrics demo_seed3=results/runs/demo_seed3/test/metrics.json "
            "demo_seed5=results/runs/demo_seed5/test/metrics.json --runs-json") in table
    seeds = json.loads(re.search(r"--seeds-json '([^']*)'", table)[1])
    assert seeds == {"demo_seed3": ["demo_seed3", "demo_seed5"]}
    record = json.loads((repo_dir / re.search(r"--record @(\S+)", table)[1]).read_text())  # the audit walks every seed
    assert {f"results/runs/demo_seed{s}/test/metrics.json" for s in (3, 5)} <= set(record["inputs"])
    assert {f"results/benchmarks/stage2_demo_seed{s}.tsv" for s in (3, 5)} <= set(record["inputs"])


@pytest.mark.parametrize("seeds", [[1], [1, 1], [0, -1], "0,1"])
def test_bad_seeds_name_the_key(repo_dir, seeds):
    import yaml

    from mdetr_phrasecut.config import validate_config

    config = yaml.safe_load((repo_dir / "config" / "config.yaml").read_text())
    config["runs"]["demo"]["seeds"] = seeds
    with pytest.raises(InputError, match="x.yaml: runs.demo.seeds"):
        validate_config(config, "x.yaml")
