"""A batch of images padded to a common size, with a mask that is True on padding (DETR's NestedTensor)."""
from typing import List, Optional

import torch
from torch import Tensor


class NestedTensor:
    def __init__(self, tensors: Tensor, mask: Optional[Tensor]):
        self.tensors = tensors
        self.mask = mask

    def to(self, device, non_blocking=False):
        mask = None if self.mask is None else self.mask.to(device, non_blocking=non_blocking)
        return NestedTensor(self.tensors.to(device, non_blocking=non_blocking), mask)

    def decompose(self):
        return self.tensors, self.mask

    def __repr__(self):
        return f"NestedTensor({tuple(self.tensors.shape)})"


def nested_tensor_from_tensor_list(tensor_list: List[Tensor]) -> NestedTensor:
    """Pad C×H×W images to the batch's max H and W (top-left aligned); mask marks the padding."""
    if tensor_list[0].ndim != 3:
        raise ValueError("expected C×H×W tensors")
    c = tensor_list[0].shape[0]
    h = max(t.shape[1] for t in tensor_list)
    w = max(t.shape[2] for t in tensor_list)
    first = tensor_list[0]
    tensors = torch.zeros((len(tensor_list), c, h, w), dtype=first.dtype, device=first.device)
    mask = torch.ones((len(tensor_list), h, w), dtype=torch.bool, device=first.device)
    for img, pad, m in zip(tensor_list, tensors, mask):
        pad[:, : img.shape[1], : img.shape[2]].copy_(img)
        m[: img.shape[1], : img.shape[2]] = False
    return NestedTensor(tensors, mask)
