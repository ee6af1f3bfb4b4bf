"""Benchmark: PhraseCut -> MDETR COCO conversion at PhraseCut's scale.

Writes a synthetic ``refer_train.json`` + ``image_data_split.json`` (no images) with PhraseCut-like
statistics (1-6 instances per phrase, ~30% of instances with two polygons, 4-24 float points per
polygon, ~4.5 phrases per image) into a temporary folder, then times, end to end from disk, each in a
fresh child process (so each peak RSS is its own):

* ``ours``:  ``convert_split_to_file`` (what the CLI runs) -- records parsed and validated one at a
  time, kept as ids, phrase, boxes and segmentations, written by json's streaming encoder as generated;
* ``naive``: what the published script does -- ``json.load``, no validation, build the whole COCO dict,
  ``json.dump(ds, f)`` (Python's pure-Python streaming encoder).

Both outputs are compared byte for byte. The last line printed is JSON: phrases/second for both, the
speed ratio (`ratio`: naive time / ours), each child's peak RSS, and whether the outputs were identical.
Note ``ours`` also validates every record and point, which ``naive`` does not.

    python benchmarks/convert.py                     # 20k phrases (default)
    python benchmarks/convert.py --phrases 350000    # PhraseCut's size (~345k phrases)
    python benchmarks/convert.py --smoke             # 300 phrases (the test suite)
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SRC = str(Path(__file__).resolve().parents[1] / "src")
sys.path.insert(0, SRC)


def make_dataset(root: Path, phrases: int, seed: int = 0):
    """Stream a PhraseCut-like refer_train.json to disk (never all records in memory)."""
    rng = np.random.default_rng(seed)
    n_images = max(1, phrases * 2 // 9)
    sizes = rng.integers(200, 800, size=(n_images, 2))
    rows = [{"image_id": i + 1, "split": "train", "width": int(w), "height": int(h), "coco_id": None,
             "flickr_id": None, "url": f"https://example.invalid/{i + 1}.jpg"} for i, (w, h) in enumerate(sizes)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "image_data_split.json").write_text(json.dumps(rows))
    image_of = np.sort(rng.integers(0, n_images, size=phrases))
    n_inst = rng.choice([1, 1, 1, 2, 2, 3, 4, 6], size=phrases)
    ann = 0
    with open(root / "refer_train.json", "w") as f:
        f.write("[")
        for p in range(phrases):
            img = int(image_of[p])
            w, h = (int(v) for v in sizes[img])
            k = int(n_inst[p])
            xy = rng.uniform(0, 1, size=(k, 4))
            n_poly = np.where(rng.random(k) < 0.3, 2, 1)
            boxes, polys = [], []
            for j in range(k):
                x, y = xy[j, 0] * (w - 20), xy[j, 1] * (h - 20)
                bw, bh = 5 + xy[j, 2] * min(115, w - x - 5), 5 + xy[j, 3] * min(115, h - y - 5)
                inst = []
                for _ in range(int(n_poly[j])):
                    m = int(rng.integers(4, 25))
                    pts = np.round(np.stack([x + rng.uniform(0, bw, m), y + rng.uniform(0, bh, m)], 1), 2)
                    inst.append(pts.tolist())
                boxes.append([int(x), int(y), int(bw) + 1, int(bh) + 1])
                polys.append(inst)
            ann_ids = list(range(ann, ann + k))
            ann += k
            rec = {"task_id": f"{img + 1}__" + "_".join(map(str, ann_ids)), "image_id": img + 1, "ann_ids": ann_ids,
                   "instance_boxes": boxes, "Polygons": polys, "phrase": "large red umbrella on table",
                   "phrase_structure": {"name": "umbrella", "attributes": ["large", "red"], "attribute_ids": [1, 2],
                                        "relation_descriptions": [["on", "table"]], "relation_ids": [p],
                                        "type": "verbose"}}
            f.write((", " if p else "") + json.dumps(rec))
        f.write("]")
    return phrases, ann


def _ours(root, out):
    from mdetr_phrasecut.data.convert import convert_split_to_file

    convert_split_to_file(root, "train", out, "compat")


def _naive(root, out):
    """The published script's approach, without validation: json.load, group, build the whole dict, json.dump."""
    with open(root / "refer_train.json") as f:
        records = json.load(f)
    with open(root / "image_data_split.json") as f:
        info = {x["image_id"]: x for x in json.load(f)}
    groups = {}
    for rec in records:
        groups.setdefault(rec["image_id"], []).append(rec)
    images, annotations = [], []
    for image_id, recs in groups.items():
        for rec in recs:
            span = [[0, len(rec["phrase"])]]
            images.append({"file_name": f"{image_id}.jpg", "height": info[image_id]["height"],
                           "width": info[image_id]["width"], "id": len(images), "original_id": image_id,
                           "caption": rec["phrase"], "tokens_negative": span, "dataset_name": "phrasecut",
                           "task_id": rec["task_id"]})
            for box, polygons in zip(rec["instance_boxes"], rec["Polygons"]):
                annotations.append({"area": box[3] * box[2], "iscrowd": 0, "category_id": 1, "bbox": box,
                                    "segmentation": [[c for xy in polygons[-1] for c in xy]],
                                    "tokens_positive": span, "image_id": len(images) - 1, "id": len(annotations)})
    ds = {"info": [], "licenses": [], "images": images, "annotations": annotations,
          "categories": [{"supercategory": "object", "id": 1, "name": "object"}]}
    with open(out, "w") as f:
        json.dump(ds, f)


