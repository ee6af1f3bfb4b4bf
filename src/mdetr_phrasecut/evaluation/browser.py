"""`mdetr-phrasecut browser`: a static page to look at one evaluation phrase by phrase (and, paired, at two).

Reads what `evaluate` wrote (`per_task.json`: IoU and subsets per phrase; `predictions.npz`: the masks) and the
split's `refer_{split}.json` (phrases, ground-truth polygons), and writes `--out-dir`:

- `index.html`: every phrase, its IoU and its PhraseCut subsets, as JSON inside the page, with inline JS and CSS
  (no server, no network: it opens from file://). Sort by IoU (worst first), filter by subset, IoU range and
  phrase text. Phrases with a thumbnail are cards; the rest are table rows with their numbers only.
  With `--paired-per-task` (another evaluation of the same phrases, e.g. the released checkpoint's, the pair
  `compare --paired` reads) a second view shows both side by side with the IoU difference, largest first.
- `thumbs/N.jpg` (and `N.paired.jpg`): the image with the ground-truth and predicted masks overlaid (the colours
  of `plots`), for a bounded set of phrases (`select`): the worst, the best, the most different (paired) and a
  seeded random sample.

The folder is built next to `--out-dir` and renamed into place: bad input leaves no half-written page.
"""
import html
import json
from importlib import resources
from pathlib import Path

import numpy as np

from ..arguments import IN_DIR, IN_FILE, NONNEGATIVE_INT, OUT_DIR, POSITIVE_INT, text
from ..config import schema_defaults
from ..data.phrasecut_format import PHRASECUT_SPLITS, load_image_split, load_refer
from ..errors import InputError
from ..infra.io import built_folder
from .plots import BOTH_COLOR, GT_COLOR, PRED_COLOR, iter_examples
from .statistics import aligned, load_per_task
from .subsets import SUBSETS

TEMPLATE = "browser.html"  # in the package's assets
SELECTIONS = ("worst", "best", "different", "random")  # the config's `browser` keys, in order of choice


def select(task_ids, ious, limits, seed, diffs=None):
    """{task_id: reason} of the phrases given a thumbnail: the `limits["worst"]` lowest IoUs, the `best` highest,
    the `different` largest |diffs| (paired only) and `random` more drawn with `seed` from the rest; each phrase
    once, under the first reason that picks it (ties by task id)."""
    chosen = {}
    order = sorted(range(len(task_ids)), key=lambda i: (ious[i], task_ids[i]))
    ranked = {
        "worst": order,
        "best": order[::-1],
        "different": [] if diffs is None else sorted(order, key=lambda i: (-abs(diffs[i]), task_ids[i])),
    }
    for reason in SELECTIONS[:3]:
        picks = [i for i in ranked[reason] if task_ids[i] not in chosen][:limits[reason]]
        chosen.update((task_ids[i], reason) for i in picks)
    rest = [t for t in task_ids if t not in chosen]
    rng = np.random.default_rng(seed)
    for i in sorted(rng.choice(len(rest), size=min(limits["random"], len(rest)), replace=False)):
        chosen[rest[i]] = "random"
    return chosen


def thumbnails(image, gt, preds, size):
    """The image scaled to `size` px on its longer side (never up), with the ground truth and each of `preds`
    overlaid: one PIL RGB image per prediction (the image and the ground truth are scaled once)."""
    from PIL import Image

    scale = min(1.0, size / max(image.size))
    shape = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    small = np.asarray(image.resize(shape, Image.BILINEAR), dtype=np.float32) / 255
    gt, *preds = (np.asarray(Image.fromarray(m).resize(shape, Image.NEAREST)) for m in (gt, *preds))
    out = []
    for pred in preds:
        tinted = small.copy()
        for region, color in ((pred & ~gt, PRED_COLOR), (gt & ~pred, GT_COLOR), (pred & gt, BOTH_COLOR)):
            tinted[region] = tinted[region] * (1 - color[3]) + np.array(color[:3], dtype=np.float32) * color[3]
        out.append(Image.fromarray(np.round(tinted * 255).astype(np.uint8)))
    return out


def _css(color):
    r, g, b, a = color
    return f"rgba({round(255 * r)}, {round(255 * g)}, {round(255 * b)}, {a})"


