"""PhraseCut training data in MDETR's COCO layout (`finetune_phrasecut_{split}.json`): one item per phrase.

An item is (image, target): the transformed image and a dict with ``boxes`` (absolute xyxy before the
transforms, normalised cxcywh after), ``labels``, ``masks`` (the union of each instance's polygons, rasterised
with pycocotools), ``caption``, ``tokens_positive``, ``positive_map`` [n, 256], ``image_id``, ``task_id``,
``original_id``, ``orig_size``, ``size``, ``area`` and ``iscrowd``.
"""
import contextlib
import io
import json
import os
from pathlib import Path
from typing import Mapping, Optional

import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from ..errors import InputError
from ..io import note_input, open_image
from ..model.positive_map import batch_positive_map, caption_positive_map
from ..model.text_encoder import check_phrase_lengths
from ..nested_tensor import nested_tensor_from_tensor_list
from . import transforms as T


def load_coco(ann_file) -> COCO:
    """Index a COCO annotation file once (quietly); an unreadable file is an InputError."""
    note_input(ann_file)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(ann_file))
    except (OSError, ValueError, KeyError, TypeError) as e:
        kind = "not valid JSON" if isinstance(e, json.JSONDecodeError) else f"{type(e).__name__}: {e}"
        raise InputError(f"{ann_file}: cannot load COCO annotations ({kind})") from None


def polygons_to_mask(polygons, height: int, width: int, where: str = "segmentation") -> torch.Tensor:
    """Bool [height, width] mask: the union of COCO polygons [x0, y0, x1, y1, ...]; degenerate ones (< 3
    points) cover nothing."""
    if not isinstance(polygons, list) or any(not isinstance(p, list) or len(p) % 2 for p in polygons):
        raise InputError(f"{where}: field 'segmentation' must be a list of [x, y, ...] polygons")
    polygons = [p for p in polygons if len(p) >= 6]
    if not polygons:
        return torch.zeros((height, width), dtype=torch.bool)
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    return torch.from_numpy(mask_utils.decode(rle)).bool()


def _field(record: Mapping, name: str, where: str):
    try:
        return record[name]
    except KeyError:
        raise InputError(f"{where}: missing field '{name}'") from None


class PhraseCutDetection(torch.utils.data.Dataset):
    """Phrases of one `finetune_phrasecut_{split}.json` with their images from `img_folder`.

    `transforms` is called as transforms(image, target) (see data.transforms); `tokenizer` is a fast
    Hugging Face tokenizer, used to compute each phrase's positive map after the transforms (a flip may
    rewrite the caption).
    """

    def __init__(self, img_folder, ann_file, transforms, return_masks: bool, tokenizer):
        self.img_folder = Path(img_folder)
        self.ann_file = Path(ann_file)
        self.transforms = transforms
        self.return_masks = return_masks
        self.tokenizer = tokenizer
        self.coco = load_coco(self.ann_file)
        self.ids = sorted(self.coco.imgs)
        infos = [self.coco.imgs[i] for i in self.ids]
        check_phrase_lengths(tokenizer, [_field(info, "caption", self._where(info)) for info in infos],
                             lambda i: self._where(infos[i]))

    def _where(self, info: Mapping) -> str:
        return f"{self.ann_file}: image id {info['id']} task_id {info.get('task_id')}"

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, idx):
        info = self.coco.imgs[self.ids[idx]]
        where = self._where(info)
        image = self._load_image(info, where)
        target = self._target(info, self.coco.imgToAnns[info["id"]], image.size, where)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        target["positive_map"] = caption_positive_map(self.tokenizer, target["caption"], target["tokens_positive"])
        return image, target

    def _load_image(self, info: Mapping, where: str) -> Image.Image:
        path = self.img_folder / _field(info, "file_name", where)
        image = open_image(path, f"task_id {info.get('task_id')}: image")
        expected = (info.get("width", image.width), info.get("height", image.height))
        if image.size != expected:
            raise InputError(
                f"{path}: image is {image.width}x{image.height} but task_id {info.get('task_id')} "
                f"expects {expected[0]}x{expected[1]} (fields 'width', 'height')"
            )
        return image

    def _target(self, info: Mapping, anns, image_size, where: str) -> dict:
        """The release's ConvertCocoPolysToMask: crowd annotations dropped, boxes to xyxy clipped to the
        image, boxes without area dropped."""
        width, height = image_size
        anns = [a for a in anns if not a.get("iscrowd", 0)]
        try:
            boxes = torch.tensor([_field(a, "bbox", where) for a in anns], dtype=torch.float32).reshape(-1, 4)
        except (ValueError, TypeError, RuntimeError):
            raise InputError(f"{where}: field 'bbox' must be [x, y, w, h] numbers") from None
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2].clamp_(min=0, max=width)
        boxes[:, 1::2].clamp_(min=0, max=height)
        target = {
            "boxes": boxes,
            "labels": torch.tensor([_field(a, "category_id", where) for a in anns], dtype=torch.int64),
            "area": torch.tensor([float(_field(a, "area", where)) for a in anns], dtype=torch.float32),
            "iscrowd": torch.zeros(len(anns), dtype=torch.int64),
            "tokens_positive": [_field(a, "tokens_positive", where) for a in anns],
            "caption": _field(info, "caption", where),
            "image_id": torch.tensor([info["id"]]),
            "task_id": info.get("task_id"),
            "original_id": info.get("original_id"),
            "orig_size": torch.tensor([height, width]),
            "size": torch.tensor([height, width]),
        }
        if self.return_masks:
            masks = [polygons_to_mask(_field(a, "segmentation", where), height, width, where) for a in anns]
            target["masks"] = torch.stack(masks) if masks else torch.zeros((0, height, width), dtype=torch.bool)
        return T.keep_instances(target, (boxes[:, 2:] > boxes[:, :2]).all(dim=1))


def collate_fn(batch):
    """(images, targets) pairs -> (NestedTensor padded to the batch's largest image, list of targets)."""
    images, targets = zip(*batch)
    return nested_tensor_from_tensor_list(list(images)), list(targets)


def train_collate_fn(batch, positive_map: str = "release"):
    """collate_fn's pair plus the batch's positive map, stacked as the release's collate does, in mode
    `positive_map` (see model.positive_map.batch_positive_map)."""
    samples, targets = collate_fn(batch)
    return samples, targets, batch_positive_map([t["positive_map"] for t in targets], positive_map)


def build_dataset(split: str, coco_path, img_folder, tokenizer, train_cfg: Optional[Mapping] = None):
    """PhraseCutDetection for `coco_path/finetune_phrasecut_{split}.json`: training transforms for "train",
    evaluation transforms otherwise.

    `train_cfg` keys (all optional): scales, max_size (release: 480..800 step 32, 1333; evaluation resizes to
    max(scales)) and masks (return instance masks, default True). `tokenizer` is a tokenizer or a folder / hub name to load one from.
    """
    cfg = dict(train_cfg or {})
    scales = list(cfg.get("scales", T.RELEASE_SCALES))
    max_size = cfg.get("max_size", T.RELEASE_MAX_SIZE)
    if split == "train":
        transforms = T.make_train_transform(scales, max_size)
    else:
        transforms = T.make_eval_transform(max(scales), max_size)
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    ann_file = Path(coco_path) / f"finetune_phrasecut_{split}.json"
    return PhraseCutDetection(img_folder, ann_file, transforms, cfg.get("masks", True), tokenizer)
