"""PhraseCutDetection on phrasecut_mini: masks from polygons, transformed targets, collation, bad input."""
import contextlib
import copy
import io
import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from pycocotools.coco import COCO

from mdetr_phrasecut.data import transforms as T
from mdetr_phrasecut.data.annotation_index import AnnotationIndex, build_index
from mdetr_phrasecut.data.dataset import PhraseCutDetection, build_dataset, collate_fn, polygons_to_mask
from mdetr_phrasecut.errors import InputError
from mdetr_phrasecut.model.positive_map import caption_positive_map
from helpers.boxes import absolute_xyxy, mask_extents

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


def dataset(images, coco_file, transforms, tokenizer):
    """PhraseCutDetection (with masks) over the index of `coco_file`, built beside it."""
    index = build_index(coco_file, coco_file.with_suffix(".index"))
    return PhraseCutDetection(images, AnnotationIndex(index, coco_file), transforms, True, tokenizer)


def shoelace(poly):
    x, y = np.array(poly[0::2]), np.array(poly[1::2])
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def perimeter(poly):
    pts = np.array(poly + poly[:2]).reshape(-1, 2)
    return np.hypot(*np.diff(pts, axis=0).T).sum()


def test_raw_targets_follow_the_coco_file(mini, mini_coco, coco_train, tokenizer):
    ds = PhraseCutDetection(mini / "images", AnnotationIndex(mini_coco / "finetune_phrasecut_train.index"),
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
    ds = dataset(mini / "images", all_polygons_file, None, tokenizer)
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
    raw = dataset(mini / "images", all_polygons_file, None, tokenizer)
    # upsampling (every source pixel is sampled), so nearest-neighbour masks move their edges by < 1 pixel
    ds = PhraseCutDetection(mini / "images", raw.index, T.make_eval_transform(320, 400), True, tokenizer)
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


def test_train_items_are_consistent_and_seeded(mini, mini_coco, coco_train, tokenizer):
    ds = build_dataset("train", mini_coco, mini / "images", tokenizer, SMALL)
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


def test_collate_pads_and_masks(mini, mini_coco, tokenizer):
    ds = build_dataset("val", mini_coco, mini / "images", tokenizer, SMALL)
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


def test_dataset_pickles_for_workers(mini, mini_coco, tokenizer):
    ds = build_dataset("miniv", mini_coco, mini / "images", tokenizer, SMALL)
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
    _, target = dataset(mini / "images", write_coco(tmp_path, coco), None, tokenizer)[0]
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
    ds = dataset(images, write_coco(tmp_path, coco), None, tokenizer)
    for i in range(4):  # corrupt, truncated, missing, wrong size
        info = coco["images"][i]
        with pytest.raises(InputError) as err:
            ds[list(ds.ids).index(info["id"])]
        assert names[i] in str(err.value) and info["task_id"] in str(err.value) and "\n" not in str(err.value)


def coco_path_items(images, coco_file, transforms, tokenizer):
    """The items as the COCO path before the index made them (pycocotools' dicts, targets per item): the oracle
    the index must reproduce bit for bit."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(coco_file))
    for image_id in sorted(coco.imgs):
        info = coco.imgs[image_id]
        image = Image.open(images / info["file_name"]).convert("RGB")
        width, height = image.size
        anns = [a for a in coco.imgToAnns[image_id] if not a.get("iscrowd", 0)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2].clamp_(min=0, max=width)
        boxes[:, 1::2].clamp_(min=0, max=height)
        masks = [polygons_to_mask(a["segmentation"], height, width) for a in anns]
        target = {
            "boxes": boxes, "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
            "area": torch.tensor([float(a["area"]) for a in anns], dtype=torch.float32),
            "iscrowd": torch.zeros(len(anns), dtype=torch.int64),
            "tokens_positive": [a["tokens_positive"] for a in anns], "caption": info["caption"],
            "image_id": torch.tensor([info["id"]]), "task_id": info.get("task_id"),
            "original_id": info.get("original_id"), "orig_size": torch.tensor([height, width]),
            "size": torch.tensor([height, width]),
            "masks": torch.stack(masks) if masks else torch.zeros((0, height, width), dtype=torch.bool),
        }
        target = T.keep_instances(target, (boxes[:, 2:] > boxes[:, :2]).all(dim=1))
        if transforms is not None:
            image, target = transforms(image, target)
        target["positive_map"] = caption_positive_map(tokenizer, target["caption"], target["tokens_positive"])
        yield image, target


def assert_same_item(a, b):
    (image_a, target_a), (image_b, target_b) = a, b
    assert type(image_a) is type(image_b) and target_a.keys() == target_b.keys()
    if isinstance(image_a, torch.Tensor):
        assert image_a.dtype == image_b.dtype and torch.equal(image_a, image_b)
    else:
        assert image_a.tobytes() == image_b.tobytes()
    for key, value in target_a.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == target_b[key].dtype and torch.equal(value, target_b[key]), key
        else:
            assert type(value) is type(target_b[key]) and value == target_b[key], key


@pytest.fixture(scope="module")
def edge_cases_file(mini, coco_train, tmp_path_factory):
    """Crowd, zero-width, clamped and polygon-less annotations, a phrase without annotations, a non-ASCII
    caption, ids out of order."""
    coco = copy.deepcopy(coco_train)
    coco["images"] = coco["images"][:6][::-1]
    coco["images"][0]["caption"] = "tasse à café – große"
    ids = [im["id"] for im in coco["images"]]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in ids[:4]]
    base = {"iscrowd": 0, "category_id": 1, "image_id": ids[0], "segmentation": [[2, 2, 20, 2, 20, 20]], "area": 7}
    coco["annotations"] += [
        {**base, "id": 901, "bbox": [10, 10, 0, 30], "tokens_positive": [[0, 1]]},
        {**base, "id": 902, "bbox": [-5.25, 100.5, 20, 500], "tokens_positive": [[0, 2], [3, 5]]},
        {**base, "id": 903, "bbox": [1, 1, 5, 5], "iscrowd": 1, "tokens_positive": [[0, 3]]},
        {**base, "id": 904, "bbox": [1, 1, 5, 5], "segmentation": [], "tokens_positive": []},
        {**base, "id": 905, "bbox": [1, 1, 5, 5], "segmentation": [[1, 1, 4, 4]], "tokens_positive": [[0, 3]]},
    ]
    path = tmp_path_factory.mktemp("edge") / "finetune_phrasecut_train.json"
    path.write_text(json.dumps(coco))
    return path


@pytest.mark.parametrize("source", ["train", "val", "miniv", "test", "all_polygons", "edge_cases"])
def test_index_items_are_the_coco_path_items_bit_for_bit(source, mini, mini_coco, all_polygons_file, edge_cases_file,
                                                         tokenizer, request):
    coco_file = {"all_polygons": all_polygons_file, "edge_cases": edge_cases_file}.get(
        source, mini_coco / f"finetune_phrasecut_{source}.json")
    index = AnnotationIndex(build_index(coco_file, coco_file.parent / f"{source}.index"), coco_file)
    for transforms in (None, T.make_train_transform(SMALL["scales"], SMALL["max_size"])):
        ds = PhraseCutDetection(mini / "images", index, transforms, True, tokenizer)
        torch.manual_seed(0)
        new = [ds[i] for i in range(len(ds))]
        torch.manual_seed(0)
        old = list(coco_path_items(mini / "images", coco_file, transforms, tokenizer))
        assert len(new) == len(old) > 0
        for a, b in zip(new, old):
            assert_same_item(a, b)


def test_the_index_is_memory_mapped_and_pickles_as_its_path(mini_coco):
    index = AnnotationIndex(mini_coco / "finetune_phrasecut_val.index")
    assert all(isinstance(a, np.memmap) and not a.flags.writeable for a in index.arrays.values())
    clone = pickle.loads(pickle.dumps(index))
    assert len(pickle.dumps(index)) < 500 and isinstance(clone.arrays["coords"], np.memmap)
    assert [clone.image(i) for i in range(len(clone))] == [index.image(i) for i in range(len(index))]


def one_line_error(call, *fragments):
    with pytest.raises(InputError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and all(f in message for f in fragments), message


def test_missing_stale_and_corrupt_indexes_are_one_line_naming_the_file(mini_coco, tmp_path):
    coco = tmp_path / "finetune_phrasecut_val.json"
    shutil.copyfile(mini_coco / coco.name, coco)
    folder = build_index(coco, tmp_path / "val.index")
    one_line_error(lambda: AnnotationIndex(tmp_path / "absent.index", coco), "absent.index", "not found")
    os.utime(coco, ns=(1, 1))  # touched, same bytes: still current
    AnnotationIndex(folder, coco)
    coco.write_text(coco.read_text().replace('"caption": "', '"caption": "X', 1))
    one_line_error(lambda: AnnotationIndex(folder, coco), "val.index", "stale", "sha256")

    def broken(name, change):
        copy_ = tmp_path / f"broken_{name}"
        shutil.copytree(folder, copy_)
        change(copy_ / name)
        return copy_

    truncated = broken("coords.npy", lambda p: p.write_bytes(p.read_bytes()[:-16]))
    one_line_error(lambda: AnnotationIndex(truncated), "coords.npy")
    offsets = broken("ann_offsets.npy", lambda p: np.save(p, np.load(p) * 2))
    one_line_error(lambda: AnnotationIndex(offsets), "bbox.npy", "out of range")
    backwards = broken("span_offsets.npy", lambda p: np.save(p, np.load(p)[::-1].copy()))
    one_line_error(lambda: AnnotationIndex(backwards), "span_offsets.npy", "out of range")
    retyped = broken("area.npy", lambda p: np.save(p, np.load(p).astype(np.float32)))
    one_line_error(lambda: AnnotationIndex(retyped), "area.npy", "float32")
    meta = broken("meta.json", lambda p: p.write_text("{"))
    one_line_error(lambda: AnnotationIndex(meta), "meta.json")
    lost = broken("caption_bytes.npy", os.unlink)
    one_line_error(lambda: AnnotationIndex(lost), "caption_bytes.npy")


def test_a_failed_build_leaves_the_previous_index_and_no_temp(mini_coco, coco_train, tmp_path, monkeypatch):
    coco = tmp_path / "finetune_phrasecut_val.json"
    shutil.copyfile(mini_coco / coco.name, coco)
    folder = build_index(coco, tmp_path / "val.index")
    before = AnnotationIndex(folder).image(0)
    real_save = np.save
    monkeypatch.setattr(np, "save", lambda p, a: real_save(p, a) if "coords" not in str(p) else 1 / 0)
    with pytest.raises(ZeroDivisionError):
        build_index(write_coco(tmp_path, coco_train), folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([coco.name, "finetune_phrasecut_train.json",
                                                                 "val.index"])
    assert AnnotationIndex(folder, coco).image(0) == before
    monkeypatch.undo()
    build_index(write_coco(tmp_path, coco_train), folder)  # rebuilt in place, the old one set aside then removed
    assert AnnotationIndex(folder).image(0)["id"] == coco_train["images"][0]["id"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([coco.name, "finetune_phrasecut_train.json",
                                                                 "val.index"])


def test_bad_annotation_files_are_refused_when_indexed(mini, coco_train, tokenizer, tmp_path):
    broken = tmp_path / "finetune_phrasecut_train.json"
    broken.write_text("{not json")
    one_line_error(lambda: build_index(broken, tmp_path / "i"), "finetune_phrasecut_train.json", "not valid JSON")
    one_line_error(lambda: build_dataset("test", tmp_path, mini / "images", tokenizer, SMALL),
                   "finetune_phrasecut_test.index", "not found")
    for change, field in ((lambda c: c["images"][0].pop("caption"), "'caption'"),
                          (lambda c: c["annotations"][0].update(bbox=[1, 2, 3]), "'bbox'"),
                          (lambda c: c["annotations"][0].update(segmentation=[[1, 2, 3]]), "'segmentation'"),
                          (lambda c: c["annotations"][0].update(tokens_positive=[[0]]), "'tokens_positive'")):
        coco = copy.deepcopy(coco_train)
        change(coco)
        task_id = next(im["task_id"] for im in coco["images"] if im["id"] == coco["annotations"][0]["image_id"]) \
            if field != "'caption'" else coco["images"][0]["task_id"]
        one_line_error(lambda: build_index(write_coco(tmp_path, coco), tmp_path / "i"), "finetune_phrasecut_train",
                       task_id, field)
    assert not (tmp_path / "i").exists()


def test_too_long_captions_are_refused_without_tokenizing_the_others(mini_coco, coco_train, tokenizer, tmp_path,
                                                                    monkeypatch):
    coco = copy.deepcopy(coco_train)
    coco["images"][3]["caption"] = "red circle " * 200
    path = write_coco(tmp_path, coco)
    index = AnnotationIndex(build_index(path, tmp_path / "i"), path)
    seen = []
    real_call = type(tokenizer).__call__
    monkeypatch.setattr(type(tokenizer), "__call__", lambda self, text, *a, **k: seen.append(text) or
                        real_call(self, text, *a, **k))
    one_line_error(lambda: PhraseCutDetection(mini_coco, index, None, True, tokenizer), str(path),
                   coco["images"][3]["task_id"], "tokens")
    assert seen == [[coco["images"][3]["caption"]]]
