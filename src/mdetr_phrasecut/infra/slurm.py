"""What a Slurm job is, asked of Slurm itself (`scontrol show`): its hosts, node addresses, restart count, and
the rendezvous port of its processes. Free of torch."""
import re
import subprocess
from typing import Mapping

from ..errors import InputError


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
