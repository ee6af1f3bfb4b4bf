"""Benchmark: training images/second of the engine's real step (forward, criterion, backward, clipping, AdamW,
EMA), fp32 vs bf16 autocast, on synthetic pre-collated batches (data loading excluded).

    python benchmarks/train_throughput.py                   # tiny config on CPU (ResNet-18, hidden 128, 64 px)
    python benchmarks/train_throughput.py --size 800        # larger images
    python benchmarks/train_throughput.py --stage stage2    # segmentation model, frozen detector
    python benchmarks/train_throughput.py --smoke           # 1 step, the tiny CPU run only (the test suite)

With CUDA, the full-size model (ResNet-101, roberta-base sized text encoder with random weights, batch 2,
800 px: the release's per-GPU setting) is measured on the GPU as well. fp32 is the baseline of each device;
the ratio bf16/fp32 is reported (`ratio`: the tiny CPU run's). Last line: one JSON object.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from model_forward import PHRASES, TINY, roberta_base_folder  # noqa: E402

from mdetr_phrasecut.data.dataset import train_collate_fn  # noqa: E402
from mdetr_phrasecut.engine.train_log import TrainingLog  # noqa: E402
from mdetr_phrasecut.engine.loop import Position, train_one_epoch  # noqa: E402
from mdetr_phrasecut.engine.optim import build_optimizer, build_scheduler  # noqa: E402
from mdetr_phrasecut.config import resolve_stage  # noqa: E402
from mdetr_phrasecut.model.build import build  # noqa: E402
from mdetr_phrasecut.model.ema import ModelEMA  # noqa: E402
from mdetr_phrasecut.model.positive_map import caption_positive_map  # noqa: E402
from mdetr_phrasecut.stages import RUN_STAGES  # noqa: E402

FULL = {"backbone": "resnet101"}  # everything else: the release's defaults


def synthetic_items(tokenizer, count: int, size: int, masks: bool) -> list:
    """`count` (image, target) items: size×(4/3 size) noise images, 1-3 boxes per phrase."""
    g = torch.Generator().manual_seed(0)
    h, w = size, size * 4 // 3
    items = []
    for i in range(count):
        caption = PHRASES[i % len(PHRASES)]
        n = 1 + i % 3
        centers = 0.3 + 0.4 * torch.rand(n, 2, generator=g)
        boxes = torch.cat([centers, 0.1 + 0.2 * torch.rand(n, 2, generator=g)], 1)
        spans = [[[0, len(caption)]]] * n
        target = {"boxes": boxes, "labels": torch.ones(n, dtype=torch.long), "caption": caption,
                  "tokens_positive": spans, "positive_map": caption_positive_map(tokenizer, caption, spans),
                  "size": torch.tensor([h, w]), "orig_size": torch.tensor([h, w])}
        if masks:
            target["masks"] = torch.rand(n, h, w, generator=g) > 0.5
        items.append((torch.randn(3, h, w, generator=g), target))
    return items


def images_per_second(model_cfg: dict, stage: str, device, batch_size: int, size: int, steps: int, warmup: int,
                      bf16: bool, compile_model: bool) -> float:
    resolved = resolve_stage({"model": model_cfg, "train": {"batch_size": batch_size, "bf16": bf16}}, stage)
    cfg = resolved.train
    torch.manual_seed(0)
    model, criterion, _ = build(resolved)
    model.to(device)
    optimizer = build_optimizer(model, cfg)
    detr = getattr(model, "detr", model)
    items = synthetic_items(detr.transformer.tokenizer, (warmup + steps) * batch_size, size, resolved.stage.masks)
    batches = [train_collate_fn(items[i:i + batch_size], cfg["positive_map"]) for i in range(0, len(items), batch_size)]
    net = torch.compile(model) if compile_model else model
    scheduler = build_scheduler(optimizer, cfg, warmup + steps)
    step = dict(max_norm=cfg["clip_max_norm"], bf16=bf16, world_batch=batch_size, ema=ModelEMA(model, cfg["ema_decay"]),
                log=TrainingLog(None), save=None, progress=False)

    def epoch(batches, position):
        return train_one_epoch(net, model, criterion.to(device), batches, optimizer, scheduler, device, position,
                               warmup + steps, **step)

    position = epoch(batches[:warmup], Position())
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    epoch(batches[warmup:], position)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch_size * steps / (time.perf_counter() - start)


def compare(label, model_cfg, args, device, batch_size, size) -> dict:
    """fp32 (baseline) and bf16 images/s on one device."""
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "threads": torch.get_num_threads(), "batch_size": batch_size, "image_hw": [size, size * 4 // 3]}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        ips = images_per_second(model_cfg, args.stage, device, batch_size, size, args.steps, args.warmup, bf16,
                                args.compile and device.type == "cuda")
        result[f"images_per_s_{name}"] = round(ips, 3)
        print(f"{label} {name}: {ips:.2f} images/s", file=sys.stderr)
    result["bf16_over_fp32"] = round(result["images_per_s_bf16"] / result["images_per_s_fp32"], 3)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="stage1", choices=RUN_STAGES)
    parser.add_argument("--steps", type=int, default=4, help="measured steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2, help="tiny CPU run")
    parser.add_argument("--size", type=int, default=64, help="tiny CPU run: image short side")
    parser.add_argument("--gpu-batch-size", type=int, default=2)
    parser.add_argument("--gpu-size", type=int, default=800)
    parser.add_argument("--compile", action="store_true", help="torch.compile on the GPU")
    parser.add_argument("--smoke", action="store_true",
                        help="smallest size: 1 measured step, no warm-up, the tiny CPU run only")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.warmup = 1, 0

    out = {"benchmark": "train_throughput", "stage": args.stage, "steps": args.steps}
    out["tiny_cpu"] = compare("tiny cpu", TINY, args, torch.device("cpu"), args.batch_size, args.size)
    out["ratio"], out["ratio_of"] = out["tiny_cpu"]["bf16_over_fp32"], "bf16 / fp32 images/s, tiny CPU run"
    if torch.cuda.is_available() and not args.smoke:
        with tempfile.TemporaryDirectory() as tmp:
            full = {**FULL, "text_encoder_type": str(roberta_base_folder(Path(tmp)))}
            out["full_gpu"] = compare("full gpu", full, args, torch.device("cuda"), args.gpu_batch_size,
                                      args.gpu_size)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
