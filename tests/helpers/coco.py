"""COCO-format test data."""
from pathlib import Path


def indexed_coco(folder):
    """`folder` with the annotation index of each finetune_phrasecut_{split}.json in it built beside it."""
    from mdetr_phrasecut.data.annotation_index import build_index

    for coco in Path(folder).glob("finetune_phrasecut_*.json"):
        build_index(coco, coco.with_suffix(".index"))
    return Path(folder)
