"""MDETR's PhraseCut augmentations on (PIL image, target) pairs: resize, box-respecting crop, normalise.

A target holds per-instance fields (``boxes`` as absolute xyxy, ``labels``, ``area``, ``iscrowd``, ``masks``
[n, H, W] bool, ``tokens_positive``) plus ``caption`` and ``size`` [h, w]. Every transform is called as
``t(image, target, generator=None)``; random draws come from ``generator`` or, when it is None, torch's global RNG
(which DataLoader seeds per worker), so a run is reproducible under ``torch.manual_seed``. ``target`` may be None
for inference. The last step turns the image into a normalised tensor and the boxes into normalised cxcywh.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as nnf
import torchvision.transforms.v2.functional as F
from torchvision.ops import box_convert

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The release's PhraseCut recipe (make_coco_transforms with cautious=True: no flip, crops keep every box).
RELEASE_SCALES = tuple(range(480, 801, 32))
RELEASE_MAX_SIZE = 1333
RELEASE_CROP_RESIZE = (400, 500, 600)
RELEASE_CROP_MIN_SIZE = 384

INSTANCE_FIELDS = ("boxes", "labels", "area", "iscrowd", "masks", "positive_map")


def _randint(low: int, high: int, generator: Optional[torch.Generator]) -> int:
    """Uniform integer in [low, high], both inclusive."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _choice(options: Sequence, generator: Optional[torch.Generator]):
    """A random element; a single option is returned without touching the RNG (evaluation stays RNG-neutral)."""
    return options[0] if len(options) == 1 else options[_randint(0, len(options) - 1, generator)]


def _rand(generator: Optional[torch.Generator]) -> float:
    return float(torch.rand((), generator=generator))


def keep_instances(target: dict, keep: torch.Tensor) -> dict:
    """Select the instances where the bool vector `keep` is True, in every per-instance field."""
    target = dict(target)
    for field in INSTANCE_FIELDS:
        if field in target:
            target[field] = target[field][keep]
    if "tokens_positive" in target:
        target["tokens_positive"] = [t for t, k in zip(target["tokens_positive"], keep.tolist()) if k]
    return target


def resized_shape(width: int, height: int, size: int, max_size: Optional[int] = None) -> tuple:
    """(h, w) with the shorter side `size`, shrunk so the longer side stays within `max_size` (DETR's rule)."""
    short, long = min(width, height), max(width, height)
    if max_size is not None and long / short * size > max_size:
        size = int(round(max_size * short / long))
    if short == size:
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def resize(image, target: Optional[dict], size: int, max_size: Optional[int] = None):
    width, height = image.size
    h, w = resized_shape(width, height, size, max_size)
    image = F.resize(image, [h, w])
    if target is None:
        return image, None
    target = dict(target)
    rw, rh = w / width, h / height
    if "boxes" in target:
        target["boxes"] = target["boxes"] * torch.tensor([rw, rh, rw, rh])
    if "area" in target:
        target["area"] = target["area"] * (rw * rh)
    if "masks" in target:
        masks = target["masks"][:, None].float()
        target["masks"] = nnf.interpolate(masks, size=(h, w), mode="nearest")[:, 0] > 0.5
    target["size"] = torch.tensor([h, w])
    return image, target


def crop(image, target: dict, top: int, left: int, height: int, width: int):
    """Crop image and target; boxes are clipped to the region and instances left without area are dropped."""
    image = F.crop(image, top, left, height, width)
    target = dict(target)
    target["size"] = torch.tensor([height, width])
    if "masks" in target:
        target["masks"] = target["masks"][:, top : top + height, left : left + width]
    boxes = (target["boxes"] - torch.tensor([left, top, left, top])).reshape(-1, 2, 2)
    boxes = torch.min(boxes, torch.tensor([width, height])).clamp(min=0)
    target["boxes"] = boxes.reshape(-1, 4)
    target["area"] = (boxes[:, 1] - boxes[:, 0]).prod(dim=1)
    return image, keep_instances(target, (boxes[:, 1] > boxes[:, 0]).all(dim=1))


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image, target=None, generator=None):
        for t in self.transforms:
            image, target = t(image, target, generator)
        return image, target

    def __repr__(self):
        return f"Compose({self.transforms})"


