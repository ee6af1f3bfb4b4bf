"""`model-card` on an evaluation and stage records written here (the demo's card: tests/test_workflow.py)."""
import json

from huggingface_hub import ModelCard
from helpers.evaluations import write_benchmark, write_evaluation

from mdetr_phrasecut import cli
from mdetr_phrasecut.evaluation.statistics import intervals, load_per_task
from mdetr_phrasecut.infra.provenance import record

OPTIONS = ["--resamples", "200", "--seed", "3"]


def stage(run_dir, name, inputs):
    """A checkpoint with the provenance record `train --record` writes (a config slice naming its stage)."""
    ckpt = run_dir / name / "checkpoint.pth"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(name.encode())
    record([ckpt], inputs, {"model": {"backbone": "resnet101"}, "train": {name: {"lr": 1e-4}}})
    return ckpt


def card_args(tmp_path, checkpoints):
    run = tmp_path / "runs" / "r1"
    return ["model-card", "--name", "r1", "--metrics", str(run / "test" / "metrics.json"),
            "--per-task", str(run / "test" / "per_task.json"), "--checkpoints", *map(str, checkpoints),
            "--benchmarks", *(f"{s}={write_benchmark(tmp_path / f'b{i}.tsv', 3600, 7200)}"  # names: not from paths
                              for i, s in enumerate(("stage1", "stage2"))),
            "--gpus-json", json.dumps({"stage1": 8, "stage2": 8}), "--out", str(run / "MODEL_CARD.md"), *OPTIONS]


def test_card_holds_metrics_intervals_recipe_cost_and_hashes(tmp_path):
    run = tmp_path / "runs" / "r1"
    write_evaluation(run / "test", dataset="PhraseCut test", n=300)
    pretrained = tmp_path / "pretrained.pth"
    pretrained.write_bytes(b"stage 0")
    stage1 = stage(run, "stage1", [pretrained])
    checkpoints = [stage1, stage(run, "stage2", [stage1])]
    assert cli.main(card_args(tmp_path, checkpoints)) == 0
    card = ModelCard.load(run / "MODEL_CARD.md")
    stats = intervals(load_per_task(run / "test" / "per_task.json"), resamples=200, seed=3, subsets=("all",))["all"]
    miou = next(r for r in card.data.eval_results if r.metric_type == "mean_iou")
    assert miou.metric_value == round(100 * stats["miou"]["value"], 2) and miou.dataset_name == "PhraseCut test"
    assert card.data.confidence_intervals["percent"]["miou"] == [round(100 * stats["miou"][k], 2) for k in ("lo", "hi")]
    hashes = card.data.provenance
    assert hashes["checkpoint"] == "cd" and len(hashes[f"stage1 input {pretrained}"]) == 64
    assert "**stage2**" in card.text and "lr: 0.0001" in card.text
    assert "2 h 0 min; 4.00 CPU-h; 16.0 GPU-h (stage1, stage2)" in card.text


def test_a_checkpoint_without_its_record_is_one_line(tmp_path, capsys):
    run = tmp_path / "runs" / "r1"
    write_evaluation(run / "test", n=50)
    bare = run / "stage2" / "checkpoint.pth"
    bare.parent.mkdir()
    bare.write_bytes(b"x")
    assert cli.main(card_args(tmp_path, [bare])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint.pth.prov.json: provenance record not found" in err[0]
    assert not (run / "MODEL_CARD.md").exists()
