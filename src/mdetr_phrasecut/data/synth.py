"""A synthetic, learnable referring-segmentation dataset in the EXACT original PhraseCut format.

``write_synthetic_phrasecut(out_dir, seed=0, ...)`` (CLI: ``mdetr-phrasecut synth --out DIR``) writes::

    image_data_split.json  refer_train.json  refer_val.json  refer_miniv.json  refer_test.json
    name_att_rel_count.json  images/{image_id}.jpg

with the same keys, key order, types and JSON layout as VGPhraseCut_v0 (see
:mod:`mdetr_phrasecut.data.phrasecut_format`). Output is a pure function of the arguments: the same seed
gives byte-identical files (every image has its own RNG stream derived from ``(seed, image_id)``).

Scenes: a plain or gradient background; optional stuff bands ("sky" on top; "grass", "water" or "sand"
at the bottom) given as large polygons; 3-6 non-overlapping shapes (circle, square, triangle, diamond,
star, hexagon) in two sizes ("small"/"large") and seven colours, drawn from a few shapes/colours per image
so that distractors differ only in colour, size or position; in about a third of the images a
horizontal "bar" crossed by a vertical "pole" drawn on top of it, so the bar is visible as two parts
(an instance with 2 polygons).

Phrases (about 4 per image; every phrase refers to ALL objects it describes, so the ground truth is
exact): ``name`` ("circle", "sky"; plural "circles" when several match), ``attribute`` ("small red
circle"), ``relation`` ("circle left of blue square"; relation_descriptions ``[["left of", "blue
square"]]``) and ``verbose`` (attributes and a relation). Relations are only emitted when every candidate
is unambiguously on one side of the anchor, and the anchor is described uniquely.

Ground truth: every polygon is drawn with PIL ``ImageDraw.polygon`` (fill and outline) on its
int-truncated coordinates -- exactly how the PhraseCut evaluator rasterises ground truth -- so masks match
the drawn pixels (up to JPEG noise). Circles use 40-gons. Boxes are the inclusive pixel extents of the
polygons (``w = x2 - x1 + 1``). Objects never overlap each other or the stuff bands, except the pole,
whose occlusion of the bar is what the bar's two polygons describe.

Splits: ``train``, ``val``, ``test`` have disjoint images; ``miniv`` is the first ``miniv_images`` val
images: their rows in image_data_split.json say ``"split": "miniv"`` (as in the original, whose loader
selects images by that field) and their phrases appear in both refer_val.json and refer_miniv.json.
``name_att_rel_count.json`` counts names, attributes and relation predicates over the phrases of
train + val + test (miniv not counted twice), sorted by count (desc) then name.

All files are written into a temporary sibling folder, which replaces ``out_dir`` as a whole once complete
(``io.built_folder``), so a crash never leaves a half-written dataset and a rerun leaves no stale image.
"""
from __future__ import annotations

import io
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..arguments import NONNEGATIVE_INT, OUT_DIR, POSITIVE_INT
from ..config import schema_defaults
from ..errors import InputError
from ..infra.io import built_folder

DEFAULTS = schema_defaults("synth")  # the workflow schema's dataset.synth section
DEFAULT_NUM_IMAGES = {split: DEFAULTS[f"{split}_images"] for split in ("train", "val", "test")}
DEFAULT_MINIV_IMAGES = 10

SHAPES = ("circle", "square", "triangle", "diamond", "star", "hexagon")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds",
          "star": "stars", "hexagon": "hexagons", "bar": "bars", "pole": "poles"}
COLORS = {
    "red": (214, 36, 36),
    "green": (30, 150, 55),
    "blue": (35, 75, 215),
    "yellow": (240, 208, 25),
    "purple": (130, 50, 170),
    "orange": (245, 128, 20),
    "black": (22, 22, 22),
}
SIZES = ("small", "large")
ATTRIBUTE_IDS = {name: 1001 + i for i, name in enumerate((*SIZES, *COLORS))}
PREDICATES = ("left of", "right of", "above", "below")
BACKGROUNDS = ((176, 176, 176), (200, 196, 186), (160, 168, 176), (210, 210, 204), (186, 178, 166),
               (168, 160, 172), (196, 204, 200), (150, 150, 156))
