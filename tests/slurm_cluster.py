"""A real one-node Slurm cluster on loopback for tests: munged, slurmctld and slurmd in a temp folder.

    cluster = start_cluster(tmp_path)      # pytest.skip()s when Slurm/munge are not installed
    try:
        subprocess.run(["sbatch", "--wrap", "true"], env=cluster.env, check=True)
    finally:
        cluster.stop()

Everything (key, socket, state, spool, logs) lives under the given folder; the daemons run as root
(SlurmUser=root) on free ports, without systemd, cgroups or accounting. `Cluster.env` is the
environment clients need: SLURM_CONF, plus a `srun` wrapper first on PATH that restores SLURM_CONF,
because Snakemake's job-step executor strips SLURM_* variables before its inner `srun` (on a real
cluster that `srun` finds /etc/slurm/slurm.conf, which a test must not write).
"""
import atexit
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BINARIES = ("munged", "slurmctld", "slurmd", "slurmstepd", "sbatch", "srun", "squeue", "sinfo", "scancel")
NODE = "localhost"
PARTITION = "debug"


@dataclass
class Cluster:
    root: Path
    env: dict
    daemons: list = field(default_factory=list)  # Popen objects, started in order munged, slurmctld, slurmd

    def run(self, *cmd, check=True, **kwargs) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster, capturing text output."""
        return subprocess.run(cmd, env=self.env, check=check, capture_output=True, text=True, **kwargs)

    def logs(self) -> str:
        """The tail of every daemon log, for error messages."""
        return "\n".join(f"--- {p.name}\n" + "".join(p.read_text(errors="replace").splitlines(True)[-20:])
                         for p in sorted((self.root / "log").iterdir()))

    def stop(self):
        """Cancel all jobs, wait for their steps to end, then kill the daemons; safe to call twice."""
        if len(self.daemons) == 3 and all(d.poll() is None for d in self.daemons):
            # job steps run in their own sessions under slurmstepd: let slurmd end them before it goes
            self.run("scancel", f"--partition={PARTITION}", check=False, timeout=10)
            deadline = time.monotonic() + 30
            while self.run("squeue", "--noheader", check=False, timeout=10).stdout.strip():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        for daemon in reversed(self.daemons):
            if daemon.poll() is None:
                os.killpg(daemon.pid, signal.SIGTERM)
                try:
                    daemon.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(daemon.pid, signal.SIGKILL)
                    daemon.wait()
        self.daemons.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    return kib // 1024


def _slurm_conf(root: Path, cpus: int) -> str:
    return "\n".join([
        "ClusterName=testcluster",
        f"SlurmctldHost={NODE}",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={root / 'munge' / 'munge.socket'}",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'state' / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'spool' / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "MpiDefault=none",
        "MailProg=/bin/true",
        "ReturnToService=2",
        "MinJobAge=300",  # finished jobs stay visible to `squeue` (Snakemake's status command) for 5 min
        "SlurmdParameters=config_overrides",  # trust the node line below, whatever the hardware detection says
        f"NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_memory_mb()} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _start(cluster: Cluster, name: str, *cmd):
    log = open(cluster.root / "log" / f"{name}.out", "wb")
    with log:
        cluster.daemons.append(subprocess.Popen(cmd, env=cluster.env, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True))


def _wait(cluster: Cluster, what: str, ready, timeout=60):
    deadline = time.monotonic() + timeout
    while not ready():
        dead = [d.args[0] for d in cluster.daemons if d.poll() is not None]
        if dead or time.monotonic() > deadline:
            reason = f"{', '.join(dead)} exited" if dead else f"timed out after {timeout}s"
            raise RuntimeError(f"Slurm test cluster: waiting for {what}: {reason}\n{cluster.logs()}")
        time.sleep(0.2)


def start_cluster(tmpdir) -> Cluster:
    """Start munged, slurmctld and slurmd under `tmpdir`; return once the node is idle.

    Skips the calling test when the Slurm/munge binaries are missing (`make slurm-deps`)
    or when not running as root. The daemons are killed by `stop()`, at interpreter exit
    at the latest, and right away when the start fails.
    """
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        pytest.skip(f"Slurm/munge not installed (missing {', '.join(missing)}); run `make slurm-deps`")
    if os.geteuid() != 0:
        pytest.skip("the one-node Slurm test cluster runs its daemons as root")
    root = Path(tmpdir).resolve()
    for sub in ("munge", "state", "spool", "log", "bin"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, os.cpu_count()))
    wrapper = root / "bin" / "srun"
    wrapper.write_text(f'#!/bin/sh\nSLURM_CONF="{conf}" exec "{shutil.which("srun")}" "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SQUEUE_"))}
    env.update(SLURM_CONF=str(conf), PATH=f"{wrapper.parent}{os.pathsep}{env.get('PATH', '')}")
    cluster = Cluster(root, env)
    atexit.register(cluster.stop)
    try:
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        socket_path = root / "munge" / "munge.socket"
        # --force: pytest's temp folders are private (0700), which munged would otherwise refuse for its socket
        _start(cluster, "munged", "munged", "--foreground", "--force", f"--key-file={key}",
               f"--socket={socket_path}", f"--pid-file={root / 'munge' / 'munged.pid'}",
               f"--log-file={root / 'log' / 'munged.log'}", f"--seed-file={root / 'munge' / 'munged.seed'}")
        _wait(cluster, "munged", socket_path.exists)
        _start(cluster, "slurmctld", "slurmctld", "-D")
        _start(cluster, "slurmd", "slurmd", "-D", "-N", NODE)
        _wait(cluster, "the node to be idle", lambda: cluster.run(
            "sinfo", "--noheader", "--Node", "--format=%T", check=False).stdout.strip() == "idle")
    except BaseException:
        cluster.stop()
        raise
    return cluster
