"""CNN backbones with frozen BatchNorm, returning four feature levels (strides 4, 8, 16, 32) with their padding masks.

Key names follow the release: `backbone.0.body.*` is the torchvision ResNet or the timm EfficientNet, `backbone.1`
the position encoding (see `Joiner`).
"""
from typing import List, Optional

import timm
import torch
import torch.nn.functional as F
import torchvision
from timm.layers import BatchNormAct2d
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import misc

from .nested_tensor import NestedTensor

# The release adds eps 1e-5 before rsqrt in every frozen BatchNorm, whatever eps the network was built with.
FROZEN_BN_EPS = 1e-5

RESNET_CHANNELS = {
    "resnet18": [64, 128, 256, 512],
    "resnet34": [64, 128, 256, 512],
    "resnet50": [256, 512, 1024, 2048],
    "resnet101": [256, 512, 1024, 2048],
}
# Our backbone names -> timm model names (the release's `timm_tf_efficientnet_b3_ns` is accepted as an alias).
# As in the release, any other `timm_<name>` is timm's <name> (e.g. the demo's timm_resnet10t).
TIMM_MODELS = {
    "efficientnet_b3": "tf_efficientnet_b3.ns_jft_in1k",
    "timm_tf_efficientnet_b3_ns": "tf_efficientnet_b3.ns_jft_in1k",
}
BACKBONES = tuple(RESNET_CHANNELS) + tuple(TIMM_MODELS) + ("timm_<name>",)


def timm_name(name: str):
    """The timm model of a backbone name, or None when it is not a timm backbone."""
    if name in TIMM_MODELS:
        return TIMM_MODELS[name]
    return name[len("timm_"):] if name.startswith("timm_") and len(name) > len("timm_") else None


class FrozenBatchNorm2d(misc.FrozenBatchNorm2d):
    """torchvision's frozen BatchNorm that keeps the input's dtype (bf16 autocast activations stay bf16); `post`
    is the dropout + activation a timm BatchNormAct2d applies after the norm (no weights, keys unchanged)."""

    def __init__(self, num_features: int, eps: float = FROZEN_BN_EPS, post: Optional[nn.Module] = None):
        super().__init__(num_features, eps)
        self.post = post if post is not None else nn.Identity()

    def forward(self, x):
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return self.post(x * scale.to(x.dtype)[:, None, None] + shift.to(x.dtype)[:, None, None])


@torch.no_grad()
def freeze_batchnorm(module: nn.Module):
    """Replace every BatchNorm2d under `module` (timm's BatchNormAct2d included) by a FrozenBatchNorm2d."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            post = nn.Sequential(child.drop, child.act) if isinstance(child, BatchNormAct2d) else None
            frozen = FrozenBatchNorm2d(child.num_features, post=post)
            for buffer in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, buffer).copy_(getattr(child, buffer))
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)


def resnet_body(name: str, train_backbone: bool, pretrained: bool, dilation: bool = False, train_batchnorm=False):
    """torchvision ResNet with FrozenBatchNorm2d (BatchNorm2d with `train_batchnorm`); layer2-4 train when
    `train_backbone`, the stem and layer1 never; `dilation` replaces layer4's stride by dilation (the release's
    DC5: the last level at stride 16)."""
    weights = "IMAGENET1K_V1" if pretrained else None  # the weights `pretrained=True` gave the release
    norm_layer = nn.BatchNorm2d if train_batchnorm else FrozenBatchNorm2d
    net = getattr(torchvision.models, name)(weights=weights, norm_layer=norm_layer,
                                            replace_stride_with_dilation=[False, False, dilation])
    for param_name, param in net.named_parameters():
        param.requires_grad_(train_backbone and param_name.startswith(("layer2", "layer3", "layer4")))
    body = IntermediateLayerGetter(net, return_layers={f"layer{i}": str(i - 1) for i in range(1, 5)})
    return body, RESNET_CHANNELS[name]


def timm_body(name: str, train_backbone: bool, pretrained: bool, dilation: bool = False, train_batchnorm=False):
    """timm features_only network (out_indices 1-4) with every BatchNorm frozen (unless `train_batchnorm`), as the
    release's TimmBackbone; `dilation`: output stride 16 instead of 32 (dilated last stage)."""
    body = timm.create_model(timm_name(name), pretrained=pretrained, features_only=True, out_indices=(1, 2, 3, 4),
                             output_stride=16 if dilation else 32)
    if not train_batchnorm:
        freeze_batchnorm(body)
    body.requires_grad_(train_backbone)  # the release trains the whole timm body at lr_backbone
    return body, list(body.feature_info.channels())


class Backbone(nn.Module):
    """Runs `body` on the padded images and resizes the padding mask (nearest) to each of the four levels.

    `train_batchnorm` keeps trainable BatchNorms, for a backbone trained from scratch (the demo's `pretrain`):
    frozen ones would leave its activations unnormalised. Its checkpoints load into the frozen BatchNorms of the
    later stages (see `model.checkpoint_file`)."""

    def __init__(self, name: str, train_backbone: bool, pretrained: bool = False, dilation: bool = False,
                 train_batchnorm: bool = False):
        super().__init__()
        if name in RESNET_CHANNELS:
            self.body, self.channels = resnet_body(name, train_backbone, pretrained, dilation, train_batchnorm)
        elif timm_name(name):
            self.body, self.channels = timm_body(name, train_backbone, pretrained, dilation, train_batchnorm)
        else:
            raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")
        self.num_channels = self.channels[-1]

    def forward(self, samples: NestedTensor) -> List[NestedTensor]:
        features = self.body(samples.tensors)
        if isinstance(features, dict):
            features = list(features.values())
        out = []
        for x in features:
            mask = F.interpolate(samples.mask[None].float(), size=x.shape[-2:]).bool()[0]
            out.append(NestedTensor(x, mask))
        return out


class Joiner(nn.Sequential):
    """`backbone.0` (the CNN) + `backbone.1` (position encoding): returns all feature levels and the last one's
    position encoding (the only one the transformer uses)."""

    def __init__(self, backbone: Backbone, position_embedding: nn.Module):
        super().__init__(backbone, position_embedding)
        self.channels = backbone.channels
        self.num_channels = backbone.num_channels

    def forward(self, samples: NestedTensor):
        features = self[0](samples)
        pos = self[1](features[-1]).to(features[-1].tensors.dtype)
        return features, pos