TOP_STUFF = {"sky": ((118, 178, 236), (188, 216, 246))}
BOTTOM_STUFF = {"grass": ((92, 158, 62), (64, 128, 44)), "water": ((70, 128, 182), (44, 92, 150)),
                "sand": ((222, 198, 146), (204, 176, 120))}
CIRCLE_POINTS = 40
TYPE_WEIGHTS = {"name": 0.2, "attribute": 0.35, "relation": 0.15, "verbose": 0.1, "stuff": 0.2}


# ----------------------------------------------------------------------------- geometry
class Obj:
    """One annotated thing: a shape, the bar, the pole or a stuff band."""

    __slots__ = ("local", "kind", "shape", "color", "size", "polygons", "x1", "y1", "x2", "y2")

    def __init__(self, local, kind, shape, color, size, polygons):
        self.local = local
        self.kind = kind  # "shape" | "bar" | "pole" | "stuff"
        self.shape = shape
        self.color = color
        self.size = size
        self.polygons = polygons  # [[[x, y], ...], ...] as stored (float with 2 decimals, or int)
        xs = [int(p[0]) for poly in polygons for p in poly]
        ys = [int(p[1]) for poly in polygons for p in poly]
        self.x1, self.x2, self.y1, self.y2 = min(xs), max(xs), min(ys), max(ys)

    @property
    def box(self):
        return [self.x1, self.y1, self.x2 - self.x1 + 1, self.y2 - self.y1 + 1]

    @property
    def cx(self):
        return (self.x1 + self.x2) / 2

    @property
    def cy(self):
        return (self.y1 + self.y2) / 2


def _fpt(x, y):
    return [round(float(x), 2), round(float(y), 2)]


