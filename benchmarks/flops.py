"""Benchmark: forward + backward FLOPs of the recipe's full-size models per training image, and the recipe's
cost projected from them (a projection, not a measurement: no GPU was used).

Models (random weights, built offline; the text encoder is roberta-base's architecture from a `RobertaConfig`,
see `benchmarks/model_forward.py`): stage 1, the detector with its contrastive-align head, backbone layer1 and
stem frozen as the release does; stage 2, the smallconv segmentation model with the detector frozen (forward
through everything, backward through the mask head only). Backbones: ResNet-101 and EfficientNet-B3.

Image sizes: the release's training transform (`data.transforms.make_train_transform`) applied to images of
PhraseCut's typical sizes (500x375 landscape and portrait), --samples draws; each size's FLOPs are counted by
`torch.utils.flop_counter.FlopCounterMode` on the CPU (matmuls, convolutions, attention; element-wise ops are
not counted) for one image and a phrase of 6 tokens.

Projection: phrases x epochs (config/phrasecut.yaml's stage1 and stage2) x FLOPs per image / (peak x
--utilisation) for A100 and H100 (dense TF32 and BF16 tensor-core peaks), in GPU-hours and in wall time on 32
GPUs and on one 8-GPU node; beside it the FLOP rate implied by the one GPU step rate measured so far (53 images/s
on one H100, batch 8, fp32). Last line: one JSON object (`ratio`: stage-2 / stage-1 FLOPs per image, ResNet-101).

    python benchmarks/flops.py                       # 1 draw at a quarter of the size, ResNet-101
    python benchmarks/flops.py --smoke               # a tiny model, 1 small draw (the test suite)
    python benchmarks/flops.py --samples 6 --scale 1 --backbones resnet101 efficientnet_b3
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from model_forward import PHRASES, TINY, roberta_base_folder, surrogate_loss  # noqa: E402

# dense tensor-core peaks, TFLOP/s (NVIDIA data sheets: A100 SXM, H100 SXM)
PEAKS = {"A100": {"tf32": 156, "bf16": 312}, "H100": {"tf32": 495, "bf16": 989}}
MEASURED_H100_FP32 = 53.0  # images/s, batch 8 (the GPU step rate measured so far)
PUBLISHED = "pre-training: about a week on 32 V100s (MDETR issue #7), ~5,400 V100 GPU-hours"


def image_sizes(samples: int, scale: float, seed: int = 0):
    """(h, w) of `samples` training images after the release's training transform, `scale` times smaller."""
    from PIL import Image

    from mdetr_phrasecut.data import transforms as T

    transform = T.make_train_transform()
    generator = torch.Generator().manual_seed(seed)
    sizes = []
    for i in range(samples):
        w, h = (500, 375) if i % 2 == 0 else (375, 500)
        target = {"boxes": torch.tensor([[w * 0.3, h * 0.3, w * 0.6, h * 0.6]]), "labels": torch.ones(1),
                  "caption": "x", "tokens_positive": [[[0, 1]]], "size": torch.tensor([h, w])}
        image, _ = transform(Image.new("RGB", (w, h)), target, generator=generator)
        sizes.append((max(16, round(image.shape[1] * scale)), max(16, round(image.shape[2] * scale))))
    return sizes


def count_flops(model, size, trainable) -> float:
    """Forward + backward FLOPs of one image of `size` with the parameters `trainable` requires grad."""
    from torch.utils.flop_counter import FlopCounterMode

    from mdetr_phrasecut.model.nested_tensor import nested_tensor_from_tensor_list

    for name, p in model.named_parameters():
        p.requires_grad_(trainable(name))
    samples = nested_tensor_from_tensor_list([torch.randn(3, *size)])
    counter = FlopCounterMode(display=False)
    with counter:
        surrogate_loss(model(samples, PHRASES[:1])).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def stage_flops(backbone, size, sizes):
    """{stage: mean FLOPs per training image} for one backbone; `size`: the other model keys."""
    from mdetr_phrasecut.config import resolve_stage
    from mdetr_phrasecut.model.build import build_model

    torch.manual_seed(0)
    base = dict(resolve_stage({"model": {**size, "backbone": backbone}, "train": {}}, "stage1").model)
    detector = build_model(base).train()
    frozen = {n for n, p in detector.named_parameters() if not p.requires_grad}  # the release's frozen stem/layer1
    stage1 = [count_flops(detector, s, lambda n: n not in frozen) for s in sizes]
    del detector
    segm = build_model({**base, "masks": True, "mask_model": "smallconv", "contrastive_align_loss": False}).train()
    stage2 = [count_flops(segm, s, lambda n: not n.startswith("detr.")) for s in sizes]
    return {"stage1": sum(stage1) / len(stage1), "stage2": sum(stage2) / len(stage2)}


def projection(flops, phrases, epochs, utilisation):
    """GPU-hours and wall hours of both stages per GPU type and precision."""
    total = sum(flops[s] * phrases * epochs[s] for s in ("stage1", "stage2"))
    out = {}
    for gpu, peaks in PEAKS.items():
        for precision, tflops in peaks.items():
            hours = total / (tflops * 1e12 * utilisation) / 3600
            out[f"{gpu}_{precision}"] = {"gpu_hours": round(hours, 1), "wall_hours_32_gpus": round(hours / 32, 2),
                                         "wall_hours_8_gpus": round(hours / 8, 2)}
    return total, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1, help="image sizes drawn from the training transform")
    ap.add_argument("--scale", type=float, default=0.25, help="image size factor (1: the recipe's sizes)")
    ap.add_argument("--backbones", nargs="+", default=["resnet101"])
    ap.add_argument("--phrases", type=int, default=310_000, help="training phrases per epoch")
    ap.add_argument("--utilisation", type=float, default=0.3, help="fraction of the peak sustained")
    ap.add_argument("--smoke", action="store_true", help="a tiny model (model_forward's TINY), 1 draw at 1/8 size")
    args = ap.parse_args()
    if args.smoke:
        args.samples, args.scale, args.backbones = 1, 0.125, [TINY["backbone"]]

    from mdetr_phrasecut.config import load_config

    recipe = load_config(ROOT / "config" / "phrasecut.yaml")
    epochs = {s: recipe["train"][s]["epochs"] for s in ("stage1", "stage2")}
    sizes = image_sizes(args.samples, args.scale)
    with tempfile.TemporaryDirectory() as tmp:
        size = TINY if args.smoke else {"text_encoder_type": str(roberta_base_folder(Path(tmp)))}
        per_image = {b: stage_flops(b, size, sizes) for b in args.backbones}
    results = {}
    for backbone, flops in per_image.items():
        total, proj = projection(flops, args.phrases, epochs, args.utilisation)
        implied = flops["stage1"] * MEASURED_H100_FP32 / 1e12
        results[backbone] = {"gflops_per_image": {s: round(f / 1e9, 1) for s, f in flops.items()},
                             "total_pflops": round(total / 1e15, 1), "projection": proj,
                             "implied_tflops_at_53_img_s_h100_fp32": round(implied, 1)}
    first = per_image[args.backbones[0]]
    print(json.dumps({"label": "projection from counted FLOPs, not a measurement", "sizes_hw": sizes,
                      "scale": args.scale, "phrases": args.phrases, "epochs": epochs,
                      "utilisation": args.utilisation, "peaks_tflops": PEAKS, "published": PUBLISHED,
                      "models": results, "ratio": round(first["stage2"] / first["stage1"], 3)}))


if __name__ == "__main__":
    main()
