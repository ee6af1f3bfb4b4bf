"""MDETR's PhraseCut transforms on synthetic images whose boxes are the exact extents of their masks."""
import numpy as np
import pytest
import torch
from PIL import Image

from mdetr_phrasecut.data import transforms as T
from helpers.boxes import absolute_xyxy, mask_extents

SCALES = list(range(96, 161, 32))
MAX_SIZE = 200


def make_sample(width=170, height=130, seed=0):
    """A random RGB image with three rectangular instances."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    rects = [(5, 10, 60, 70), (100, 20, 165, 50), (30, 90, 140, 125)]  # x1, y1, x2, y2 (exclusive)
    masks = torch.zeros((len(rects), height, width), dtype=torch.bool)
    for m, (x1, y1, x2, y2) in zip(masks, rects):
        m[y1:y2, x1:x2] = True
    caption = "the left dog right of the bright cat"
    target = {
        "boxes": torch.tensor(rects, dtype=torch.float32),
        "labels": torch.ones(len(rects), dtype=torch.int64),
        "area": torch.tensor([(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in rects], dtype=torch.float32),
        "iscrowd": torch.zeros(len(rects), dtype=torch.int64),
        "masks": masks,
        "caption": caption,
        "tokens_positive": [[[0, 12]], [[13, 18], [19, 21]], [[26, 36]]],
        "size": torch.tensor([height, width]),
    }
    return image, target


@pytest.mark.parametrize("width,height", [(170, 130), (60, 400), (500, 90), (128, 128)])
@pytest.mark.parametrize("size,max_size", [(128, None), (96, 200), (800, 1333)])
def test_resized_shape_follows_detr_rule(width, height, size, max_size):
    h, w = T.resized_shape(width, height, size, max_size)
    if max_size is not None and max(width, height) / min(width, height) * size > max_size:
        assert max(h, w) <= max_size and max(h, w) >= max_size - 1
    else:
        assert min(h, w) == size
    assert abs(h / w - height / width) < 2 / min(h, w)  # aspect ratio kept up to truncation


def test_resize_scales_boxes_masks_and_area():
    image, target = make_sample()
    out_image, out = T.resize(image, target, 100, MAX_SIZE)
    h, w = out["size"].tolist()
    assert out_image.size == (w, h) and out["masks"].shape[-2:] == (h, w) and min(h, w) == 100
    assert torch.allclose(out["boxes"], mask_extents(out["masks"]), atol=1.0)
    ratio = (w / 170) * (h / 130)
    assert torch.allclose(out["area"], target["area"] * ratio)


def test_crop_clips_boxes_and_drops_empty_instances():
    image, target = make_sample()
    out_image, out = T.crop(image, target, top=15, left=50, height=60, width=100)
    assert out_image.size == (100, 60) and out["size"].tolist() == [60, 100]
    # instance 0 (x 5..60) is clipped, instance 1 is inside, instance 2 (y >= 90) is cut away
    assert out["labels"].numel() == 2 and len(out["tokens_positive"]) == 2
    assert out["tokens_positive"] == target["tokens_positive"][:2]
    assert torch.equal(out["boxes"], mask_extents(out["masks"]))
    assert torch.equal(out["area"], (out["boxes"][:, 2:] - out["boxes"][:, :2]).prod(1))


def test_random_size_crop_respects_boxes():
    image, target = make_sample()
    crop = T.RandomSizeCrop(40, 200, respect_boxes=True)
    for seed in range(10):
        out_image, out = crop(image, target, torch.Generator().manual_seed(seed))
        w, h = out_image.size
        assert 40 <= w <= 170 and 40 <= h <= 130
        assert len(out["boxes"]) == 3 and out["masks"].shape == (3, h, w)
        assert torch.equal(out["boxes"], mask_extents(out["masks"]))


def test_train_transform_outputs_normalised_consistent_targets():
    image, target = make_sample()
    transform = T.make_train_transform(SCALES, MAX_SIZE)
    sizes = set()
    for seed in range(12):
        img, out = transform(image, target, torch.Generator().manual_seed(seed))
        h, w = img.shape[-2:]
        sizes.add((h, w))
        assert img.dtype == torch.float32 and out["size"].tolist() == [h, w] and max(h, w) <= MAX_SIZE
        assert out["masks"].shape == (len(out["boxes"]), h, w)
        assert len(out["boxes"]) == len(out["labels"]) == len(out["tokens_positive"]) == 3
        assert ((out["boxes"] >= 0) & (out["boxes"] <= 1)).all()
        # boxes (normalised cxcywh) still outline the masks, up to nearest-neighbour rounding: at most one source
        # pixel per resize, and the resize after a crop may upsample about 2x
        assert (absolute_xyxy(out["boxes"], out["size"]) - mask_extents(out["masks"])).abs().max() <= 3.5
    assert len(sizes) > 1


def test_train_transform_is_deterministic_under_seed():
    image, target = make_sample()
    transform = T.make_train_transform(SCALES, MAX_SIZE)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append([transform(image, target) for _ in range(4)])
    for (img_a, a), (img_b, b) in zip(*runs):
        assert torch.equal(img_a, img_b) and torch.equal(a["boxes"], b["boxes"]) and a["caption"] == b["caption"]
    gen_runs = [transform(image, target, torch.Generator().manual_seed(7))[0] for _ in range(2)]
    assert torch.equal(*gen_runs)


def test_crop_sizes_default_to_release_values_scaled():
    release = T.make_train_transform()
    select = release.transforms[0]
    assert select.first.sizes == list(range(480, 801, 32)) and select.first.max_size == 1333
    assert select.second.transforms[0].sizes == [400, 500, 600]
    assert select.second.transforms[1].min_size == 384 and select.second.transforms[1].respect_boxes
    small = T.make_train_transform(SCALES, MAX_SIZE).transforms[0].second
    assert small.transforms[0].sizes == [80, 100, 120] and small.transforms[1].min_size == 77


def test_eval_transform_normalises_and_needs_no_target():
    mean = tuple(round(255 * m) for m in T.IMAGENET_MEAN)
    image = Image.new("RGB", (300, 150), mean)
    state = torch.get_rng_state()
    tensor, none = T.make_eval_transform(120, MAX_SIZE)(image)
    assert none is None and tensor.shape == (3, 100, MAX_SIZE)  # 120 would make the long side 240 > 200
    assert tensor.abs().max() < 0.01
    assert torch.equal(torch.get_rng_state(), state)  # a fixed size draws nothing from the RNG
    _, target = make_sample(300, 150)
    _, out = T.make_eval_transform(120, MAX_SIZE)(image, target)
    assert torch.allclose(absolute_xyxy(out["boxes"], out["size"]), mask_extents(out["masks"]), atol=1.0)