def _shape_polygon(shape, cx, cy, r, rot):
    if shape == "circle":
        n = CIRCLE_POINTS
        return [_fpt(cx + r * math.cos(2 * math.pi * k / n), cy + r * math.sin(2 * math.pi * k / n)) for k in range(n)]
    if shape == "square":
        h = r * 0.82
        x1, y1, x2, y2 = int(cx - h), int(cy - h), int(cx + h), int(cy + h)
        return [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]
    if shape == "diamond":
        return [_fpt(cx, cy - r), _fpt(cx + r * 0.85, cy), _fpt(cx, cy + r), _fpt(cx - r * 0.85, cy)]
    if shape == "triangle":
        a0 = -math.pi / 2 + rot
        return [_fpt(cx + r * math.cos(a0 + 2 * math.pi * k / 3),
                     cy + r * math.sin(a0 + 2 * math.pi * k / 3) + r * 0.18)
                for k in range(3)]
    if shape == "hexagon":
        return [_fpt(cx + r * math.cos(rot + math.pi * k / 3), cy + r * math.sin(rot + math.pi * k / 3))
                for k in range(6)]
    if shape == "star":
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else r * 0.47
            a = -math.pi / 2 + rot + math.pi * k / 5
            pts.append(_fpt(cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts
    raise ValueError(shape)


def _int_pts(poly):
    return [(int(x), int(y)) for x, y in poly]


def _overlaps(box, boxes, gap):
    x1, y1, x2, y2 = box
    for a1, b1, a2, b2 in boxes:
        if x1 <= a2 + gap and a1 <= x2 + gap and y1 <= b2 + gap and b1 <= y2 + gap:
            return True
    return False


def _gradient(w, h, c0, c1, vertical):
    t = np.linspace(0.0, 1.0, h if vertical else w, dtype=np.float64)
    ramp = (1 - t)[:, None] * np.asarray(c0, np.float64) + t[:, None] * np.asarray(c1, np.float64)
    ramp = np.round(ramp).astype(np.uint8)
    if vertical:
        return np.broadcast_to(ramp[:, None, :], (h, w, 3)).copy()
    return np.broadcast_to(ramp[None, :, :], (h, w, 3)).copy()


def _band_polygon(rng, w, h, top, depth):
    """A full-width band with a slightly wavy inner boundary (int coordinates)."""
    n = int(rng.integers(4, 8))
    xs = np.linspace(0, w - 1, n).round().astype(int)
    edge = [int(np.clip(depth + rng.integers(-2, 3), 3, h - 3)) for _ in range(n)]
    if top:
        pts = [[0, 0], [w - 1, 0]] + [[int(x), int(e)] for x, e in zip(xs[::-1], edge[::-1])]
    else:
        edge = [h - 1 - e for e in edge]
        pts = [[int(x), int(e)] for x, e in zip(xs, edge)] + [[w - 1, h - 1], [0, h - 1]]
    return pts


# ----------------------------------------------------------------------------- one scene
def _make_scene(rng, w, h):
    """Return (RGB uint8 array, [Obj]) for one image."""
    bg0 = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    if rng.random() < 0.5:
        arr = np.empty((h, w, 3), np.uint8)
        arr[:] = bg0
    else:
        bg1 = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        arr = _gradient(w, h, bg0, bg1, vertical=bool(rng.random() < 0.5))
    img = Image.fromarray(arr)
    objs = []

    # stuff bands
    y_lo, y_hi = 1, h - 2
    bands = []
    if rng.random() < 0.5:
        depth = int(round(h * rng.uniform(0.16, 0.26)))
        bands.append(("sky", True, depth))
        y_lo = depth + 4
    if rng.random() < 0.6:
        name = ("grass", "water", "sand")[int(rng.integers(3))]
        depth = int(round(h * rng.uniform(0.16, 0.26)))
        bands.append((name, False, depth))
        y_hi = h - 1 - depth - 4
    for name, top, depth in bands:
        poly = _band_polygon(rng, w, h, top, depth)
        c0, c1 = TOP_STUFF[name] if top else BOTTOM_STUFF[name]
        layer = Image.fromarray(_gradient(w, h, c0, c1, vertical=True))
        mask = Image.new("L", (w, h), 0)
        ImageDraw.Draw(mask).polygon(_int_pts(poly), fill=255, outline=255)
        img.paste(layer, (0, 0), mask)
        objs.append(Obj(len(objs), "stuff", name, None, None, [poly]))

    draw = ImageDraw.Draw(img)
    taken = []
    s = min(w, h)

    # bar crossed by a pole: the bar is visible as two polygons
    if rng.random() < 0.33:
        bw = int(w * rng.uniform(0.42, 0.62))
        bh = max(6, int(h * rng.uniform(0.07, 0.1)))
        pw = max(4, int(w * rng.uniform(0.05, 0.07)))
        ph = bh + int(rng.integers(10, 18))
        for _ in range(40):
            bx1 = int(rng.integers(1, max(2, w - bw - 1)))
            top_space = (ph - bh) // 2
            lo, hi = y_lo + top_space, y_hi - (ph - top_space) + 1
            if hi <= lo:
                break
            by1 = int(rng.integers(lo, hi))
            bx2, by2 = bx1 + bw - 1, by1 + bh - 1
            px1 = bx1 + int(bw * rng.uniform(0.3, 0.6))
            px2 = px1 + pw - 1
            py1, py2 = by1 - top_space, by1 - top_space + ph - 1
            union = (bx1, min(by1, py1), bx2, max(by2, py2))
            if union[2] >= w - 1 or union[1] < y_lo or union[3] > y_hi:
                continue
            cols = list(COLORS)
            ci = int(rng.integers(len(cols)))
            cj = (ci + 1 + int(rng.integers(len(cols) - 1))) % len(cols)
            bar_polys = [[[bx1, by1], [px1 - 1, by1], [px1 - 1, by2], [bx1, by2]],
                         [[px2 + 1, by1], [bx2, by1], [bx2, by2], [px2 + 1, by2]]]
            pole_poly = [[px1, py1], [px2, py1], [px2, py2], [px1, py2]]
            for poly in bar_polys:
                draw.polygon(_int_pts(poly), fill=COLORS[cols[ci]], outline=COLORS[cols[ci]])
            draw.polygon(_int_pts(pole_poly), fill=COLORS[cols[cj]], outline=COLORS[cols[cj]])
            objs.append(Obj(len(objs), "bar", "bar", cols[ci], None, bar_polys))
            objs.append(Obj(len(objs), "pole", "pole", cols[cj], None, [pole_poly]))
            taken.append(union)
            break

    # shapes: a few shapes x a few colours per image so that distractors share all but one property
    shapes = list(rng.choice(SHAPES, size=int(rng.integers(1, 4)), replace=False))
    colors = list(rng.choice(list(COLORS), size=int(rng.integers(2, 4)), replace=False))
    n = int(rng.integers(3, 7))
    for _ in range(n):
        shape = str(shapes[int(rng.integers(len(shapes)))])
        color = str(colors[int(rng.integers(len(colors)))])
        size = SIZES[int(rng.random() < 0.5)]
        frac = rng.uniform(0.075, 0.095) if size == "small" else rng.uniform(0.14, 0.18)
        r = max(4.0, s * frac)
        rot = rng.uniform(-0.25, 0.25)
        for _ in range(40):
            cx = rng.uniform(r + 1, w - r - 2)
            if y_hi - y_lo < 2 * r + 2:
                break
            cy = rng.uniform(y_lo + r, y_hi - r)
            # every shape lies inside its circumscribed circle's box: reject on that before building it
            if _overlaps((int(cx - r), int(cy - r), int(cx + r) + 1, int(cy + r) + 1), taken, gap=3):
                continue
            poly = _shape_polygon(shape, cx, cy, r, rot)
            o = Obj(len(objs), "shape", shape, color, size, [poly])
            if o.x1 < 0 or o.y1 < y_lo or o.x2 > w - 1 or o.y2 > y_hi:
                continue
            if _overlaps((o.x1, o.y1, o.x2, o.y2), taken, gap=3):
                continue
            draw.polygon(_int_pts(poly), fill=COLORS[color], outline=COLORS[color])
            taken.append((o.x1, o.y1, o.x2, o.y2))
            objs.append(o)
            break
    return np.asarray(img), objs


# ----------------------------------------------------------------------------- phrases
def _words(desc, plural=False):
    size, color, shape = desc
    noun = PLURAL.get(shape, shape) if plural else shape
    return " ".join(w for w in (size, color, noun) if w)


def _matches(o, desc):
    size, color, shape = desc
    return (o.kind != "stuff" and o.shape == shape and (size is None or o.size == size)
            and (color is None or o.color == color))


def _relation(o, y, pred):
    """True (clearly holds), False (clearly not), None (ambiguous)."""
    if pred == "left of":
        return True if o.x2 < y.x1 else (False if o.x1 > y.cx else None)
    if pred == "right of":
        return True if o.x1 > y.x2 else (False if o.x2 < y.cx else None)
    if pred == "above":
        return True if o.y2 < y.y1 else (False if o.y1 > y.cy else None)
    if pred == "below":
        return True if o.y1 > y.y2 else (False if o.y2 < y.cy else None)
    raise ValueError(pred)


def _descs_for(o):
    if o.kind == "shape":
        return [(None, None, o.shape), (None, o.color, o.shape), (o.size, None, o.shape), (o.size, o.color, o.shape)]
    return [(None, None, o.shape), (None, o.color, o.shape)]


def _candidates(objs):
    """All phrases for a scene: list of dicts (type, desc, rel, targets, discriminative)."""
    things = [o for o in objs if o.kind != "stuff"]
    descs = []
    for o in things:
        for d in _descs_for(o):
            if d not in descs:
                descs.append(d)
    out = []
    for o in objs:
        if o.kind == "stuff":
            out.append({"type": "stuff", "desc": (None, None, o.shape), "rel": None, "targets": (o.local,),
                        "disc": True})
    match = {d: tuple(o.local for o in things if _matches(o, d)) for d in descs}
    for d in descs:
        ptype = "name" if d[0] is None and d[1] is None else "attribute"
        base = match[(None, None, d[2])]
        out.append({"type": ptype, "desc": d, "rel": None, "targets": match[d],
                    "disc": ptype == "name" or len(match[d]) < len(base)})
    # relations: anchor described uniquely by its shortest description
    for y in things:
        ydesc = next((d for d in _descs_for(y) if len(match[d]) == 1), None)
        if ydesc is None:
            continue
        for pred in PREDICATES:
            for d in descs:
                cands = [o for o in things if o.local != y.local and _matches(o, d)]
                if not cands:
                    continue
                verdicts = [_relation(o, y, pred) for o in cands]
                if any(v is None for v in verdicts) or not any(verdicts):
                    continue
                targets = tuple(o.local for o, v in zip(cands, verdicts) if v)
                ptype = "relation" if d[0] is None and d[1] is None else "verbose"
                out.append({"type": ptype, "desc": d, "rel": (pred, ydesc), "targets": targets,
                            "disc": len(targets) < len(cands)})
    return out


def _choose_phrases(rng, objs):
    cands = _candidates(objs)
    n_target = int(rng.integers(3, 6))
    chosen, used = [], set()
    for _ in range(n_target):
        avail = [c for c in cands if c["targets"] not in used]
        if not avail:
            break
        types = [t for t in TYPE_WEIGHTS if any(c["type"] == t for c in avail)]
        p = np.array([TYPE_WEIGHTS[t] for t in types], np.float64)
        t = types[int(rng.choice(len(types), p=p / p.sum()))]
        pool = [c for c in avail if c["type"] == t]
        wts = np.array([3.0 if c["disc"] else 1.0 for c in pool])
        c = pool[int(rng.choice(len(pool), p=wts / wts.sum()))]
        used.add(c["targets"])
        chosen.append(c)
    return chosen


def _phrase_record(image_id, objs, c, rel_id):
    targets = sorted(c["targets"])
    plural = len(targets) > 1 and c["type"] != "stuff"
    size, color, shape = c["desc"]
    phrase = _words(c["desc"], plural)
    attributes = [a for a in (size, color) if a]
    rel_desc, rel_ids = [], []
    if c["rel"] is not None:
        pred, ydesc = c["rel"]
        obj_words = _words(ydesc)
        phrase = f"{phrase} {pred} {obj_words}"
        rel_desc, rel_ids = [[pred, obj_words]], [rel_id]
    ann_ids = [image_id * 100 + t for t in targets]
    ptype = "name" if c["type"] == "stuff" else c["type"]
    return {
        "task_id": f"{image_id}__" + "_".join(str(a) for a in ann_ids),
        "image_id": image_id,
        "ann_ids": ann_ids,
        "instance_boxes": [objs[t].box for t in targets],
        "Polygons": [objs[t].polygons for t in targets],
        "phrase": phrase,
        "phrase_structure": {
            "name": shape,
            "attributes": attributes,
            "attribute_ids": [ATTRIBUTE_IDS[a] for a in attributes],
            "relation_descriptions": rel_desc,
            "relation_ids": rel_ids,
            "type": ptype,
        },
    }


def generate_image(seed, image_id, min_size, max_size):
    """One image: (RGB array, [records]); deterministic in (seed, image_id)."""
    rng = np.random.default_rng([int(seed), int(image_id)])
    w = int(rng.integers(min_size, max_size + 1))
    h = int(rng.integers(min_size, max_size + 1))
    for _ in range(20):
        arr, objs = _make_scene(rng, w, h)
        chosen = _choose_phrases(rng, objs)
        if len(chosen) >= 2:
            break
    records = [_phrase_record(image_id, objs, c, image_id * 100 + k) for k, c in enumerate(chosen)]
    return arr, records


# ----------------------------------------------------------------------------- dataset
def _dumps(obj) -> bytes:
    return json.dumps(obj).encode("utf-8")


def _jpeg_bytes(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95, subsampling=0, optimize=False)
    return buf.getvalue()


def _counts(records):
    cat, att, rel = Counter(), Counter(), Counter()
    for r in records:
        ps = r["phrase_structure"]
        cat[ps["name"]] += 1
        att.update(ps["attributes"])
        rel.update(p for p, _ in ps["relation_descriptions"])
    order = lambda c: [[k, v] for k, v in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))]  # noqa: E731
    return {"cat": order(cat), "att": order(att), "rel": order(rel)}


