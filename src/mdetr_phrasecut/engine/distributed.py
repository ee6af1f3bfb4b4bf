"""Process-group setup for torchrun and Slurm (`srun`) launches, the multi-node launcher (`mdetr-phrasecut
launch`), and the few collectives training needs."""
import argparse
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Dict, Mapping, Optional

import torch
import torch.distributed as dist

from ..errors import InputError
from .launch_signals import TORCHRUN_SIGNALS


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


def _scontrol(what: str, *args) -> str:
    """stdout of `scontrol show ARGS`; failure is one InputError line naming `what` and the command."""
    cmd = ["scontrol", "show", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InputError(f"{what}: `{' '.join(cmd)}` could not run ({e})") from e
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise InputError(f"{what}: `{' '.join(cmd)}` failed: {reason}")
    return done.stdout


def first_slurm_host(nodelist: str) -> str:
    """The first host name of a Slurm node list (`node[01-04]`), expanded by `scontrol show hostnames`."""
    hosts = _scontrol(f"node list {nodelist!r}", "hostnames", nodelist).split()
    if not hosts:
        raise InputError(f"node list {nodelist!r}: `scontrol show hostnames` listed no host")
    return hosts[0]


def job_restarts(job: str) -> int:
    """How often Slurm has requeued `job` (`Restarts` of `scontrol show job`)."""
    found = re.search(r"\bRestarts=(\d+)", _scontrol(f"job {job}", "job", job))
    if not found:
        raise InputError(f"job {job}: `scontrol show job {job}` gives no Restarts")
    return int(found.group(1))


def node_address(node: str) -> str:
    """The address Slurm itself reaches `node` at (`NodeAddr` of `scontrol show node`)."""
    found = re.search(r"\bNodeAddr=(\S+)", _scontrol(f"node {node}", "node", node))
    if not found:
        raise InputError(f"node {node}: `scontrol show node {node}` gives no NodeAddr")
    return found.group(1)


def slurm_port(env: Mapping[str, str]) -> int:
    """MASTER_PORT when set, else one derived from the job id (jobs sharing a first node then differ)."""
    return int(env.get("MASTER_PORT") or 20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000)


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


def add_arguments(parser):
    parser.add_argument("--nnodes", type=int, required=True, help="nodes of the job (one `srun` task on each)")
    parser.add_argument("--nproc-per-node", type=int, required=True, help="processes per node (one per GPU)")
    parser.add_argument("cli_args", nargs=argparse.REMAINDER, help="-- then the `mdetr-phrasecut` arguments")



def torchrun_args(args, environ: Optional[Mapping[str, str]] = None) -> list:
    """torchrun's arguments for this `srun` task: all nodes meet at the first node's NodeAddr, port from
    `slurm_port`, rendezvous id the job id and its restart count (a requeued job keeps its id and must not meet
    in a rendezvous its earlier run left); the stop signals go on to the workers. Any missing piece is one
    InputError line."""
    env = os.environ if environ is None else environ
    missing = [k for k in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_STEP_NUM_NODES") if not env.get(k)]
    if missing:
        raise InputError(f"launch: {', '.join(missing)} not set: run it as `srun --ntasks-per-node=1 "
                         "mdetr-phrasecut launch ...` inside a Slurm job")
    if int(env["SLURM_STEP_NUM_NODES"]) != args.nnodes:
        raise InputError(f"launch: --nnodes {args.nnodes} but the job step runs on SLURM_STEP_NUM_NODES="
                         f"{env['SLURM_STEP_NUM_NODES']} nodes")
    rest = args.cli_args[1:] if args.cli_args[:1] == ["--"] else args.cli_args
    if not rest:
        raise InputError("launch: no `mdetr-phrasecut` arguments after --")
    address = node_address(first_slurm_host(env["SLURM_STEP_NODELIST"]))
    job = env["SLURM_JOB_ID"]
    return [f"--nnodes={args.nnodes}", f"--nproc-per-node={args.nproc_per_node}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={address}:{slurm_port(env)}", f"--rdzv-id={job}-{job_restarts(job)}",
            f"--signals-to-handle={TORCHRUN_SIGNALS}", "-m", "mdetr_phrasecut.cli", *rest]


def main(args):
    """Run torchrun (torch.distributed.run) in this process, as the `torchrun` command does: Slurm's signals reach
    it directly, and the job's start imports torch once less than a new `torchrun` process would."""
    from torch.distributed.run import main as torchrun

    torchrun(torchrun_args(args))


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
