"""Data-derived statistics for the frozen BatchNorms of a backbone trained from scratch (the `pretrain` stage).

The release's backbones come with ImageNet weights, so their frozen BatchNorms normalise. A randomly initialised
backbone has identity statistics instead, and timm zero-initialises the last BatchNorm of each residual block,
which, frozen, would silence those blocks for good. `calibrate_frozen_batchnorm` does once what a training-mode
BatchNorm does on a batch: each frozen BatchNorm, in forward order, gets the per-channel mean and variance of its
input and a unit affine.
"""
import torch
from torch import nn


def frozen_batchnorms(module: nn.Module):
    """Frozen BatchNorms (torchvision's and timm's): modules with running statistics but no trainable affine."""
    return [m for m in module.modules()
            if hasattr(m, "running_mean") and hasattr(m, "running_var") and not isinstance(m.weight, nn.Parameter)]


@torch.no_grad()
def calibrate_frozen_batchnorm(backbone: nn.Module, images: torch.Tensor) -> int:
    """Set the statistics of every frozen BatchNorm of `backbone` from one forward pass on `images` (N×3×H×W);
    returns how many were set."""
    layers = frozen_batchnorms(backbone)

    def set_statistics(bn, inputs):
        x = inputs[0].float()
        bn.running_mean.copy_(x.mean((0, 2, 3)))
        bn.running_var.copy_(x.var((0, 2, 3), unbiased=False))
        bn.weight.fill_(1.0)
        bn.bias.zero_()

    hooks = [bn.register_forward_pre_hook(set_statistics) for bn in layers]
    try:
        backbone(images)
    finally:
        for hook in hooks:
            hook.remove()
    return len(layers)
