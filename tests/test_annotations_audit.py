"""audit_annotations(): MDETR's finetune_phrasecut json vs our conversion, matched by task_id."""
import copy
import json

import pytest

from mdetr_phrasecut import cli
from mdetr_phrasecut.data.annotations_audit import audit_annotations
from mdetr_phrasecut.data.convert import split_coco_json
from mdetr_phrasecut.errors import InputError


@pytest.fixture
def expected(reference_dir):
    """(path, loaded dict) of the published conversion of the mini dataset's val split."""
    path = reference_dir / "phrasecut_mini" / "s0" / "expected_coco" / "finetune_phrasecut_val.json"
    return path, json.loads(path.read_text())


def task_of(coco, ann):
    return next(im["task_id"] for im in coco["images"] if im["id"] == ann["image_id"])


def test_identical(expected):
    path, coco = expected
    report = audit_annotations(path, copy.deepcopy(coco))
    assert report["identical"] and report["field_differences"] == {} and report["examples"] == []
    assert report["images"] == {"mdetr": len(coco["images"]), "ours": len(coco["images"]),
                                "matched": len(coco["images"]), "only_mdetr": 0, "only_ours": 0}
    assert report["annotations"]["matched"] == len(coco["annotations"])


def test_numbering_alone_is_not_a_difference(expected):
    path, coco = expected
    ours = copy.deepcopy(coco)
    ours["images"].reverse()
    for im in ours["images"]:
        im["id"] += 1000
    for ann in ours["annotations"]:
        ann["image_id"] += 1000
        ann["id"] += 5000
    assert audit_annotations(path, ours)["identical"]


def test_perturbed_bbox_and_caption_are_reported(expected):
    path, coco = expected
    ours = copy.deepcopy(coco)
    ann = ours["annotations"][7]
    ann["bbox"] = [v + 1 for v in ann["bbox"]]
    index = [a["id"] for a in ours["annotations"] if a["image_id"] == ann["image_id"]].index(ann["id"])
    ours["images"][3]["caption"] += " extra"
    report = audit_annotations(path, ours)
    assert not report["identical"]
    assert report["field_differences"] == {"image.caption": 1, "annotation.bbox": 1}
    assert report["tasks_differing"] == 2
    by_field = {e["field"]: e for e in report["examples"]}
    assert by_field["annotation.bbox"] == {"task_id": task_of(coco, ann), "index": index, "field": "annotation.bbox",
                                           "mdetr": coco["annotations"][7]["bbox"], "ours": ann["bbox"]}
    assert by_field["image.caption"] == {"task_id": coco["images"][3]["task_id"], "index": None,
                                         "field": "image.caption", "mdetr": coco["images"][3]["caption"],
                                         "ours": coco["images"][3]["caption"] + " extra"}


def test_dropped_image_and_missing_field_are_reported(expected):
    path, coco = expected
    ours = copy.deepcopy(coco)
    dropped = ours["images"].pop(5)
    n_anns = sum(a["image_id"] == dropped["id"] for a in ours["annotations"])
    ours["annotations"] = [a for a in ours["annotations"] if a["image_id"] != dropped["id"]]
    del ours["images"][0]["dataset_name"]
    report = audit_annotations(path, ours, max_examples=3)
    assert report["images"]["only_mdetr"] == 1 and report["images"]["only_ours"] == 0
    assert report["annotations"]["only_mdetr"] == n_anns > 0
    assert report["field_differences"] == {"image": 1, "annotation": n_anns, "image.dataset_name": 1}
    first = report["examples"][0]  # examples follow the MDETR file's order: image 0 comes first
    assert first == {"task_id": coco["images"][0]["task_id"], "index": None, "field": "image.dataset_name",
                     "mdetr": "phrasecut"}
    assert report["examples"][1]["task_id"] == dropped["task_id"] and "ours" not in report["examples"][1]
    assert len(report["examples"]) == 3


def test_categories_difference_and_bad_input(expected, tmp_path):
    path, coco = expected
    ours = copy.deepcopy(coco)
    ours["categories"][0]["name"] = "thing"
    assert audit_annotations(path, ours)["field_differences"] == {"categories": 1}
    del ours["images"][2]["task_id"]
    with pytest.raises(InputError, match="our conversion: image id 2: field 'task_id' missing"):
        audit_annotations(path, ours)
    with pytest.raises(InputError, match="cannot read"):
        audit_annotations(tmp_path / "missing.json", coco)


def test_cli_strict(expected, tmp_path, capsys):
    path, coco = expected
    root = path.parents[1]
    out = tmp_path / "report.json"
    args = ["audit-annotations", "--mdetr", str(path), "--root", str(root), "--split", "val", "--out", str(out)]
    assert cli.main(args + ["--strict"]) == 0
    assert json.loads(out.read_text())["identical"]
    bad = tmp_path / "bad.json"
    coco["annotations"][0]["area"] += 1
    bad.write_text(json.dumps(coco))
    args[2] = str(bad)
    assert cli.main(args) == 0
    assert cli.main(args + ["--strict"]) == 2
    err = capsys.readouterr().err
    assert "annotation.area x1" in err and coco["images"][0]["task_id"] in err and err.count("\n") == 1
    assert json.loads(out.read_text())["field_differences"] == {"annotation.area": 1}


@pytest.mark.parametrize("split", ["train", "val", "miniv", "test"])
def test_our_conversion_matches_mdetr_release(reference_dir, split):
    root = reference_dir / "phrasecut_mini" / "s0"
    chunks, _, _ = split_coco_json(root, split, mode="compat")
    report = audit_annotations(root / "expected_coco" / f"finetune_phrasecut_{split}.json", json.loads("".join(chunks)))
    assert report["identical"], report
