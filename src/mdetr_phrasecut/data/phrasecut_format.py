"""Reader for the ORIGINAL PhraseCut (VGPhraseCut_v0) on-disk format, with validation.

Layout of a dataset root::

    image_data_split.json        [{image_id, split, width, height, coco_id, flickr_id, url}, ...]
    refer_{train,val,miniv,test}.json
                                 [{task_id, image_id, ann_ids, instance_boxes, Polygons, phrase,
                                   phrase_structure: {name, attributes, attribute_ids,
                                   relation_descriptions, relation_ids, type}}, ...]
    name_att_rel_count.json      {"cat": [[name, count], ...], "att": [...], "rel": [...]}
    images/{image_id}.jpg

Conventions (from the PhraseCut API): task ids are ``"{image_id}__{suffix}"``; ``instance_boxes`` are
``[x, y, w, h]`` with inclusive extents (w = x2 - x1 + 1); ``Polygons[instance][polygon]`` is a list of
``[x, y]`` points (float or int) in original-image pixels; an instance may have several polygons.

Every problem raises :class:`~mdetr_phrasecut.errors.InputError` with one line naming the file, the
record (task_id) and the field, e.g.
``refer_test.json: task_id 100097__0: Polygons[1][0] has 2 points (need >= 3)``.
Nothing here writes to disk.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from ..errors import InputError
from ..infra.io import note_input

PHRASECUT_SPLITS = ("train", "val", "miniv", "test")
PHRASE_TYPES = ("name", "attribute", "relation", "verbose")
IMAGE_SPLIT_FILE = "image_data_split.json"
COUNT_FILE = "name_att_rel_count.json"

# A phrase's UTF-8 bytes bound its byte-level BPE tokens: 254 bytes fit the model's 256 text tokens
# (model.positive_map.MAX_TEXT_LEN) with <s> and </s>. Longer phrases are refused, never truncated.
MAX_PHRASE_BYTES = 254

REFER_KEYS = ("task_id", "image_id", "ann_ids", "instance_boxes", "Polygons", "phrase", "phrase_structure")
STRUCTURE_KEYS = ("name", "attributes", "attribute_ids", "relation_descriptions", "relation_ids", "type")
IMAGE_KEYS = ("image_id", "split", "width", "height", "coco_id", "flickr_id", "url")

__all__ = [
    "PHRASECUT_SPLITS",
    "PHRASE_TYPES",
    "refer_path",
    "image_path",
    "load_json",
    "load_refer",
    "iter_refer",
    "load_image_split",
    "load_name_att_rel_count",
    "validate_record",
]


# ----------------------------------------------------------------------------- helpers
def refer_path(root, split) -> Path:
    if split not in PHRASECUT_SPLITS:
        raise InputError(f"unknown split {split!r} (expected one of {', '.join(PHRASECUT_SPLITS)})")
    return Path(root) / f"refer_{split}.json"


def image_path(root, image_id) -> Path:
    """``{root}/images/{image_id}.jpg``."""
    return Path(root) / "images" / f"{int(image_id)}.jpg"


def load_json(path):
    """json.load with one-line InputErrors for a missing file or invalid JSON (file, line, column)."""
    path = Path(path)
    note_input(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise InputError(f"{path.name}: invalid JSON at line {e.lineno} col {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path.name}: invalid JSON: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


class _Ctx:
    """Builds the one-line error prefix ``file: task_id X: field``."""

    __slots__ = ("fname", "who")

    def __init__(self, fname, who):
        self.fname = fname
        self.who = who

    def fail(self, field, problem):
        raise InputError(f"{self.fname}: {self.who}: {field} {problem}")


def _describe(v) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _outside(x0, y0, x1, y1, size) -> bool:
    """Whether the extent [x0, x1] x [y0, y1] misses the image (width, height) entirely."""
    return x1 < 0 or y1 < 0 or x0 >= size[0] or y0 >= size[1]


# ----------------------------------------------------------------------------- refer_*.json
def _check_point(ctx, field, pt):
    if not isinstance(pt, (list, tuple)) or len(pt) != 2:
        ctx.fail(field, f"is not an [x, y] point: {_describe(pt)}")
    x, y = pt
    if not (_is_num(x) and _is_num(y)):
        ctx.fail(field, f"has a non-finite or non-numeric coordinate: {_describe(pt)}")


def validate_record(rec, fname="refer.json", index=0, image_info=None):
    """Validate one refer record in place; raise InputError (file, task_id, field) on the first problem."""
    if not isinstance(rec, dict):
        raise InputError(f"{fname}: record [{index}]: is not an object ({type(rec).__name__})")
    tid = rec.get("task_id")
    who = f"task_id {tid}" if isinstance(tid, str) and tid else f"record [{index}]"
    ctx = _Ctx(fname, who)
    for k in REFER_KEYS:
        if k not in rec:
            ctx.fail(k, "is missing")
    if not isinstance(tid, str) or "__" not in tid:
        ctx.fail("task_id", f"must be a string '{{image_id}}__{{ann ids}}', got {_describe(tid)}")
    image_id = rec["image_id"]
    if not _is_int(image_id):
        ctx.fail("image_id", f"must be an integer, got {_describe(image_id)}")
    if tid.split("__", 1)[0] != str(image_id):
        ctx.fail("task_id", f"does not start with image_id {image_id}")
    if image_info is not None and image_id not in image_info:
        ctx.fail("image_id", f"{image_id} is not in {IMAGE_SPLIT_FILE}")
    size = (image_info[image_id]["width"], image_info[image_id]["height"]) if image_info is not None else None

    boxes = rec["instance_boxes"]
    if not isinstance(boxes, list) or not boxes:
        ctx.fail("instance_boxes", "must be a non-empty list")
    for i, b in enumerate(boxes):
        if not isinstance(b, list) or len(b) != 4:
            ctx.fail(f"instance_boxes[{i}]", f"must be [x, y, w, h], got {_describe(b)}")
        if not all(_is_num(v) for v in b):
            ctx.fail(f"instance_boxes[{i}]", f"has a non-finite or non-numeric value: {_describe(b)}")
        if b[2] <= 0 or b[3] <= 0:
            ctx.fail(f"instance_boxes[{i}]", f"has w/h <= 0: {_describe(b)}")
        if size is not None and _outside(b[0], b[1], b[0] + b[2], b[1] + b[3], size):
            ctx.fail(f"instance_boxes[{i}]", f"lies entirely outside the {size[0]}x{size[1]} image "
                                             f"({IMAGE_SPLIT_FILE}): {_describe(b)}")

    ann_ids = rec["ann_ids"]
    if not isinstance(ann_ids, list) or not all(_is_int(a) for a in ann_ids):
        ctx.fail("ann_ids", f"must be a list of integers, got {_describe(ann_ids)}")
    if len(ann_ids) != len(boxes):
        ctx.fail("ann_ids", f"has {len(ann_ids)} ids but instance_boxes has {len(boxes)}")

    polys = rec["Polygons"]
    if not isinstance(polys, list):
        ctx.fail("Polygons", "must be a list (one entry per instance)")
    if len(polys) != len(boxes):
        ctx.fail("Polygons", f"has {len(polys)} instances but instance_boxes has {len(boxes)}")
    for i, inst in enumerate(polys):
        if not isinstance(inst, list) or not inst:
            ctx.fail(f"Polygons[{i}]", "must be a non-empty list of polygons")
        for j, poly in enumerate(inst):
            if not isinstance(poly, list):
                ctx.fail(f"Polygons[{i}][{j}]", "must be a list of [x, y] points")
            if len(poly) < 3:
                ctx.fail(f"Polygons[{i}][{j}]", f"has {len(poly)} points (need >= 3)")
            for k, pt in enumerate(poly):
                # fast path: the common case is a 2-list of finite numbers
                if type(pt) is list and len(pt) == 2:
                    x, y = pt
                    tx, ty = type(x), type(y)
                    if (tx is float or tx is int) and (ty is float or ty is int):
                        if tx is int or math.isfinite(x):
                            if ty is int or math.isfinite(y):
                                continue
                _check_point(ctx, f"Polygons[{i}][{j}][{k}]", pt)
            if size is not None:
                xs, ys = [p[0] for p in poly], [p[1] for p in poly]
                if _outside(min(xs), min(ys), max(xs), max(ys), size):
                    ctx.fail(f"Polygons[{i}][{j}]", f"lies entirely outside the {size[0]}x{size[1]} image "
                                                    f"({IMAGE_SPLIT_FILE})")

    phrase = rec["phrase"]
    if not isinstance(phrase, str) or not phrase.strip():
        ctx.fail("phrase", f"must be a non-empty string, got {_describe(phrase)}")
    if len(phrase) > MAX_PHRASE_BYTES // 4 and len(phrase.encode("utf-8")) > MAX_PHRASE_BYTES:
        ctx.fail("phrase", f"is {len(phrase.encode('utf-8'))} bytes long, more than the {MAX_PHRASE_BYTES} the "
                           "model's 256 text tokens hold (long phrases are refused, not truncated)")

    ps = rec["phrase_structure"]
    if not isinstance(ps, dict):
        ctx.fail("phrase_structure", "must be an object")
    for k in STRUCTURE_KEYS:
        if k not in ps:
            ctx.fail(f"phrase_structure.{k}", "is missing")
    if not isinstance(ps["name"], str):
        ctx.fail("phrase_structure.name", f"must be a string, got {_describe(ps['name'])}")
    if ps["type"] not in PHRASE_TYPES:
        ctx.fail("phrase_structure.type", f"must be one of {'/'.join(PHRASE_TYPES)}, got {_describe(ps['type'])}")
    atts = ps["attributes"]
    if not isinstance(atts, list) or not all(isinstance(a, str) for a in atts):
        ctx.fail("phrase_structure.attributes", f"must be a list of strings, got {_describe(atts)}")
    for k in ("attribute_ids", "relation_ids"):
        v = ps[k]
        if not isinstance(v, list) or not all(_is_int(a) for a in v):
            ctx.fail(f"phrase_structure.{k}", f"must be a list of integers, got {_describe(v)}")
    rels = ps["relation_descriptions"]
    if not isinstance(rels, list):
        ctx.fail("phrase_structure.relation_descriptions", "must be a list of [predicate, object]")
    for i, r in enumerate(rels):
        if not isinstance(r, list) or len(r) != 2 or not all(isinstance(s, str) for s in r):
            ctx.fail(f"phrase_structure.relation_descriptions[{i}]", f"must be [predicate, object], got {_describe(r)}")
    return rec


def load_refer(root, split, image_info=None, check_image_ids=True) -> list:
    """Load and validate ``refer_{split}.json``; return its records (list of dicts, original types kept).

    ``image_info`` (from :func:`load_image_split`) is loaded from ``root`` when not given and
    ``check_image_ids`` is true; every record's image_id must be listed there.
    """
    path = refer_path(root, split)
    data = load_json(path)
    fname = path.name
    if not isinstance(data, list):
        raise InputError(f"{fname}: top level must be a list of records, got {type(data).__name__}")
    for _ in validated(data, fname, root, image_info, check_image_ids):
        pass
    return data


def validated(records, fname, root, image_info=None, check_image_ids=True):
    """Yield each record of ``records`` once it passed :func:`validate_record` and its task_id is new.
    ``image_info`` is loaded from ``root`` when needed (``check_image_ids``) and not given."""
    if not check_image_ids:
        image_info = None
    elif image_info is None:
        image_info = load_image_split(root)
    seen = set()
    for i, rec in enumerate(records):
        validate_record(rec, fname, i, image_info)
        tid = rec["task_id"]
        if tid in seen:
            raise InputError(f"{fname}: task_id {tid}: task_id is duplicated")
        seen.add(tid)
        yield rec


_WS = re.compile(r"[ \t\n\r]*")


def iter_refer(root, split, image_info=None, check_image_ids=True):
    """Yield the validated records of ``refer_{split}.json`` one at a time (same checks and messages as
    :func:`load_refer`). Only the file's text and the current record are held, not every parsed record
    (PhraseCut's train split parses into several GB of Python objects), so a consumer that keeps a compact
    form of each record converts the full dataset in a fraction of the memory."""
    path = refer_path(root, split)
    note_input(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path.name}: invalid JSON: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    fname = path.name

    def bad(msg, pos):
        e = json.JSONDecodeError(msg, text, pos)
        raise InputError(f"{fname}: invalid JSON at line {e.lineno} col {e.colno}: {e.msg}")

    decode = json.JSONDecoder().raw_decode
    ws = _WS.match
    idx = ws(text, 0).end()
    if idx >= len(text) or text[idx] != "[":
        data = load_json(path)  # not a list: report as load_refer does
        raise InputError(f"{fname}: top level must be a list of records, got {type(data).__name__}")
    idx = ws(text, idx + 1).end()

    def parsed():
        nonlocal idx
        if idx < len(text) and text[idx] == "]":
            idx += 1
        else:
            while True:
                try:
                    rec, idx = decode(text, idx)
                except json.JSONDecodeError as e:
                    raise InputError(f"{fname}: invalid JSON at line {e.lineno} col {e.colno}: {e.msg}") from None
                yield rec
                idx = ws(text, idx).end()
                if idx < len(text) and text[idx] == ",":
                    idx = ws(text, idx + 1).end()
                    continue
                if idx < len(text) and text[idx] == "]":
                    idx += 1
                    break
                bad("Expecting ',' delimiter", idx)
        idx = ws(text, idx).end()
        if idx != len(text):
            bad("Extra data", idx)

    yield from validated(parsed(), fname, root, image_info, check_image_ids)


# ----------------------------------------------------------------------------- image_data_split.json
def load_image_split(root) -> dict:
    """Load and validate ``image_data_split.json`` -> ``{image_id: row}``."""
    path = Path(root) / IMAGE_SPLIT_FILE
    data = load_json(path)
    fname = path.name
    if not isinstance(data, list):
        raise InputError(f"{fname}: top level must be a list of rows, got {type(data).__name__}")
    out = {}
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise InputError(f"{fname}: row [{i}]: is not an object")
        iid = row.get("image_id")
        ctx = _Ctx(fname, f"image_id {iid}" if _is_int(iid) else f"row [{i}]")
        for k in IMAGE_KEYS:
            if k not in row:
                ctx.fail(k, "is missing")
        if not _is_int(iid):
            ctx.fail("image_id", f"must be an integer, got {_describe(iid)}")
        if row["split"] not in PHRASECUT_SPLITS:
            ctx.fail("split", f"must be one of {'/'.join(PHRASECUT_SPLITS)}, got {_describe(row['split'])}")
        for k in ("width", "height"):
            if not _is_int(row[k]) or row[k] <= 0:
                ctx.fail(k, f"must be a positive integer, got {_describe(row[k])}")
        for k in ("coco_id", "flickr_id"):
            if row[k] is not None and not _is_int(row[k]):
                ctx.fail(k, f"must be an integer or null, got {_describe(row[k])}")
        if row["url"] is not None and not isinstance(row["url"], str):
            ctx.fail("url", f"must be a string or null, got {_describe(row['url'])}")
        if iid in out:
            ctx.fail("image_id", "is duplicated")
        out[iid] = row
    return out


# ----------------------------------------------------------------------------- name_att_rel_count.json
def load_name_att_rel_count(root) -> dict:
    """Load and validate ``name_att_rel_count.json`` -> ``{"cat": [[name, count], ...], "att": ..., "rel": ...}``."""
    path = Path(root) / COUNT_FILE
    data = load_json(path)
    fname = path.name
    if not isinstance(data, dict):
        raise InputError(f"{fname}: top level must be an object with cat/att/rel")
    for key in ("cat", "att", "rel"):
        if key not in data:
            raise InputError(f"{fname}: {key} is missing")
        rows = data[key]
        if not isinstance(rows, list):
            raise InputError(f"{fname}: {key} must be a list of [name, count]")
        for i, r in enumerate(rows):
            if not (isinstance(r, list) and len(r) == 2 and isinstance(r[0], str) and _is_int(r[1]) and r[1] >= 0):
                raise InputError(f"{fname}: {key}[{i}] must be [name, count >= 0], got {_describe(r)}")
    return data
