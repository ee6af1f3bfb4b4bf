"""Checkpoints in the release's layout: {model, model_ema, optimizer, lr_scheduler, epoch, args}.

Published checkpoints load strictly; the only tolerated differences are named here:
  * `[detr.]transformer.text_encoder.embeddings.position_ids`, a buffer 2021's `transformers` stored, is dropped
    when the model has no such key;
  * a detector checkpoint loads into a segmentation model's `detr` (stage 2 starts from stage 1); the detector's
    contrastive-align projections are dropped when that detector has none (the release's stage 2 has no such head);
  * the BatchNorm step counters (`num_batches_tracked`) of a backbone pre-trained from scratch with trainable
    BatchNorms are dropped when the model's BatchNorms are frozen (the later stages).
A checkpoint of another backbone or stage, a file that is no checkpoint and non-finite weights fail with an
`InputError` saying which.
"""
import argparse
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError
from ..infra.io import atomic_torch_save, note_input

LEGACY_BUFFER = "transformer.text_encoder.embeddings.position_ids"  # also under `detr.`
BN_COUNTER = ".num_batches_tracked"
STAGE1_ONLY = ("contrastive_align_projection_image.", "contrastive_align_projection_text.")
_RESNET_DEPTHS = {(2, False): "resnet18", (6, False): "resnet34", (6, True): "resnet50", (23, True): "resnet101",
                  (36, True): "resnet152"}


def describe(state_dict) -> tuple:
    """(backbone, stage) of a state dict from its keys, e.g. ("resnet101", "segmentation")."""
    stage = "segmentation" if any(k.startswith("mask_head.") for k in state_dict) else "detector"
    body = ("detr." if any(k.startswith("detr.") for k in state_dict) else "") + "backbone.0.body."
    if body + "conv_stem.weight" in state_dict:
        width = state_dict[body + "conv_stem.weight"].shape[0]
        return ("efficientnet_b3" if width == 40 else f"efficientnet (stem width {width})"), stage
    blocks = {int(m.group(1)) for k in state_dict if (m := re.match(re.escape(body) + r"layer3\.(\d+)\.", k))}
    if blocks:
        bottleneck = body + "layer1.0.conv3.weight" in state_dict
        depth = (max(blocks) + 1, bottleneck)
        return _RESNET_DEPTHS.get(depth, f"resnet ({depth[0]} layer3 blocks)"), stage
    return "unknown-backbone", stage


def _looks_like(path: Path) -> str:
    """What a file torch cannot load is, from its first bytes (e.g. a download that saved an HTML page)."""
    with open(path, "rb") as f:
        head = f.read(1024)
    start = head.lstrip().lower()
    if not head:
        return "an empty file"
    if start.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page"
    if head.startswith(b"PK\x03\x04"):
        return "a damaged zip archive"
    if head[:1] == b"\x80":
        return "a damaged or foreign pickle"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised binary data"
    return "a text file"