def build_synthetic_phrasecut(sink, seed=DEFAULTS["seed"], num_images=None, min_size=DEFAULTS["min_size"],
                              max_size=DEFAULTS["max_size"],
                              miniv_images=DEFAULT_MINIV_IMAGES):
    """Generate the dataset, handing each file to ``sink(relative_path, bytes)`` (images first, JSON last).

    Returns a summary ``{split: {"images": n, "phrases": n}}``."""
    counts = dict(DEFAULT_NUM_IMAGES)
    if num_images:
        unknown = sorted(set(num_images) - set(counts))
        if unknown:
            raise InputError(f"num_images: unknown split(s) {unknown} (expected train/val/test)")
        counts.update(num_images)
    for k, v in counts.items():
        if int(v) < 0:
            raise InputError(f"num_images[{k}] must be >= 0, got {v}")
    if not (16 <= int(min_size) <= int(max_size)):
        raise InputError(f"image sizes: need 16 <= min_size <= max_size, got {min_size}, {max_size}")
    miniv_images = min(int(miniv_images), int(counts["val"]))

    rows, refer = [], {s: [] for s in ("train", "val", "miniv", "test")}
    image_id = 0
    for split in ("train", "val", "test"):
        for i in range(int(counts[split])):
            image_id += 1
            arr, recs = generate_image(seed, image_id, int(min_size), int(max_size))
            h, w = arr.shape[:2]
            in_miniv = split == "val" and i < miniv_images
            rng = np.random.default_rng([int(seed), image_id, 7])
            coco_id = int(rng.integers(1, 581930)) if rng.random() < 0.15 else None
            flickr_id = int(rng.integers(10**8, 10**10)) if rng.random() < 0.3 else None
            rows.append({"image_id": image_id, "split": "miniv" if in_miniv else split, "width": w, "height": h,
                         "coco_id": coco_id, "flickr_id": flickr_id,
                         "url": f"https://example.invalid/synthetic/{image_id}.jpg"})
            sink(f"images/{image_id}.jpg", _jpeg_bytes(arr))
            refer[split].extend(recs)
            if in_miniv:
                refer["miniv"].extend(recs)
    for split, recs in refer.items():
        sink(f"refer_{split}.json", _dumps(recs))
    sink("name_att_rel_count.json", _dumps(_counts(refer["train"] + refer["val"] + refer["test"])))
    sink("image_data_split.json", _dumps(rows))
    return {s: {"images": len({r["image_id"] for r in recs}), "phrases": len(recs)} for s, recs in refer.items()}


