"""`mdetr-phrasecut plots`: figures of one run, drawn with matplotlib (Agg, no display needed).

Reads an evaluation's `metrics.json`, `per_task.json` and `predictions.npz` (written by `evaluate`) and the
training stages' `log.csv` (written by `train`; `--log STAGE=PATH`), and writes into `--out-dir` (names in
PLOT_FILES):

- precision_iou.png: Precision@t against the IoU threshold t (0.5..0.9), for masks and boxes;
- subset_miou.png: M-IoU per PhraseCut subset, sorted, with each subset's phrase count;
- training_curves.png: loss terms and learning rates against the step, for each logged training stage;
- examples.png: test phrases from best to worst mask IoU (evenly spaced in that order), each image with its
  phrase as title and the predicted and ground-truth masks overlaid in different colours.

Also the figures of `compare --plot` (`plot_subset_intervals`, `plot_subset_differences`): every figure of the
pipeline is drawn here.
"""
import math
import textwrap
from pathlib import Path

import numpy as np

from ..arguments import IN_DIR, IN_FILE, NAMED_IN_FILE, OUT_DIR, POSITIVE_INT, by_name
from ..data.phrasecut_format import PHRASECUT_SPLITS, load_image_split, load_json, load_refer
from ..errors import InputError
from ..infra.io import atomic_path, open_image
from . import metrics as registry
from .phrasecut_metrics import rasterize_polygons
from .predictions import read_predictions
from .table import field, fraction, load_metrics

PLOT_FILES = {
    "precision": "precision_iou.png",
    "subsets": "subset_miou.png",
    "training": "training_curves.png",
    "examples": "examples.png",
}
DPI = 100
PLOT_SUBSETS = 12  # subsets in compare's plots
# Overlay colours (RGBA): prediction only, ground truth only, both.
PRED_COLOR, GT_COLOR, BOTH_COLOR = (1.0, 0.1, 0.6, 0.55), (0.1, 0.5, 1.0, 0.55), (1.0, 0.9, 0.0, 0.6)


def _save(fig, path):
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def _figure(width, height):
    from matplotlib.figure import Figure  # a bare Figure renders with Agg, no pyplot state or display

    return Figure(figsize=(width, height), layout="constrained")


def plot_precision(metrics, path, source="metrics.json"):
    """Precision@t of the "all" subset against t, masks and boxes (the registry's Precision@t metrics)."""
    fig = _figure(5.5, 4)
    ax = fig.add_subplot()
    for of, marker in (("mask", "o"), ("box", "s")):
        precision = [m for m in registry.registered() if m.of == of and m.threshold is not None]
        values = [100 * fraction(metrics, ("subsets", "all") + m.field, source) for m in precision]
        ax.plot([m.threshold for m in precision], values, marker=marker, label=of)
    miou = registry.by_key("miou")
    value = fraction(metrics, ("subsets", "all") + miou.field, source)
    ax.set(xlabel="IoU threshold t", ylabel="Precision@t (% of phrases with IoU > t)", ylim=(-2, 102),
           xticks=[m.threshold for m in precision],
           title=f"{metrics['dataset']} ({metrics['split']}): {miou.title} {miou.text(value)}")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def plot_subsets(metrics, path, source="metrics.json"):
    """Horizontal bars of M-IoU per subset, best first, labelled with the subset's phrase count."""
    subsets = field(metrics, ("subsets",), source)
    if not isinstance(subsets, dict) or not subsets:
        raise InputError(f"{source}: subsets must be a non-empty object")
    miou = registry.by_key("miou")
    rows = []
    for name in subsets:
        count = field(subsets, (name, "count"), f"{source}: subsets")
        rows.append((100 * fraction(subsets, (name,) + miou.field, f"{source}: subsets"), name, count))
    rows.sort(key=lambda r: (-r[0], r[1]))
    fig = _figure(7, 1.2 + 0.24 * len(rows))
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    colors = ["tab:orange" if name == "all" else "tab:blue" for _, name, _ in rows]
    ax.barh(y, [r[0] for r in rows], color=colors)
    ax.set_yticks(y, [f"{name} (n={count})" for _, name, count in rows], fontsize=8)
    ax.invert_yaxis()
    for i, (value, _, _) in enumerate(rows):
        ax.text(value + 0.5, i, f"{value:.1f}", va="center", fontsize=7)
    ax.set(xlabel="M-IoU (%)", xlim=(0, 105), title=f"M-IoU per subset: {metrics['dataset']} ({metrics['split']})")
    _save(fig, path)


