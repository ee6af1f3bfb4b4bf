"""Auto-resume only continues the same run: a leftover checkpoint of another configuration is set aside."""
import torch

from mdetr_phrasecut.engine.train import LAST, resumable, same_run


def args(**train):
    return {"stage": "stage1", "model": {"hidden_dim": 128}, "init": "a.pth",
            "train": {"lr": 1e-4, "epochs": 2, "schedule": "step", **train}}


def test_same_run_ignores_epochs_only_with_the_step_schedule():
    assert same_run(args(), args())
    assert same_run(args(epochs=2), args(epochs=5))
    assert not same_run(args(lr=1e-4), args(lr=2e-4))
    assert not same_run(args(schedule="linear_with_warmup", epochs=2), args(schedule="linear_with_warmup", epochs=5))
    assert not same_run({**args(), "init": "a.pth"}, {**args(), "init": "b.pth"})


def test_leftover_of_another_config_is_set_aside(tmp_path):
    torch.save({"model": {}, "args": args(lr=1e-4)}, tmp_path / LAST)
    (tmp_path / "train_log.csv").write_text("epoch,step,loss\n0,0,1.0\n")
    assert resumable(tmp_path, args(lr=1e-4, epochs=3), is_main=True) == tmp_path / LAST
    assert resumable(tmp_path, args(lr=3e-4), is_main=True) is None
    assert not (tmp_path / LAST).exists() and (tmp_path / f"{LAST}.stale").exists()
    assert (tmp_path / "train_log.csv.stale").exists() and not (tmp_path / "train_log.csv").exists()
