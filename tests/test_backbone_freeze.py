"""EfficientNet-B3 under today's timm: freezing the BatchNorms keeps every activation.

Since timm 0.6 EfficientNet's norms are `BatchNormAct2d` (BatchNorm + activation in one module). The release freezes
BatchNorms by type, so its code run today replaces each of them by a bare frozen BatchNorm and drops the activation
inside (77 SiLU become 26, only the squeeze-excite ones left). The released checkpoints were trained with timm 0.4
(BatchNorm and activation separate); our freeze keeps the activation, so the network computes what they were
trained with.
"""
import copy

import pytest
import timm
import torch
from torch import nn

from mdetr_phrasecut.model.backbone import FROZEN_BN_EPS, FrozenBatchNorm2d, freeze_batchnorm, timm_name


def activations(module):
    return [type(m).__name__ for m in module.modules() if isinstance(m, (nn.SiLU, nn.ReLU, nn.GELU, nn.Hardswish))]


@pytest.fixture(scope="module")
def efficientnet_b3():
    """timm's tf_efficientnet_b3_ns as our backbone builds it (features_only), random weights and BatchNorm
    statistics, each norm's eps set to the frozen one's so both variants compute the same function."""
    torch.manual_seed(0)
    net = timm.create_model(timm_name("timm_tf_efficientnet_b3_ns"), pretrained=False, features_only=True,
                            out_indices=(1, 2, 3, 4))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = FROZEN_BN_EPS
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return net.eval()


def test_every_activation_survives_freezing(efficientnet_b3):
    before = activations(efficientnet_b3)
    frozen = copy.deepcopy(efficientnet_b3)
    freeze_batchnorm(frozen)
    assert len(before) == 77 and set(before) == {"SiLU"}
    assert activations(frozen) == before
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules()) == sum(
        isinstance(m, nn.BatchNorm2d) for m in efficientnet_b3.modules())


def test_frozen_eval_output_equals_the_unfrozen_one(efficientnet_b3):
    frozen = copy.deepcopy(efficientnet_b3)
    freeze_batchnorm(frozen)
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        want, got = efficientnet_b3(x), frozen.eval()(x)
    assert [t.shape for t in got] == [t.shape for t in want]
    for a, b in zip(got, want):
        assert b.abs().max() > 0.1  # activations of a healthy network, not all zero
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    kept = {k for k in efficientnet_b3.state_dict() if not k.endswith("num_batches_tracked")}
    assert frozen.state_dict().keys() == kept
