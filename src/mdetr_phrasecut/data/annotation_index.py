"""The packed annotation index of one `finetune_phrasecut_{split}.json`: flat numpy arrays, memory-mapped.

Built once per split (`mdetr-phrasecut index`), a folder `finetune_phrasecut_{split}.index/` holding one `.npy`
per column and `meta.json` (format, counts, the source file's sha256/size/mtime). Every rank and loader worker
opens it read-only with ``np.load(mmap_mode="r")``: one page-cache copy per node, and no Python object per
phrase, so nothing is copied on read by a worker (pytorch/pytorch#13246; detectron2's serialised dataset list
goes as far as one copy per process). Items are read from it on access.

Layout, in the order `pycocotools.COCO` gives (phrases sorted by COCO image id, each phrase's annotations in file
order, crowd annotations left out): per phrase `image_id`, `width`/`height` (-1: not recorded), strings
(`caption`, `file_name`, and `task_id`/`original_id` as JSON text) as UTF-8 bytes + offsets, `ann_offsets` into
the per-annotation `bbox` [x, y, w, h], `area`, `category_id`, `span_offsets` into `spans` (tokens_positive
[start, end] pairs) and `ann_polygons` into `polygon_offsets` into `coords` (flat x, y of every polygon).
Every field is validated while building, so bad input is one line at build time, not mid-training.
"""
import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..infra.io import built_folder, note_input, sha256_file

FORMAT = "mdetr-phrasecut-annotation-index/1"
META = "meta.json"
STRINGS = ("caption", "file_name", "task_id", "original_id")
# column -> (dtype, row shape, its length: a meta count or the last entry of an offsets column, "+1" for offsets)
COLUMNS = {
    "image_id": ("int64", (), "phrases"), "width": ("int64", (), "phrases"), "height": ("int64", (), "phrases"),
    **{f"{s}_offsets": ("int64", (), "phrases+1") for s in STRINGS},
    **{f"{s}_bytes": ("uint8", (), f"{s}_offsets") for s in STRINGS},
    "ann_offsets": ("int64", (), "phrases+1"),
    "bbox": ("float64", (4,), "ann_offsets"), "area": ("float64", (), "ann_offsets"),
    "category_id": ("int64", (), "ann_offsets"),
    "span_offsets": ("int64", (), "annotations+1"), "spans": ("int64", (2,), "span_offsets"),
    "ann_polygons": ("int64", (), "annotations+1"), "polygon_offsets": ("int64", (), "ann_polygons+1"),
    "coords": ("float64", (), "polygon_offsets"),
}


def index_path(coco_dir, split) -> Path:
    """Where the index of `coco_dir/finetune_phrasecut_{split}.json` lives (beside it)."""
    return Path(coco_dir) / f"finetune_phrasecut_{split}.index"


# ----------------------------------------------------------------------------- building
def _packed_strings(values):
    data = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(data) + 1, dtype=np.int64)
    np.cumsum([len(d) for d in data], out=offsets[1:])
    return np.frombuffer(b"".join(data), dtype=np.uint8), offsets


