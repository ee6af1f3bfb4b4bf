"""Benchmark: images/second of the full-size MDETR (ResNet-101 + a roberta-base sized text encoder with random
weights, built offline from a config and a small BPE tokenizer trained on the spot), inference (eval, no grad) and
training step (train mode, forward + backward of a surrogate loss over every output head).

    python benchmarks/model_forward.py                                    # CPU-friendly: batch 1, 256×320 px
    python benchmarks/model_forward.py --height 800 --width 1066 --batch 2  # the release's resolution (800 px)
    python benchmarks/model_forward.py --masks                            # the smallconv segmentation model
    python benchmarks/model_forward.py --smoke      # a tiny model (ResNet-18, 1+1 layers), 64 px (the test suite)

fp32 eval is the baseline; with CUDA (or --bf16 on CPU) bf16 autocast runs too. Reported ratios: train/eval and
bf16/fp32 throughput (`ratio`: train/eval fp32). Last line: one JSON object.
"""
import argparse
import json
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import RobertaConfig, RobertaTokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
# A tiny model for CPU runs (--smoke here, train_throughput's CPU measurement)
TINY = {"backbone": "resnet18", "hidden_dim": 128, "nheads": 8, "enc_layers": 1, "dec_layers": 1,
        "dim_feedforward": 64, "num_queries": 4,
        "text_encoder_type": str(ROOT / "src/mdetr_phrasecut/assets/tiny_text_encoder")}

from mdetr_phrasecut.config import resolve_stage  # noqa: E402
from mdetr_phrasecut.model.build import build_model  # noqa: E402
from mdetr_phrasecut.model.nested_tensor import nested_tensor_from_tensor_list  # noqa: E402

PHRASES = ["the small red circle left of the blue square", "white clouds in blue sky", "man wearing a black hat",
           "large wooden table near the window", "green tree", "dog lying on the grass"]


def roberta_base_folder(folder: Path) -> Path:
    """roberta-base's architecture (random weights) with a byte-level BPE tokenizer trained on PHRASES."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(PHRASES, vocab_size=400, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))
    RobertaTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt")).save_pretrained(folder)
    RobertaConfig(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                  pad_token_id=1, bos_token_id=0, eos_token_id=2).save_pretrained(folder)
    return folder


def surrogate_loss(outputs: dict):
    """Touches every head so the backward pass covers the whole model (the real criterion is benchmarked elsewhere)."""
    keys = ("pred_logits", "pred_boxes", "proj_queries", "proj_tokens", "pred_masks")
    return sum(outputs[k].float().mean() for k in keys if k in outputs)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def images_per_second(model, samples, captions, train: bool, autocast, iters: int, warmup: int) -> float:
    model.train(train)
    device = samples.tensors.device
    for i in range(warmup + iters):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        with (nullcontext() if train else torch.inference_mode()), autocast():
            outputs = model(samples, captions)
            if train:
                surrogate_loss(outputs).backward()
        if train:
            model.zero_grad(set_to_none=True)
    sync(device)
    return len(captions) * iters / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet101")
    parser.add_argument("--masks", action="store_true", help="benchmark the segmentation model")
    parser.add_argument("--height", type=int, default=256, help="image height (the short side; release: 800)")
    parser.add_argument("--width", type=int, default=320, help="image width")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="also bf16 autocast on CPU (always on CUDA)")
    parser.add_argument("--smoke", action="store_true",
                        help="smallest size: a tiny model (TINY), 64x64 px, 1 iteration")
    args = parser.parse_args()
    if args.smoke:
        args.backbone, args.height, args.width, args.iters, args.warmup = TINY["backbone"], 64, 64, 1, 0
    device = torch.device(args.device)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        size = TINY if args.smoke else {"text_encoder_type": str(roberta_base_folder(Path(tmp)))}
        cfg = resolve_stage({"model": {**size, "backbone": args.backbone}, "train": {}}, "stage1").model
        cfg = {**cfg, "masks": args.masks, "mask_model": "smallconv", "contrastive_align_loss": not args.masks}
        model = build_model(cfg).to(device)
    images = [torch.randn(3, args.height, args.width) for _ in range(args.batch)]
    samples = nested_tensor_from_tensor_list(images).to(device)
    captions = [PHRASES[i % len(PHRASES)] for i in range(args.batch)]

    precisions = {"fp32": nullcontext}
    if device.type == "cuda" or args.bf16:
        precisions["bf16"] = lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    results = {}
    for name, autocast in precisions.items():
        results[name] = {mode: round(images_per_second(model, samples, captions, mode == "train", autocast,
                                                       args.iters, args.warmup), 3)
                         for mode in ("eval", "train")}
        print(f"{name}: {results[name]}", file=sys.stderr)

    ratios = {"train_over_eval_fp32": results["fp32"]["train"] / results["fp32"]["eval"]}
    if "bf16" in results:
        ratios["bf16_over_fp32_eval"] = results["bf16"]["eval"] / results["fp32"]["eval"]
        ratios["bf16_over_fp32_train"] = results["bf16"]["train"] / results["fp32"]["train"]
    print(json.dumps({
        "benchmark": "model_forward", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "model": "segm" if args.masks else "detector", "backbone": args.backbone,
        "image_hw": [args.height, args.width], "batch": args.batch, "iters": args.iters,
        "params": sum(p.numel() for p in model.parameters()), "images_per_second": results,
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "ratio": round(ratios["train_over_eval_fp32"], 3), "ratio_of": "train / eval images/s, fp32",
    }))


if __name__ == "__main__":
    main()
