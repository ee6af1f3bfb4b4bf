"""Benchmark: memory of the training data path per rank and per loader worker, the packed annotation index
(`data.annotation_index`) against the COCO-dict index it replaced, side by side.

A synthetic split in PhraseCut's layout (`benchmarks/convert.py`'s generator, converted by `convert`) is indexed
both ways in one fresh child process (the new index first), with the tiny tokenizer; images are blank images of
the recorded size.

* ``old``: pycocotools ``COCO`` dicts + every caption tokenised for the length check at start, items read from
  the dicts (what `PhraseCutDetection` did before the index);
* ``new``: ``mdetr-phrasecut index`` once (build time reported apart), then `AnnotationIndex` opened read-only
  (memory-mapped) and `PhraseCutDetection` on it.

Each side reports the index's RSS and PSS (``/proc/self/smaps_rollup``, after minus before) and its open time,
then iterates a DataLoader (2 persistent workers, forked, shuffled) for --items items per worker, each worker
reporting its USS after --warmup items (and a full collection) and at the end. The growth of its private dirty
memory per 10,000 items is copy-on-read (pytorch/pytorch#13246); USS also counts the clean page-cache pages of
the mapped index that worker alone has read, shared as soon as another process reads them. Last line: one JSON
object; ratios are new / old.

    python benchmarks/data_memory.py                    # 1,000 phrases, 200 items per worker
    python benchmarks/data_memory.py --phrases 310000 --items 10000   # PhraseCut's training split
"""
import argparse
import contextlib
import gc
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

TOKENIZER = ROOT / "src" / "mdetr_phrasecut" / "assets" / "tiny_text_encoder"
MB = 1 << 20
# glibc's mmap threshold held fixed: image and mask buffers are then always mapped and returned when freed, not
# left in a heap that grows with their sizes (noise in the USS readings, the same for both sides)
FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def memory():
    """{rss, pss, dirty (private dirty: anonymous memory of this process alone, copies on write included),
    uss (private clean + dirty; clean pages of a mapped file read by this process alone count too)} in bytes."""
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":")
        fields[key] = int(value.split()[0]) * 1024
    return {"rss": fields["Rss"], "pss": fields["Pss"], "dirty": fields["Private_Dirty"],
            "uss": fields["Private_Clean"] + fields["Private_Dirty"]}


def folder_size(folder):
    return sum(p.stat().st_size for p in Path(folder).iterdir())


def old_dataset(coco_file, tokenizer):
    """The COCO-dict path: pycocotools' index, every caption tokenised, targets from the dicts per item."""
    import torch
    from pycocotools.coco import COCO

    from mdetr_phrasecut.data.dataset import polygons_to_mask
    from mdetr_phrasecut.model.text_encoder import check_phrase_lengths

    class OldIndex(torch.utils.data.Dataset):
        def __init__(self):
            with contextlib.redirect_stdout(io.StringIO()):
                self.coco = COCO(str(coco_file))
            self.ids = sorted(self.coco.imgs)
            check_phrase_lengths(tokenizer, [self.coco.imgs[i]["caption"] for i in self.ids], str)

        def __len__(self):
            return len(self.ids)

        def __getitem__(self, idx):
            info = self.coco.imgs[self.ids[idx]]
            anns = [a for a in self.coco.imgToAnns[info["id"]] if not a.get("iscrowd", 0)]
            boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
            masks = [polygons_to_mask(a["segmentation"], info["height"], info["width"]) for a in anns]
            return boxes, masks, info["caption"], [a["tokens_positive"] for a in anns]

    return OldIndex()


def new_dataset(index_dir, coco_file, tokenizer):
    from PIL import Image

    from mdetr_phrasecut.data.annotation_index import AnnotationIndex
    from mdetr_phrasecut.data.dataset import PhraseCutDetection

    class BlankImages(PhraseCutDetection):
        def _load_image(self, info):
            return Image.new("RGB", (info["width"], info["height"]))

    return BlankImages("/nonexistent", AnnotationIndex(index_dir, coco_file), None, True, tokenizer)