def _offsets(lengths):
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _columns(coco, where):
    """The index's columns from a parsed COCO dict; `where(info)` names a phrase's record."""
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list) \
            or not isinstance(coco.get("annotations", []), list):
        raise InputError(f"{where(None)}: expected a COCO object with lists 'images' and 'annotations'")
    infos = {}
    for info in coco["images"]:
        if not isinstance(info, dict) or not isinstance(info.get("id"), int):
            raise InputError(f"{where(None)}: an image record without an integer 'id'")
        if info["id"] in infos:
            raise InputError(f"{where(info)}: image id appears twice")
        infos[info["id"]] = info
    anns = {}
    for ann in coco.get("annotations", []):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise InputError(f"{where(None)}: an annotation without 'image_id'")
        if ann["image_id"] in infos and not ann.get("iscrowd", 0):
            anns.setdefault(ann["image_id"], []).append(ann)
    ids = sorted(infos)
    cols = {s: [] for s in STRINGS}
    cols.update(width=[], height=[], n_anns=[], bbox=[], area=[], category_id=[], n_spans=[], spans=[],
                n_polygons=[], polygon_lengths=[], coords=[])
    for i in ids:
        info = infos[i]
        for name in ("caption", "file_name"):
            if not isinstance(info.get(name), str):
                raise InputError(f"{where(info)}: missing field '{name}' (a string)")
            cols[name].append(info[name])
        for name in ("task_id", "original_id"):
            cols[name].append(json.dumps(info.get(name)))
        for name in ("width", "height"):
            if not isinstance(info.get(name, -1), int):
                raise InputError(f"{where(info)}: field '{name}' must be an integer")
            cols[name].append(info.get(name, -1))
        mine = anns.get(i, [])
        cols["n_anns"].append(len(mine))
        for ann in mine:
            for name in ("bbox", "category_id", "area", "tokens_positive", "segmentation"):
                if name not in ann:
                    raise InputError(f"{where(info)}: missing field '{name}'")
            if not isinstance(ann["bbox"], list) or len(ann["bbox"]) != 4 or not all(map(_is_number, ann["bbox"])):
                raise InputError(f"{where(info)}: field 'bbox' must be [x, y, w, h] numbers")
            if not isinstance(ann["category_id"], int) or not _is_number(ann["area"]):
                raise InputError(f"{where(info)}: fields 'category_id' (an integer), 'area' (a number)")
            spans = ann["tokens_positive"]
            if not isinstance(spans, list) or any(not isinstance(s, list) or len(s) != 2 or
                                                  not all(isinstance(c, int) for c in s) for s in spans):
                raise InputError(f"{where(info)}: field 'tokens_positive' must be a list of [start, end] integers")
            polygons = ann["segmentation"]
            if not isinstance(polygons, list) or any(not isinstance(p, list) or len(p) % 2 or
                                                     not all(map(_is_number, p)) for p in polygons):
                raise InputError(f"{where(info)}: field 'segmentation' must be a list of [x, y, ...] polygons")
            cols["bbox"].append(ann["bbox"])
            cols["area"].append(ann["area"])
            cols["category_id"].append(ann["category_id"])
            cols["n_spans"].append(len(spans))
            cols["spans"].extend(spans)
            cols["n_polygons"].append(len(polygons))
            cols["polygon_lengths"].extend(map(len, polygons))
            for p in polygons:
                cols["coords"].extend(p)
    arrays = {"image_id": np.array(ids, dtype=np.int64),
              "width": np.array(cols["width"], dtype=np.int64), "height": np.array(cols["height"], dtype=np.int64),
              "ann_offsets": _offsets(cols["n_anns"]),
              "bbox": np.array(cols["bbox"], dtype=np.float64).reshape(-1, 4),
              "area": np.array(cols["area"], dtype=np.float64),
              "category_id": np.array(cols["category_id"], dtype=np.int64),
              "span_offsets": _offsets(cols["n_spans"]),
              "spans": np.array(cols["spans"], dtype=np.int64).reshape(-1, 2),
              "ann_polygons": _offsets(cols["n_polygons"]),
              "polygon_offsets": _offsets(cols["polygon_lengths"]),
              "coords": np.array(cols["coords"], dtype=np.float64)}
    for s in STRINGS:
        arrays[f"{s}_bytes"], arrays[f"{s}_offsets"] = _packed_strings(cols[s])
    return arrays


def build_index(coco_file, out_dir) -> Path:
    """Index `coco_file` into the folder `out_dir`: written in a temp folder beside it, renamed into place."""
    coco_file, out_dir = Path(coco_file), Path(out_dir)
    note_input(coco_file)
    st = coco_file.stat()
    try:
        with open(coco_file, "rb") as f:
            coco = json.load(f)
    except (OSError, ValueError) as e:
        kind = "not valid JSON" if isinstance(e, ValueError) else e.strerror
        raise InputError(f"{coco_file}: cannot load COCO annotations ({kind})") from None

    def where(info):
        return f"{coco_file}" + ("" if info is None else f": image id {info['id']} task_id {info.get('task_id')}")

    arrays = _columns(coco, where)
    del coco
    meta = {"format": FORMAT, "source": str(coco_file), "source_sha256": sha256_file(coco_file),
            "source_size": st.st_size, "source_mtime_ns": st.st_mtime_ns,
            "phrases": len(arrays["image_id"]), "annotations": len(arrays["area"])}
    with built_folder(out_dir) as tmp:
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array)
        (tmp / META).write_text(json.dumps(meta, indent=1))
    return out_dir


