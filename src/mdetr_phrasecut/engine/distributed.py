"""Process-group setup for torchrun and Slurm (`srun`) launches, and the few collectives training needs."""
import ctypes
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Dict, Mapping, Optional

import torch
import torch.distributed as dist

from ..errors import InputError


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: global rank, number of processes, rank on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def first_slurm_host(nodelist: str) -> str:
    """The first host name of a Slurm node list (`node[01-04]`), expanded by `scontrol show hostnames`."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise InputError(f"SLURM_JOB_NODELIST={nodelist!r}: `scontrol show hostnames` failed ({e})") from e
    hosts = out.split()
    if not hosts:
        raise InputError(f"SLURM_JOB_NODELIST={nodelist!r}: `scontrol show hostnames` listed no host")
    return hosts[0]


def env_from_environ(environ: Optional[Mapping[str, str]] = None) -> DistEnv:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK, else Slurm's SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID.

    For a Slurm launch, also sets MASTER_ADDR (first node of the job) and MASTER_PORT (from the job id)
    in `os.environ` unless they are already set, so that `init_process_group("env://")` can rendezvous.
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        if "MASTER_ADDR" not in os.environ:
            os.environ["MASTER_ADDR"] = first_slurm_host(env["SLURM_JOB_NODELIST"])
        os.environ.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
        return DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return DistEnv()


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_launcher():
    """Under torchrun, have the kernel SIGKILL this process when its launcher dies. torchrun starts each worker in
    a session of its own, so a launcher killed outright (kill -9, the OOM killer) would otherwise leave its workers
    training on, writing the very checkpoints a re-run resumes from."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    launcher = os.getppid()
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != launcher:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def init_distributed(device: str = "auto") -> tuple:
    """Join the process group described by the environment (nccl on GPU, gloo on CPU).

    Returns (DistEnv, torch.device). `device` is "auto", "cpu" or "cuda".
    """
    die_with_launcher()
    denv = env_from_environ()
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    torch_device = torch.device("cuda", denv.local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(torch_device)
    if denv.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", init_method="env://",
                                rank=denv.rank, world_size=denv.world_size)
    return denv, torch_device


def cleanup():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def reduce_mean(values: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """Mean of scalar tensors over all processes (keys must be the same everywhere)."""
    if not values:
        return {}
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys])
    if _active():
        dist.all_reduce(stacked)
        stacked /= dist.get_world_size()
    return dict(zip(keys, stacked.tolist()))


def reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of a tensor over all processes (in place, returned for chaining)."""
    if _active():
        dist.all_reduce(values)
    return values


def any_process(flag: bool, device) -> bool:
    """True if `flag` is true on at least one process (used to stop every rank at the same step)."""
    t = torch.tensor([float(flag)], device=device)
    return bool(reduce_sum(t).item() > 0)


def gather_objects(obj) -> list:
    """Every process's `obj`, in rank order (a one-element list when not distributed)."""
    if not _active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's `obj` on every process."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier():
    if _active():
        dist.barrier()
