"""`mdetr-phrasecut table`: the published PhraseCut table regenerated from measured metrics.

One row per run: M-IoU and Precision@{0.5,0.7,0.9} (the published columns, in %), each with the published
value and ours minus published beside it when the run has published values, then cum-IoU, the phrase
counts and a link to the metrics.json the row came from. The dataset is named in the heading, and a
provenance section records each row's split file, its sha256 and the checkpoint's sha256, so a number is
never mistaken for one measured on another dataset or split. The CSV holds the same numbers unrounded.
Every file is given with what it is of (`--metrics RUN=PATH`): nothing is read out of a path.
With `--per-task`, every number carries its bootstrap interval (`53.1 [52.4, 53.8]`, see statistics.py) and a
Verdict column says whether each published value lies inside it; with `--benchmarks`, a Cost column gives the
measured wall time, CPU- and GPU-hours of the row's stages; with `--seeds-json`, a row trained with several
seeds shows the mean ± std over them beside its own (first seed's) value and interval; with `--browsers`, each
row links to its evaluation's failure browser (`browser`).
"""
import json
import math
import os
from pathlib import Path

import numpy as np

from ..data.phrasecut_format import load_json
from ..errors import InputError
from ..arguments import NAMED_IN_DIR, NAMED_IN_FILE, OUT_FILE, by_name, json_object
from ..infra.io import atomic_path, atomic_write_text
from . import metrics as registry
from .cost import cost_text, costs
from .statistics import (add_bootstrap_arguments, bootstrap_options, interval_text, intervals, load_per_task,
                         verdict)

TEXT_FIELDS = ("dataset", "split", "split_file", "split_sha256", "checkpoint", "checkpoint_sha256")
COUNT_FIELDS = ("num_phrases", "missing")


def field(obj, keys, source):
    """`obj[k1][k2]...`; an InputError naming `source` and the dotted field when a key is missing."""
    for depth, key in enumerate(keys):
        if not isinstance(obj, dict) or key not in obj:
            raise InputError(f"{source}: {'.'.join(keys[:depth + 1])} is missing")
        obj = obj[key]
    return obj


def fraction(obj, keys, source):
    """A metric stored as a fraction in [0, 1]."""
    value = field(obj, keys, source)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InputError(f"{source}: {'.'.join(keys)} must be a number in [0, 1], got {value!r}")
    return float(value)


def load_metrics(path):
    """Read and check a metrics.json (layout of `evaluate`); InputError naming the file and the field."""
    metrics = load_json(path)
    if not isinstance(metrics, dict):
        raise InputError(f"{path}: top level must be an object")
    for key in TEXT_FIELDS:
        if not isinstance(field(metrics, (key,), path), str):
            raise InputError(f"{path}: {key} must be a string, got {metrics[key]!r}"
                             + (" (evaluate records it from its --dataset)" if key == "dataset" else ""))
    for key in COUNT_FIELDS:
        value = field(metrics, (key,), path)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(f"{path}: {key} must be a non-negative integer, got {value!r}")
    for metric in registry.table_order():
        fraction(metrics, ("subsets", "all") + metric.field, path)
    return metrics


def parse_runs(text):
    """--runs-json: [{"run": str, "label": str, "published": {miou, p50, p70, p90} (in %) or null}, ...], the rows in
    table order (a list: no serialiser's key sorting can reorder it); returns {run: {label, published}} in that
    order."""
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"--runs-json: invalid JSON: {e.msg} at col {e.colno}") from None
    if not isinstance(entries, list) or not entries:
        raise InputError("--runs-json: must be a non-empty list [{run, label, published}, ...]")
    runs = {}
    for i, spec in enumerate(entries):
        run = field(spec, ("run",), f"--runs-json: entry {i}")
        source = f"--runs-json: run {run}"
        if not isinstance(run, str) or run in runs:
            raise InputError(f"{source}: run must be a string named once")
        if not isinstance(field(spec, ("label",), source), str):
            raise InputError(f"{source}: label must be a string")
        runs[run] = {"label": spec["label"], "published": field(spec, ("published",), source)}
        if runs[run]["published"] is None:
            continue
        for metric in registry.published():
            value = field(spec["published"], (metric.key,), source + ": published")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"{source}: published.{metric.key} must be a number, got {value!r}")
    return runs