# ----------------------------------------------------------------------------- reading
class AnnotationIndex:
    """A built index opened read-only (memory-mapped). `source`: the COCO file it must have been built from
    (checked by size and mtime, by sha256 when those changed). Pickles as its path: a spawned worker maps it
    again."""

    def __init__(self, folder, source=None):
        self.folder, self.source = Path(folder), source
        self.meta = self._meta()
        if source is not None:
            self._check_source(Path(source))
        self.arrays = {name: self._load(name, *spec) for name, spec in COLUMNS.items()}
        self._check_offsets()

    def __getstate__(self):
        return {"folder": self.folder, "source": None}

    def __setstate__(self, state):
        self.__init__(state["folder"])

    def _bad(self, what):
        return InputError(f"{self.folder}: {what}; rebuild it (mdetr-phrasecut index)")

    def _meta(self):
        note_input(self.folder)
        if not self.folder.is_dir():
            raise InputError(f"{self.folder}: annotation index not found (build it: mdetr-phrasecut index)")
        try:
            meta = json.loads((self.folder / META).read_text())
        except (OSError, ValueError) as e:
            raise self._bad(f"{META} unreadable ({getattr(e, 'strerror', None) or 'not valid JSON'})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise self._bad(f"{META}: not a {FORMAT} index")
        return meta

    def _check_source(self, source):
        try:
            st = source.stat()
        except OSError as e:
            raise InputError(f"{source}: cannot read the file the index {self.folder} is checked against "
                             f"({e.strerror})") from None
        if (st.st_size, st.st_mtime_ns) == (self.meta.get("source_size"), self.meta.get("source_mtime_ns")):
            return
        sha = sha256_file(source)
        if sha != self.meta.get("source_sha256"):
            raise self._bad(f"stale: built from a file with sha256 {self.meta.get('source_sha256')}, "
                            f"{source} now has sha256 {sha}")

    def _load(self, name, dtype, shape, _):
        path = self.folder / f"{name}.npy"
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: cannot map it ({e}); rebuild the index (mdetr-phrasecut index)") from None
        if array.dtype != np.dtype(dtype) or array.shape[1:] != shape:
            raise InputError(f"{path}: {array.dtype} {array.shape}, expected {dtype} rows of shape {shape}; "
                             "rebuild the index (mdetr-phrasecut index)")
        return array

    def _check_offsets(self):
        """Every column as long as its count says; every offsets column starts at 0, never decreases."""
        for name, (_, _, count) in COLUMNS.items():
            base = count.removesuffix("+1")
            if base in COLUMNS:
                offsets = self.arrays[base]
                if len(offsets) == 0 or offsets[0] != 0 or (np.diff(offsets) < 0).any():
                    raise InputError(f"{self.folder / base}.npy: offsets out of range (not 0, 1, ... increasing); "
                                     "rebuild the index (mdetr-phrasecut index)")
                expected = int(offsets[-1])
            else:
                expected = self.meta.get(base, -1)
            expected += count.endswith("+1")
            if len(self.arrays[name]) != expected:
                raise InputError(f"{self.folder / name}.npy: {len(self.arrays[name])} rows, expected {expected} "
                                 f"({count}); truncated or out of range: rebuild the index (mdetr-phrasecut index)")

    def __len__(self):
        return len(self.arrays["image_id"])

    def string(self, name, i) -> str:
        o = self.arrays[f"{name}_offsets"]
        return self.arrays[f"{name}_bytes"][o[i]:o[i + 1]].tobytes().decode("utf-8")

    def where(self, i) -> str:
        """Phrase i's record, as bad-input messages name it: the COCO file, image id and task id."""
        info = self.image(i)
        return f"{self.source or self.meta.get('source')}: image id {info['id']} task_id {info['task_id']}"

    def caption_bytes(self) -> np.ndarray:
        """The UTF-8 length of every caption."""
        return np.diff(self.arrays["caption_offsets"])

    def image(self, i) -> dict:
        """Phrase i's COCO image record (fields id, caption, file_name, width, height, task_id, original_id;
        width/height None when not recorded)."""
        a = self.arrays
        info = {"id": int(a["image_id"][i]), "caption": self.string("caption", i),
                "file_name": self.string("file_name", i),
                "task_id": json.loads(self.string("task_id", i)),
                "original_id": json.loads(self.string("original_id", i))}
        for name in ("width", "height"):
            info[name] = int(a[name][i]) if a[name][i] >= 0 else None
        return info

    def annotations(self, i) -> dict:
        """Phrase i's (non-crowd) annotations: bbox [n, 4] and area [n] float64, category_id [n] int64,
        tokens_positive (lists of [start, end]), polygons (per annotation, a list of float64 [x, y, ...])."""
        a = self.arrays
        lo, hi = a["ann_offsets"][i], a["ann_offsets"][i + 1]
        spans, poly, coords = a["span_offsets"], a["polygon_offsets"], a["coords"]
        return {
            "bbox": np.array(a["bbox"][lo:hi]), "area": np.array(a["area"][lo:hi]),
            "category_id": np.array(a["category_id"][lo:hi]),
            "tokens_positive": [a["spans"][spans[k]:spans[k + 1]].tolist() for k in range(lo, hi)],
            "polygons": [[np.array(coords[poly[p]:poly[p + 1]]) for p in range(a["ann_polygons"][k],
                                                                                a["ann_polygons"][k + 1])]
                         for k in range(lo, hi)],
        }


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser):
    from ..arguments import IN_FILE, OUT_DIR

    parser.add_argument("--coco", required=True, type=IN_FILE, help="finetune_phrasecut_{split}.json")
    parser.add_argument("--out", required=True, type=OUT_DIR, help="the index folder to write")


def main(args):
    build_index(args.coco, args.out)
    index = AnnotationIndex(args.out, args.coco)
    print(f"{args.coco}: {len(index)} phrases, {index.meta['annotations']} annotations -> {args.out}")
    return 0