class Probe:
    """Reads item i of `dataset`; returns (pid, items read by this worker when last measured, memory after
    `warmup` items and a full garbage collection, memory then), measuring every `warmup` items."""

    def __init__(self, dataset, warmup):
        self.dataset, self.warmup, self.count, self.start, self.last = dataset, warmup, 0, None, None

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        self.dataset[i]
        self.count += 1
        if self.count == self.warmup:  # a full collection first: it writes to every tracked object once
            gc.collect()
            self.start = memory()
        if self.count % self.warmup == 0:
            self.last = (self.count, memory())
        return os.getpid(), self.start, self.last


def measure(make, args):
    """The index's memory and open time (`make()` builds the dataset), then the workers' USS."""
    import torch

    before = memory()
    t0 = time.perf_counter()
    ds = make()
    opened = time.perf_counter() - t0
    after = memory()
    loader = torch.utils.data.DataLoader(Probe(ds, args.warmup), batch_size=None, shuffle=True, num_workers=2,
                                         persistent_workers=True, multiprocessing_context="fork",
                                         generator=torch.Generator().manual_seed(0))
    last = {}
    for n, (pid, start, reading) in enumerate(loader, 1):
        if reading is not None:
            last[pid] = (start, *reading)
        if n >= 2 * args.items:
            break
    workers = [{"items": count, "uss_mb": round(now["uss"] / MB, 1),
                "uss_growth_mb": round((now["uss"] - start["uss"]) / MB, 2),
                "private_dirty_growth_mb": round((now["dirty"] - start["dirty"]) / MB, 2),
                "dirty_growth_mb_per_10k": round((now["dirty"] - start["dirty"]) / MB / (count - args.warmup)
                                                 * 10_000, 2)}
               for start, count, now in last.values()]
    return {"open_s": round(opened, 3), "index_rss_mb": round((after["rss"] - before["rss"]) / MB, 1),
            "index_pss_mb": round((after["pss"] - before["pss"]) / MB, 1), "workers": workers}


def child(args):
    """Both sides in one fresh process, the new one first (so the old one's garbage cannot count against it)."""
    from transformers import AutoTokenizer

    from mdetr_phrasecut.data import dataset as _  # noqa: F401  (imports counted before the baseline)

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    new = measure(lambda: new_dataset(args.index, args.coco, tokenizer), args)
    old = measure(lambda: old_dataset(args.coco, tokenizer), args)
    print(json.dumps({"old": old, "new": new}))


def run_child(args, coco, index):
    out = subprocess.run([sys.executable, __file__, "--child", "--coco", str(coco), "--index", str(index),
                          "--items", str(args.items), "--warmup", str(args.warmup)],
                         stdout=subprocess.PIPE, text=True, check=True, env={**os.environ, **FIXED_MALLOC})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phrases", type=int, default=1000)
    ap.add_argument("--items", type=int, default=200, help="items each of the 2 workers reads")
    ap.add_argument("--warmup", type=int, default=100,
                    help="items read before a worker's first memory reading (and between readings)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--coco", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from convert import make_dataset

    from mdetr_phrasecut.data.annotation_index import build_index
    from mdetr_phrasecut.data.convert import convert_split_to_file

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_dataset(tmp, args.phrases)
        coco, index = tmp / "finetune_phrasecut_train.json", tmp / "finetune_phrasecut_train.index"
        convert_split_to_file(tmp, "train", coco)
        t0 = time.perf_counter()
        build_index(coco, index)
        build_s = time.perf_counter() - t0
        sides = run_child(args, coco, index)
        old, new = sides["old"], sides["new"]
        sizes = {"coco_json_mb": round(coco.stat().st_size / MB, 1), "index_mb": round(folder_size(index) / MB, 1)}
    growth = {side: max(w["dirty_growth_mb_per_10k"] for w in r["workers"]) for side, r in (("old", old), ("new", new))}
    result = {
        "phrases": args.phrases, "items_per_worker": args.items, **sizes, "index_build_s": round(build_s, 2),
        "old": old, "new": new,
        "goals": {"index_rss_within_file": new["index_rss_mb"] <= sizes["index_mb"],
                  "worker_uss_growth_le_1mb_per_10k": growth["new"] <= 1.0, "open_le_2s": new["open_s"] <= 2.0},
        "index_rss_ratio": round(new["index_rss_mb"] / max(old["index_rss_mb"], 0.1), 4),
        "open_time_ratio": round(new["open_s"] / max(old["open_s"], 1e-3), 4),
        "worker_uss_growth_ratio": round(growth["new"] / max(growth["old"], 0.01), 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