def table_rows(runs, metrics, dataset):
    """One dict per run: identity, provenance and every number in % (ours, published, ours - published);
    metrics: {run: its metrics.json}."""
    rows = []
    for run, spec in runs.items():
        path = Path(metrics[run])
        measured = load_metrics(path)
        if measured["dataset"] != dataset:
            raise InputError(f"{path}: dataset is {measured['dataset']!r}, but the table is for {dataset!r}")
        row = {"run": run, "label": spec["label"], "metrics": str(path),
               **{key: measured[key] for key in TEXT_FIELDS + COUNT_FIELDS}}
        published = spec["published"] or {}
        for metric in registry.table_order():
            key = metric.key
            row[key] = 100 * fraction(measured["subsets"]["all"], metric.field, path)
            if metric.published:
                row[f"{key}_published"] = published.get(key, math.nan)
                row[f"{key}_diff"] = row[key] - row[f"{key}_published"]
        rows.append(row)
    return rows


def add_intervals(rows, per_task, options):
    """Bootstrap interval (`{key}_lo`, `{key}_hi`) of every number of each row, and the verdicts on the published
    values, from the row's per_task.json (which must hold the very evaluation of its metrics.json); per_task:
    {run: its per_task.json}."""
    for row in rows:
        path = per_task[row["run"]]
        stats = intervals(load_per_task(path), subsets=("all",), **options)["all"]
        if stats["count"] != row["num_phrases"] - row["missing"]:
            raise InputError(f"{path}: {stats['count']} phrases, but {row['metrics']} scored "
                             f"{row['num_phrases'] - row['missing']}: not the same evaluation")
        differs = []
        for metric in registry.table_order():
            key = metric.key
            row[f"{key}_lo"], row[f"{key}_hi"] = 100 * stats[key]["lo"], 100 * stats[key]["hi"]
            published = row.get(f"{key}_published", math.nan)
            if not math.isnan(published):
                row[f"{key}_verdict"] = verdict(published, row[f"{key}_lo"], row[f"{key}_hi"])
                differs += [metric.title] if row[f"{key}_verdict"] == "differs" else []
        has_published = any(f"{m.key}_verdict" in row for m in registry.published())
        row["verdict"] = ("" if not has_published else f"differs ({', '.join(differs)})" if differs
                          else "reproduced")
        row.update(bootstrap_resamples=options["resamples"], bootstrap_level=options["level"],
                   bootstrap_seed=options["seed"], bootstrap_unit=options["unit"])


def check_seeds(seeds, runs):
    """--seeds-json: {row's run: [the training of every seed of it, the row's own included, each once]}."""
    for run, trainings in seeds.items():
        if run not in runs:
            raise InputError(f"--seeds-json: {run} is not a run of the table ({', '.join(runs)})")
        if (not isinstance(trainings, list) or not all(isinstance(t, str) for t in trainings) or run not in trainings
                or len(set(trainings)) != len(trainings) or len(trainings) < 2):
            raise InputError(f"--seeds-json: {run}: expected at least two seeds' trainings, {run} among them, each "
                             "once")


def add_seeds(rows, seeds, metrics):
    """Mean and std (`{key}_seed_mean`, `{key}_seed_std`, `seeds`) over the metrics of all seeds of a row;
    seeds: see check_seeds; metrics: {training: its metrics.json}."""
    by_run = {row["run"]: row for row in rows}
    for run, trainings in seeds.items():
        row = by_run[run]
        values = []
        for path in (metrics[t] for t in trainings):
            seed = load_metrics(path)
            if seed["dataset"] != row["dataset"] or seed["split_sha256"] != row["split_sha256"]:
                raise InputError(f"{path}: not evaluated on the split of {row['metrics']}")
            values.append([100 * fraction(seed["subsets"]["all"], m.field, path) for m in registry.table_order()])
        values = np.array(values)
        for metric, mean, std in zip(registry.table_order(), values.mean(0), values.std(0, ddof=1)):
            row[f"{metric.key}_seed_mean"], row[f"{metric.key}_seed_std"] = mean, std
        row["seeds"] = len(trainings)


def add_browsers(rows, browsers):
    """`browser`: the index.html of each row's failure browser; browsers: {run: its browser folder}."""
    for row in rows:
        row["browser"] = str(Path(browsers[row["run"]]) / "index.html")


