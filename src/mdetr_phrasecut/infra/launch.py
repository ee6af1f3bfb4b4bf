"""`mdetr-phrasecut launch`: torchrun on every node of a Slurm job, one `srun` task each, all meeting at the first
node. Free of torch at import, so the workflow's launcher can read `TORCHRUN_SIGNALS`."""
import argparse
import os
from typing import Mapping, Optional

from ..errors import InputError
from .slurm import first_slurm_host, job_restarts, node_address, slurm_port

# The signals torchrun hands on to its workers (`--signals-to-handle`): its default list plus SIGUSR1, Slurm's
# time-limit warning, which would otherwise kill torchrun and with it its workers (`lifetime.die_with_launcher`)
# before they save.
TORCHRUN_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"


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
