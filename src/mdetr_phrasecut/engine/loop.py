"""One training epoch and one validation pass (DETR's train_one_epoch / evaluate, for PhraseCut)."""
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, box_iou
from tqdm import tqdm

from .distributed import DistEnv, any_process, reduce_mean, reduce_sum
from .optim import current_lrs

SCORE_THRESHOLD = 0.7  # PhraseCut post-processing: queries kept for the merged mask


class NonFiniteLoss(RuntimeError):
    """The loss (or gradient norm) became NaN/inf; the weights of the last checkpoint are the last good ones."""


class Preempted(Exception):
    """A stop signal arrived; a checkpoint of the current step was written."""


@dataclass
class Position:
    """Where training stands: the next step to run is `step` of `epoch`; `global_step` steps are done."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0


@dataclass
class Trainer:
    """What a training step needs."""

    model: nn.Module  # the plain module (state_dict, EMA source)
    net: nn.Module  # what runs the forward pass: model, or its compiled / DDP wrapper
    criterion: nn.Module
    weight_dict: Dict[str, float]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: Optional[object]
    device: torch.device
    denv: DistEnv
    cfg: Dict
    log: object
    save: Callable[[Position], None] = None  # writes checkpoint_last.pth at a step boundary
    stop_requested: Callable[[], bool] = lambda: False
    progress: bool = True


def targets_to(targets, device):
    return [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]


def to_float32(obj):
    """Floating tensors of a (nested) model output in float32, so the losses run outside autocast."""
    if torch.is_tensor(obj):
        return obj.float() if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return {k: to_float32(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_float32(v) for v in obj)
    return obj


def forward_losses(trainer: Trainer, net: nn.Module, samples, targets, positive_map):
    """Outputs of `net` and the criterion's loss dict for one batch of data.train_collate_fn (moved to the
    trainer's device)."""
    samples = samples.to(trainer.device, non_blocking=True)
    targets = targets_to(targets, trainer.device)
    positive_map = positive_map.to(trainer.device)
    captions = [t["caption"] for t in targets]
    autocast = (torch.autocast(trainer.device.type, dtype=torch.bfloat16) if trainer.cfg["bf16"]
                else nullcontext())
    with autocast:
        outputs = net(samples, captions)
    outputs = to_float32(outputs)
    return samples, targets, outputs, trainer.criterion(outputs, targets, positive_map)


def weighted(losses: Dict[str, float], weight_dict: Dict[str, float]) -> Dict[str, float]:
    """Loss terms times their weights; unweighted terms (e.g. cardinality_error) are kept as they are."""
    return {k: v * weight_dict.get(k, 1.0) for k, v in losses.items()}


def _describe(values: Dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(values.items()))


def train_one_epoch(trainer: Trainer, loader, position: Position, steps_per_epoch: int) -> Position:
    """Run the remaining steps of `position.epoch`; returns the position after the last one.

    Raises NonFiniteLoss before an update with a non-finite loss or gradient norm, and Preempted after
    saving when a stop signal arrived on any process.
    """
    t = trainer
    t.net.train()
    t.criterion.train()
    world_batch = t.cfg["batch_size"] * t.denv.world_size
    every = t.cfg.get("checkpoint_every_steps")
    tick = time.perf_counter()
    with tqdm(total=steps_per_epoch, initial=position.step, desc=f"epoch {position.epoch}", leave=False,
              disable=not (t.progress and t.denv.is_main), dynamic_ncols=True) as bar:
        for samples, targets, positive_map in loader:
            where = f"step {position.global_step} (epoch {position.epoch}, step {position.step} of the epoch)"
            _, _, _, loss_dict = forward_losses(t, t.net, samples, targets, positive_map)
            loss = sum(loss_dict[k] * w for k, w in t.weight_dict.items() if k in loss_dict)
            logged = weighted(reduce_mean(loss_dict), t.weight_dict)
            total = sum(v for k, v in logged.items() if k in t.weight_dict)
            if not math.isfinite(total):
                raise NonFiniteLoss(f"non-finite loss {total} at {where}: {_describe(logged)}")

            t.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.cfg["clip_max_norm"] > 0:
                norm = torch.nn.utils.clip_grad_norm_(t.model.parameters(), t.cfg["clip_max_norm"])
                if not math.isfinite(norm.item()):
                    raise NonFiniteLoss(f"non-finite gradient norm at {where}: loss {total:.4g}, "
                                        f"{_describe(logged)}")
            lrs = current_lrs(t.optimizer)
            t.optimizer.step()
            t.scheduler.step()
            if t.ema is not None:
                t.ema.update(t.model)

            now = time.perf_counter()
            t.log.step({"epoch": position.epoch, "step": position.global_step, "loss": total, **logged, **lrs,
                        "images_per_s": world_batch / max(now - tick, 1e-9)})
            tick = now
            position = Position(position.epoch, position.step + 1, position.global_step + 1)
            bar.update(1)
            bar.set_postfix(loss=f"{total:.4f}")

            stop = any_process(t.stop_requested(), t.device)
            if stop or (every and position.global_step % every == 0 and position.step < steps_per_epoch):
                t.save(position)
            if stop:
                raise Preempted(f"stopped by a signal at {where}; checkpoint saved")
    return Position(position.epoch + 1, 0, position.global_step)