def add_costs(rows, benchmarks, gpus, owners=None):
    """Wall time (`wall_s`), CPU-hours and GPU-hours of each row's stages, from the rules' benchmark files
    ((training, stage, file) each); owners: {training: row's run} for the trainings of other seeds, which count
    towards their row."""
    by_run = costs(benchmarks, [row["run"] for row in rows], gpus, owners or {})
    for row in rows:
        row.update({k: v for k, v in by_run[row["run"]].items() if k not in ("stages", "trainings")},
                   cost=cost_text(by_run[row["run"]]))


def _cell(row, metric):
    key, digits = metric.key, metric.digits
    ours = (interval_text(row[key], row[f"{key}_lo"], row[f"{key}_hi"], digits) if f"{key}_lo" in row
            else f"{row[key]:.{digits}f}")
    if f"{key}_seed_mean" in row:
        ours += f", {row[f'{key}_seed_mean']:.{digits}f} ± {row[f'{key}_seed_std']:.{digits}f} ({row['seeds']} seeds)"
    published = row.get(f"{key}_published", math.nan)
    if math.isnan(published):
        return ours
    return f"{ours} (pub. {published:.{digits}f}, {round(row[f'{key}_diff'], digits) + 0.0:+.{digits}f})"


def render_markdown(rows, dataset, out_dir):
    """The table as Markdown; links to the metrics files are relative to `out_dir` (where the table lives)."""
    columns = registry.shown()
    with_intervals, with_cost = "verdict" in rows[0], "cost" in rows[0]
    head = (["Backbone"] + [m.title for m in columns] + ["Verdict"] * with_intervals
            + ["Phrases", "Missing", "Metrics"] + ["Cost"] * with_cost)
    lines = [
        f"# MDETR referring-expression segmentation: {dataset}",
        "",
        f"> **Dataset: {dataset}**",
        ">",
        "> Every number of ours below was measured on this dataset and split only (see Provenance). Published "
        "values (MDETR, PhraseCut test set) are shown beside ours as `ours (pub. published, ours - published)`.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(columns) + ["---"] * with_intervals + ["---:", "---:", "---"]
                       + ["---"] * with_cost) + "|",
    ]
    for row in rows:
        link = Path(os.path.relpath(row["metrics"], out_dir)).as_posix()
        cells = [row["label"]] + [_cell(row, metric) for metric in columns]
        cells += [row["verdict"] or "-"] if with_intervals else []
        cells += [str(row["num_phrases"]), str(row["missing"]), f"[{link}]({link})"]
        if "browser" in row:
            browser = Path(os.path.relpath(row["browser"], out_dir)).as_posix()
            cells[-1] += f", [failure browser]({browser})"
        cells += [row["cost"]] if with_cost else []
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Values in %. M-IoU: mean over phrases of the mask IoU; Precision@t: share of phrases whose mask IoU "
        "exceeds t; cum-IoU: total intersection over total union (not in the published table).",
    ]
    if with_intervals:
        r = rows[0]
        lines += ["", f"Brackets: {r['bootstrap_level']:.0%} percentile bootstrap interval over "
                  f"{r['bootstrap_resamples']:,} resamples of the test {r['bootstrap_unit']}s (seed "
                  f"{r['bootstrap_seed']}). Verdict: \"reproduced\" when every published value lies inside our "
                  "interval as shown, else \"differs\" naming the columns. The interval covers the sampling of the "
                  "test set for this one trained checkpoint only: not training randomness (seeds), not the "
                  "published number's own uncertainty (published without an interval), not a different test set."]
    if any("seeds" in row for row in rows):
        lines += ["", "`m ± s (k seeds)`: mean and standard deviation over k trainings of the row with different "
                  "seeds (its first seed's value and interval stand before them): the spread training randomness "
                  "adds to the test set's."]
    if with_cost:
        lines += ["", "Cost: wall time, CPU-hours and GPU-hours (wall time x GPUs held) of the row's stages, "
                  "from the rules' benchmark files (results/benchmarks/)."]
    for row in rows:
        if row["missing"]:
            lines.append(f"\n**Warning: {row['missing']} of {row['num_phrases']} phrases of {row['label']} have no "
                         "prediction and are left out of its statistics.**")
    lines += ["", "## Provenance", "", "| Run | Split | Split file | Split sha256 | Checkpoint | Checkpoint sha256 |",
              "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['run']} | {row['split']} | `{row['split_file']}` | `{row['split_sha256']}` "
                     f"| `{row['checkpoint']}` | `{row['checkpoint_sha256']}` |")
    return "\n".join(lines) + "\n"


