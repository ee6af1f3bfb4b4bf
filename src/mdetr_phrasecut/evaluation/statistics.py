"""Bootstrap confidence intervals and paired comparisons of PhraseCut evaluations, from `per_task.json`.

Every reported metric is a ratio of two per-phrase sums (metrics.py: M-IoU sum IoU / n; Precision@t sum
[IoU > t] / n; cum-IoU sum I / sum U), so a bootstrap resample is just a weight per phrase: how often it (or its
image, with all the image's phrases: they are correlated) was drawn. One seeded weight matrix times the per-phrase
columns of every subset gives every metric of every subset of all resamples at once, and the same weights applied
to two evaluations of the same phrases give the paired differences. scipy.stats.bootstrap resamples one statistic
at a time and has no cluster (image) resampling, so it serves as the reference of the tests instead.
Intervals are percentile intervals; the paired p-value is two-sided, from the differences centred on zero.
"""
import warnings
from typing import NamedTuple

import numpy as np

from ..config import schema_defaults
from ..data.phrasecut_format import load_json
from ..errors import InputError
from .metrics import PHRASE_VALUES, reported, terms
from .subsets import SUBSETS

UNITS = ("phrase", "image")
CHUNK = 250  # resamples per weight matrix (250 x 14,354 float64: 29 MB)


class PerPhrase(NamedTuple):
    """One evaluation's per-phrase results, in the file's order."""

    source: str
    task_ids: tuple
    image_ids: tuple
    columns: np.ndarray  # n x C: the per-phrase values of the reported metrics (metrics.terms), the count first
    members: np.ndarray  # n x len(SUBSETS) bool: subset membership


def _number(task, key, where, integer=False):
    value = task.get(key) if isinstance(task, dict) else None
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value < 0 or (not integer and value > 1):
        raise InputError(f"{where}.{key} must be a {'non-negative integer' if integer else 'number in [0, 1]'}, "
                         f"got {value!r}")
    return value


def load_per_task(path):
    """Read and check a per_task.json (layout of `evaluate`); InputError naming the file, the task and the field."""
    data = load_json(path)
    if not isinstance(data, dict) or not data:
        raise InputError(f"{path}: must be a non-empty object {{task_id: {{mask_i, mask_u, mask_iou, ...}}}}")
    index = {s: i for i, s in enumerate(SUBSETS)}
    columns, _ = terms(reported())
    read = [c.value for c in columns if c.value is not None]
    rows, image_ids, members = [], [], np.zeros((len(data), len(SUBSETS)), dtype=bool)
    for n, (task_id, task) in enumerate(data.items()):
        where = f"{path}: {task_id}"
        for key in dict.fromkeys(read):
            _number(task, key, where, integer=PHRASE_VALUES[key] == "count")
        rows.append([column(task) for column in columns])
        if "image_id" not in task:
            raise InputError(f"{where}.image_id is missing")
        image_ids.append(task["image_id"])
        subsets = task.get("subsets")
        if not isinstance(subsets, list) or not set(subsets) <= index.keys():
            raise InputError(f"{where}.subsets must be a list of PhraseCut subsets, got {subsets!r}")
        members[n, [index[s] for s in subsets]] = True
    return PerPhrase(str(path), tuple(data), tuple(image_ids), np.array(rows, dtype=np.float64), members)


def aligned(a, b):
    """`b` in `a`'s phrase order; InputError unless both evaluated the same phrases."""
    if set(a.task_ids) != set(b.task_ids):
        only = sorted(set(a.task_ids) ^ set(b.task_ids))
        raise InputError(f"{b.source}: task_ids differ from {a.source} ({len(only)} phrases in one only, "
                         f"e.g. {only[0]}); a paired comparison needs the same phrases")
    order = {t: i for i, t in enumerate(b.task_ids)}
    take = np.array([order[t] for t in a.task_ids])
    return b._replace(task_ids=a.task_ids, image_ids=a.image_ids, columns=b.columns[take], members=a.members)


def resample_weights(groups, resamples, seed, chunk=CHUNK):
    """Yield (b, n) arrays, b <= chunk, `resamples` rows in all: how often each phrase was drawn when the
    groups (`groups[i]`: phrase i's group, 0..G-1) are drawn G times with replacement. The array is reused:
    use it before taking the next."""
    rng = np.random.default_rng(seed)
    n_groups = int(groups.max()) + 1
    own = np.array_equal(groups, np.arange(len(groups)))  # every phrase its own group
    buffer = np.empty((min(chunk, resamples), len(groups)))  # one allocation: no page faults per chunk
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        draws = rng.integers(n_groups, size=(b, n_groups))
        draws += n_groups * np.arange(b)[:, None]
        counts = np.bincount(draws.ravel(), minlength=b * n_groups).reshape(b, n_groups)
        np.copyto(buffer[:b], counts if own else counts[:, groups])
        yield buffer[:b]


