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

Scaling: :func:`convert_split_to_file` (used by the CLI) parses and validates the split one record at a
time and keeps each only as pre-encoded annotation JSON, then writes in chunks with the C JSON encoder: it
never holds the parsed split nor the converted dict, so PhraseCut's ~345k phrases convert in a fraction of
the memory of ``json.load`` + ``json.dump`` (see ``benchmarks/convert.py``). Output bytes are identical to
``json.dump(coco, f)`` (default separators), i.e. to the published files.

CLI: ``mdetr-phrasecut convert --root DIR --split S --mode compat|full --out FILE``
(``--split all`` converts the four splits into the directory ``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..arguments import IN_DIR, OUT_DIR, OUT_FILE, PathArg
from ..errors import InputError
from ..io import atomic_path
from .phrasecut_format import SPLITS, iter_refer, load_image_split, load_refer

MODES = ("compat", "full")
DATASET_NAME = "phrasecut"
CATEGORIES = [{"supercategory": "object", "id": 1, "name": "object"}]


def output_name(split) -> str:
    return f"finetune_phrasecut_{split}.json"


def _flatten(polygon):
    flat = []
    for xy in polygon:
        flat.extend(xy)
    return flat


def _segmentation(instance_polygons, mode):
    if mode == "compat":
        return [_flatten(instance_polygons[-1])]  # the release's quirk: last polygon wins
    return [_flatten(p) for p in instance_polygons]


def iter_coco(records, image_info, mode="compat"):
    """Yield ``(coco_image, [coco_annotations])`` per phrase, in the release's order."""
    if mode not in MODES:
        raise InputError(f"unknown conversion mode {mode!r} (expected compat or full)")
    by_image = {}
    for idx, rec in enumerate(records):
        by_image.setdefault(rec["image_id"], []).append(idx)
    next_img_id = 0
    next_ann_id = 0
    for image_id, indices in by_image.items():
        info = image_info.get(int(image_id))
        if info is None:
            raise InputError(f"image_data_split.json: image_id {image_id} (task_id {records[indices[0]]['task_id']}) is not listed")
        height, width = info["height"], info["width"]
        file_name = f"{image_id}.jpg"
        for idx in indices:
            rec = records[idx]
            phrase = rec["phrase"]
            span = [[0, len(phrase)]]
            img = {
                "file_name": file_name,
                "height": height,
                "width": width,
                "id": next_img_id,
                "original_id": image_id,
                "caption": phrase,
                "tokens_negative": span,
                "dataset_name": DATASET_NAME,
                "task_id": rec["task_id"],
            }
            boxes, polys = rec["instance_boxes"], rec["Polygons"]
            if len(boxes) != len(polys):
                raise InputError(f"task_id {rec['task_id']}: Polygons has {len(polys)} instances but instance_boxes has {len(boxes)}")
            anns = []
            for box, inst in zip(boxes, polys):
                anns.append({
                    "area": box[3] * box[2],
                    "iscrowd": 0,
                    "category_id": 1,
                    "bbox": box,
                    "segmentation": _segmentation(inst, mode),
                    "tokens_positive": [[0, len(phrase)]],
                    "image_id": next_img_id,
                    "id": next_ann_id,
                })
                next_ann_id += 1
            next_img_id += 1
            yield img, anns


def convert_records(records, image_info, mode="compat") -> dict:
    images, annotations = [], []
    for img, anns in iter_coco(records, image_info, mode):
        images.append(img)
        annotations.extend(anns)
    return {"info": [], "licenses": [], "images": images, "annotations": annotations,
            "categories": [dict(c) for c in CATEGORIES]}


def convert_split(root, split, mode="compat") -> dict:
    """Validated conversion of ``{root}/refer_{split}.json`` -> the COCO dict (see module doc)."""
    image_info = load_image_split(root)
    records = load_refer(root, split, image_info=image_info)
    return convert_records(records, image_info, mode)


# ----------------------------------------------------------------------------- writing
_CHUNK = 2048  # list items encoded per json.dumps call


def _write_list(f, items, enc):
    """Write ``[item, item, ...]`` exactly as json.dumps would, encoding chunks of items at once."""
    f.write("[")
    first = True
    buf = []
    for it in items:
        buf.append(it)
        if len(buf) >= _CHUNK:
            s = enc(buf)[1:-1]
            f.write(s if first else ", " + s)
            first = False
            buf.clear()
    if buf:
        s = enc(buf)[1:-1]
        f.write(s if first else ", " + s)
    f.write("]")


def _stream_coco(f, images, annotations):
    enc = json.JSONEncoder().encode  # default separators (", ", ": "), C-accelerated one-shot
    f.write('{"info": [], "licenses": [], "images": ')
    _write_list(f, images, enc)
    f.write(', "annotations": ')
    _write_list(f, annotations, enc)
    f.write(', "categories": ')
    f.write(enc(CATEGORIES))
    f.write("}")


def _atomic_text_writer(path, fn):
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            fn(f)
            f.flush()
            os.fsync(f.fileno())
    return path


def write_coco(coco, path):
    """Write a COCO dict atomically; bytes identical to ``json.dump(coco, f)`` for the standard keys."""
    keys = list(coco.keys())
    if keys != ["info", "licenses", "images", "annotations", "categories"] or coco["info"] or coco["licenses"] \
            or coco["categories"] != CATEGORIES:
        return _atomic_text_writer(path, lambda f: f.write(json.dumps(coco)))
    return _atomic_text_writer(
        path, lambda f: _stream_coco(f, coco["images"], coco["annotations"]))


def _compact(rec, mode, enc):
    """What the writer needs from one record: (image_id, task_id, phrase, [annotation JSON prefixes]).

    Each prefix is the annotation encoded without its trailing ``"image_id"``/``"id"`` (assigned at write
    time, after grouping), i.e. ``'{"area": ..., "tokens_positive": [[0, n]]'`` -- a few hundred bytes per
    instance instead of the parsed record's nested lists of floats."""
    phrase = rec["phrase"]
    if len(rec["instance_boxes"]) != len(rec["Polygons"]):
        raise InputError(f"task_id {rec['task_id']}: Polygons has {len(rec['Polygons'])} instances but "
                         f"instance_boxes has {len(rec['instance_boxes'])}")
    anns = []
    for box, inst in zip(rec["instance_boxes"], rec["Polygons"]):
        anns.append(enc({"area": box[3] * box[2], "iscrowd": 0, "category_id": 1, "bbox": box,
                         "segmentation": _segmentation(inst, mode),
                         "tokens_positive": [[0, len(phrase)]]})[:-1])
    return rec["image_id"], rec["task_id"], phrase, anns


def _write_compact(f, compact, image_info):
    """Write the COCO file from compact records, in the release's order and byte layout."""
    enc = json.JSONEncoder().encode
    by_image = {}
    for idx, c in enumerate(compact):
        by_image.setdefault(c[0], []).append(idx)
    order = [idx for indices in by_image.values() for idx in indices]
    for image_id in by_image:
        if int(image_id) not in image_info:
            raise InputError(f"image_data_split.json: image_id {image_id} "
                             f"(task_id {compact[by_image[image_id][0]][1]}) is not listed")

    def images():
        for new_id, idx in enumerate(order):
            image_id, task_id, phrase, _ = compact[idx]
            info = image_info[int(image_id)]
            yield {"file_name": f"{image_id}.jpg", "height": info["height"], "width": info["width"], "id": new_id,
                   "original_id": image_id, "caption": phrase, "tokens_negative": [[0, len(phrase)]],
                   "dataset_name": DATASET_NAME, "task_id": task_id}

    f.write('{"info": [], "licenses": [], "images": ')
    _write_list(f, images(), enc)
    f.write(', "annotations": [')
    ann_id, buf, first = 0, [], True
    for img_id, idx in enumerate(order):
        for prefix in compact[idx][3]:
            buf.append(f'{prefix}, "image_id": {img_id}, "id": {ann_id}}}')
            ann_id += 1
        if len(buf) >= _CHUNK:
            f.write(("" if first else ", ") + ", ".join(buf))
            first = False
            buf.clear()
    if buf:
        f.write(("" if first else ", ") + ", ".join(buf))
    f.write('], "categories": ')
    f.write(enc(CATEGORIES))
    f.write("}")
    return len(order), ann_id


def convert_split_to_file(root, split, out, mode="compat"):
    """Convert one split into ``out`` (atomic) without holding the parsed split in memory: records are
    parsed and validated one at a time (:func:`~mdetr_phrasecut.data.phrasecut_format.iter_refer`) and kept
    only in compact, pre-encoded form. Returns (num_images, num_annotations)."""
    if mode not in MODES:
        raise InputError(f"unknown conversion mode {mode!r} (expected compat or full)")
    image_info = load_image_split(root)
    enc = json.JSONEncoder().encode
    compact = [_compact(rec, mode, enc) for rec in iter_refer(root, split, image_info)]
    return _write_to(out, compact, image_info)


def convert_records_to_file(records, image_info, out, mode="compat"):
    """Same as :func:`convert_split_to_file` for records already in memory."""
    if mode not in MODES:
        raise InputError(f"unknown conversion mode {mode!r} (expected compat or full)")
    enc = json.JSONEncoder().encode
    return _write_to(out, [_compact(rec, mode, enc) for rec in records], image_info)


def _write_to(out, compact, image_info):
    counts = []
    _atomic_text_writer(out, lambda f: counts.extend(_write_compact(f, compact, image_info)))
    return tuple(counts)


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser):
    parser.add_argument("--root", required=True, type=IN_DIR, help="PhraseCut root (refer_*.json, image_data_split.json)")
    parser.add_argument("--split", required=True, choices=[*SPLITS, "all"])
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
    splits = SPLITS if args.split == "all" else (args.split,)
    for split in splits:
        out = args.out / output_name(split) if args.split == "all" else args.out
        n_img, n_ann = convert_split_to_file(args.root, split, out, args.mode)
        print(f"{split}: {n_img} phrases, {n_ann} instances -> {out}")
    return 0