def _child(name, root, out, conn):
    sys.path.insert(0, SRC)
    fn = {"ours": _ours, "naive": _naive}[name]
    t0 = time.perf_counter()
    fn(Path(root), Path(out))
    dt = time.perf_counter() - t0
    conn.send((dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    conn.close()


def run_child(name, root, out):
    ctx = mp.get_context("spawn")  # a fresh interpreter: its peak RSS is this method's alone
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(name, str(root), str(out), send))
    p.start()
    send.close()
    dt, rss = recv.recv()
    p.join()
    if p.exitcode:
        raise SystemExit(f"{name} failed with exit code {p.exitcode}")
    return dt, rss


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phrases", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="best of N timings (peak RSS: max)")
    ap.add_argument("--smoke", action="store_true", help="smallest size: 300 phrases")
    args = ap.parse_args(argv)
    if args.smoke:
        args.phrases = 300
    with tempfile.TemporaryDirectory(prefix="phrasecut_bench_") as d:
        root = Path(d)
        t0 = time.perf_counter()
        n_phr, n_ann = make_dataset(root, args.phrases, args.seed)
        in_mb = (root / "refer_train.json").stat().st_size / 1e6
        print(f"synthetic refer_train.json: {n_phr} phrases, {n_ann} instances, {in_mb:.1f} MB "
              f"(made in {time.perf_counter() - t0:.1f}s)", file=sys.stderr)
        res = {"ours": [], "naive": []}
        for _ in range(args.repeats):
            for name in res:
                res[name].append(run_child(name, root, root / f"{name}.json"))
        identical = (root / "ours.json").read_bytes() == (root / "naive.json").read_bytes()
        out_mb = (root / "ours.json").stat().st_size / 1e6
    t_ours, t_naive = (min(t for t, _ in res[k]) for k in ("ours", "naive"))
    rss_ours, rss_naive = (max(r for _, r in res[k]) for k in ("ours", "naive"))
    result = {
        "benchmark": "phrasecut_convert",
        "phrases": n_phr,
        "instances": n_ann,
        "input_mb": round(in_mb, 1),
        "output_mb": round(out_mb, 1),
        "ours_s": round(t_ours, 3),
        "naive_s": round(t_naive, 3),
        "phrases_per_s": round(n_phr / t_ours, 1),
        "naive_phrases_per_s": round(n_phr / t_naive, 1),
        "ratio": round(t_naive / t_ours, 2),
        "ratio_of": "naive / ours conversion time",
        "peak_rss_mb": round(rss_ours, 1),
        "naive_peak_rss_mb": round(rss_naive, 1),
        "ours_validates_input": True,
        "identical_output": identical,
    }
    print(json.dumps(result))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
