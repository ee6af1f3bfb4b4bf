"""Comparing two training runs' ends."""
import pandas as pd
import torch


def assert_same_result(got_dir, want_dir, epochs, steps_per_epoch):
    """Two training folders end at the same position with equal weights, optimizer state, schedule and log."""
    got = torch.load(got_dir / "checkpoint.pth", map_location="cpu", weights_only=True)
    want = torch.load(want_dir / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert got["position"] == want["position"] == {"epoch": epochs, "step": 0, "global_step": epochs * steps_per_epoch}
    for key in ("model", "model_ema"):
        assert got[key].keys() == want[key].keys()
        for name, tensor in want[key].items():
            assert torch.equal(got[key][name], tensor), f"{key}.{name}"
    for index, slot in want["optimizer"]["state"].items():
        for name, tensor in slot.items():
            assert torch.equal(got["optimizer"]["state"][index][name], tensor), f"optimizer {index} {name}"
    assert got["lr_scheduler"] == want["lr_scheduler"]
    columns = lambda d: pd.read_csv(d / "log.csv").drop(columns=["images_per_s"])  # noqa: E731
    pd.testing.assert_frame_equal(columns(got_dir), columns(want_dir), check_exact=True)
