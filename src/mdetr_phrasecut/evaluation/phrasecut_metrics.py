"""PhraseCut metrics, matching the published PhraseCut evaluator (as used by MDETR) to floating-point rounding.

Per phrase: the GT polygons of all instances are drawn with PIL `ImageDraw.polygon` (int-truncated points,
outline and fill) and OR-ed at the original image size; mask I, U and IoU = I / U (0 when I = 0).
Box IoU follows the evaluator's quirks: predicted and GT boxes are drawn as masks on a canvas spanning the
boxes (from the origin to their farthest corner), each box covering `[int(x), int(x + w - 1))` (one pixel short)
and likewise in y. Per subset: the metrics of metrics.py (mean mask IoU, cumulative IoU, Precision@t, the same
for boxes, `box_acc`), from running sums of their per-phrase values.
Phrases without a prediction are left out of the statistics, as the published evaluator does, and listed.

Phrases are scored in a process pool over chunks; only per-phrase scalars are kept, so memory stays flat
however large the split.
"""
import multiprocessing
import os
from collections import deque
from itertools import islice
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from ..data.phrasecut_format import load_image_split, load_name_att_rel_count, load_refer
from ..errors import InputError
from ..infra.lifetime import die_with_parent
from .metrics import nest, ratio, registered, terms
from .predictions import read_predictions
from .subsets import SUBSETS, PhraseSubsets

def rasterize_polygons(instance_polygons, width, height):
    """H x W bool mask of `Polygons` (per instance, a list of [[x, y], ...] polygons), OR-ed over all of them."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygons in instance_polygons:
        for polygon in polygons:
            if len(polygon) >= 2:  # the evaluator skips degenerate polygons
                draw.polygon([(int(x), int(y)) for x, y in polygon], outline=1, fill=1)
    return np.asarray(canvas).astype(bool)


def intersection_union(a, b):
    return np.count_nonzero(a & b), np.count_nonzero(a | b)


def iou(intersection, union):
    return intersection / union if intersection else 0.0


def _draw_boxes(boxes, width, height):
    mask = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in zip(boxes[:, 0], boxes[:, 1], boxes[:, 0] + boxes[:, 2] - 1, boxes[:, 1] + boxes[:, 3] - 1):
        mask[int(y1):int(y2), int(x1):int(x2)] = True  # Python slicing, negative starts included, as published
    return mask


def box_iou(pred_boxes, gt_boxes):
    """IoU of the union of predicted boxes with the union of GT boxes ([x, y, w, h]), evaluator-style."""
    pred = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    every = np.concatenate([pred, gt])
    if not len(every):
        return 0.0
    width = max(int(np.max(every[:, 0] + every[:, 2] - 1) + 1), 0)
    height = max(int(np.max(every[:, 1] + every[:, 3] - 1) + 1), 0)
    return iou(*intersection_union(_draw_boxes(pred, width, height), _draw_boxes(gt, width, height)))


def score_phrase(record, image, mask, boxes, subsets):
    """Per-phrase scalars: mask I / U / IoU, box IoU and subsets. `mask` (array-like) must be at the image's size."""
    gt = rasterize_polygons(record["Polygons"], image["width"], image["height"])
    mask_i, mask_u = intersection_union(gt, np.asarray(mask, dtype=bool))
    relative_size = np.count_nonzero(gt) / (image["width"] * image["height"])
    return {
        "task_id": record["task_id"],
        "image_id": record["image_id"],
        "mask_i": mask_i,
        "mask_u": mask_u,
        "mask_iou": iou(mask_i, mask_u),
        "box_iou": box_iou(boxes, record["instance_boxes"]),
        "subsets": subsets.of(record["phrase_structure"], len(record["instance_boxes"]), relative_size,
                              image["coco_id"]),
    }


class SubsetStats:
    """Running sums of every metric's numerator and denominator (metrics.py) for one subset: constant memory."""

    def __init__(self):
        self.registered = registered()
        self.columns, self.index = terms(self.registered)
        self.sums = [0] * len(self.columns)

    @property
    def count(self):
        return self.sums[0]  # the phrase count comes first

    def add(self, task):
        """Add a phrase's scores (score_phrase's)."""
        self.add_values([column(task) for column in self.columns])

    def add_values(self, values):
        """Add a phrase's values of `self.columns` (computed once for all its subsets)."""
        self.sums = [total + value for total, value in zip(self.sums, values)]

    def metrics(self):
        values = [ratio(self.sums[n], self.sums[d]) for n, d in self.index]
        return {"count": self.count, **nest(values, self.registered)}


