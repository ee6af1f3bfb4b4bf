"""`mdetr-phrasecut compare`: PhraseCut subsets of several evaluations side by side, or two evaluations paired.

Side by side (default): every subset's metrics with bootstrap intervals for each evaluation (`--out` Markdown
with M-IoU, `--csv` with every metric), and `--plot`: the subsets whose M-IoU departs most from the
evaluation's overall M-IoU, with their intervals. `--paired` (two evaluations of the same phrases, e.g. ours
and the released checkpoint's): per subset and metric the difference first minus second, its paired-bootstrap
interval and p-value, and the Benjamini-Hochberg q-value over all the subset x metric tests of the file;
`--plot`: the subsets with the largest M-IoU differences.
"""
import os
from pathlib import Path

import numpy as np

from ..arguments import IN_FILE, OUT_FILE, text
from ..errors import InputError
from ..infra.io import atomic_path, atomic_write_text
from . import metrics as registry
from .plots import plot_subset_differences, plot_subset_intervals
from .statistics import add_bootstrap_arguments, bootstrap_options, interval_text, intervals, load_per_task, paired


def side_by_side(per_phrase, labels, options):
    """Long-form rows (subset, label, metric, count, value, lo, hi), values in %."""
    rows = []
    for label, evaluation in zip(labels, per_phrase):
        for subset, stats in intervals(evaluation, **options).items():
            rows += [{"subset": subset, "label": label, "metric": m.key, "count": stats["count"],
                      **{k: 100 * v for k, v in stats[m.key].items()}} for m in registry.reported()]
    return rows


def paired_rows(a, b, options):
    """Long-form rows (subset, metric, count, a, b, diff, lo, hi in %; p, q)."""
    from scipy.stats import false_discovery_control

    rows = [{"subset": subset, "metric": m.key, "count": stats["count"],
             **{k: v if k == "p" else 100 * v for k, v in stats[m.key].items()}}
            for subset, stats in paired(a, b, **options).items() for m in registry.reported()]
    p = np.array([row["p"] for row in rows])
    q = np.full_like(p, np.nan)
    q[~np.isnan(p)] = false_discovery_control(p[~np.isnan(p)])
    for row, value in zip(rows, q):
        row["q"] = value
    return rows


def _relative(path, out):
    return Path(os.path.relpath(path, Path(out).parent)).as_posix()


def _options_text(options):
    return (f"{options['level']:.0%} percentile bootstrap intervals, {options['resamples']:,} resamples of the "
            f"test {options['unit']}s (seed {options['seed']})")


def render_side_by_side(rows, labels, sources, out, options):
    import pandas as pd

    miou = registry.by_key("miou")
    df = pd.DataFrame(rows).query(f"metric == '{miou.key}'")
    lines = [f"# PhraseCut subsets: {miou.title} per subset", "",
             f"Values in %: {miou.title} [{_options_text(options)}], phrases in brackets. Every metric: the CSV.", "",
             "| Subset | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    by = df.set_index(["subset", "label"])
    for subset in dict.fromkeys(df["subset"]):
        cells = []
        for label in labels:
            if (subset, label) not in by.index:
                cells.append("")
                continue
            r = by.loc[(subset, label)]
            cells.append(f"{interval_text(r['value'], r['lo'], r['hi'], miou.digits)} ({int(r['count'])})")
        lines.append(f"| {subset} | " + " | ".join(cells) + " |")
    lines += ["", "Sources: " + ", ".join(f"{label}: [{_relative(s, out)}]({_relative(s, out)})"
                                        for label, s in zip(labels, sources))]
    return "\n".join(lines) + "\n"


def _p_text(p, resamples):
    """`p=0.034`; at the floor of a bootstrap p-value, 1 / (resamples + 1): `p<=0.001`."""
    return f"p<={p:.3f}" if p * (resamples + 1) <= 1 + 1e-9 else f"p={p:.3f}"


def render_paired(rows, labels, sources, out, options):
    import pandas as pd

    df = pd.DataFrame(rows).set_index(["subset", "metric"])
    overall = df.loc["all"]
    columns = registry.shown()
    lines = [f"# Paired comparison: {labels[0]} minus {labels[1]}", "",
             f"Same phrases, same resamples: {labels[0]} ([{_relative(sources[0], out)}]"
             f"({_relative(sources[0], out)})) minus {labels[1]} ([{_relative(sources[1], out)}]"
             f"({_relative(sources[1], out)})), in % points, with the {_options_text(options)} of the difference "
             "and the two-sided p-value of no difference (q: Benjamini-Hochberg over every subset and metric of "
             "the CSV).", "",
             "Overall: " + "; ".join(f"{m.title} {overall.loc[m.key, 'a']:.{m.digits}f} vs "
                                     f"{overall.loc[m.key, 'b']:.{m.digits}f}" for m in columns), "",
             "| Subset | Phrases | " + " | ".join(m.title for m in columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for subset in dict.fromkeys(df.index.get_level_values(0)):
        cells = [f"{df.loc[(subset, m.key), 'diff']:+.{m.digits}f} [{df.loc[(subset, m.key), 'lo']:+.{m.digits}f}, "
                 f"{df.loc[(subset, m.key), 'hi']:+.{m.digits}f}] "
                 f"{_p_text(df.loc[(subset, m.key), 'p'], options['resamples'])}" for m in columns]
        lines.append(f"| {subset} | {int(df.loc[(subset, columns[0].key), 'count'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare(per_task_paths, labels, out, options, csv=None, plot=None, is_paired=False):
    """Write the comparison (Markdown `out`, CSV `csv`, plot `plot`), atomically; returns the long-form rows.
    options: the bootstrap's {resamples, level, seed, unit}."""
    import pandas as pd

    if len(labels) != len(per_task_paths):
        raise InputError(f"--labels: {len(labels)} labels for {len(per_task_paths)} --per-task files")
    if is_paired and len(per_task_paths) != 2:
        raise InputError(f"--paired compares two evaluations, got {len(per_task_paths)} --per-task files")
    sources = [Path(p) for p in per_task_paths]
    if any(Path(target).resolve() in {s.resolve() for s in sources} for target in filter(None, (out, csv, plot))):
        raise InputError(f"{out}: an output would overwrite an input")
    evaluations = [load_per_task(p) for p in sources]
    if is_paired:
        rows = paired_rows(*evaluations, options)
        text = render_paired(rows, labels, sources, out, options)
    else:
        rows = side_by_side(evaluations, labels, options)
        text = render_side_by_side(rows, labels, sources, out, options)
    if plot:
        (plot_subset_differences if is_paired else plot_subset_intervals)(rows, labels, plot)
    atomic_write_text(out, text)
    if csv:
        with atomic_path(csv, suffix=".csv") as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
    return rows


def add_arguments(parser):
    parser.add_argument("--per-task", nargs="+", required=True, type=IN_FILE,
                        help="per_task.json files written by `evaluate`")
    parser.add_argument("--labels", nargs="+", required=True, type=text, help="one name per --per-task file")
    parser.add_argument("--paired", action="store_true", help="first minus second, on the same phrases")
    parser.add_argument("--out", required=True, type=OUT_FILE, help="Markdown, e.g. results/subsets.md")
    parser.add_argument("--csv", type=OUT_FILE, help="every metric of every subset, long form")
    parser.add_argument("--plot", type=OUT_FILE, help="PNG: the subsets departing most from the overall M-IoU; with "
                        "--paired, the subsets with the largest differences")
    add_bootstrap_arguments(parser)


def main(args):
    compare(args.per_task, args.labels, args.out, bootstrap_options(args), args.csv, args.plot, args.paired)
