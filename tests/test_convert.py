"""Conversion to MDETR's finetune_phrasecut_{split}.json: the compat mode reproduces the published files
exactly (golden: reference s0 + folders from $PHRASECUT_GOLDEN); the full mode keeps every polygon."""
import json

import pytest

from helpers.paths import REFERENCE, env_paths
from mdetr_phrasecut import cli
from mdetr_phrasecut.data import convert as cv
from mdetr_phrasecut.data.phrasecut_format import PHRASECUT_SPLITS, load_image_split, load_refer
from mdetr_phrasecut.errors import InputError

S0 = REFERENCE / "phrasecut_mini" / "s0"
GOLDEN = [S0, *env_paths("PHRASECUT_GOLDEN")]
GOLDEN_CASES = [pytest.param(folder, split, id=f"{folder.name}-{split}")
                for folder in GOLDEN for split in PHRASECUT_SPLITS]


def converted(root, split, mode):
    """Our conversion of a split, parsed."""
    chunks, _, _ = cv.split_coco_json(root, split, mode)
    return json.loads("".join(chunks))


def key_orders(obj, path="$"):
    """Every object's key order, by path (lists: each element)."""
    out = []
    if isinstance(obj, dict):
        out.append((path, list(obj)))
        for k, v in obj.items():
            out += key_orders(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += key_orders(v, f"{path}[{i}]")
    return out


@pytest.mark.parametrize("folder,split", GOLDEN_CASES)
def test_phrasecut_golden_compat_equals_published_conversion(folder, split, tmp_path):
    expected = json.loads((folder / "expected_coco" / f"finetune_phrasecut_{split}.json").read_text())
    ours = converted(folder, split, "compat")
    assert ours == expected
    assert key_orders(ours) == key_orders(expected)
    # the written file has the published bytes (json.dump's default layout)
    counts = cv.convert_split_to_file(folder, split, tmp_path / "b.json", mode="compat")
    assert (tmp_path / "b.json").read_text() == json.dumps(expected)
    assert counts == (len(expected["images"]), len(expected["annotations"]))


@pytest.mark.parametrize("folder,split", GOLDEN_CASES)
def test_phrasecut_golden_full_mode_keeps_all_polygons(folder, split):
    info = load_image_split(folder)
    records = load_refer(folder, split, info)
    compat = converted(folder, split, "compat")
    full = converted(folder, split, "full")
    instances = [inst for r in sorted_by_image(records) for inst in r["Polygons"]]
    assert len(instances) == len(full["annotations"]) == len(compat["annotations"])
    flat = lambda poly: [c for pt in poly for c in pt]  # noqa: E731
    multi = 0
    for inst, a_full, a_compat in zip(instances, full["annotations"], compat["annotations"]):
        assert a_full["segmentation"] == [flat(p) for p in inst]
        assert a_compat["segmentation"] == [flat(inst[-1])]  # the release's quirk: last polygon only
        multi += len(inst) > 1
        # everything but the segmentation is the same in both modes
        assert {k: v for k, v in a_full.items() if k != "segmentation"} == \
               {k: v for k, v in a_compat.items() if k != "segmentation"}
    assert full["images"] == compat["images"]
    if folder == S0:
        assert multi > 0  # s0 has two-polygon instances, so the modes really differ
        assert full != compat


def sorted_by_image(records):
    """Records in the release's order: grouped by image_id in order of first appearance."""
    groups = {}
    for r in records:
        groups.setdefault(r["image_id"], []).append(r)
    return [r for g in groups.values() for r in g]


def test_grouping_order_ids_and_fields():
    info = {7: {"width": 30, "height": 20}, 3: {"width": 11, "height": 12}}
    poly = [[[0, 0], [5.5, 0], [5.5, 4]], [[1, 1], [2, 1], [2, 2]]]
    recs = [
        {"task_id": "7__a", "image_id": 7, "instance_boxes": [[0, 0, 6, 5]], "Polygons": [poly], "phrase": "red cup"},
        {"task_id": "3__b", "image_id": 3, "instance_boxes": [[1, 1, 2, 2], [0, 0, 6, 5]], "Polygons": [poly, poly],
         "phrase": "cups"},
        {"task_id": "7__c", "image_id": 7, "instance_boxes": [[1.5, 1, 2, 2.5]], "Polygons": [poly], "phrase": "cup"},
    ]
    chunks, n_img, n_ann = cv.coco_json(iter(recs), info, "compat")
    text = "".join(chunks)
    coco = json.loads(text)
    assert text == json.dumps(coco)  # json.dump's layout
    assert (n_img, n_ann) == (3, 4)
    assert [i["task_id"] for i in coco["images"]] == ["7__a", "7__c", "3__b"]  # grouped by image, first-seen order
    assert [i["id"] for i in coco["images"]] == [0, 1, 2]
    assert [a["id"] for a in coco["annotations"]] == [0, 1, 2, 3]
    assert [a["image_id"] for a in coco["annotations"]] == [0, 1, 2, 2]
    img = coco["images"][2]
    assert img == {"file_name": "3.jpg", "height": 12, "width": 11, "id": 2, "original_id": 3, "caption": "cups",
                   "tokens_negative": [[0, 4]], "dataset_name": "phrasecut", "task_id": "3__b"}
    a = coco["annotations"][1]
    assert a == {"area": 5.0, "iscrowd": 0, "category_id": 1, "bbox": [1.5, 1, 2, 2.5],
                 "segmentation": [[1, 1, 2, 1, 2, 2]], "tokens_positive": [[0, 3]], "image_id": 1, "id": 1}
    assert coco["categories"] == [{"supercategory": "object", "id": 1, "name": "object"}]
    full = json.loads("".join(cv.coco_json(recs, info, "full")[0]))
    assert full["annotations"][1]["segmentation"] == [[0, 0, 5.5, 0, 5.5, 4], [1, 1, 2, 1, 2, 2]]


def test_empty_split_and_unknown_mode(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    (root / "image_data_split.json").write_text("[]")
    (root / "refer_val.json").write_text("[]")
    assert cv.convert_split_to_file(root, "val", tmp_path / "val.json") == (0, 0)
    assert (tmp_path / "val.json").read_text() == json.dumps(
        {"info": [], "licenses": [], "images": [], "annotations": [],
         "categories": [{"supercategory": "object", "id": 1, "name": "object"}]})
    with pytest.raises(InputError, match="unknown conversion mode 'fancy'"):
        cv.coco_json([], {}, "fancy")


def test_cli_convert_single_and_all(reference_dir, tmp_path):
    root = reference_dir / "phrasecut_mini" / "s0"
    out = tmp_path / "test.json"
    assert cli.main(["convert", "--root", str(root), "--split", "test", "--mode", "compat", "--out", str(out)]) == 0
    assert out.read_text() == (root / "expected_coco" / "finetune_phrasecut_test.json").read_text()
    outdir = tmp_path / "all"
    assert cli.main(["convert", "--root", str(root), "--split", "all", "--mode", "full", "--out", str(outdir)]) == 0
    assert sorted(p.name for p in outdir.iterdir()) == sorted(f"finetune_phrasecut_{s}.json" for s in PHRASECUT_SPLITS)
    full = json.loads((outdir / "finetune_phrasecut_test.json").read_text())
    assert full == converted(root, "test", "full")
    assert not list(outdir.glob(".*"))  # no temp files left behind


def test_pycocotools_reads_output_of_synthetic_set(tmp_path):
    from pycocotools.coco import COCO

    from mdetr_phrasecut.data.synth import write_synthetic_phrasecut

    root = tmp_path / "syn"
    write_synthetic_phrasecut(root, seed=3, num_images={"train": 12, "val": 4, "test": 4}, miniv_images=2)
    for mode in cv.MODES:
        out = tmp_path / f"{mode}.json"
        cv.convert_split_to_file(root, "train", out, mode)
        coco = COCO(str(out))
        recs = load_refer(root, "train")
        assert len(coco.getImgIds()) == len(recs)
        assert len(coco.getAnnIds()) == sum(len(r["instance_boxes"]) for r in recs)
        for ann in coco.loadAnns(coco.getAnnIds()):
            assert coco.annToMask(ann).sum() > 0
