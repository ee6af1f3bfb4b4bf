"""Box helpers shared by the data tests."""
import torch
from torchvision.ops import box_convert, masks_to_boxes


def mask_extents(masks):
    """xyxy extents of each bool mask, exclusive at the right/bottom (pixel edges)."""
    return masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])


def absolute_xyxy(boxes, size):
    """Normalised cxcywh boxes -> xyxy pixels of an image of `size` (h, w)."""
    h, w = size.tolist()
    return box_convert(boxes * torch.tensor([w, h, w, h], dtype=boxes.dtype), "cxcywh", "xyxy")