def read_log(path):
    """A training stage's per-step log.csv as a DataFrame (needs a `step` column and at least one row)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: training log not found")
    try:
        log = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
        raise InputError(f"{path}: not a readable CSV ({' '.join(str(e).split())})") from None
    if "step" not in log.columns or log.empty:
        raise InputError(f"{path}: step is missing or the log has no rows")
    return log


def is_loss_column(column: str) -> bool:
    """The total and the last decoder layer's terms (auxiliary terms end in _<layer>)."""
    return column == "loss" or (column.startswith("loss_") and not column.rsplit("_", 1)[-1].isdigit())


def plot_curves(step_csv: Path, val_csv: Path, out_png: Path, title: str = ""):
    """A training stage's curves.png (`train` draws it as it goes): training loss terms per step; validation
    loss terms and IoUs per epoch."""
    import pandas as pd

    steps = pd.read_csv(step_csv) if step_csv.exists() else pd.DataFrame()
    val = pd.read_csv(val_csv) if val_csv.exists() else pd.DataFrame()
    fig = _figure(15, 4)
    axes = fig.subplots(1, 3)
    panels = [
        (axes[0], steps, "step", [c for c in steps.columns if is_loss_column(c)], "training loss (weighted)"),
        (axes[1], val, "epoch", [c for c in val.columns if is_loss_column(c)], "validation loss (weighted)"),
        (axes[2], val, "epoch", [c for c in val.columns if c.endswith("_iou")], "validation IoU"),
    ]
    for ax, frame, x, columns, name in panels:
        for col in columns:
            ax.plot(frame[x], frame[col], label=col, lw=2 if col == "loss" else 1,
                    marker="o" if x == "epoch" else None)
        ax.set(xlabel=x, title=f"{title} {name}".strip())
        if columns:
            ax.legend(fontsize=7)
    _save(fig, out_png)


def plot_training(logs, path):
    """One column per stage: weighted loss terms (rolling mean) above, learning rates per group below."""
    fig = _figure(5.5 * len(logs), 7)
    axes = fig.subplots(2, len(logs), squeeze=False)
    for col, (stage, log) in enumerate(logs.items()):
        ax_loss, ax_lr = axes[:, col]
        window = max(1, len(log) // 200)
        losses = [c for c in log.columns if is_loss_column(c)]
        for name in losses:
            ax_loss.plot(log["step"], log[name].rolling(window, min_periods=1).mean(), label=name,
                         lw=2 if name == "loss" else 1)
        if losses and (log[losses] > 0).all().all():
            ax_loss.set_yscale("log")
        smoothing = f", rolling mean of {window} steps" if window > 1 else ""
        ax_loss.set(title=f"{stage}: weighted losses{smoothing}", xlabel="step", ylabel="loss")
        for name in [c for c in log.columns if c.startswith("lr")]:
            ax_lr.plot(log["step"], log[name], label=name)
        ax_lr.set(title=f"{stage}: learning rate per parameter group", xlabel="step", ylabel="lr")
        for ax in (ax_loss, ax_lr):
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=7)
    _save(fig, path)


def _largest(df, gap, k):
    """The k subsets other than "all" with the largest `gap` (a Series over df's rows), largest last."""
    return gap[df["subset"] != "all"].groupby(df["subset"]).max().sort_values().index[-k:]