def _phrase_box_iou(outputs, targets) -> torch.Tensor:
    """Per phrase: IoU of the top-scoring query's box with the best-overlapping ground-truth box."""
    scores = 1 - outputs["pred_logits"].softmax(-1)[..., -1]
    best = scores.argmax(-1)
    ious = []
    for i, t in enumerate(targets):
        pred = box_convert(outputs["pred_boxes"][i, best[i]][None], "cxcywh", "xyxy")
        gt = box_convert(t["boxes"], "cxcywh", "xyxy")
        ious.append(box_iou(pred, gt).max() if len(gt) else pred.new_zeros(()))
    return torch.stack(ious)


def _phrase_mask_iou(outputs, targets, padded_size) -> torch.Tensor:
    """Per phrase, at the network's input resolution: IoU of the union of the masks of queries scoring
    above 0.7 with the union of the ground-truth masks (0 when they do not intersect)."""
    scores = 1 - outputs["pred_logits"].softmax(-1)[..., -1]
    masks = F.interpolate(outputs["pred_masks"], size=padded_size, mode="bilinear", align_corners=False)
    ious = []
    for i, t in enumerate(targets):
        h, w = t["size"].tolist()
        keep = scores[i] > SCORE_THRESHOLD
        pred = (masks[i, keep, :h, :w].sigmoid() > 0.5).any(0)
        gt = t["masks"].any(0) if len(t["masks"]) else torch.zeros_like(pred)
        ious.append((pred & gt).sum() / (pred | gt).sum().clamp(min=1))
    return torch.stack(ious)


@torch.no_grad()
def evaluate(trainer: Trainer, model: nn.Module, loader, real_items: int, masks: bool) -> Dict[str, float]:
    """Validation loss terms (weighted, averaged over batches and processes), the mean top-1 box IoU
    per phrase and, with `masks`, the mean merged-mask IoU per phrase; only the first `real_items` items
    of this process's loader count for the IoUs (the rest is padding, see sampling.val_loader)."""
    t = trainer
    model.eval()
    t.criterion.eval()
    sums, batches, counted = {}, 0, 0
    ious = torch.zeros(2, dtype=torch.float64, device=t.device)  # box, mask
    for samples, targets, positive_map in tqdm(loader, desc="validation", leave=False,
                                               disable=not (t.progress and t.denv.is_main)):
        samples, targets, outputs, loss_dict = forward_losses(t, model, samples, targets, positive_map)
        for k, v in weighted(loss_dict, t.weight_dict).items():
            sums[k] = sums.get(k, 0) + v.double()
        real = max(0, min(len(targets), real_items - counted))
        batches, counted = batches + 1, counted + real
        ious[0] += _phrase_box_iou(outputs, targets)[:real].sum()
        if masks:
            ious[1] += _phrase_mask_iou(outputs, targets, samples.tensors.shape[-2:])[:real].sum()
    keys = sorted(sums)
    stats = torch.tensor([batches, counted], dtype=torch.float64, device=t.device)
    totals = reduce_sum(torch.cat([torch.stack([sums[k] for k in keys]), stats, ious])).tolist()
    batches, phrases, box_iou_sum, mask_iou_sum = totals[len(keys):]
    out = {k: v / batches for k, v in zip(keys, totals)}
    out["loss"] = sum(v for k, v in out.items() if k in t.weight_dict)
    out["box_iou"] = box_iou_sum / phrases
    if masks:
        out["mask_iou"] = mask_iou_sum / phrases
    return out
