"""`export-checkpoint`: a training checkpoint -> a small weights-only one for distribution (e.g. the demo's stage 0),
or (`--hub-folder`) a folder ready for `huggingface_hub.upload_folder`.

`--out`: keeps the EMA weights (else `model`) under `model`, casts floating tensors to float16 by default; loading
(`load` semantics) casts them back to the model's dtype. The provenance record names the source checkpoint.
`--hub-folder DIR`: `model.safetensors` (the same weights, float32 unless --float16), `config.json` (the model
keys of the config the checkpoint was trained with, what `predict --config` reads) and, with `--card`, the model
card as `README.md` (the Hub's card file). `predict --checkpoint DIR/model.safetensors --config DIR/config.json`
runs it; uploading stays the user's step: `huggingface_hub.upload_folder(repo_id=..., folder_path=DIR)`.
"""
import json
import shutil

import torch

from ..arguments import IN_FILE, OUT_DIR, OUT_FILE
from ..schema import load_schema
from ..errors import InputError
from ..infra.io import atomic_torch_save, built_folder
from .checkpoint_file import describe, read_checkpoint, select_weights

HUB_FILES = ("model.safetensors", "config.json", "README.md")


def exported_weights(src, dtype):
    """(the checkpoint's EMA (else model) weights cast to `dtype`, what they are: {weights, backbone, stage})."""
    ckpt = read_checkpoint(src)
    weights, key = select_weights(ckpt)
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
    backbone, stage = describe(cast)
    return ckpt, cast, {"weights": key, "dtype": str(dtype), "backbone": backbone, "stage": stage}


def export_weights(src, dst, dtype=torch.float16) -> dict:
    _, cast, about = exported_weights(src, dtype)
    ckpt = {"model": cast, "epoch": None, "args": {"exported_from": str(src), **about}}
    atomic_torch_save(ckpt, dst)
    return ckpt["args"]


def model_config(ckpt, src):
    """The model section (schema keys) of the config a training checkpoint of `train` was made with."""
    trained = (ckpt.get("args") or {}).get("train") if isinstance(ckpt.get("args"), dict) else None
    if not isinstance(trained, dict):
        raise InputError(f"checkpoint {src}: args.train is missing (not a checkpoint written by `train`), so its "
                         "model config is unknown")
    keys = load_schema()["definitions"]["model"]["properties"]
    return {k: trained[k] for k in keys if k in trained}


def export_hub_folder(src, folder, card=None, dtype=torch.float32) -> dict:
    """Write the Hub folder (see the module doc) next to `folder` and rename it into place; returns its config."""
    from safetensors.torch import save_file

    ckpt, cast, about = exported_weights(src, dtype)
    config = model_config(ckpt, src)
    if folder.exists():
        raise InputError(f"--hub-folder {folder}: already exists; give a new folder")
    with built_folder(folder) as built:
        save_file({k: v.contiguous() for k, v in cast.items()}, built / HUB_FILES[0],
                  metadata={"format": "pt", "exported_from": str(src), **about})
        (built / HUB_FILES[1]).write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
        if card is not None:
            shutil.copyfile(card, built / HUB_FILES[2])
    return config


def add_arguments(parser):
    parser.add_argument("--checkpoint", required=True, type=IN_FILE, help="training checkpoint")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", type=OUT_FILE, help="a weights-only checkpoint (.pth)")
    out.add_argument("--hub-folder", type=OUT_DIR, help="a new folder for huggingface_hub.upload_folder")
    parser.add_argument("--card", type=IN_FILE, help="with --hub-folder: the model card (MODEL_CARD.md), as README.md")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--float32", action="store_true", help="--out: keep float32 (default: float16)")
    precision.add_argument("--float16", action="store_true", help="--hub-folder: float16 (default: float32)")


def main(args):
    if args.out is not None:
        if args.card is not None or args.float16:
            raise InputError("--card and --float16 go with --hub-folder")
        print(export_weights(args.checkpoint, args.out, torch.float32 if args.float32 else torch.float16))
    else:
        if args.float32:
            raise InputError("--float32 goes with --out (--hub-folder keeps float32 unless --float16)")
        print(export_hub_folder(args.checkpoint, args.hub_folder, args.card,
                                torch.float16 if args.float16 else torch.float32))