class Evaluation(NamedTuple):
    metrics: dict  # subset -> metrics, subsets with at least one phrase, in SUBSETS order
    per_task: dict  # task_id -> per-phrase scalars (score_phrase without task_id), in prediction order
    missing: list  # task_ids of records without a prediction: left out of `metrics`


_subsets = None  # the PhraseSubsets of this process, set by _init_scorer


def _init_scorer(subsets):
    global _subsets
    _subsets = subsets


def _start_scorer(subsets, parent):
    """A pool's scoring process: dies with `parent`, the process that started the pool (it would otherwise wait
    for work forever)."""
    die_with_parent(parent)
    _init_scorer(subsets)


def _score_chunk(chunk):
    return [score_phrase(*job, _subsets) for job in chunk]


def _chunks(iterable, size):
    iterator = iter(iterable)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _scored(jobs, subsets, workers, chunk_size):
    """score_phrase over `jobs` in order; with workers > 1 in a pool, at most 2 chunks per worker in flight
    (Pool.imap would read its input eagerly, holding every prediction of the split in memory)."""
    if workers <= 1:
        _init_scorer(subsets)
        for chunk in _chunks(jobs, chunk_size):
            yield from _score_chunk(chunk)
        return
    with multiprocessing.Pool(workers, initializer=_start_scorer, initargs=(subsets, os.getpid())) as pool:
        pending = deque()
        for chunk in _chunks(jobs, chunk_size):
            pending.append(pool.apply_async(_score_chunk, (chunk,)))
            if len(pending) >= 2 * workers:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()


def evaluate_predictions(records, image_info, name_att_rel_count, predictions, workers=1, chunk_size=16,
                         source="predictions"):
    """Score `predictions` against a split.

    records: `refer_{split}.json` records; image_info: {image_id: image_data_split row};
    name_att_rel_count: the dataset's count file content; predictions: iterable of (task_id, mask H x W bool,
    boxes K x 4 [x, y, w, h]), e.g. `read_predictions(path, packed=True)`; source: its name in error messages.
    A prediction for an unknown or repeated task, or not at the image's original size, raises InputError.
    """
    by_task = {record["task_id"]: record for record in records}
    seen = set()

    def jobs():
        for task_id, mask, boxes in predictions:
            record = by_task.get(task_id)
            if record is None:
                raise InputError(f"{source}: task_id {task_id}: not a task of the evaluated split")
            if task_id in seen:
                raise InputError(f"{source}: task_id {task_id}: predicted twice")
            seen.add(task_id)
            image = image_info.get(record["image_id"])
            if image is None:
                raise InputError(f"image_data_split.json: task_id {task_id}: image_id {record['image_id']} not listed")
            if mask.shape != (image["height"], image["width"]):
                raise InputError(f"{source}: task_id {task_id}: mask shape {tuple(mask.shape)} differs from the "
                                 f"image size (H, W) = ({image['height']}, {image['width']})")
            yield record, image, mask, boxes

    stats = {subset: SubsetStats() for subset in SUBSETS}
    columns = stats["all"].columns
    per_task = {}
    for task in _scored(jobs(), PhraseSubsets(name_att_rel_count), workers, chunk_size):
        values = [column(task) for column in columns]
        for subset in task["subsets"]:
            stats[subset].add_values(values)
        per_task[task.pop("task_id")] = task
    metrics = {subset: s.metrics() for subset, s in stats.items() if s.count}
    missing = [record["task_id"] for record in records if record["task_id"] not in seen]
    return Evaluation(metrics, per_task, missing)


def evaluate_split(root, split, predictions_path, workers=1):
    """Evaluate a predictions .npz against `refer_{split}.json` of a PhraseCut dataset root."""
    image_info = load_image_split(root)
    return evaluate_predictions(load_refer(root, split, image_info), image_info, load_name_att_rel_count(root),
                                read_predictions(predictions_path, packed=True), workers=workers,
                                source=str(predictions_path))
