"""Benchmark: images/second per CPU core of the training data path at PhraseCut's image sizes, and the loader
workers per GPU that rate implies.

Synthetic JPEGs (quality 90, textured) of PhraseCut's typical sizes (Visual Genome: about 500x375, longer side
300-800) with 1-3 polygon instances each, indexed as `mdetr-phrasecut index` does, are read on one thread:

* ``decode_pil``: `io.open_image` (PIL decode + RGB), what the dataset does; ``decode_torchvision``:
  `torchvision.io.decode_jpeg` of the file's bytes (libjpeg-turbo, no PIL; pillow-simd not assumed);
* ``item``: a whole training item of `PhraseCutDetection` with the release's training transforms (random resize
  480-800 / max 1333 or resize-crop-resize, masks rasterised and resized, normalised tensor, positive map) --
  the baseline; ``tensor_item``: `decode_jpeg` + the same resize + normalisation on the uint8 tensor (boxes
  and masks left out), what a tensor pipeline would cost at least.

`workers_per_gpu` = ceil(--headroom x --gpu-rate / item rate per core): 53 img/s is the step rate measured so far
for one H100 at batch 8 in fp32. Rates are per CPU second of this process (one thread), not wall time. Last line:
one JSON object (`ratio`: tensor_item / item rate).

    python benchmarks/data_throughput.py              # 12 images, 2 passes
    python benchmarks/data_throughput.py --images 200 --passes 3
"""
import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

TOKENIZER = ROOT / "src" / "mdetr_phrasecut" / "assets" / "tiny_text_encoder"


def write_split(folder: Path, n: int, seed: int = 0) -> Path:
    """`n` JPEGs and their COCO file (one phrase each) in `folder`; returns the COCO file."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(n):
        long_side = int(rng.integers(300, 801)) if i % 4 else 500
        w, h = (long_side, long_side * 3 // 4) if i % 2 else (long_side * 3 // 4, long_side)
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * (1 + c) + yy * (3 - c)) % 256 for c in range(3)], -1)
        noise = rng.integers(0, 64, size=(h, w, 3))
        Image.fromarray((base + noise).clip(0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)
        images.append({"id": i, "file_name": f"{i}.jpg", "width": w, "height": h, "caption": "large red umbrella",
                       "task_id": f"{i}__0", "original_id": i})
        for k in range(1 + i % 3):
            x, y = float(rng.uniform(0, w / 2)), float(rng.uniform(0, h / 2))
            bw, bh = float(rng.uniform(20, w / 2)), float(rng.uniform(20, h / 2))
            angles = np.sort(rng.uniform(0, 2 * np.pi, 16))
            poly = np.stack([x + bw / 2 * (1 + np.cos(angles)), y + bh / 2 * (1 + np.sin(angles))], 1)
            annotations.append({"id": len(annotations), "image_id": i, "bbox": [x, y, bw, bh], "area": bw * bh,
                                "iscrowd": 0, "category_id": 1, "segmentation": [poly.round(2).ravel().tolist()],
                                "tokens_positive": [[0, 18]]})
    coco = folder / "finetune_phrasecut_train.json"
    coco.write_text(json.dumps({"images": images, "annotations": annotations, "categories": []}))
    return coco


def rate(fn, items, passes):
    """Best images per CPU second over `passes` passes of fn(item) for every item (this process's CPU time, so
    other load on the machine does not count)."""
    best = math.inf
    for _ in range(passes):
        t0 = time.process_time()
        for item in items:
            fn(item)
        best = min(best, time.process_time() - t0)
    return len(items) / best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--gpu-rate", type=float, default=53.0, help="images/s one GPU trains (default: H100, fp32)")
    ap.add_argument("--headroom", type=float, default=1.5, help="loader capacity / GPU rate to provision")
    args = ap.parse_args()

    import torch
    import torchvision.transforms.v2.functional as F
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
    from transformers import AutoTokenizer

    from mdetr_phrasecut.data import transforms as T
    from mdetr_phrasecut.data.annotation_index import AnnotationIndex, build_index
    from mdetr_phrasecut.data.dataset import PhraseCutDetection
    from mdetr_phrasecut.infra.io import open_image

    torch.set_num_threads(1)  # one core, as one loader worker has
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        coco = write_split(tmp, args.images)
        index = AnnotationIndex(build_index(coco, tmp / "index"), coco)
        ds = PhraseCutDetection(tmp, index, T.make_train_transform(), True, AutoTokenizer.from_pretrained(TOKENIZER))
        files = [tmp / index.image(i)["file_name"] for i in range(len(index))]
        scales = T.RELEASE_SCALES

        def tensor_item(i):
            image = decode_jpeg(read_file(str(files[i])), mode=ImageReadMode.RGB)
            h, w = T.resized_shape(image.shape[2], image.shape[1], scales[i % len(scales)], T.RELEASE_MAX_SIZE)
            image = F.resize(image, [h, w], antialias=True)
            return F.normalize(F.to_dtype(image, torch.float32, scale=True), T.IMAGENET_MEAN, T.IMAGENET_STD)

        torch.manual_seed(0)
        ids = range(len(ds))
        rates = {
            "decode_pil": rate(lambda i: open_image(files[i]), ids, args.passes),
            "decode_torchvision": rate(lambda i: decode_jpeg(read_file(str(files[i])), mode=ImageReadMode.RGB), ids,
                                       args.passes),
            "item": rate(ds.__getitem__, ids, args.passes),
            "tensor_item": rate(tensor_item, ids, args.passes),
        }
        sizes = [(index.image(i)["width"], index.image(i)["height"]) for i in ids]
    print(json.dumps({
        "images": args.images, "mean_size": [round(float(np.mean([s[k] for s in sizes]))) for k in (0, 1)],
        "images_per_s_per_core": {k: round(v, 1) for k, v in rates.items()},
        "gpu_rate": args.gpu_rate, "headroom": args.headroom,
        "workers_per_gpu": math.ceil(args.headroom * args.gpu_rate / rates["item"]),
        "ratio": round(rates["tensor_item"] / rates["item"], 3),
        "decode_ratio": round(rates["decode_torchvision"] / rates["decode_pil"], 3),
    }))


if __name__ == "__main__":
    main()
