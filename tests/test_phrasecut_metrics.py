"""PhraseCut evaluation: golden agreement with the published evaluator, subsets, box quirks, prediction files."""
import functools
import json

import numpy as np
import pytest
from helpers.paths import REFERENCE, env_paths, require

from mdetr_phrasecut.data.phrasecut_format import load_image_split, load_name_att_rel_count, load_refer
from mdetr_phrasecut.errors import InputError
from mdetr_phrasecut.evaluation.phrasecut_metrics import box_iou, evaluate_predictions, evaluate_split
from mdetr_phrasecut.evaluation.predictions import PredictionWriter, read_predictions
from mdetr_phrasecut.evaluation.subsets import PhraseSubsets

S0 = REFERENCE / "phrasecut_mini" / "s0"
GOLDEN = [S0, *env_paths("PHRASECUT_GOLDEN")]


def _require(folder):
    return require(folder / "expected_metrics_test.json").parent


@functools.cache
def _evaluated(folder, workers=1):
    return evaluate_split(folder, "test", folder / "predictions_test.npz", workers=workers)


@functools.cache
def _split(folder):
    image_info = load_image_split(folder)
    return load_refer(folder, "test", image_info), image_info, load_name_att_rel_count(folder)


@pytest.mark.parametrize("folder", GOLDEN, ids=lambda p: p.name)
def test_phrasecut_golden_metrics(folder):
    expected = json.loads((_require(folder) / "expected_metrics_test.json").read_text())
    evaluation = _evaluated(folder)
    assert evaluation.missing == []
    assert set(evaluation.metrics) == set(expected)
    for subset, want in expected.items():
        got = evaluation.metrics[subset]
        for key in ("mean_mask_iou", "cum_mask_iou", "mean_box_iou", "box_acc"):
            assert got[key] == pytest.approx(want[key], abs=1e-9), (subset, key)
        for key in ("pred_mask_acc", "pred_box_acc"):
            assert got[key] == pytest.approx(want[key], abs=1e-9), (subset, key)


@pytest.mark.parametrize("folder", GOLDEN, ids=lambda p: p.name)
def test_phrasecut_golden_per_task(folder):
    expected = json.loads((_require(folder) / "expected_per_task_test.json").read_text())
    per_task = _evaluated(folder).per_task
    assert set(per_task) == set(expected)
    for task_id, want in expected.items():
        got = per_task[task_id]
        assert got["subsets"] == want["subsets"], task_id
        assert got["image_id"] == want["image_id"], task_id
        for key in ("mask_i", "mask_u", "mask_iou", "box_iou"):
            assert got[key] == pytest.approx(want[key], abs=1e-9), (task_id, key)


def test_workers_give_identical_results():
    folder = _require(S0)
    serial, parallel = _evaluated(folder, 1), _evaluated(folder, 2)
    assert parallel.metrics == serial.metrics
    assert parallel.per_task == serial.per_task
    assert list(parallel.per_task) == list(serial.per_task)


def test_missing_phrases_are_left_out_and_listed():
    folder = _require(S0)
    records, image_info, counts = _split(folder)
    predictions = list(read_predictions(folder / "predictions_test.npz"))
    dropped = [task_id for task_id, _, _ in predictions[::5]]
    kept = [p for p in predictions if p[0] not in dropped]
    evaluation = evaluate_predictions(records, image_info, counts, kept)
    assert evaluation.missing == [r["task_id"] for r in records if r["task_id"] in dropped]
    assert evaluation.metrics["all"]["count"] == len(kept)
    full = _evaluated(folder).per_task
    kept_ious = [full[task_id]["mask_iou"] for task_id, _, _ in kept]
    assert evaluation.metrics["all"]["mean_mask_iou"] == pytest.approx(np.mean(kept_ious), abs=1e-12)


def test_wrong_mask_shape_raises_input_error_naming_task_and_shapes():
    folder = _require(S0)
    records, image_info, counts = _split(folder)
    task_id, mask, boxes = next(read_predictions(folder / "predictions_test.npz"))
    transposed = np.ascontiguousarray(mask.T)
    with pytest.raises(InputError) as error:
        evaluate_predictions(records, image_info, counts, [(task_id, transposed, boxes)])
    message = str(error.value)
    assert task_id in message and str(transposed.shape) in message and str(mask.shape) in message