def _interval_plot(series, subsets, lines, xlabel, title, path):
    """One row per subset, per series (label, frame indexed by subset with value/lo/hi) a point with its interval;
    `lines`: {x: style} vertical reference lines."""
    fig = _figure(7, 1.2 + 0.4 * max(len(subsets), 1))
    ax = fig.add_subplot()
    offsets = np.linspace(-0.2, 0.2, len(series)) if len(series) > 1 else [0.0]
    for (label, d), offset in zip(series, offsets):
        d = d.reindex(subsets)
        ax.errorbar(d["value"], np.arange(len(subsets)) + offset, xerr=[d["value"] - d["lo"], d["hi"] - d["value"]],
                    fmt="o", capsize=3, label=label)
    for x, style in lines.items():
        ax.axvline(x, linewidth=1, **style)
    ax.set_yticks(np.arange(len(subsets)), subsets)
    ax.set(xlabel=xlabel, title=title)
    ax.legend(fontsize="small")
    _save(fig, path)


def plot_subset_intervals(rows, labels, path, k=PLOT_SUBSETS):
    """`compare --plot`: the k subsets whose M-IoU departs most from the overall M-IoU (largest over the
    evaluations; `rows`: compare's long-form rows), with intervals."""
    import pandas as pd

    df = pd.DataFrame(rows).query("metric == 'miou'")
    overall = df[df["subset"] == "all"].set_index("label")["value"]
    subsets = _largest(df, (df["value"] - df["label"].map(overall)).abs(), k)
    series = [(label, df[df["label"] == label].set_index("subset")) for label in labels]
    lines = {overall[label]: {"color": f"C{i}", "linestyle": ":"} for i, label in enumerate(labels)}
    _interval_plot(series, subsets, lines, "M-IoU (%) with interval; dotted: overall",
                   "Subsets departing most from the overall M-IoU", path)


def plot_subset_differences(rows, labels, path, k=PLOT_SUBSETS):
    """`compare --paired --plot`: the k subsets with the largest paired M-IoU difference, with its interval."""
    import pandas as pd

    df = pd.DataFrame(rows).query("metric == 'miou'").rename(columns={"diff": "value"})
    overall = df.loc[df["subset"] == "all", "value"].iloc[0]
    _interval_plot([(f"{labels[0]} - {labels[1]}", df.set_index("subset"))], _largest(df, df["value"].abs(), k),
                   {0.0: {"color": "grey"}, overall: {"color": "C0", "linestyle": ":"}},
                   "M-IoU difference (% points) with paired interval; dotted: overall",
                   f"Largest differences, {labels[0]} minus {labels[1]}", path)


def pick_examples(per_task, num, source="per_task.json"):
    """`num` task ids spread evenly from best to worst mask IoU (ties by task id): deterministic."""
    if not isinstance(per_task, dict) or not per_task:
        raise InputError(f"{source}: must be a non-empty object {{task_id: scores}}")
    ranked = sorted(per_task, key=lambda t: (-fraction(per_task, (t, "mask_iou"), source), t))
    picks = np.linspace(0, len(ranked) - 1, min(num, len(ranked))).round().astype(int)
    return [ranked[i] for i in dict.fromkeys(picks.tolist())]


def _overlay(pred, gt):
    rgba = np.zeros(pred.shape + (4,))
    rgba[pred & ~gt] = PRED_COLOR
    rgba[gt & ~pred] = GT_COLOR
    rgba[pred & gt] = BOTH_COLOR
    return rgba


def plot_examples(examples, path):
    """Grid of (image, phrase, predicted mask, GT mask, IoU) tuples with both masks overlaid."""
    from matplotlib.patches import Patch

    cols = min(4, len(examples))
    rows = math.ceil(len(examples) / cols)
    fig = _figure(4 * cols, 4 * rows + 0.5)
    for i, (image, phrase, pred, gt, iou) in enumerate(examples):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(image)
        ax.imshow(_overlay(pred, gt))
        ax.set_title(textwrap.fill(f'"{phrase}"', 40) + f"\nIoU {100 * iou:.1f}", fontsize=9)
        ax.axis("off")
    legend = [Patch(color=PRED_COLOR, label="prediction only"), Patch(color=GT_COLOR, label="ground truth only"),
              Patch(color=BOTH_COLOR, label="both")]
    fig.legend(handles=legend, loc="outside lower center", ncols=3)
    _save(fig, path)


