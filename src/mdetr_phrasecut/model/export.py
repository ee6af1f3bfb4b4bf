"""`export-checkpoint`: a training checkpoint -> a small weights-only one for distribution (e.g. the demo's stage 0).

Keeps the EMA weights (else `model`) under `model`, casts floating tensors to float16 by default; loading
(`load` semantics) casts them back to the model's dtype. The provenance record names the source checkpoint.
"""
import torch

from ..arguments import IN_FILE, OUT_FILE
from ..io import atomic_torch_save
from .checkpoint_file import describe, read_checkpoint, select_weights


def export_weights(src, dst, dtype=torch.float16) -> dict:
    weights, key = select_weights(read_checkpoint(src))
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
    backbone, stage = describe(cast)
    ckpt = {"model": cast, "epoch": None, "args": {"exported_from": str(src), "weights": key, "dtype": str(dtype),
                                                   "backbone": backbone, "stage": stage}}
    atomic_torch_save(ckpt, dst)
    return ckpt["args"]


def add_arguments(parser):
    parser.add_argument("--checkpoint", required=True, type=IN_FILE, help="training checkpoint")
    parser.add_argument("--out", required=True, type=OUT_FILE)
    parser.add_argument("--float32", action="store_true", help="keep float32 (default: float16)")


def main(args):
    print(export_weights(args.checkpoint, args.out, torch.float32 if args.float32 else torch.float16))
