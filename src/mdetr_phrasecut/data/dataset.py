"""PhraseCut training data in MDETR's COCO layout (`finetune_phrasecut_{split}.json`): one item per phrase.

An item is (image, target): the transformed image and a dict with ``boxes`` (absolute xyxy before the
transforms, normalised cxcywh after), ``labels``, ``masks`` (the union of each instance's polygons, rasterised
with pycocotools), ``caption``, ``tokens_positive``, ``positive_map`` [n, 256], ``image_id``, ``task_id``,
``original_id``, ``orig_size``, ``size``, ``area`` and ``iscrowd``.
"""
import json
import os
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from ..errors import InputError
from ..infra.io import open_image
from ..model.positive_map import MAX_TEXT_LEN, caption_positive_map, batch_positive_map
from ..model.text_encoder import check_phrase_lengths
from ..model.nested_tensor import nested_tensor_from_tensor_list
from . import transforms as T
from .annotation_index import AnnotationIndex, index_path


def polygons_to_mask(polygons, height: int, width: int) -> torch.Tensor:
    """Bool [height, width] mask: the union of COCO polygons [x0, y0, x1, y1, ...]; degenerate ones (< 3
    points) cover nothing."""
    polygons = [p for p in polygons if len(p) >= 6]
    if not polygons:
        return torch.zeros((height, width), dtype=torch.bool)
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    return torch.from_numpy(mask_utils.decode(rle)).bool()


def check_caption_lengths(tokenizer, index: AnnotationIndex):
    """`check_phrase_lengths` over the index's captions without tokenising them all: with a byte-level BPE
    tokenizer (RoBERTa's) every token covers at least one byte, so only captions whose UTF-8 length plus the
    special tokens exceeds the limit can be too long; other tokenizers see every caption."""
    limit = min(tokenizer.model_max_length, MAX_TEXT_LEN)
    pre = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel":
        suspects = np.flatnonzero(index.caption_bytes() + tokenizer.num_special_tokens_to_add() > limit)
    else:
        suspects = np.arange(len(index))
    check_phrase_lengths(tokenizer, [index.string("caption", i) for i in suspects],
                         lambda k: index.where(suspects[k]))


class PhraseCutDetection(torch.utils.data.Dataset):
    """Phrases of one split's annotation index (`data.annotation_index`) with their images from `img_folder`.

    `transforms` is called as transforms(image, target) (see data.transforms); `tokenizer` is a fast
    Hugging Face tokenizer, used to compute each phrase's positive map after the transforms (a flip may
    rewrite the caption).
    """

    def __init__(self, img_folder, index: AnnotationIndex, transforms, return_masks: bool, tokenizer):
        self.img_folder = Path(img_folder)
        self.index = index
        self.transforms = transforms
        self.return_masks = return_masks
        self.tokenizer = tokenizer
        check_caption_lengths(tokenizer, index)

    @property
    def ids(self) -> np.ndarray:
        """The COCO image id of each item."""
        return self.index.arrays["image_id"]

    def __len__(self):
        return len(self.index)

    def __getitem__(self, idx):
        info = self.index.image(idx)
        image = self._load_image(info)
        target = self._target(info, self.index.annotations(idx), image.size)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        target["positive_map"] = caption_positive_map(self.tokenizer, target["caption"], target["tokens_positive"])
        return image, target

    def _load_image(self, info: Mapping) -> Image.Image:
        path = self.img_folder / info["file_name"]
        image = open_image(path, f"task_id {info['task_id']}: image")
        recorded = (info["width"], info["height"])
        expected = tuple(got if want is None else want for want, got in zip(recorded, image.size))
        if image.size != expected:
            raise InputError(
                f"{path}: image is {image.width}x{image.height} but task_id {info['task_id']} "
                f"expects {expected[0]}x{expected[1]} (fields 'width', 'height')"
            )
        return image

    def _target(self, info: Mapping, anns: Mapping, image_size) -> dict:
        """The release's ConvertCocoPolysToMask (crowd annotations are left out of the index): boxes to xyxy
        clipped to the image, boxes without area dropped."""
        width, height = image_size
        boxes = torch.from_numpy(anns["bbox"].astype(np.float32))
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2].clamp_(min=0, max=width)
        boxes[:, 1::2].clamp_(min=0, max=height)
        target = {
            "boxes": boxes,
            "labels": torch.from_numpy(anns["category_id"]),
            "area": torch.from_numpy(anns["area"].astype(np.float32)),
            "iscrowd": torch.zeros(len(boxes), dtype=torch.int64),
            "tokens_positive": anns["tokens_positive"],
            "caption": info["caption"],
            "image_id": torch.tensor([info["id"]]),
            "task_id": info["task_id"],
            "original_id": info["original_id"],
            "orig_size": torch.tensor([height, width]),
            "size": torch.tensor([height, width]),
        }
        if self.return_masks:
            masks = [polygons_to_mask(polygons, height, width) for polygons in anns["polygons"]]
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
    """PhraseCutDetection for `coco_path/finetune_phrasecut_{split}.json`, read from its index beside it
    (`finetune_phrasecut_{split}.index`, checked against the file): training transforms for "train",
    evaluation transforms otherwise.

    `train_cfg` keys (all optional): scales, max_size (release: 480..800 step 32, 1333; evaluation resizes to
    max(scales)) and masks (return instance masks, default True). `tokenizer` is a tokenizer or a folder / hub name to
    load one from.
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
    index = AnnotationIndex(index_path(coco_path, split), Path(coco_path) / f"finetune_phrasecut_{split}.json")
    return PhraseCutDetection(img_folder, index, transforms, cfg.get("masks", True), tokenizer)
