"""Training logs written by rank 0: per-step and per-epoch working logs (kept across pre-emption and resume),
TensorBoard if installed, and at the end of the stage the published `log.csv`, `val.csv` and `curves.png`."""
import csv
import shutil
from pathlib import Path
from typing import Dict, Optional

from ..evaluation.plots import plot_curves
from ..infra.io import atomic_path


class CsvLog:
    """Append-only CSV whose columns are fixed by the first row written (missing values stay empty)."""

    def __init__(self, path):
        self.path = Path(path)
        self.fields = None
        if self.path.exists():
            with self.path.open(newline="") as f:
                self.fields = next(csv.reader(f), None)

    def truncate(self, keep_before: int, key: str = "step"):
        """Drop rows with `key` >= keep_before: the steps a killed run logged after its last checkpoint (all of
        them for a fresh start, whose first row then sets the columns anew)."""
        if not self.path.exists():
            return
        with self.path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r[key]) < keep_before]
        if not rows:
            self.path.unlink()
            self.fields = None
            return
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.fields)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: Dict):
        new = self.fields is None
        if new:
            self.fields = list(row)
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)


def _tensorboard_writer(log_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(log_dir))


class TrainingLog:
    """Everything rank 0 logs while training; other ranks get a TrainingLog(None) that does nothing."""

    WORKING = ("train_log.csv", "val_log.csv")  # -> log.csv, val.csv once the stage is done
    PUBLISHED = ("log.csv", "val.csv")

    def __init__(self, out_dir: Optional[Path], stage: str = ""):
        self.out_dir = out_dir
        self.stage = stage
        self.steps = CsvLog(out_dir / self.WORKING[0]) if out_dir else None
        self.val = CsvLog(out_dir / self.WORKING[1]) if out_dir else None
        self.tb = _tensorboard_writer(out_dir / "tensorboard") if out_dir else None

    def rewind(self, global_step: int, epoch: int):
        """Forget what was logged at or after the step (and epoch) a run starts from: a resumed run's restart
        point, or (0, 0) for a fresh start over the logs of a run killed before its first checkpoint."""
        if self.out_dir:
            self.steps.truncate(global_step, "step")
            self.val.truncate(epoch, "epoch")

    def step(self, row: Dict):
        if self.out_dir:
            self.steps.write(row)
            if self.tb:
                for k, v in row.items():
                    if k not in ("epoch", "step"):
                        self.tb.add_scalar(f"train/{k}", v, row["step"])

    def epoch(self, row: Dict):
        if self.out_dir:
            self.val.write(row)
            if self.tb:
                for k, v in row.items():
                    if k != "epoch":
                        self.tb.add_scalar(f"val/{k}", v, row["epoch"])
            self.plot()

    def publish(self):
        """The stage's outputs: log.csv and val.csv (copies of the working logs) and curves.png."""
        if self.out_dir:
            for working, published in zip(self.WORKING, self.PUBLISHED):
                with atomic_path(self.out_dir / published) as tmp:
                    if (self.out_dir / working).exists():
                        shutil.copyfile(self.out_dir / working, tmp)
                    else:
                        tmp.write_text("")
            self.plot()

    def plot(self):
        """curves.png: training loss terms per step, validation loss per epoch (so far)."""
        if self.out_dir:
            plot_curves(*(self.out_dir / name for name in (*self.WORKING, "curves.png")), self.stage)

    def close(self):
        if self.tb:
            self.tb.close()