def test_unknown_or_repeated_task_raises_input_error():
    folder = _require(S0)
    records, image_info, counts = _split(folder)
    task_id, mask, boxes = next(read_predictions(folder / "predictions_test.npz"))
    with pytest.raises(InputError, match="predicted twice"):
        evaluate_predictions(records, image_info, counts, [(task_id, mask, boxes)] * 2)
    with pytest.raises(InputError, match="999__9"):
        evaluate_predictions(records, image_info, counts, [("999__9", mask, boxes)])


def test_box_iou_draws_boxes_one_pixel_short_on_a_canvas_spanning_them():
    # 4x4 box -> 3x3 pixels, 2x2 box -> 1 pixel: 1/9 (a true IoU would be 4/16)
    assert box_iou([[0, 0, 4, 4]], [[0, 0, 2, 2]]) == pytest.approx(1 / 9)
    assert box_iou([[1.9, 1.9, 3.2, 3.2]], [[1, 1, 3, 3]]) == pytest.approx(4 / 9)  # ints of 1.9 and 4.1
    assert box_iou([[-2, 0, 4, 3]], [[0, 0, 3, 3]]) == 0.0  # a negative start slices from the canvas end
    assert box_iou(np.zeros((0, 4)), [[5, 5, 10, 10]]) == 0.0
    assert box_iou([[10, 10, 5, 5], [0, 0, 3, 3]], [[0, 0, 3, 3]]) == pytest.approx(4 / 20)


COUNTS = {"cat": [[f"cat{i}", 1000 - i] for i in range(600)] + [["wallet", 1]],
          "att": [[f"att{i}", 1000 - i] for i in range(250)] + [["white", 1]], "rel": []}


def _structure(name, attributes=(), relations=(), kind="name"):
    return {"name": name, "attributes": list(attributes), "relation_descriptions": [list(r) for r in relations],
            "type": kind}


@pytest.mark.parametrize("structure, n_instances, size, coco_id, want", [
    (_structure("cat5"), 1, 0.5, 12, {"c20", "c100", "c500", "a200+", "i_single", "s_large", "d_cocotv", "t_obj"}),
    (_structure("cat50", ["att5"]), 3, 0.02, 0, {"c21-100", "a20", "a100", "a200", "i_multi", "s_mid",
                                                  "d_notcocotv", "p_att"}),
    (_structure("cat150", ["att30", "att150"], [["on", "x"]], "verbose"), 7, 0.0199, None,
     {"c101-500", "a21-100", "a100", "a200", "i_many", "s_small", "p_att", "p_attm", "p_rel", "p_att_rel",
      "p_verbose"}),
    (_structure("unknown thing", ["att120", "white", "many"], [["on", "x"], ["by", "y"]], "relation"), 0, 0.2,
     None, {"c500+", "a101-200", "a200", "a_color", "a_count", "p_relm", "p_rel+", "p_rel"}),
    (_structure("wallet", ["att240"], kind="attribute"), 5, 0.3, 1, {"c500+", "t_stuff", "a200+", "p_att+"}),
    (_structure("dog", ["wooden"]), 2, 0.1, 1, {"c500+", "c_coco", "t_obj", "a200+", "a_material"}),
])
def test_subsets_follow_the_published_rules(structure, n_instances, size, coco_id, want):
    got = PhraseSubsets(COUNTS).of(structure, n_instances, size, coco_id)
    assert set(want) <= set(got)
    assert got[0] == "all"
    exclusive = [("c20", "c21-100", "c101-500", "c500+"), ("a20", "a21-100", "a101-200", "a200+"),
                 ("s_small", "s_mid", "s_large"), ("t_stuff", "t_obj"), ("d_cocotv", "d_notcocotv")]
    for group in exclusive:
        assert len(set(group) & set(got)) == 1, group
    assert len({"i_single", "i_multi", "i_many"} & set(got)) == (n_instances > 0)


def test_writer_reader_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    phrases = [(f"7__{k}", rng.random((h, w)) > 0.5, rng.random((n, 4)) * 50)
               for k, (h, w, n) in enumerate([(5, 3, 0), (17, 11, 2), (1, 1, 1), (64, 8, 3)])]
    path = tmp_path / "predictions.npz"
    with PredictionWriter(path) as out:
        for phrase in phrases:
            out.add(*phrase)
    back = list(read_predictions(path))
    assert [t for t, _, _ in back] == [t for t, _, _ in phrases]
    for (_, mask, boxes), (_, mask_back, boxes_back) in zip(phrases, back):
        assert mask_back.dtype == bool and np.array_equal(mask_back, mask)
        assert boxes_back.shape == (len(boxes), 4) and np.array_equal(boxes_back, boxes)
    with np.load(path) as npz:  # the reference layout
        assert npz["task_ids"].tolist() == [t for t, _, _ in phrases]
        assert npz["shape__7__1"].tolist() == [17, 11]
        assert np.array_equal(npz["mask__7__1"], np.packbits(phrases[1][1]))


