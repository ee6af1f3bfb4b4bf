"""`plots` on a small run built here: images and records in the original PhraseCut format, predictions
written with PredictionWriter and scored by the real evaluator, training logs written by the engine's CsvLog."""

import numpy as np
import pytest
from PIL import Image

from mdetr_phrasecut import cli
from mdetr_phrasecut.errors import InputError
from mdetr_phrasecut.evaluation.plots import PLOT_FILES, pick_examples, write_plots


def files(run):
    """The run's evaluation files and training logs, as the plots rule names them."""
    test = run["run_dir"] / "test"
    logs = {stage: run["run_dir"] / stage / "log.csv" for stage in ("stage1", "stage2")}
    return test / "metrics.json", test / "per_task.json", test / "predictions.npz", logs


def argv(run, *extra):
    metrics, per_task, predictions, logs = files(run)
    return ["plots", "--metrics", str(metrics), "--per-task", str(per_task), "--predictions", str(predictions),
            "--log", *(f"{stage}={path}" for stage, path in logs.items()), "--root", str(run["root"]),
            "--images", str(run["images"]), "--out-dir", str(run["out"]), *extra]


def test_writes_every_plot_as_a_valid_png(evaluated_run):
    paths = write_plots(*files(evaluated_run), evaluated_run["root"], evaluated_run["images"], evaluated_run["out"],
                        num_examples=4)
    assert {p.name for p in paths.values()} == set(PLOT_FILES.values())
    assert sorted(p.name for p in evaluated_run["out"].iterdir()) == sorted(PLOT_FILES.values())  # no temp files left
    for path in paths.values():
        with Image.open(path) as im:
            assert im.format == "PNG"
            im.load()
            assert 300 <= im.width <= 2500 and 250 <= im.height <= 2500
            assert len(np.unique(np.asarray(im.convert("L")))) > 10  # something was drawn
    with Image.open(paths["examples"]) as im:  # a 4-wide grid of images
        assert im.width > im.height


def test_examples_span_best_to_worst_deterministically(evaluated_run):
    per_task = evaluated_run["per_task"]
    picked = pick_examples(per_task, 3)
    ious = [per_task[t]["mask_iou"] for t in picked]
    assert ious[0] == max(t["mask_iou"] for t in per_task.values()) == 1.0
    assert ious[-1] == min(t["mask_iou"] for t in per_task.values()) == 0.0
    assert ious == sorted(ious, reverse=True)
    assert pick_examples(dict(reversed(per_task.items())), 3) == picked
    assert sorted(pick_examples(per_task, 50)) == sorted(per_task)


def test_cli(evaluated_run):
    assert cli.main(argv(evaluated_run, "--num-examples", "2")) == 0
    assert all((evaluated_run["out"] / name).is_file() for name in PLOT_FILES.values())


@pytest.mark.parametrize("remove, message", [
    ("runs/demo/test/per_task.json", "--per-task: "),
    ("runs/demo/test/predictions.npz", "--predictions: "),
    ("runs/demo/stage2/log.csv", "--log: stage2="),
    ("images/2.jpg", "2.jpg: task_id 2__"),
    ("phrasecut/refer_test.json", "refer_test.json: file not found"),
])
def test_missing_input_is_an_input_error(evaluated_run, remove, message, capsys):
    (evaluated_run["run_dir"].parents[1] / remove).unlink()
    assert cli.main(argv(evaluated_run)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_prediction_not_at_image_size_is_an_input_error(evaluated_run):
    image = evaluated_run["images"] / "1.jpg"
    Image.open(image).resize((60, 45)).save(image)
    with pytest.raises(InputError, match=r"task_id 1__\d: mask shape \(90, 120\) differs"):
        write_plots(*files(evaluated_run), evaluated_run["root"], evaluated_run["images"], evaluated_run["out"])


def test_every_figure_is_drawn_in_plots_py():
    from helpers.paths import REPO

    drawing = {p.relative_to(REPO / "src").as_posix() for p in (REPO / "src").rglob("*.py")
               if "matplotlib" in p.read_text()}
    assert drawing == {"mdetr_phrasecut/evaluation/plots.py"}
