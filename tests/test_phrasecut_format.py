"""The validated reader of the original PhraseCut format: the reference mini set loads; every malformed
input gives ONE-line InputError naming the file, the task_id and the field; nothing is written."""
import json
import math
import shutil

import pytest

from helpers.paths import REFERENCE, require
from mdetr_phrasecut import cli
from mdetr_phrasecut.data import phrasecut_format as pf
from mdetr_phrasecut.errors import InputError

S0 = REFERENCE / "phrasecut_mini" / "s0"


@pytest.fixture
def root(tmp_path):
    dst = tmp_path / "s0"
    shutil.copytree(require(S0), dst, ignore=shutil.ignore_patterns("expected_*", "predictions_*"))
    for p in [dst, *dst.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def snapshot(folder):
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def edit(root, split, fn):
    path = root / f"refer_{split}.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))  # NaN/Infinity allowed on purpose (Python's json writes them)


def test_reference_mini_loads_and_images_check(reference_dir):
    root = reference_dir / "phrasecut_mini" / "s0"
    info = pf.load_image_split(root)
    assert len(info) == 48 and all(set(r) == set(pf.IMAGE_KEYS) for r in info.values())
    for split in pf.PHRASECUT_SPLITS:
        recs = pf.load_refer(root, split, info)
        assert recs and all(list(r) == list(pf.REFER_KEYS) for r in recs)
        assert all(r["task_id"].startswith(f"{r['image_id']}__") for r in recs)
    counts = pf.load_name_att_rel_count(root)
    assert set(counts) == {"cat", "att", "rel"} and counts["cat"][0] == ["bench", 100000]
    assert pf.image_path(root, 100097) == root / "images" / "100097.jpg"
    # int and float coordinates are both accepted
    kinds = {type(c) for r in pf.load_refer(root, "test", info) for inst in r["Polygons"] for poly in inst
             for pt in poly for c in pt}
    assert kinds == {int, float}


# (mutation of refer_test.json, expected fragments of the one-line message)
CASES = {
    "polygon_2_points": (
        lambda d: d[0]["Polygons"][1].__setitem__(0, d[0]["Polygons"][1][0][:2]),
        ["refer_test.json: task_id 100097__0: Polygons[1][0] has 2 points (need >= 3)"]),
    "missing_key": (lambda d: d[1].pop("phrase"), ["refer_test.json", "task_id 100097__1", "phrase", "missing"]),
    "missing_structure_key": (lambda d: d[1]["phrase_structure"].pop("type"),
                              ["refer_test.json", "task_id 100097__1", "phrase_structure.type"]),
    "polygons_vs_boxes": (lambda d: d[2]["Polygons"].pop(),
                          ["refer_test.json", "task_id 100097__2", "Polygons",
                           "has 2 instances but instance_boxes has 3"]),
    "nan_coordinate": (lambda d: d[3]["Polygons"][0][0][1].__setitem__(0, math.nan),
                       ["refer_test.json", "task_id 100097__3", "Polygons[0][0][1]", "non-finite"]),
    "inf_coordinate": (lambda d: d[3]["Polygons"][0][0][0].__setitem__(1, math.inf),
                       ["task_id 100097__3", "Polygons[0][0][0]", "non-finite"]),
    "string_coordinate": (lambda d: d[3]["Polygons"][0][0][0].__setitem__(1, "3"),
                          ["task_id 100097__3", "Polygons[0][0][0]"]),
    "point_not_pair": (lambda d: d[3]["Polygons"][0][0].__setitem__(0, [1.0, 2.0, 3.0]),
                       ["task_id 100097__3", "Polygons[0][0][0]", "[x, y]"]),
    "box_zero_width": (lambda d: d[0]["instance_boxes"][1].__setitem__(2, 0),
                       ["refer_test.json", "task_id 100097__0", "instance_boxes[1]", "w/h <= 0"]),
    "box_negative_height": (lambda d: d[0]["instance_boxes"][0].__setitem__(3, -4),
                            ["task_id 100097__0", "instance_boxes[0]", "w/h <= 0"]),
    "box_nan": (lambda d: d[0]["instance_boxes"][0].__setitem__(0, math.nan),
                ["task_id 100097__0", "instance_boxes[0]", "non-finite"]),
    "box_three_values": (lambda d: d[0]["instance_boxes"][0].pop(), ["task_id 100097__0", "instance_boxes[0]"]),
    "empty_instance": (lambda d: d[0]["Polygons"].__setitem__(0, []), ["task_id 100097__0", "Polygons[0]"]),
    "ann_ids_count": (lambda d: d[0]["ann_ids"].pop(), ["task_id 100097__0", "ann_ids"]),
    "unknown_image_id": (lambda d: d[0].update(image_id=999, task_id="999__0"),
                         ["refer_test.json", "task_id 999__0", "image_id", "999", "image_data_split.json"]),
    "task_id_prefix": (lambda d: d[0].update(task_id="100099__0"), ["task_id 100099__0", "task_id", "100097"]),
    "duplicate_task_id": (lambda d: d[1].update(task_id=d[0]["task_id"]), ["task_id 100097__0", "duplicated"]),
    "bad_type": (lambda d: d[0]["phrase_structure"].update(type="fancy"),
                 ["task_id 100097__0", "phrase_structure.type", "fancy"]),
    "bad_relation": (lambda d: d[1]["phrase_structure"]["relation_descriptions"].append(["on"]),
                     ["task_id 100097__1", "phrase_structure.relation_descriptions[2]"]),
    "empty_phrase": (lambda d: d[0].update(phrase="  "), ["task_id 100097__0", "phrase"]),
    "bool_image_id": (lambda d: d[0].update(image_id=True), ["task_id 100097__0", "image_id"]),
    "record_not_object": (lambda d: d.__setitem__(0, [1, 2]), ["refer_test.json", "record [0]"]),
    "no_task_id": (lambda d: d[0].pop("task_id"), ["refer_test.json", "record [0]", "task_id", "missing"]),
}


LOADERS = {"load_refer": pf.load_refer, "iter_refer": lambda root, split: list(pf.iter_refer(root, split))}


@pytest.mark.parametrize("loader", sorted(LOADERS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_record_is_one_line_input_error(root, case, loader):
    mutate, fragments = CASES[case]
    edit(root, "test", mutate)
    before = snapshot(root)
    with pytest.raises(InputError) as e:
        LOADERS[loader](root, "test")
    msg = str(e.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg, (frag, msg)
    assert snapshot(root) == before  # nothing written


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_invalid_json_names_file_line_and_column(root, loader):
    (root / "refer_val.json").write_text('[{"task_id": "1__2",\n  "image_id": 1,,\n}]')
    with pytest.raises(InputError, match=r"refer_val\.json: invalid JSON at line 2 col 17"):
        LOADERS[loader](root, "val")
    (root / "image_data_split.json").write_text("[")
    with pytest.raises(InputError, match=r"image_data_split\.json: invalid JSON at line 1 col 2"):
        pf.load_image_split(root)


def test_iter_refer_equals_load_refer_and_parses_layouts(root, reference_dir):
    s0 = reference_dir / "phrasecut_mini" / "s0"
    for split in pf.PHRASECUT_SPLITS:
        assert list(pf.iter_refer(s0, split)) == pf.load_refer(s0, split)
    recs = pf.load_refer(s0, "test")
    path = root / "refer_test.json"
    path.write_text(json.dumps(recs, indent=2) + "\n\n")  # other whitespace layouts parse the same
    assert list(pf.iter_refer(root, "test")) == recs
    path.write_text(" [ ] ")
    assert list(pf.iter_refer(root, "test")) == [] == pf.load_refer(root, "test")
    for text, where in [(json.dumps(recs[:2]).replace("}}, {", "}} {", 1), "Expecting ',' delimiter"),
                        (json.dumps(recs[:1]) + " x", "Extra data"), (json.dumps(recs[:1])[:-1], "line 1 col")]:
        path.write_text(text)
        with pytest.raises(InputError, match=f"refer_test.json: invalid JSON at line 1 col .*{where}|{where}"):
            list(pf.iter_refer(root, "test"))
        with pytest.raises(InputError, match="refer_test.json: invalid JSON at line 1 col"):
            pf.load_refer(root, "test")


def test_top_level_and_missing_files(root):
    (root / "refer_val.json").write_text('{"a": 1}')
    with pytest.raises(InputError, match="refer_val.json: top level must be a list"):
        pf.load_refer(root, "val")
    with pytest.raises(InputError, match="refer_val.json: top level must be a list"):
        list(pf.iter_refer(root, "val"))
    (root / "refer_miniv.json").unlink()
    with pytest.raises(InputError, match="refer_miniv.json: file not found"):
        pf.load_refer(root, "miniv")
    with pytest.raises(InputError, match="unknown split"):
        pf.load_refer(root, "dev")


@pytest.mark.parametrize("field,value,fragment", [
    ("width", 0, "width"), ("height", "12", "height"), ("split", "dev", "split"),
    ("coco_id", 1.5, "coco_id"), ("image_id", None, "image_id"),
])
def test_image_split_rows_validated(root, field, value, fragment):
    path = root / "image_data_split.json"
    rows = json.loads(path.read_text())
    rows[3][field] = value
    path.write_text(json.dumps(rows))
    with pytest.raises(InputError) as e:
        pf.load_image_split(root)
    assert str(e.value).startswith("image_data_split.json: ") and fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_name_att_rel_count_validated(root):
    path = root / "name_att_rel_count.json"
    data = json.loads(path.read_text())
    data["att"][2] = ["red"]
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"name_att_rel_count.json: att\[2\]"):
        pf.load_name_att_rel_count(root)


def test_cli_reports_one_line_and_writes_nothing(root, tmp_path, capsys):
    edit(root, "test", CASES["polygon_2_points"][0])
    out = tmp_path / "out" / "coco.json"
    rc = cli.main(["convert", "--root", str(root), "--split", "test", "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: refer_test.json: task_id 100097__0: Polygons[1][0] has 2 points (need >= 3)"
    assert not (tmp_path / "out").exists()