def _ratios(sums):
    """(..., S, C) sums -> (..., S, M) reported metrics; NaN where a subset has no phrase (or no union)."""
    _, index = terms(reported())
    num = sums[..., [n for n, _ in index]]
    den = sums[..., [d for _, d in index]]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def bootstrap(evaluations, resamples=1000, seed=0, unit="phrase", subsets=SUBSETS):
    """Metrics of aligned evaluations: (estimates E x S x M, resampled B x E x S x M), S = `subsets`, M = the
    reported metrics.

    All evaluations share the resamples (paired); unit "image" draws images with all their phrases.
    """
    if unit not in UNITS:
        raise InputError(f"--unit must be one of {', '.join(UNITS)}, got {unit!r}")
    members = evaluations[0].members[:, [SUBSETS.index(s) for s in subsets]].astype(np.float64)
    # n x (E * S * C): every evaluation's columns restricted to every subset
    stacked = np.concatenate([(e.columns[:, None, :] * members[:, :, None]).reshape(len(members), -1)
                              for e in evaluations], axis=1)
    shape = (len(evaluations), members.shape[1], evaluations[0].columns.shape[1])
    groups = (np.arange(len(members)) if unit == "phrase"
              else np.unique(np.asarray(evaluations[0].image_ids, dtype=str), return_inverse=True)[1])
    sums = np.concatenate([w @ stacked for w in resample_weights(groups, resamples, seed)])
    return _ratios(stacked.sum(0).reshape(shape)), _ratios(sums.reshape((-1,) + shape))


def percentile_interval(resampled, level):
    """Lower and upper percentile bounds over the first axis (NaN resamples left out)."""
    tail = 100 * (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: a subset no resample holds
        return np.nanpercentile(resampled, [tail, 100 - tail], axis=0)


def _present(per_phrase, subsets):
    """{subset: phrase count} of the `subsets` holding at least one phrase, in SUBSETS order."""
    counts = per_phrase.members.sum(0)
    return {s: int(counts[SUBSETS.index(s)]) for s in subsets if counts[SUBSETS.index(s)]}


def intervals(per_phrase, resamples=1000, level=0.95, seed=0, unit="phrase", subsets=SUBSETS):
    """{subset: {"count": n, metric: {"value", "lo", "hi"}}} (fractions), subsets with at least one phrase."""
    counts = _present(per_phrase, subsets)
    estimates, resampled = bootstrap([per_phrase], resamples, seed, unit, counts)
    lo, hi = percentile_interval(resampled, level)
    return {subset: {"count": count,
                     **{key: {"value": float(estimates[0, s, m]), "lo": float(lo[0, s, m]), "hi": float(hi[0, s, m])}
                        for m, key in enumerate(m.key for m in reported())}}
            for s, (subset, count) in enumerate(counts.items())}


def paired(a, b, resamples=1000, level=0.95, seed=0, unit="phrase"):
    """Evaluation `a` minus `b` on the same phrases: {subset: {"count": n, metric: {"a", "b", "diff", "lo", "hi",
    "p"}}}; lo/hi: paired-bootstrap interval of the difference, p: two-sided p-value of "no difference"."""
    counts = _present(a, SUBSETS)
    estimates, resampled = bootstrap([a, aligned(a, b)], resamples, seed, unit, counts)
    diff = estimates[0] - estimates[1]
    diffs = resampled[:, 0] - resampled[:, 1]
    lo, hi = percentile_interval(diffs, level)
    valid = ~np.isnan(diffs)
    with np.errstate(invalid="ignore"):
        extreme = (np.abs(diffs - diff) >= np.abs(diff) - 1e-12) & valid
    p = (1 + extreme.sum(0)) / (1 + valid.sum(0))
    return {subset: {"count": count,
                     **{key: {"a": float(estimates[0, s, m]), "b": float(estimates[1, s, m]),
                              "diff": float(diff[s, m]), "lo": float(lo[s, m]), "hi": float(hi[s, m]),
                              "p": float(p[s, m])}
                        for m, key in enumerate(m.key for m in reported())}}
            for s, (subset, count) in enumerate(counts.items())}


def verdict(published, lo, hi):
    """"reproduced" when the published value (in %, one decimal) lies in our interval as shown (rounded to 0.1)."""
    return "reproduced" if round(lo, 1) <= published <= round(hi, 1) else "differs"


def interval_text(value, lo, hi, digits=1):
    """`53.1 [52.4, 53.8]`."""
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def add_bootstrap_arguments(parser):
    """--resamples, --level, --seed, --unit (defaults: the config schema's `statistics` section)."""
    defaults = schema_defaults("statistics")
    parser.add_argument("--resamples", type=int, default=defaults["resamples"], help="bootstrap resamples")
    parser.add_argument("--level", type=float, default=defaults["level"], help="confidence level of the intervals")
    parser.add_argument("--seed", type=int, default=defaults["seed"], help="seed of the resampling")
    parser.add_argument("--unit", choices=UNITS, default=defaults["unit"],
                        help="what is resampled: phrases, or images with all their phrases")


def bootstrap_options(args):
    if args.resamples < 1 or not 0 < args.level < 1:
        raise InputError(f"--resamples must be >= 1 and --level in (0, 1), got {args.resamples}, {args.level}")
    return {"resamples": args.resamples, "level": args.level, "seed": args.seed, "unit": args.unit}
