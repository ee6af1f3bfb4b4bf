"""Exponential moving average of a model's weights (the release evaluates PhraseCut with the EMA weights)."""
import copy

import torch
from torch import nn


class ModelEMA:
    """A frozen eval-mode copy of `model` updated as ema = decay * ema + (1 - decay) * current after each step.

    Floating-point parameters and buffers are averaged; integer buffers are copied. `state_dict()` has the model's
    own keys, so it is what a checkpoint stores as `model_ema` and loads into a plain model.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(getattr(model, "module", model)).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module):
        current = getattr(model, "module", model).state_dict()  # unwraps DDP
        for key, ema_value in self.module.state_dict().items():
            value = current[key].detach()
            if ema_value.is_floating_point():
                ema_value.lerp_(value.to(ema_value.dtype), 1.0 - self.decay)
            else:
                ema_value.copy_(value)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state_dict: dict):
        self.module.load_state_dict(state_dict)

    def to(self, *args, **kwargs):
        self.module.to(*args, **kwargs)
        return self


def build_ema(model: nn.Module, cfg) -> "ModelEMA | None":
    """The EMA a stage trains with: `ema_decay` when `ema` is set (the release's --ema, --ema_decay), else None."""
    return ModelEMA(model, cfg["ema_decay"]) if cfg["ema"] else None