class RandomResize:
    """Resize the shorter side to a size drawn from `sizes` (longer side capped at `max_size`)."""

    def __init__(self, sizes: Sequence[int], max_size: Optional[int] = None):
        self.sizes = list(sizes)
        self.max_size = max_size

    def __call__(self, image, target=None, generator=None):
        return resize(image, target, _choice(self.sizes, generator), self.max_size)

    def __repr__(self):
        return f"RandomResize({self.sizes}, max_size={self.max_size})"


class RandomSizeCrop:
    """Crop a random region of side lengths in [min_size, max_size]; with `respect_boxes`, retry (up to 100
    times) until no box is cropped away entirely."""

    def __init__(self, min_size: int, max_size: int, respect_boxes: bool = False, patience: int = 100):
        self.min_size = min_size
        self.max_size = max_size
        self.respect_boxes = respect_boxes
        self.patience = patience

    def __call__(self, image, target, generator=None):
        width, height = image.size
        max_w, max_h = min(width, self.max_size), min(height, self.max_size)
        for _ in range(self.patience):
            w = _randint(min(self.min_size, max_w), max_w, generator)
            h = _randint(min(self.min_size, max_h), max_h, generator)
            top, left = _randint(0, height - h, generator), _randint(0, width - w, generator)
            out_image, out_target = crop(image, target, top, left, h, w)
            if not self.respect_boxes or len(out_target["boxes"]) == len(target["boxes"]):
                break
        return out_image, out_target

    def __repr__(self):
        return f"RandomSizeCrop({self.min_size}, {self.max_size}, respect_boxes={self.respect_boxes})"


class RandomSelect:
    """Apply `first` with probability p, else `second`."""

    def __init__(self, first, second, p: float = 0.5):
        self.first, self.second, self.p = first, second, p

    def __call__(self, image, target=None, generator=None):
        chosen = self.first if _rand(generator) < self.p else self.second
        return chosen(image, target, generator)

    def __repr__(self):
        return f"RandomSelect({self.first}, {self.second}, p={self.p})"


class ToNormalizedTensor:
    """PIL image -> ImageNet-normalised float tensor; boxes -> cxcywh divided by the image width and height."""

    def __call__(self, image, target=None, generator=None):
        image = F.to_dtype(F.to_image(image), torch.float32, scale=True)
        image = F.normalize(image, IMAGENET_MEAN, IMAGENET_STD).as_subclass(torch.Tensor)
        if target is None or "boxes" not in target:
            return image, target
        h, w = image.shape[-2:]
        target = dict(target)
        target["boxes"] = box_convert(target["boxes"], "xyxy", "cxcywh") / torch.tensor([w, h, w, h])
        return image, target

    def __repr__(self):
        return "ToNormalizedTensor()"


def make_train_transform(scales: Sequence[int] = RELEASE_SCALES, max_size: int = RELEASE_MAX_SIZE) -> Compose:
    """The release's PhraseCut training augmentation (no flip): with probability 1/2 a plain random resize over
    `scales`, otherwise a resize to one of the release's crop sizes (400/500/600), a random crop (sides >= 384)
    keeping every box, and a random resize over `scales`; crop sizes are scaled by max(scales) / 800.
    """
    factor = max(scales) / max(RELEASE_SCALES)
    crop_resize = [round(s * factor) for s in RELEASE_CROP_RESIZE]
    crop_min_size = round(RELEASE_CROP_MIN_SIZE * factor)
    cropped = Compose(
        [
            RandomResize(crop_resize),
            RandomSizeCrop(crop_min_size, max_size, respect_boxes=True),
            RandomResize(scales, max_size),
        ]
    )
    return Compose([RandomSelect(RandomResize(scales, max_size), cropped), ToNormalizedTensor()])


def make_eval_transform(size: int = max(RELEASE_SCALES), max_size: int = RELEASE_MAX_SIZE) -> Compose:
    """Resize the shorter side to `size` (longer side <= `max_size`) and normalise; call as t(image) or
    t(image, target)."""
    return Compose([RandomResize([size], max_size), ToNormalizedTensor()])
