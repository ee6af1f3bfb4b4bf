"""AdamW with the release's three parameter groups and its learning-rate schedules (stepped once per step)."""
from typing import Callable, List, Mapping

import torch
from torch import nn

GROUP_NAMES = ("lr", "lr_backbone", "lr_text_encoder")  # the release's log names, in param-group order


def param_groups(model: nn.Module, lr: float, lr_backbone: float, text_encoder_lr: float) -> List[dict]:
    """Trainable parameters split like the release: the rest, the visual backbone, the text encoder."""
    rest, backbone, text = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if "backbone" in name:
            backbone.append(p)
        elif "text_encoder" in name:
            text.append(p)
        else:
            rest.append(p)
    return [{"params": rest, "lr": lr}, {"params": backbone, "lr": lr_backbone},
            {"params": text, "lr": text_encoder_lr}]


def build_optimizer(model: nn.Module, cfg: Mapping) -> torch.optim.AdamW:
    groups = param_groups(model, cfg["lr"], cfg["lr_backbone"], cfg["text_encoder_lr"])
    return torch.optim.AdamW(groups, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def _step_factor(lr_drop: int, steps_per_epoch: int) -> Callable[[int], float]:
    """x0.1 every `lr_drop` epochs (torch's StepLR), expressed per optimisation step."""
    return lambda step: 0.1 ** ((step // steps_per_epoch) // lr_drop)


def _warmup_linear_factor(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """Linear warm-up over the first `warmup_fraction` of training, then linear decay to 0."""
    warmup = round(warmup_fraction * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def _release_timing(factor: Callable[[int], float]) -> Callable[[int], float]:
    """The release sets the learning rate after `optimizer.step()` for the next step (its engine.py calls
    util/optim.py `adjust_learning_rate(curr_step)` after the update): step 0 trains with the base rate and
    step k with `factor(k - 1)`. LambdaLR trains step k with its lambda at k, hence the shift."""
    return lambda step: 1.0 if step == 0 else factor(step - 1)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping, steps_per_epoch: int):
    """A per-step LambdaLR, timed as the release's (see `_release_timing`). `schedule`:
    - "step": every group x0.1 every `lr_drop` epochs;
    - "linear_with_warmup" (the release's default): like "step", except the text encoder, which warms up
      over `fraction_warmup_steps` of all steps and then decays linearly to 0.
    """
    step = _step_factor(cfg["lr_drop"], steps_per_epoch)
    if cfg["schedule"] == "step":
        text = step
    elif cfg["schedule"] == "linear_with_warmup":
        text = _warmup_linear_factor(steps_per_epoch * cfg["epochs"], cfg["fraction_warmup_steps"])
    else:
        raise ValueError(f"unknown schedule {cfg['schedule']!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [_release_timing(f) for f in (step, step, text)])


def current_lrs(optimizer: torch.optim.Optimizer) -> dict:
    return {name: g["lr"] for name, g in zip(GROUP_NAMES, optimizer.param_groups)}