def write_synthetic_phrasecut(out_dir, seed=DEFAULTS["seed"], num_images=None, min_size=DEFAULTS["min_size"],
                              max_size=DEFAULTS["max_size"],
                              miniv_images=DEFAULT_MINIV_IMAGES):
    """Write the dataset to ``out_dir`` (see module doc); returns a summary {split: {images, phrases}}.

    ``num_images`` overrides the default image counts per split, e.g. ``{"train": 1500, "val": 40,
    "test": 100}`` (about 4 phrases per image).
    """
    with built_folder(Path(out_dir)) as tmp:

        def sink(rel, data):
            with open(tmp / rel, "wb") as f:
                f.write(data)

        (tmp / "images").mkdir()
        return build_synthetic_phrasecut(sink, seed, num_images, min_size, max_size, miniv_images)


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser):
    parser.add_argument("--out", required=True, type=OUT_DIR, help="output folder (PhraseCut layout)")
    parser.add_argument("--seed", type=NONNEGATIVE_INT, default=DEFAULTS["seed"])
    parser.add_argument("--train-images", type=POSITIVE_INT, default=DEFAULT_NUM_IMAGES["train"])
    parser.add_argument("--val-images", type=POSITIVE_INT, default=DEFAULT_NUM_IMAGES["val"])
    parser.add_argument("--test-images", type=POSITIVE_INT, default=DEFAULT_NUM_IMAGES["test"])
    parser.add_argument("--miniv-images", type=NONNEGATIVE_INT, default=DEFAULT_MINIV_IMAGES,
                        help="how many val images also form the miniv split")
    parser.add_argument("--min-size", type=POSITIVE_INT, default=DEFAULTS["min_size"], help="smallest image side (px)")
    parser.add_argument("--max-size", type=POSITIVE_INT, default=DEFAULTS["max_size"], help="largest image side (px)")


def main(args):
    summary = write_synthetic_phrasecut(
        args.out, seed=args.seed,
        num_images={"train": args.train_images, "val": args.val_images, "test": args.test_images},
        min_size=args.min_size, max_size=args.max_size, miniv_images=args.miniv_images)
    print(json.dumps({"out": str(args.out), "seed": args.seed, **summary}))
    return 0