def test_writer_rewrites_the_reference_file_and_is_atomic(tmp_path):
    folder = _require(S0)
    path = tmp_path / "copy.npz"
    with PredictionWriter(path) as out:
        for phrase in read_predictions(folder / "predictions_test.npz"):
            out.add(*phrase)
    with np.load(folder / "predictions_test.npz") as want, np.load(path) as got:
        layout = [f for f in want.files if f.startswith(("task_ids", "mask__", "shape__", "boxes__"))]
        assert sorted(got.files) == sorted(layout)
        for key in layout:
            assert np.array_equal(got[key], want[key]), key
    broken = tmp_path / "broken.npz"
    with pytest.raises(InputError, match="written twice"):
        with PredictionWriter(broken) as out:
            out.add("1__0", np.ones((2, 2)), [])
            out.add("1__0", np.ones((2, 2)), [])
    assert list(tmp_path.iterdir()) == [path]


def test_reader_rejects_inconsistent_files(tmp_path):
    path = tmp_path / "bad.npz"
    fields = {"mask__1__0": np.packbits(np.ones(16, bool)), "boxes__1__0": np.zeros((0, 4))}
    np.savez(path, task_ids=np.array(["1__0"]), shape__1__0=np.array([5, 5]), **fields)
    with pytest.raises(InputError, match="task_id 1__0: mask has 2 bytes"):
        list(read_predictions(path))
    np.savez(path, task_ids=np.array(["1__0"]), **fields)
    with pytest.raises(InputError, match="shape__1__0 missing"):
        list(read_predictions(path))
    with pytest.raises(InputError, match="not found"):
        list(read_predictions(tmp_path / "absent.npz"))


def _at_exactly(gt, k, free):
    """A mask whose IoU with `gt` is exactly `k` (a/(|gt| + b) == k): a pixels of gt plus b of `free` (outside)."""
    n = int(gt.sum())
    b = next(b for b in range(100) if (n + b) * k == round((n + b) * k) and round((n + b) * k) <= n)
    a = round((n + b) * k)
    mask = np.zeros_like(gt)
    mask.flat[np.flatnonzero(gt)[:a]] = True
    mask.flat[np.flatnonzero(free)[:b]] = True
    return mask


@pytest.mark.parametrize("k", ["0.5", "0.7", "0.9"])
def test_a_phrase_at_exactly_k_does_not_count_for_precision_at_k(k):
    """The API counts IoU strictly greater than k, for masks and boxes alike."""
    from mdetr_phrasecut.evaluation.phrasecut_metrics import _draw_boxes, rasterize_polygons

    folder = _require(S0)
    records, image_info, counts = _split(folder)
    record = next(r for r in records if len(r["instance_boxes"]) == 1)
    image = image_info[record["image_id"]]
    gt = rasterize_polygons(record["Polygons"], image["width"], image["height"])
    mask = _at_exactly(gt, float(k), ~gt)
    gt_boxes = np.asarray(record["instance_boxes"], dtype=np.float64)
    # the drawn GT box plus a disjoint one-row box of as many pixels below it: box IoU exactly 0.5
    drawn = int(_draw_boxes(gt_boxes, int(np.max(gt_boxes[:, 0] + gt_boxes[:, 2])) + 1,
                            int(np.max(gt_boxes[:, 1] + gt_boxes[:, 3])) + 1).sum())
    below = np.max(gt_boxes[:, 1] + gt_boxes[:, 3]) + 5
    boxes = np.concatenate([gt_boxes, [[0, below, drawn + 1, 2]]])
    evaluation = evaluate_predictions(records, image_info, counts, [(record["task_id"], mask, boxes)])
    task = evaluation.per_task[record["task_id"]]
    assert task["mask_iou"] == float(k) and task["box_iou"] == 0.5
    metrics = evaluation.metrics["all"]
    assert metrics["count"] == 1 and metrics["pred_mask_acc"][k] == 0.0
    assert all(v == 1.0 for t, v in metrics["pred_mask_acc"].items() if float(t) < float(k))
    assert metrics["pred_box_acc"]["0.5"] == 0.0
