"""Convert original PhraseCut annotations to MDETR's ``finetune_phrasecut_{split}.json`` (COCO style).

Field for field what MDETR's published pre-processing produced (see the reference README):

* records are grouped by ``image_id`` in order of first appearance, file order inside a group;
* one COCO *image* per phrase: ``file_name "{image_id}.jpg"``, ``height``/``width`` from
  ``image_data_split.json``, ``id`` (0, 1, ... per phrase), ``original_id`` (the PhraseCut image id),
  ``caption`` (the phrase), ``tokens_negative [[0, len(phrase)]]``, ``dataset_name "phrasecut"``, ``task_id``;
* one *annotation* per instance: ``area`` = w*h of the instance box, ``iscrowd 0``, ``category_id 1``,
  ``bbox`` = the instance box as stored, ``segmentation``, ``tokens_positive [[0, len(phrase)]]``,
  ``image_id`` (the phrase's COCO id), ``id`` (0, 1, ... over the split);
* ``{"info": [], "licenses": [], "images": ..., "annotations": ..., "categories":
  [{"supercategory": "object", "id": 1, "name": "object"}]}``.

Modes: ``compat`` reproduces the release's quirk -- an instance made of several polygons keeps only
its LAST polygon in ``segmentation``; ``full`` keeps every polygon of the instance (one flat list each).

Scaling: :func:`coco_json` keeps of each (validated) record only its ids, phrase, boxes and segmentations,
never the parsed split nor the COCO dict: its two long lists are generated as they are written, each image and
annotation encoded by one reused ``json.JSONEncoder`` (json.dump's defaults, its C encoder) and joined with that
encoder's separators, so the output is ``json.dump(coco, f)``'s bytes, i.e. the published files'.
:func:`convert_split_to_file` (the CLI) feeds it one record at a time from
:func:`~mdetr_phrasecut.data.phrasecut_format.iter_refer` (see ``benchmarks/convert.py``).

CLI: ``mdetr-phrasecut convert --root DIR --split S --mode compat|full --out FILE``
(``--split all`` converts the four splits into the directory ``--out``).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os

from ..arguments import IN_DIR, OUT_DIR, OUT_FILE, PathArg
from ..errors import InputError
from ..infra.io import atomic_path
from .phrasecut_format import PHRASECUT_SPLITS, iter_refer, load_image_split

MODES = ("compat", "full")
DATASET_NAME = "phrasecut"
CATEGORIES = [{"supercategory": "object", "id": 1, "name": "object"}]


def output_name(split) -> str:
    return f"finetune_phrasecut_{split}.json"


def _flatten(polygon):
    return tuple(itertools.chain.from_iterable(polygon))


def _segmentation(instance_polygons, mode):
    """Tuples (json writes them as lists), which the garbage collector stops tracking: kept for the whole
    split, lists would make every collection walk them."""
    if mode == "compat":
        return (_flatten(instance_polygons[-1]),)  # the release's quirk: last polygon wins
    return tuple(_flatten(p) for p in instance_polygons)


CHUNK = 1000  # records encoded per written chunk


def _encoded(value, encoder):
    """`value` as `encoder.encode` writes it, in chunks; a generator function stands for a JSON array of its
    items, each encoded by itself (so the C encoder writes every record, never the whole list in memory), joined
    by the encoder's own separators."""
    if not callable(value):
        yield encoder.encode(value)
        return
    yield "["
    items, separator = value(), ""
    while batch := list(itertools.islice(items, CHUNK)):
        yield separator + encoder.item_separator.join(map(encoder.encode, batch))
        separator = encoder.item_separator
    yield "]"


def _encoded_object(fields, encoder):
    """The JSON object of `fields` ({key: value or generator function}, see `_encoded`), in chunks."""
    yield "{"
    for i, (key, value) in enumerate(fields.items()):
        yield (encoder.item_separator if i else "") + encoder.encode(key) + encoder.key_separator
        yield from _encoded(value, encoder)
    yield "}"


def coco_json(records, image_info, mode="compat"):
    """The COCO file of validated PhraseCut records (see module doc) as ``(text chunks, num_images,
    num_annotations)``; ``records`` is consumed at once, the chunks are produced as they are read."""
    if mode not in MODES:
        raise InputError(f"unknown conversion mode {mode!r} (expected compat or full)")
    groups = {}
    for rec in records:
        instances = tuple((tuple(box), _segmentation(inst, mode))
                          for box, inst in zip(rec["instance_boxes"], rec["Polygons"]))
        groups.setdefault(rec["image_id"], []).append((rec["image_id"], rec["task_id"], rec["phrase"], instances))
    phrases = [p for group in groups.values() for p in group]
    num_annotations = sum(len(p[3]) for p in phrases)

    def images():
        for new_id, (image_id, task_id, phrase, _) in enumerate(phrases):
            info = image_info[int(image_id)]
            yield {"file_name": f"{image_id}.jpg", "height": info["height"], "width": info["width"], "id": new_id,
                   "original_id": image_id, "caption": phrase, "tokens_negative": [[0, len(phrase)]],
                   "dataset_name": DATASET_NAME, "task_id": task_id}

    def annotations():
        ann_ids = itertools.count()
        for new_id, (_, _, phrase, instances) in enumerate(phrases):
            for box, segmentation in instances:
                yield {"area": box[3] * box[2], "iscrowd": 0, "category_id": 1, "bbox": box,
                       "segmentation": segmentation, "tokens_positive": [[0, len(phrase)]], "image_id": new_id,
                       "id": next(ann_ids)}

    coco = {"info": [], "licenses": [], "images": images, "annotations": annotations, "categories": CATEGORIES}
    return _encoded_object(coco, json.JSONEncoder()), len(phrases), num_annotations


def split_coco_json(root, split, mode="compat"):
    """:func:`coco_json` of ``{root}/refer_{split}.json``, parsed and validated one record at a time."""
    image_info = load_image_split(root)
    return coco_json(iter_refer(root, split, image_info), image_info, mode)


def convert_split_to_file(root, split, out, mode="compat"):
    """Convert one split into ``out`` (atomic); returns (num_images, num_annotations)."""
    chunks, num_images, num_annotations = split_coco_json(root, split, mode)
    with atomic_path(out) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.writelines(chunks)
            f.flush()
            os.fsync(f.fileno())
    return num_images, num_annotations


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser):
    parser.add_argument("--root", required=True, type=IN_DIR,
                        help="PhraseCut root (refer_*.json, image_data_split.json)")
    parser.add_argument("--split", required=True, choices=[*PHRASECUT_SPLITS, "all"])
    parser.add_argument("--mode", default="compat", choices=MODES,
                        help="compat: the release's output (last polygon per instance); full: all polygons")
    parser.add_argument("--out", required=True, type=PathArg("out", "any"),
                        help="output file (a directory with --split all: finetune_phrasecut_{split}.json inside)")


def _typed_out(args):
    """--out is a file, or a folder with --split all."""
    try:
        return (OUT_DIR if args.split == "all" else OUT_FILE)(str(args.out))
    except argparse.ArgumentTypeError as e:
        raise InputError(f"convert: argument --out: {e}") from None


def main(args):
    args.out = _typed_out(args)
    splits = PHRASECUT_SPLITS if args.split == "all" else (args.split,)
    for split in splits:
        out = args.out / output_name(split) if args.split == "all" else args.out
        n_img, n_ann = convert_split_to_file(args.root, split, out, args.mode)
        print(f"{split}: {n_img} phrases, {n_ann} instances -> {out}")
    return 0
