"""One training epoch and one validation pass (DETR's train_one_epoch / evaluate, for PhraseCut): `train_one_epoch`,
`validate`."""
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
from torch import nn
from torchvision.ops import box_convert, box_iou
from tqdm import tqdm

from ..model.postprocess import phrasecut_answers
from .distributed import any_process, reduce_mean, reduce_sum
from .optim import current_lrs

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


def forward_losses(net: nn.Module, criterion, samples, targets, positive_map, device: torch.device, bf16: bool):
    """Outputs of `net` (under bf16 autocast with `bf16`) and the criterion's loss dict for one batch of
    data.train_collate_fn, moved to `device`."""
    samples = samples.to(device, non_blocking=True)
    targets = targets_to(targets, device)
    positive_map = positive_map.to(device)
    captions = [t["caption"] for t in targets]
    with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
        outputs = net(samples, captions)
    outputs = to_float32(outputs)
    return targets, outputs, criterion(outputs, targets, positive_map)


def weighted(losses: Dict[str, float], weight_dict: Dict[str, float]) -> Dict[str, float]:
    """Loss terms times their weights; unweighted terms (e.g. cardinality_error) are kept as they are."""
    return {k: v * weight_dict.get(k, 1.0) for k, v in losses.items()}


def _describe(values: Dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(values.items()))


def train_one_epoch(net: nn.Module, model: nn.Module, criterion, data_loader, optimizer, scheduler, device,
                    position: Position, steps_per_epoch: int, *, max_norm: float, bf16: bool, world_batch: int,
                    ema=None, log, save: Callable[[Position], None], every: Optional[int] = None,
                    stop_requested: Callable[[], bool] = lambda: False, progress: bool = True) -> Position:
    """Run the remaining steps of `position.epoch`; returns the position after the last one.

    `net` runs the forward pass (`model`, or its compiled / DDP wrapper); `model` is the plain module whose
    gradients are clipped to `max_norm` (0: no clipping) and that `ema` follows; losses are weighted by
    `criterion.weight_dict`. `log.step` gets one row per step (images/s from `world_batch`), `save(position)`
    writes checkpoint_last.pth every `every` steps and when a stop was requested on any process.
    Raises NonFiniteLoss before an update with a non-finite loss or gradient norm, and Preempted after
    saving when a stop signal arrived on any process.
    """
    net.train()
    criterion.train()
    weight_dict = criterion.weight_dict
    tick = time.perf_counter()
    with tqdm(total=steps_per_epoch, initial=position.step, desc=f"epoch {position.epoch}", leave=False,
              disable=not progress, dynamic_ncols=True) as bar:
        for samples, targets, positive_map in data_loader:
            where = f"step {position.global_step} (epoch {position.epoch}, step {position.step} of the epoch)"
            _, _, loss_dict = forward_losses(net, criterion, samples, targets, positive_map, device, bf16)
            loss = sum(loss_dict[k] * w for k, w in weight_dict.items() if k in loss_dict)
            logged = weighted(reduce_mean(loss_dict), weight_dict)
            total = sum(v for k, v in logged.items() if k in weight_dict)
            if not math.isfinite(total):
                raise NonFiniteLoss(f"non-finite loss {total} at {where}: {_describe(logged)}")

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_norm > 0:
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                if not math.isfinite(norm.item()):
                    raise NonFiniteLoss(f"non-finite gradient norm at {where}: loss {total:.4g}, "
                                        f"{_describe(logged)}")
            lrs = current_lrs(optimizer)
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update(model)

            now = time.perf_counter()
            log.step({"epoch": position.epoch, "step": position.global_step, "loss": total, **logged, **lrs,
                      "images_per_s": world_batch / max(now - tick, 1e-9)})
            tick = now
            position = Position(position.epoch, position.step + 1, position.global_step + 1)
            bar.update(1)
            bar.set_postfix(loss=f"{total:.4f}")

            stop = any_process(stop_requested(), device)
            if stop or (every and position.global_step % every == 0 and position.step < steps_per_epoch):
                save(position)
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


def _phrase_mask_iou(outputs, targets, postprocessors) -> torch.Tensor:
    """Per phrase, at the network's input resolution: IoU of the PhraseCut answer's merged mask (the
    post-processors' "phrasecut" after "bbox" and "segm") with the union of the ground-truth masks (0 when they
    do not intersect)."""
    sizes = torch.stack([t["size"] for t in targets])
    ious = []
    for answer, t in zip(phrasecut_answers(postprocessors, outputs, sizes, sizes), targets):
        pred = answer["masks"]
        gt = t["masks"].any(0).cpu() if len(t["masks"]) else torch.zeros_like(pred)
        ious.append((pred & gt).sum() / (pred | gt).sum().clamp(min=1))
    return torch.stack(ious)


@torch.no_grad()
def validate(model: nn.Module, criterion, postprocessors, data_loader, *, real_items: int, device: torch.device,
             bf16: bool, progress: bool = True) -> Dict[str, float]:
    """Validation loss terms (weighted by `criterion.weight_dict`, averaged over batches and processes), the
    mean top-1 box IoU per phrase and, with a "segm" post-processor (stage 2), the mean merged-mask IoU per
    phrase; only the first `real_items` items of this process's loader count for the IoUs (the rest is
    padding, see sampling.val_loader)."""
    masks = "segm" in postprocessors
    weight_dict = criterion.weight_dict
    model.eval()
    criterion.eval()
    sums, batches, counted = {}, 0, 0
    ious = torch.zeros(2, dtype=torch.float64, device=device)  # box, mask
    for samples, targets, positive_map in tqdm(data_loader, desc="validation", leave=False, disable=not progress):
        targets, outputs, loss_dict = forward_losses(model, criterion, samples, targets, positive_map, device, bf16)
        for k, v in weighted(loss_dict, weight_dict).items():
            sums[k] = sums.get(k, 0) + v.double()
        real = max(0, min(len(targets), real_items - counted))
        batches, counted = batches + 1, counted + real
        ious[0] += _phrase_box_iou(outputs, targets)[:real].sum()
        if masks:
            ious[1] += _phrase_mask_iou(outputs, targets, postprocessors)[:real].sum().to(ious)
    keys = sorted(sums)
    stats = torch.tensor([batches, counted], dtype=torch.float64, device=device)
    totals = reduce_sum(torch.cat([torch.stack([sums[k] for k in keys]), stats, ious])).tolist()
    batches, phrases, box_iou_sum, mask_iou_sum = totals[len(keys):]
    out = {k: v / batches for k, v in zip(keys, totals)}
    out["loss"] = sum(v for k, v in out.items() if k in weight_dict)
    out["box_iou"] = box_iou_sum / phrases
    if masks:
        out["mask_iou"] = mask_iou_sum / phrases
    return out