def _torch_load(path: Path):
    """torch.load, weights only; bytes that are no checkpoint are one InputError saying what they are."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        what = f"a pickle of {unsafe[1]} objects, which weights-only loading refuses" if unsafe else _looks_like(path)
        raise InputError(f"checkpoint {path} cannot be read: it is {what}, not a checkpoint") from None
    except Exception:  # torch raises many types for foreign bytes (IndexError, KeyError, UnicodeDecodeError, ...)
        raise InputError(f"checkpoint {path} cannot be read: it is {_looks_like(path)}, not a checkpoint") from None
    return ckpt


def read_checkpoint(path) -> dict:
    """The checkpoint dict at `path`, on CPU: torch.load with weights_only (the release's argparse.Namespace
    `args` allowed; a `.safetensors` file gives {"model": its tensors}), then checked: a dict whose `model` (and
    `model_ema`, when present) are state dicts of finite tensors. Anything else is one InputError saying what the
    file is."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} not found")
    note_input(path)
    ckpt = {"model": read_safetensors(path)} if path.suffix == ".safetensors" else _torch_load(path)
    if not isinstance(ckpt, dict):
        raise InputError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a checkpoint dict with a 'model' entry")
    if "model" not in ckpt:
        raise InputError(f"checkpoint {path} has no 'model' entry (keys: {', '.join(map(str, list(ckpt)[:5]))})")
    for key in ("model", "model_ema"):
        weights = ckpt.get(key)
        if weights is None and key == "model_ema":
            continue
        if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
            raise InputError(f"checkpoint {path}: '{key}' is a {type(weights).__name__}, not a state dict of tensors")
        bad = next((k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
        if bad is not None:
            raise InputError(f"checkpoint {path}: '{key}' has non-finite weights (first: {bad})")
    return ckpt


def read_safetensors(path) -> dict:
    """The state dict of a `.safetensors` file (`export-checkpoint --hub-folder`), as a checkpoint's `model`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:
        raise InputError(f"checkpoint {path} cannot be read: not a safetensors file ({e})") from None


def select_weights(ckpt: dict, prefer_ema: bool = True) -> tuple:
    """(state_dict, "model_ema" | "model"): the EMA weights when preferred and present."""
    key = "model_ema" if prefer_ema and ckpt.get("model_ema") is not None else "model"
    return ckpt[key], key


STAGE_NAMES = {"detector": "detector (stage-1)", "segmentation": "segmentation (stage-2)"}


def load_weights(path, make_model, prefer_ema: bool = True, need: str = None, needed_by: str = None) -> tuple:
    """The release's `--load`, for train's --init, evaluate and predict: the weights of checkpoint `path`
    (`read_checkpoint`; `model_ema` when preferred and present), checked to be of stage `need` ("detector" or
    "segmentation"; `needed_by` names the command in the error), then `make_model(state_dict)` (`model.build.build`
    of the fitting stage config: model, criterion, postprocessors) and a strict `load_model_weights` into its model.
    Returns what `make_model` returned."""
    weights, key = select_weights(read_checkpoint(path), prefer_ema)
    source = f"{path} [{key}]"
    backbone, stage = describe(weights)
    if need is not None and stage != need:
        raise InputError(f"checkpoint {source} is a {backbone} {stage} checkpoint; {needed_by} needs a "
                         f"{STAGE_NAMES[need]} checkpoint")
    built = make_model(weights)
    load_model_weights(built[0], weights, source=source)
    return built


def load_model_weights(model: nn.Module, state_dict: dict, source: str = "checkpoint"):
    """Load `state_dict` strictly into `model` (see the module doc for the two tolerated differences)."""
    model = getattr(model, "module", model)
    state_dict = dict(state_dict)
    have, want = describe(state_dict), describe(model.state_dict())
    if have[0] != want[0] or (have[1] == "segmentation" and want[1] == "detector"):
        raise InputError(f"checkpoint {source} is a {have[0]} {have[1]} checkpoint; config expects {want[0]} {want[1]}")
    droppable = {k for k in state_dict if k.endswith((LEGACY_BUFFER, BN_COUNTER))}
    if have[1] == "detector" and want[1] == "segmentation":
        model = model.detr
        droppable.update(k for k in state_dict if k.startswith(STAGE1_ONLY))
    target = model.state_dict()
    for key in droppable - set(target):
        del state_dict[key]
    missing = sorted(set(target) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(target))
    mismatched = [f"{k} {list(state_dict[k].shape)} vs {list(v.shape)}" for k, v in target.items()
                  if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or mismatched:
        parts = [f"{len(items)} {what} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})"
                 for what, items in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched))
                 if items]
        raise InputError(f"checkpoint {source} does not fit the model: {'; '.join(parts)}")
    model.load_state_dict(state_dict, strict=True)


def save_checkpoint(path, model: nn.Module, model_ema=None, optimizer=None, lr_scheduler=None, epoch=None, args=None,
                    **extra):
    """Write the release's layout atomically; `model_ema` is a `ModelEMA` or a module; `extra` adds entries."""
    ckpt = {"model": getattr(model, "module", model).state_dict()}
    if model_ema is not None:
        ckpt["model_ema"] = model_ema.state_dict()
    for key, value in (("optimizer", optimizer), ("lr_scheduler", lr_scheduler)):
        if value is not None:
            ckpt[key] = value.state_dict()
    ckpt.update(epoch=epoch, args=args, **extra)
    atomic_torch_save(ckpt, path)
