"""PhraseCutDetection on phrasecut_mini: masks from polygons, transformed targets, collation, bad input."""
import copy
import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mdetr_phrasecut.data import transforms as T
from mdetr_phrasecut.data.dataset import PhraseCutDetection, build_dataset, collate_fn, polygons_to_mask
from mdetr_phrasecut.errors import InputError
from boxes import absolute_xyxy, mask_extents

SMALL = {"scales": [96, 128, 160], "max_size": 200}


@pytest.fixture(scope="module")
def mini(reference_dir):
    return reference_dir / "phrasecut_mini" / "s0"


@pytest.fixture(scope="module")
def tokenizer(tiny_roberta_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_roberta_dir)


@pytest.fixture(scope="module")
def coco_train(mini):
    return json.loads((mini / "expected_coco" / "finetune_phrasecut_train.json").read_text())


@pytest.fixture(scope="module")
def all_polygons_file(mini, coco_train, tmp_path_factory):
    """The train COCO file with every polygon of each instance (the corrected conversion)."""
    refer = {r["task_id"]: r for r in json.loads((mini / "refer_train.json").read_text())}
    coco = copy.deepcopy(coco_train)
    task_of = {im["id"]: im["task_id"] for im in coco["images"]}
    seen = {}
    for ann in sorted(coco["annotations"], key=lambda a: a["id"]):
        record = refer[task_of[ann["image_id"]]]
        k = seen.setdefault(ann["image_id"], 0)
        seen[ann["image_id"]] += 1
        assert ann["bbox"] == record["instance_boxes"][k]
        ann["segmentation"] = [[c for pt in poly for c in pt] for poly in record["Polygons"][k]]
    path = tmp_path_factory.mktemp("coco") / "finetune_phrasecut_train.json"
    path.write_text(json.dumps(coco))
    return path


def write_coco(tmp_path, coco, name="finetune_phrasecut_train.json"):
    path = tmp_path / name
    path.write_text(json.dumps(coco))
    return path


def shoelace(poly):
    x, y = np.array(poly[0::2]), np.array(poly[1::2])
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def perimeter(poly):
    pts = np.array(poly + poly[:2]).reshape(-1, 2)
    return np.hypot(*np.diff(pts, axis=0).T).sum()


def test_raw_targets_follow_the_coco_file(mini, coco_train, tokenizer):
    ds = PhraseCutDetection(mini / "images", mini / "expected_coco" / "finetune_phrasecut_train.json",
                            None, True, tokenizer)
    assert len(ds) == len(coco_train["images"])
    anns = {}
    for a in coco_train["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    for i in range(len(ds)):
        image, target = ds[i]
        info = next(im for im in coco_train["images"] if im["id"] == ds.ids[i])
        mine = anns[info["id"]]
        assert target["task_id"] == info["task_id"] and target["caption"] == info["caption"]
        assert target["orig_size"].tolist() == [image.height, image.width] == [info["height"], info["width"]]
        xyxy = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in mine)], dtype=torch.float32)
        assert torch.equal(target["boxes"], xyxy)
        assert target["tokens_positive"] == [a["tokens_positive"] for a in mine]
        for mask, ann in zip(target["masks"], mine):
            (poly,) = ann["segmentation"]
            assert abs(mask.sum().item() - shoelace(poly)) <= 0.5 * perimeter(poly) + 1


def test_multi_polygon_instances_are_unions(mini, all_polygons_file, tokenizer):
    ds = PhraseCutDetection(mini / "images", all_polygons_file, None, True, tokenizer)
    coco = json.loads(all_polygons_file.read_text())
    multi = 0
    for i in range(len(ds)):
        image, target = ds[i]
        anns = [a for a in coco["annotations"] if a["image_id"] == ds.ids[i]]
        for mask, ann in zip(target["masks"], anns):
            parts = [polygons_to_mask([p], image.height, image.width) for p in ann["segmentation"]]
            assert torch.equal(mask, torch.stack(parts).any(0))
            multi += len(parts) > 1
            canvas = Image.new("1", image.size)  # an independent rasteriser: differs only along the outlines
            for p in ann["segmentation"]:
                ImageDraw.Draw(canvas).polygon(p, fill=1, outline=1)
            pil = torch.from_numpy(np.array(canvas))
            assert (mask ^ pil).sum() <= sum(perimeter(p) for p in ann["segmentation"]) + 4
    assert multi > 10


def test_eval_transform_keeps_boxes_on_masks(mini, all_polygons_file, tokenizer):
    raw = PhraseCutDetection(mini / "images", all_polygons_file, None, True, tokenizer)
    # upsampling (every source pixel is sampled), so nearest-neighbour masks move their edges by < 1 pixel
    ds = PhraseCutDetection(mini / "images", all_polygons_file, T.make_eval_transform(320, 400), True, tokenizer)
    for i in range(0, len(ds), 3):
        _, before = raw[i]
        image, after = ds[i]
        assert after["size"].tolist() == list(image.shape[-2:]) and after["orig_size"].equal(before["orig_size"])
        assert ((after["boxes"] >= 0) & (after["boxes"] <= 1)).all()
        scale = after["size"][0].item() / before["size"][0].item()
        assert scale >= 1
        raw_gap = (before["boxes"] - mask_extents(before["masks"])).abs()
        gap = (absolute_xyxy(after["boxes"], after["size"]) - mask_extents(after["masks"])).abs()
        assert (gap <= raw_gap * scale + 1.0).all()