def page_data(evaluation, phrases, chosen, labels, title, paired=None):
    """The JSON the page renders: phrases as rows [task_id, phrase, image_id, IoU %, subset indices, thumbnail
    number or -1 (, other IoU %)]."""
    ious = evaluation.columns[:, 1]
    thumbs = {t: n for n, t in enumerate(chosen)}
    rows = []
    for i, task_id in enumerate(evaluation.task_ids):
        row = [task_id, phrases[task_id], evaluation.image_ids[i], round(100 * float(ious[i]), 2),
               np.flatnonzero(evaluation.members[i]).tolist(), thumbs.get(task_id, -1)]
        if paired is not None:
            row.append(round(100 * float(paired.columns[i, 1]), 2))
        rows.append(row)
    return {"title": title, "labels": labels, "subsets": list(SUBSETS), "phrases": rows,
            "selected": {reason: sum(r == reason for r in chosen.values()) for reason in SELECTIONS},
            "colors": {"pred": _css(PRED_COLOR), "gt": _css(GT_COLOR), "both": _css(BOTH_COLOR)}}


def render_page(data):
    """index.html: the template with the data inlined (`</` escaped, so no phrase can end the script)."""
    template = resources.files("mdetr_phrasecut").joinpath("assets", TEMPLATE).read_text(encoding="utf-8")
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return template.replace("{{TITLE}}", html.escape(data["title"])).replace("{{DATA}}", payload)


def write_browser(per_task, predictions, root, images_dir, split, out_dir, limits, seed=0, size=192,
                  paired_per_task=None, paired_predictions=None, labels=("ours", "released"), title=None):
    """Write the browser folder `out_dir` (see the module doc); returns the number of thumbnails per evaluation."""
    out_dir = Path(out_dir)
    evaluation = load_per_task(per_task)
    paired = aligned(evaluation, load_per_task(paired_per_task)) if paired_per_task else None
    records = {r["task_id"]: r for r in load_refer(root, split, load_image_split(root))}
    absent = next((t for t in evaluation.task_ids if t not in records), None)
    if absent is not None:
        raise InputError(f"{per_task}: task_id {absent}: not in refer_{split}.json of {root}")
    ious = evaluation.columns[:, 1]
    diffs = None if paired is None else ious - paired.columns[:, 1]
    chosen = select(evaluation.task_ids, ious, limits, seed, diffs)
    sources = [predictions] + ([paired_predictions] if paired is not None else [])
    labels = list(labels[:len(sources)])
    data = page_data(evaluation, {t: records[t]["phrase"] for t in evaluation.task_ids}, chosen, labels,
                     title or f"{labels[0]}: {split} phrases", paired)
    with built_folder(out_dir) as built:
        (built / "thumbs").mkdir()
        for n, (_, image, gt, preds) in enumerate(iter_examples(list(chosen), records, sources, images_dir)):
            for suffix, thumb in zip(("", ".paired"), thumbnails(image, gt, preds, size)):
                thumb.save(built / "thumbs" / f"{n}{suffix}.jpg", quality=85)
        (built / "index.html").write_text(render_page(data), encoding="utf-8")
    return len(chosen)


def add_arguments(parser):
    defaults = schema_defaults("browser")
    parser.add_argument("--per-task", required=True, type=IN_FILE, help="per_task.json of `evaluate`")
    parser.add_argument("--predictions", required=True, type=IN_FILE, help="predictions.npz beside it")
    parser.add_argument("--root", required=True, type=IN_DIR, help="PhraseCut root (refer_{split}.json, "
                        "image_data_split.json)")
    parser.add_argument("--images", required=True, type=IN_DIR, help="folder of {image_id}.jpg")
    parser.add_argument("--split", default="test", choices=PHRASECUT_SPLITS)
    parser.add_argument("--out-dir", required=True, type=OUT_DIR, help="e.g. results/runs/{run}/test/browser")
    parser.add_argument("--paired-per-task", type=IN_FILE,
                        help="another evaluation of the same phrases (e.g. the released checkpoint's): paired view")
    parser.add_argument("--paired-predictions", type=IN_FILE, help="its predictions.npz")
    parser.add_argument("--labels", nargs="+", type=text, default=["ours", "released"],
                        help="names of the evaluation and of the paired one")
    parser.add_argument("--title", type=text, help="the page's heading")
    for key in SELECTIONS:
        parser.add_argument(f"--{key}", type=NONNEGATIVE_INT, default=defaults[key],
                            help=f"thumbnails: the {key} phrases (default: the schema's browser.{key})")
    parser.add_argument("--seed", type=NONNEGATIVE_INT, default=defaults["seed"], help="of the random sample")
    parser.add_argument("--thumb-size", type=POSITIVE_INT, default=defaults["thumb_size"],
                        help="longer side of a thumbnail, px")


def main(args):
    if (args.paired_per_task is None) != (args.paired_predictions is None):
        raise InputError("--paired-per-task and --paired-predictions go together")
    limits = {key: getattr(args, key) for key in SELECTIONS}
    write_browser(args.per_task, args.predictions, args.root, args.images, args.split, args.out_dir, limits,
                  args.seed, args.thumb_size, args.paired_per_task, args.paired_predictions, args.labels, args.title)