def iter_examples(task_ids, records, predictions_paths, images_dir):
    """(record, image, ground-truth mask, [predicted mask of each predictions file]) of each task id, in the given
    order, one at a time (masks stay packed until then); records: {task_id: refer record}."""
    wanted = set(task_ids)
    masks = [{t: m for t, m, _ in read_predictions(path, packed=True) if t in wanted} for path in predictions_paths]
    for task_id in task_ids:
        if task_id not in records:
            raise InputError(f"refer file: task_id {task_id}: not in the split (listed in per_task.json)")
        missing = next((path for path, found in zip(predictions_paths, masks) if task_id not in found), None)
        if missing is not None:
            raise InputError(f"{missing}: task_id {task_id}: no prediction (listed in per_task.json)")
        record = records[task_id]
        image_file = Path(images_dir) / f"{record['image_id']}.jpg"
        if not image_file.is_file():
            raise InputError(f"{image_file}: task_id {task_id}: image file is missing")
        image = open_image(image_file, f"task_id {task_id}: image")
        preds = [np.asarray(found[task_id]) for found in masks]
        for path, pred in zip(predictions_paths, preds):
            if pred.shape != (image.height, image.width):
                raise InputError(f"{path}: task_id {task_id}: mask shape {pred.shape} differs from the image size "
                                 f"(H, W) = {(image.height, image.width)}")
        yield record, image, rasterize_polygons(record["Polygons"], image.width, image.height), preds


def load_examples(task_ids, per_task, predictions_path, root, images_dir, split):
    """(image, phrase, predicted mask, ground-truth mask, IoU) of each task id, in the given order."""
    image_info = load_image_split(root)
    wanted = set(task_ids)
    records = {r["task_id"]: r for r in load_refer(root, split, image_info) if r["task_id"] in wanted}
    return [(np.asarray(image), record["phrase"], pred, gt, per_task[record["task_id"]]["mask_iou"])
            for record, image, gt, (pred,) in iter_examples(task_ids, records, [predictions_path], images_dir)]


def write_plots(metrics_path, per_task_path, predictions_path, logs, root, images_dir, out_dir, split="test",
                num_examples=12):
    """Every figure of PLOT_FILES for one run, from its evaluation's files (`evaluate`) and `logs` ({stage: its
    log.csv}, the training curves); returns {kind: path}."""
    metrics = load_metrics(metrics_path)
    logs = {stage: read_log(path) for stage, path in logs.items()}
    per_task = load_json(per_task_path)
    task_ids = pick_examples(per_task, num_examples, per_task_path)
    examples = load_examples(task_ids, per_task, predictions_path, root, images_dir, split)
    paths = {kind: Path(out_dir) / name for kind, name in PLOT_FILES.items()}  # inputs all read: now draw
    plot_precision(metrics, paths["precision"], metrics_path)
    plot_subsets(metrics, paths["subsets"], metrics_path)
    plot_training(logs, paths["training"])
    plot_examples(examples, paths["examples"])
    return paths


def add_arguments(parser):
    parser.add_argument("--metrics", required=True, type=IN_FILE, help="metrics.json of `evaluate`")
    parser.add_argument("--per-task", required=True, type=IN_FILE, help="per_task.json beside it")
    parser.add_argument("--predictions", required=True, type=IN_FILE, help="predictions.npz beside it")
    parser.add_argument("--log", nargs="+", required=True, type=NAMED_IN_FILE,
                        help="STAGE=results/runs/{run}/{stage}/log.csv for each logged training stage, in order")
    parser.add_argument("--root", required=True, type=IN_DIR,
                        help="PhraseCut root (refer_{split}.json, image_data_split.json)")
    parser.add_argument("--images", required=True, type=IN_DIR, help="folder of {image_id}.jpg")
    parser.add_argument("--split", default="test", choices=PHRASECUT_SPLITS)
    parser.add_argument("--out-dir", required=True, type=OUT_DIR, help="e.g. results/runs/{run}/plots")
    parser.add_argument("--num-examples", type=POSITIVE_INT, default=12, help="phrases in examples.png")


def main(args):
    write_plots(args.metrics, args.per_task, args.predictions, by_name(args.log, "--log"), args.root, args.images,
                args.out_dir, args.split, args.num_examples)