def test_train_items_are_consistent_and_seeded(mini, coco_train, tokenizer):
    ds = build_dataset("train", mini / "expected_coco", mini / "images", tokenizer, SMALL)
    counts = {}
    for a in coco_train["annotations"]:
        counts[a["image_id"]] = counts.get(a["image_id"], 0) + 1
    torch.manual_seed(0)
    first = [ds[i] for i in range(0, len(ds), 2)]
    for idx, (image, target) in zip(range(0, len(ds), 2), first):
        n = counts[ds.ids[idx]]
        h, w = image.shape[-2:]
        assert max(h, w) <= 200 and target["masks"].shape == (n, h, w) and target["boxes"].shape == (n, 4)
        assert ((target["boxes"] >= 0) & (target["boxes"] <= 1)).all()
        ids = tokenizer(target["caption"])["input_ids"]
        assert target["positive_map"].shape == (n, 256)
        assert torch.allclose(target["positive_map"].sum(1), torch.ones(n), atol=1e-4)
        assert (target["positive_map"][:, 1 : len(ids) - 1] > 0).all()  # the whole phrase, not <s> or </s>
        assert (target["positive_map"][:, len(ids) - 1 :] == 0).all() and (target["positive_map"][:, 0] == 0).all()
    torch.manual_seed(0)
    again = [ds[i] for i in range(0, len(ds), 2)]
    for (img_a, a), (img_b, b) in zip(first, again):
        assert torch.equal(img_a, img_b) and torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["masks"], b["masks"])


def test_collate_pads_and_masks(mini, tokenizer):
    ds = build_dataset("val", mini / "expected_coco", mini / "images", tokenizer, SMALL)
    items = [ds[i] for i in range(6)]
    assert len({img.shape for img, _ in items}) > 1
    samples, targets = collate_fn(items)
    tensors, mask = samples.decompose()
    assert tensors.shape[0] == 6 and [t["task_id"] for t in targets] == [t["task_id"] for _, t in items]
    assert tensors.shape[-2:] == (max(i.shape[1] for i, _ in items), max(i.shape[2] for i, _ in items))
    for (img, _), padded, m in zip(items, tensors, mask):
        h, w = img.shape[-2:]
        assert torch.equal(padded[:, :h, :w], img)
        assert padded[:, h:].abs().sum() == 0 and padded[:, :, w:].abs().sum() == 0
        assert not m[:h, :w].any() and m[h:].all() and m[:, w:].all()


def test_dataset_pickles_for_workers(mini, tokenizer):
    ds = build_dataset("miniv", mini / "expected_coco", mini / "images", tokenizer, SMALL)
    clone = pickle.loads(pickle.dumps(ds))
    (a, ta), (b, tb) = ds[1], clone[1]
    assert torch.equal(a, b) and torch.equal(ta["positive_map"], tb["positive_map"])


def test_invalid_boxes_are_clamped_or_dropped(mini, coco_train, tokenizer, tmp_path):
    coco = copy.deepcopy(coco_train)
    im = coco["images"][0]
    coco["images"] = [im]
    base = {"iscrowd": 0, "category_id": 1, "image_id": im["id"], "segmentation": [[2, 2, 20, 2, 20, 20]], "area": 1}
    coco["annotations"] = [
        {**base, "id": 1, "bbox": [10, 10, 0, 30], "tokens_positive": [[0, 1]]},  # no width: dropped
        {**base, "id": 2, "bbox": [-5, 100, 20, 500], "tokens_positive": [[0, 2]]},  # clamped to the image
        {**base, "id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 1, "tokens_positive": [[0, 3]]},  # crowd: dropped
    ]
    _, target = PhraseCutDetection(mini / "images", write_coco(tmp_path, coco), None, True, tokenizer)[0]
    assert target["boxes"].tolist() == [[0, 100, 15, im["height"]]]
    assert target["tokens_positive"] == [[[0, 2]]] and target["masks"].shape == (1, im["height"], im["width"])
    assert target["positive_map"].shape == (1, 256)


def test_bad_images_raise_input_error(mini, coco_train, tokenizer, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    coco = copy.deepcopy(coco_train)
    coco["images"] = coco["images"][:4]
    names = [im["file_name"] for im in coco["images"]]
    (images / names[0]).write_bytes(b"not a jpeg at all")
    data = (mini / "images" / names[1]).read_bytes()
    (images / names[1]).write_bytes(data[: len(data) // 2])  # truncated
    shutil.copy(mini / "images" / names[3], images / names[3])
    coco["images"][3]["width"] += 1
    ds = PhraseCutDetection(images, write_coco(tmp_path, coco), None, True, tokenizer)
    for i in range(4):  # corrupt, truncated, missing, wrong size
        info = coco["images"][i]
        with pytest.raises(InputError) as err:
            ds[ds.ids.index(info["id"])]
        assert names[i] in str(err.value) and info["task_id"] in str(err.value) and "\n" not in str(err.value)


def test_bad_annotation_files_raise_input_error(mini, coco_train, tokenizer, tmp_path):
    broken = tmp_path / "finetune_phrasecut_train.json"
    broken.write_text("{not json")
    with pytest.raises(InputError, match="finetune_phrasecut_train.json"):
        PhraseCutDetection(mini / "images", broken, None, True, tokenizer)
    with pytest.raises(InputError, match="finetune_phrasecut_test.json"):
        build_dataset("test", tmp_path, mini / "images", tokenizer, SMALL)
    coco = copy.deepcopy(coco_train)
    del coco["images"][0]["caption"]
    with pytest.raises(InputError, match=rf"{coco['images'][0]['task_id']}.*'caption'"):
        PhraseCutDetection(mini / "images", write_coco(tmp_path, coco), None, True, tokenizer)
