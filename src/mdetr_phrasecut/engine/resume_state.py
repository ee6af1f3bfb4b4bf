"""Training checkpoints that resume bit-exactly, and stop signals (Slurm pre-emption / time limit).

A checkpoint has the release's keys (`model`, `model_ema`, `optimizer`, `lr_scheduler`, `epoch`: the last
finished epoch, `args`) plus `position` (the next step to run: epoch, step in the epoch, global step),
`layout` (world size and per-process batch size, which fix the data order) and `rng` (every process's
python, numpy, torch and CUDA generator states, in rank order).
"""
import io
import random
import signal
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import InputError
from ..model.checkpoint_file import save_checkpoint
from .distributed import DistEnv, gather_objects
from .loop import NonFiniteLoss, Position

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # Slurm's pre-emption / time-limit warnings
EXIT_REQUEUE = 75  # EX_TEMPFAIL: stopped by a signal after saving; run the same command again to resume


def rng_state() -> dict:
    keys, pos, has_gauss, cached = np.random.get_state()[1:]
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.copy()), "pos": pos, "has_gauss": has_gauss, "cached": cached},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_rng_state(state: dict):
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy(), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states() -> list:
    """Every process's rng_state(), in rank order (sent serialised: all_gather_object mishandles tensors)."""
    buffer = io.BytesIO()
    torch.save(rng_state(), buffer)
    return [torch.load(io.BytesIO(blob), weights_only=True) for blob in gather_objects(buffer.getvalue())]


def save_training_checkpoint(path: Path, *, denv: DistEnv, model, model_ema, optimizer, scheduler,
                             position: Position, args: dict, batch_size: int):
    """Collect every process's RNG state and let rank 0 write the checkpoint atomically; weights that are
    not finite are never written (the previous checkpoint stays). Every process must call it at the same step."""
    for name, tensor in model.state_dict().items():  # identical on every process under DDP
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise NonFiniteLoss(f"weight {name} is not finite at step {position.global_step}; not saving {path}")
    states = gather_rng_states()
    if not denv.is_main:
        return
    save_checkpoint(path, model, model_ema=model_ema, optimizer=optimizer, lr_scheduler=scheduler,
                    epoch=position.epoch - 1, args=args, position=vars(position).copy(),
                    layout={"world_size": denv.world_size, "batch_size": batch_size}, rng=states)


def restore_training_checkpoint(ckpt: dict, path, *, denv: DistEnv, model, model_ema, optimizer, scheduler,
                                batch_size: int, seed: int) -> Position:
    """Load everything a training checkpoint holds into the live objects; returns where to continue."""
    for key in ("model", "optimizer", "lr_scheduler", "position", "layout", "rng"):
        if key not in ckpt:
            raise InputError(f"{path}: field '{key}' missing: not a training checkpoint of this engine "
                             "(use --init for weights-only loading)")
    position = Position(**ckpt["position"])
    layout = {"world_size": denv.world_size, "batch_size": batch_size}
    if position.step and ckpt["layout"] != layout:
        raise InputError(f"{path}: field 'layout' {ckpt['layout']} was saved mid-epoch and differs from this "
                         f"run's {layout}; resume with the same number of processes and batch size")
    model.load_state_dict(ckpt["model"])
    if model_ema is not None:
        if ckpt.get("model_ema") is None:
            raise InputError(f"{path}: field 'model_ema' is empty but this run trains with EMA")
        model_ema.load_state_dict(ckpt["model_ema"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["lr_scheduler"])
    if len(ckpt["rng"]) == denv.world_size:
        set_rng_state(ckpt["rng"][denv.rank])
    else:  # another number of processes, at an epoch boundary: fresh per-process states
        seed_everything(seed + denv.rank + 1000 * position.epoch)
    return position


class StopSignal:
    """Remembers SIGTERM / SIGUSR1 (Slurm sends them before pre-emption or the time limit) so the loop can
    checkpoint at the next step boundary instead of dying mid-step."""

    def __init__(self, signals=STOP_SIGNALS):
        self.received: Optional[int] = None
        self._previous = {s: signal.signal(s, self._handle) for s in signals}

    def _handle(self, signum, frame):
        self.received = signum

    def __call__(self) -> bool:
        return self.received is not None

    def restore(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
