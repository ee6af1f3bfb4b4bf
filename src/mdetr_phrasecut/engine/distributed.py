"""Process-group setup for torchrun and Slurm (`srun`) launches, and the few collectives training needs."""
import os
import socket
import sys
from dataclasses import dataclass
from typing import Dict, Mapping, Optional

import torch
import torch.distributed as dist

from ..infra.slurm import first_slurm_host, slurm_port


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
        os.environ.setdefault("MASTER_PORT", str(slurm_port(env)))
        return DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return DistEnv()


def share_threads_among_local_processes():
    """Give each of torchrun's processes on a node its share of the node's intra-op threads (torch's count, from
    MKL_NUM_THREADS/OMP_NUM_THREADS, which Snakemake sets to a job's `threads`: the processes per node), so that two
    processes on one node compute as one process on each of two nodes; torchrun itself sets OMP_NUM_THREADS=1 only
    where it is unset, and torch follows MKL's. A process started alone keeps every thread."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, torch.get_num_threads() // local))


def init_distributed(device: str = "auto") -> tuple:
    """Join the process group described by the environment (nccl on GPU, gloo on CPU), with this process's share
    of the node's intra-op threads.

    Returns (DistEnv, torch.device). `device` is "auto", "cpu" or "cuda".
    """
    share_threads_among_local_processes()
    denv = env_from_environ()
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    torch_device = torch.device("cuda", denv.local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(torch_device)
    if denv.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", init_method="env://",
                                rank=denv.rank, world_size=denv.world_size)
        node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        print(f"rank {denv.rank} of {denv.world_size} on node {node}", file=sys.stderr, flush=True)
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


def barrier():
    if _active():
        dist.barrier()
