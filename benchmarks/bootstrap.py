"""Benchmark the bootstrap intervals (statistics.py) against a per-resample loop, on synthetic per-phrase results.

    python benchmarks/bootstrap.py                                   # 2,000 phrases x 200 resamples
    python benchmarks/bootstrap.py --phrases 14354 --resamples 1000  # PhraseCut test size, the default B

Best of 3 wall times, on the same per_task.json: the table's intervals (subset "all", every metric), every subset's
intervals
(results/subsets.md), the paired comparison of two evaluations over every subset, and a baseline that loops over
resamples, selecting each subset's phrases and computing each metric per resample. The baseline draws the same
phrases (the same seeded stream), so both must give the same intervals. Last line: one JSON object, `ratio` =
baseline seconds / vectorised seconds for every subset (`ratio_table`: for the table's "all" only, where a
per-resample loop of 7 numpy reductions is about as fast: the weight matrix pays off with many subsets and pairs).
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mdetr_phrasecut.evaluation.metrics import THRESHOLDS, Per, reported, terms
from mdetr_phrasecut.evaluation.statistics import intervals, load_per_task, paired
from mdetr_phrasecut.evaluation.subsets import SUBSETS


def synthetic_per_task(n, seed):
    """per_task.json content: n phrases on n / 3 images, each in "all" and a random third of the other subsets."""
    rng = np.random.default_rng(seed)
    iou = rng.beta(2, 2, n)
    union = rng.integers(100, 100_000, n)
    inter = np.round(iou * union).astype(int)
    members = rng.random((n, len(SUBSETS))) < 1 / 3
    return {f"{k // 3}__{k}": {"image_id": k // 3, "mask_i": int(inter[k]), "mask_u": int(union[k]),
                               "mask_iou": float(inter[k] / union[k]), "box_iou": 0.5,
                               "subsets": ["all"] + [s for s, m in zip(SUBSETS[1:], members[k, 1:]) if m]}
            for k in range(n)}


def naive_intervals(per_phrase, resamples, level, seed, subsets=SUBSETS):
    """The straightforward bootstrap: per resample, index the phrases; per subset, select its phrases and compute
    each metric; then percentiles."""
    rng = np.random.default_rng(seed)
    column = {term: i for i, term in enumerate(terms(reported())[0])}
    iou, inter, union = (per_phrase.columns[:, column[Per(value)]] for value in ("mask_iou", "mask_i", "mask_u"))
    columns = [SUBSETS.index(s) for s in subsets]
    keys = ["miou", *(f"p{round(100 * t)}" for t in THRESHOLDS), "cum_iou"]
    samples = {(s, key): [] for s in subsets for key in keys}
    for _ in range(resamples):
        idx = rng.integers(len(iou), size=len(iou))
        for subset, column in zip(subsets, columns):
            take = idx[per_phrase.members[idx, column]]
            samples[subset, "miou"].append(iou[take].mean())
            for t in THRESHOLDS:
                samples[subset, f"p{round(100 * t)}"].append((iou[take] > t).mean())
            samples[subset, "cum_iou"].append(inter[take].sum() / union[take].sum())
    tail = 100 * (1 - level) / 2
    return {k: np.percentile(v, [tail, 100 - tail]) for k, v in samples.items()}


def timed(fn, *args, repeats=3, **kwargs):
    """(result, best wall seconds of `repeats` calls): the machine's other load counts least."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        seconds.append(time.perf_counter() - start)
    return result, min(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phrases", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"{name}.json" for name in "ab"]
        for seed, path in enumerate(paths):
            path.write_text(json.dumps(synthetic_per_task(args.phrases, seed)))
        (a, b), load_s = timed(lambda: [load_per_task(p) for p in paths], repeats=1)
    options = {"resamples": args.resamples, "level": 0.95, "seed": args.seed}
    table, table_s = timed(intervals, a, subsets=("all",), **options)
    every, subsets_s = timed(intervals, a, **options)
    _, paired_s = timed(paired, a, b, **options)
    naive_table, naive_table_s = timed(naive_intervals, a, args.resamples, 0.95, args.seed, ("all",))
    naive, naive_s = timed(naive_intervals, a, args.resamples, 0.95, args.seed)
    for (subset, key), bounds in {**naive, **naive_table}.items():
        stats = (table if (subset, key) in naive_table else every)[subset][key]
        assert np.allclose(bounds, [stats["lo"], stats["hi"]], rtol=1e-9, atol=1e-12), (subset, key)
    print(f"{args.phrases} phrases x {args.resamples} resamples, vectorised (per-resample loop): table intervals "
          f"{table_s:.3f} s ({naive_table_s:.3f} s), every subset {subsets_s:.3f} s ({naive_s:.3f} s); paired, "
          f"every subset {paired_s:.3f} s; loading two per_task.json {load_s:.2f} s")
    print(json.dumps({"phrases": args.phrases, "resamples": args.resamples, "table_intervals_s": round(table_s, 4),
                      "naive_table_s": round(naive_table_s, 4), "subset_intervals_s": round(subsets_s, 4),
                      "naive_subsets_s": round(naive_s, 4), "paired_subsets_s": round(paired_s, 4),
                      "load_s": round(load_s, 3), "ratio_table": round(naive_table_s / table_s, 2),
                      "ratio": round(naive_s / subsets_s, 2)}))


if __name__ == "__main__":
    main()