def write_table(metrics, runs, dataset, out, csv=None, per_task=None, options=None, benchmarks=None, gpus=None,
                seeds=None, browsers=None):
    """Write the Markdown table to `out` (and the CSV to `csv`), atomically; returns the rows. metrics: {training:
    its metrics.json}, every run's of `runs` and every seed's. With `per_task` ({run: its per_task.json}): intervals
    and verdicts (bootstrap `options`: {resamples, level, seed, unit}); with `benchmarks` ((training, stage, file)
    each): costs (`gpus`: {stage: GPUs its job holds}); with `seeds` (see add_seeds): mean ± std over seeds, and
    the costs of all seeds; with `browsers` ({run: its browser folder}): links to each row's failure browser."""
    import pandas as pd

    seeds = seeds or {}
    check_seeds(seeds, runs)
    trainings = list(dict.fromkeys([*runs, *(t for ts in seeds.values() for t in ts)]))
    metrics = by_name(metrics.items(), "--metrics", trainings)
    rows = table_rows(runs, metrics, dataset)
    if browsers:
        add_browsers(rows, by_name(browsers.items(), "--browsers", runs))
    if per_task:
        add_intervals(rows, by_name(per_task.items(), "--per-task", runs), options)
    if seeds:
        add_seeds(rows, seeds, metrics)
    if benchmarks:
        add_costs(rows, benchmarks, gpus or {}, {t: run for run, ts in seeds.items() for t in ts})
    atomic_write_text(out, render_markdown(rows, dataset, Path(out).parent))
    if csv:
        with atomic_path(csv, suffix=".csv") as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
    return rows


def benchmark(value):
    """`STAGE:TRAINING=PATH` (an `--benchmarks` value) -> (training, stage, PATH)."""
    stage, sep, training = value.name.partition(":")
    if not sep or not stage or not training:
        raise InputError(f"--benchmarks: {value.name}={value.path}: expected STAGE:TRAINING=PATH")
    return training, stage, value.path


def add_arguments(parser):
    parser.add_argument("--metrics", nargs="+", required=True, type=NAMED_IN_FILE,
                        help="TRAINING=results/runs/{training}/test/metrics.json: every run's of --runs-json and "
                             "every seed's of --seeds-json")
    parser.add_argument("--runs-json", required=True,
                        help='[{"run": "resnet101", "label": "ResNet-101", "published": {"miou": .., "p50": .., '
                             '"p70": .., "p90": ..} or null}, ...]: the rows, in order')
    parser.add_argument("--dataset", required=True, help="the dataset's name (config dataset.name), shown loudly")
    parser.add_argument("--out", required=True, type=OUT_FILE, help="Markdown table, e.g. results/table.md")
    parser.add_argument("--csv", type=OUT_FILE, help="the same numbers as CSV, one row per run")
    parser.add_argument("--per-task", nargs="+", type=NAMED_IN_FILE,
                        help="RUN=results/runs/{run}/test/per_task.json for each run: bootstrap intervals and verdicts")
    add_bootstrap_arguments(parser)
    parser.add_argument("--benchmarks", nargs="+", type=NAMED_IN_FILE,
                        help="STAGE:TRAINING=results/benchmarks/{stage}_{training}.tsv: each row's cost")
    parser.add_argument("--gpus-json", type=json_object, default={}, help='GPUs each stage holds, {"stage1": 32, ...}')
    parser.add_argument("--seeds-json", type=json_object, default={},
                        help='{"run_seed0": ["run_seed0", "run_seed1", ...]}: the trainings of every seed of a row')
    parser.add_argument("--browsers", nargs="+", type=NAMED_IN_DIR,
                        help="RUN=results/runs/{run}/test/browser for each run: a link per row")


def main(args):
    named = {option: by_name(getattr(args, option), f"--{option.replace('_', '-')}")
             for option in ("metrics", "per_task", "browsers")}
    write_table(named["metrics"], parse_runs(args.runs_json), args.dataset, args.out, args.csv, named["per_task"],
                bootstrap_options(args), list(map(benchmark, args.benchmarks or ())), args.gpus_json, args.seeds_json,
                named["browsers"])
