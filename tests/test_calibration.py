"""Frozen BatchNorm calibration normalises a randomly initialised backbone's activations."""
import pytest
import torch

from mdetr_phrasecut.engine.calibration import calibrate_frozen_batchnorm, frozen_batchnorms
from mdetr_phrasecut.model.backbone import Backbone


@pytest.mark.parametrize("name", ["resnet18", "timm_resnet10t"])
def test_calibrated_frozen_batchnorms_normalise_their_input(name):
    torch.manual_seed(0)
    backbone = Backbone(name, train_backbone=True)
    images = torch.randn(4, 3, 64, 64)
    layers = frozen_batchnorms(backbone.body)
    assert len(layers) > 5
    assert calibrate_frozen_batchnorm(backbone.body, images) == len(layers)

    outputs = {}
    hooks = [bn.register_forward_hook(lambda m, i, o: outputs.setdefault(m, o)) for bn in layers]
    with torch.no_grad():
        backbone.body(images)
    for h in hooks:
        h.remove()
    for bn in layers:  # each frozen BatchNorm's output (before any activation) is ~zero-mean, unit-variance
        out = outputs[bn]
        if out.min() >= 0:  # a fused BatchNorm+ReLU (timm) outputs the positive half
            continue
        assert out.mean((0, 2, 3)).abs().max() < 1e-3
        assert (out.var((0, 2, 3), unbiased=False) - 1).abs().max() < 1e-2
    assert all(torch.all(bn.weight == 1) for bn in layers)  # no block is silenced by a zero-initialised affine
    assert not any(p.grad_fn for p in backbone.parameters())
