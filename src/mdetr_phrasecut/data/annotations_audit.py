"""Compare MDETR's pre-processed `finetune_phrasecut_{split}.json` with our conversion of PhraseCut.

Images are matched by `task_id`, annotations by (task_id, position among that image's annotations in
file order). Every field is compared by value except the file-local numbering (`id`, `image_id`), which
the matching replaces; other top-level entries (`categories`, `info`, `licenses`) are compared whole.
"""
import json
from collections import Counter
from pathlib import Path

from ..errors import InputError
from ..arguments import IN_DIR, IN_FILE, OUT_FILE
from .phrasecut_format import PHRASECUT_SPLITS
from ..infra.io import atomic_write_json

NUMBERING = {"images": {"id"}, "annotations": {"id", "image_id"}}
_ABSENT = object()


def audit_annotations(mdetr_json_path, ours: dict, max_examples=20) -> dict:
    """Report how MDETR's annotation file differs from `ours` (a COCO dict, e.g. our conversion's file parsed).

    The report holds image / annotation counts (each side, matched, only on one side), the number of
    differences per field (`image.caption`, `annotation.bbox`, ...; `image` / `annotation` for a record
    on one side only), how many task_ids differ, the first `max_examples` differences with task_id,
    index, field and both values (a side lacking the field or record has no value), and `identical`.
    """
    mdetr_json_path = Path(mdetr_json_path)
    try:
        theirs = json.loads(mdetr_json_path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{mdetr_json_path}: cannot read MDETR annotations: {e}") from e
    ours = json.loads(json.dumps(ours))  # same value types as a file (tuples -> lists)
    sides = {"mdetr": _index(theirs, str(mdetr_json_path)), "ours": _index(ours, "our conversion")}

    differences, examples, tasks = Counter(), [], set()

    def record(field, task_id, index, values):
        differences[field] += 1
        if task_id is not None:
            tasks.add(task_id)
        if len(examples) < max_examples:
            examples.append({"task_id": task_id, "index": index, "field": field, **values})

    for key in sorted((theirs.keys() | ours.keys()) - NUMBERING.keys()):
        if theirs.get(key, _ABSENT) != ours.get(key, _ABSENT):
            record(key, None, None, _values(theirs, ours, key))

    counts = {}
    for kind, singular in (("images", "image"), ("annotations", "annotation")):
        a, b = sides["mdetr"][kind], sides["ours"][kind]
        counts[kind] = {"mdetr": len(a), "ours": len(b), "matched": len(a.keys() & b.keys()),
                        "only_mdetr": len(a.keys() - b.keys()), "only_ours": len(b.keys() - a.keys())}
        for key in list(a) + [k for k in b if k not in a]:
            task_id, index = key if kind == "annotations" else (key, None)
            if key not in b or key not in a:
                record(singular, task_id, index, _values(a, b, key))
                continue
            for field in sorted(a[key].keys() | b[key].keys()):
                if a[key].get(field, _ABSENT) != b[key].get(field, _ABSENT):
                    record(f"{singular}.{field}", task_id, index, _values(a[key], b[key], field))

    return {"mdetr_file": str(mdetr_json_path), **counts, "field_differences": dict(differences),
            "tasks_differing": len(tasks), "examples": examples, "identical": not differences}


def _values(a, b, field):
    return {side: rec[field] for side, rec in (("mdetr", a), ("ours", b)) if field in rec}


def _index(coco, source):
    """{task_id: image fields} and {(task_id, index): annotation fields}, numbering fields dropped."""
    for key in NUMBERING:
        if not isinstance(coco.get(key), list):
            raise InputError(f"{source}: field '{key}' missing or not a list")
    images, task_of = {}, {}
    for image in coco["images"]:
        task_id = image.get("task_id")
        if task_id is None:
            raise InputError(f"{source}: image id {image.get('id')}: field 'task_id' missing")
        if task_id in images:
            raise InputError(f"{source}: task_id {task_id}: duplicate image")
        task_of[image.get("id")] = task_id
        images[task_id] = {k: v for k, v in image.items() if k not in NUMBERING["images"]}
    annotations, seen = {}, Counter()
    for ann in coco["annotations"]:
        task_id = task_of.get(ann.get("image_id"))
        if task_id is None:
            raise InputError(f"{source}: annotation id {ann.get('id')}: field 'image_id' "
                             f"{ann.get('image_id')!r} names no image")
        annotations[task_id, seen[task_id]] = {k: v for k, v in ann.items() if k not in NUMBERING["annotations"]}
        seen[task_id] += 1
    return {"images": images, "annotations": annotations}


def _summary(report) -> str:
    fields = ", ".join(f"{f} x{n}" for f, n in report["field_differences"].items())
    text = f"{report['mdetr_file']}: differs from our conversion ({fields})"
    if report["examples"]:
        first = report["examples"][0]
        where = f"task_id {first['task_id']}" if first["task_id"] is not None else "top level"
        text += f"; first at {where} field '{first['field']}'"
    return text


def add_arguments(parser):
    parser.add_argument("--mdetr", required=True, type=IN_FILE, help="MDETR's finetune_phrasecut_{split}.json")
    parser.add_argument("--root", required=True, type=IN_DIR, help="original PhraseCut annotations folder")
    parser.add_argument("--split", required=True, choices=PHRASECUT_SPLITS)
    parser.add_argument("--out", required=True, type=OUT_FILE, help="report JSON to write")
    parser.add_argument("--strict", action="store_true", help="fail (exit 2) when anything differs")


def main(args):
    from .convert import split_coco_json

    chunks, _, _ = split_coco_json(args.root, args.split, mode="compat")
    report = audit_annotations(args.mdetr, json.loads("".join(chunks)))
    report.update(root=str(args.root), split=args.split)
    atomic_write_json(args.out, report, indent=2)
    print(f"{args.mdetr}: {'identical to' if report['identical'] else 'DIFFERS from'} our conversion; "
          f"report in {args.out}")
    if args.strict and not report["identical"]:
        raise InputError(f"{_summary(report)}; see {args.out}")
