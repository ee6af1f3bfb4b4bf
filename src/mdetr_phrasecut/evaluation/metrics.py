"""The metrics of a PhraseCut evaluation: the one registry every consumer loops over.

A metric is a ratio of two sums over the phrases of a subset, `sum numerator / sum denominator`, each a
`Per`-phrase value read from the phrase's scores (`phrasecut_metrics.score_phrase`, written to `per_task.json`):
M-IoU is sum IoU / phrases, Precision@t sum [IoU > t] / phrases, cum-IoU sum I / sum U. So one definition serves
`SubsetStats` (the running sums behind `metrics.json`, stored at the metric's `field`, the published evaluator's
layout), the bootstrap (the same sums, weighted per resample: statistics.py), the table, compare, the model card
and the plots. Adding a metric is one entry of METRICS.

`key` is the metric's one name (CSV columns, `--runs-json` published values, compare rows); `title` its heading;
`reported` metrics get intervals and are in the table's CSV, compare and the model card (the others are only in
`metrics.json`, as the published evaluator writes them); `published` ones are columns of MDETR's published table
(compared with its values), `shown` ones columns of the Markdown tables; `hub_type` the model card's metric type;
values are fractions, shown in % with `digits` decimals.
"""
from typing import NamedTuple

# The per-phrase values of score_phrase the metrics read, and what each must be in a per_task.json.
PHRASE_VALUES = {"mask_iou": "fraction", "mask_i": "count", "mask_u": "count", "box_iou": "fraction"}


class Per(NamedTuple):
    """A per-phrase value summed over a subset: the phrase's `value` (a key of PHRASE_VALUES), or 1 when it
    exceeds `above`; with no `value`, `constant` for every phrase (1: the phrases are counted)."""

    value: str = None
    above: float = None
    constant: int = 1

    def __call__(self, phrase):
        if self.value is None:
            return self.constant
        return phrase[self.value] if self.above is None else phrase[self.value] > self.above


PHRASE = Per()  # 1 per phrase: the denominator of a mean


class Metric(NamedTuple):
    key: str
    title: str
    field: tuple  # where metrics.json holds it, under each subset
    numerator: Per
    denominator: Per = PHRASE
    reported: bool = True
    published: bool = False
    shown: bool = False
    hub_type: str = None
    threshold: float = None  # Precision@t: t (the plots' x axis)
    of: str = "mask"  # what is scored: "mask" or "box"
    digits: int = 1

    def text(self, fraction):
        """`53.1`: the fraction in %."""
        return f"{100 * fraction:.{self.digits}f}"


def _precision(t, of="mask", **flags):
    """Precision@t: the share of phrases whose IoU exceeds t."""
    if of == "box":
        return Metric(f"box_p{round(100 * t)}", f"box Precision@{t}", ("pred_box_acc", str(t)), Per("box_iou", t),
                      reported=False, threshold=t, of="box")
    return Metric(f"p{round(100 * t)}", f"Precision@{t}", ("pred_mask_acc", str(t)), Per("mask_iou", t),
                  hub_type=f"precision_at_{round(100 * t)}", threshold=t, **flags)


THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
PUBLISHED_THRESHOLDS = (0.5, 0.7, 0.9)
# In the order of metrics.json (the published evaluator's): every consumer lists them in this order.
METRICS = (
    Metric("miou", "M-IoU", ("mean_mask_iou",), Per("mask_iou"), published=True, shown=True, hub_type="mean_iou"),
    Metric("cum_iou", "cum-IoU", ("cum_mask_iou",), Per("mask_i"), Per("mask_u"), shown=True, hub_type="cum_iou"),
    *(_precision(t, published=t in PUBLISHED_THRESHOLDS, shown=t in PUBLISHED_THRESHOLDS) for t in THRESHOLDS),
    Metric("box_miou", "box M-IoU", ("mean_box_iou",), Per("box_iou"), reported=False, of="box"),
    *(_precision(t, of="box") for t in THRESHOLDS),
    # the release's evaluator passes no `correct` flag: always 0
    Metric("box_acc", "box accuracy", ("box_acc",), Per(constant=0), reported=False, of="box"),
)


def registered():
    """Every metric, in order (read at call time, so a test can register one)."""
    return METRICS


def reported():
    """The metrics with intervals, as compare and the model card list them: the means over phrases (M-IoU, then
    Precision@t) first, then the ratios of sums over the subset (cum-IoU)."""
    return tuple(sorted((m for m in METRICS if m.reported), key=lambda m: m.denominator != PHRASE))


def published():
    """The columns of MDETR's published table, whose values a run's `published` gives."""
    return tuple(m for m in METRICS if m.published)


def table_order():
    """Reported metrics, the published ones first (the table's columns and CSV)."""
    return tuple(sorted((m for m in METRICS if m.reported), key=lambda m: not m.published))


def shown():
    """The columns of the Markdown tables (`table`, `compare --paired`), in table order."""
    return tuple(m for m in table_order() if m.shown)


def by_key(key):
    return next(m for m in METRICS if m.key == key)


def terms(metrics):
    """The distinct per-phrase values the sums of `metrics` need, the phrase count first, and for each metric the
    indexes of its numerator and denominator among them."""
    columns = tuple(dict.fromkeys((PHRASE,) + tuple(t for m in metrics for t in (m.numerator, m.denominator))))
    return columns, [(columns.index(m.numerator), columns.index(m.denominator)) for m in metrics]


def ratio(numerator, denominator):
    """A metric from its two sums; 0 when the denominator is (the evaluator's rule)."""
    return numerator / denominator if denominator else 0.0


def nest(values, metrics):
    """{field[0]: value or {field[1]: value}}: `values` (one per metric) laid out as in metrics.json."""
    out = {}
    for metric, value in zip(metrics, values):
        *groups, last = metric.field
        target = out
        for group in groups:
            target = target.setdefault(group, {})
        target[last] = value
    return out
