"""A real Slurm cluster on loopback for tests: munged, slurmctld and one slurmd per node in a temp folder.

    cluster = start_cluster(tmp_path)                      # fails when Slurm/munge are not installed
    cluster = start_cluster(tmp_path, nodes=("n1", "n2"))  # two nodes on this host: `srun -N2` runs on both
    try:
        subprocess.run(["sbatch", "--wrap", "true"], env=cluster.env, check=True)
    finally:
        cluster.stop()

Everything (key, socket, state, spool, logs) lives under the given folder; the daemons run as root
(SlurmUser=root) on free ports, without systemd, cgroups or accounting. Several nodes share the host as
Slurm allows: each `NodeName` has its own slurmd port, `NodeAddr=127.0.0.1` and the real host name
(`slurmd -N <name>`, per-node spool, PID and log files through `%n`); each node offers all the host's CPUs and
GPUS_PER_NODE fake GPUs (a GRES: `--gres=gpu:N` is scheduled per node, no device behind it).
`Cluster.env` is the environment clients need: SLURM_CONF, plus `srun` and `scontrol` wrappers first on PATH
that restore SLURM_CONF, because jobs do not inherit it (and Snakemake's job-step executor strips SLURM_*
variables before its inner `srun`); on a real cluster they find /etc/slurm/slurm.conf, which a test must
not write.
"""
import atexit
import contextlib
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
PARTITION = "debug"
# Every node declares GPUS_PER_NODE GPUs as a GRES, backed by empty files (<root>/dev/gpuN): Slurm 22.05 drops a
# count-only GPU ("Removing file-less GPU gpu:(null) from final GRES list", so the node registers with 0 < 2 and is
# drained INVAL); with files it schedules them (slurmd logs "... is not a valid character or block device" once,
# harmless without cgroups) and a job step gets SLURM_GPUS_ON_NODE. No GPU is behind them: torch sees none.
GPUS_PER_NODE = 2
SLURMD_TIMEOUT_S = 5  # a node whose slurmd stopped answering is DOWN (its jobs NODE_FAIL) after this long


@dataclass
class Cluster:
    root: Path
    env: dict
    nodes: tuple
    daemons: dict = field(default_factory=dict)  # name -> Popen, started in order munged, slurmctld, slurmd:<node>

    def run(self, *cmd, check=True, **kwargs) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster, capturing text output."""
        return subprocess.run(cmd, env=self.env, check=check, capture_output=True, text=True, **kwargs)

    def logs(self) -> str:
        """The tail of every daemon log, for error messages."""
        return "\n".join(f"--- {p.name}\n" + "".join(p.read_text(errors="replace").splitlines(True)[-20:])
                         for p in sorted((self.root / "log").iterdir()))

    def stop(self):
        """Cancel all jobs, wait for their steps to end, then kill the daemons; safe to call twice."""
        if self.daemons and all(d.poll() is None for d in self.daemons.values()):
            # job steps run in their own sessions under slurmstepd: let slurmd end them before it goes
            self.run("scancel", f"--partition={PARTITION}", check=False, timeout=10)
            deadline = time.monotonic() + 30
            while self.run("squeue", "--noheader", check=False, timeout=10).stdout.strip():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        for name in reversed(list(self.daemons)):
            self.kill(name, signal.SIGTERM)
        # what a job left behind (a requeued job's batch script that outlived its step): jobs see our wrappers' PATH
        wrappers = str(self.root / "bin").encode()
        _kill_all(_pids_with_env(lambda v: v.startswith(b"PATH=") and wrappers in v[5:].split(b":"), with_stepd=False))

    def kill(self, name, sig=signal.SIGKILL):
        """End one daemon (e.g. `slurmd:n2`, a lost node) by its process group; `start_slurmd` brings a node back."""
        daemon = self.daemons.pop(name)
        if daemon.poll() is None:
            os.killpg(daemon.pid, sig)
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()

    def lose_node(self, node):
        """What a node that dies does to its jobs: SIGKILL its slurmd, then every process of its job steps
        (tasks carry SLURMD_NODENAME=<node> in their environment; their parent is the step's slurmstepd)."""
        self.kill(f"slurmd:{node}")
        var = f"SLURMD_NODENAME={node}".encode()
        doomed = _pids_with_env(lambda v: v == var, with_stepd=True)
        _kill_all(doomed)
        return doomed

    def node_states(self) -> dict:
        out = self.run("sinfo", "--noheader", "--Node", "--format=%N %T", check=False).stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def start_slurmd(self, node):
        _start(self, f"slurmd:{node}", "slurmd", "-D", "-N", node)

    def wait_idle(self, timeout=60):
        _wait(self, "every node to be idle", lambda: self.node_states() == {n: "idle" for n in self.nodes}, timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _pids_with_env(matches, with_stepd: bool) -> set:
    """Processes with an environment entry (b"NAME=value") that `matches` (and, `with_stepd`, their slurmstepd
    parents)."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and any(map(matches, (proc / "environ").read_bytes().split(b"\0"))):
                found.add(int(proc.name))
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if with_stepd and (Path("/proc") / str(parent) / "cmdline").read_bytes().startswith(b"slurmstepd"):
                    found.add(parent)
        except (OSError, ValueError):
            continue  # gone meanwhile
    found.discard(os.getpid())
    return found


def _kill_all(pids):
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    return kib // 1024


def _slurm_conf(root: Path, nodes, cpus: int) -> str:
    host = socket.gethostname()
    return "\n".join([
        "ClusterName=testcluster",
        "SlurmctldHost=localhost",
        f"SlurmctldPort={_free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={root / 'munge' / 'munge.socket'}",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool' / '%n'}",
        f"SlurmctldPidFile={root / 'state' / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'spool' / 'slurmd.%n.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.%n.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "MpiDefault=none",
        "MailProg=/bin/true",
        "ReturnToService=2",  # a node whose slurmd comes back is usable again
        f"SlurmdTimeout={SLURMD_TIMEOUT_S}",
        # finished jobs stay visible to `squeue` (Snakemake's status command) and `scontrol show job` for an hour
        "MinJobAge=3600",
        "SlurmdParameters=config_overrides",  # trust the node line below, whatever the hardware detection says
        "GresTypes=gpu",
        *(f"NodeName={node} NodeAddr=127.0.0.1 NodeHostname={host} Port={_free_port()} CPUs={cpus} "
          f"RealMemory={_memory_mb() // len(nodes)} Gres=gpu:{GPUS_PER_NODE} State=UNKNOWN" for node in nodes),
        f"PartitionName={PARTITION} Nodes={','.join(nodes)} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _start(cluster: Cluster, name: str, *cmd):
    log = open(cluster.root / "log" / f"{name}.out", "wb")
    with log:
        cluster.daemons[name] = (subprocess.Popen(cmd, env=cluster.env, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True))


def _wait(cluster: Cluster, what: str, ready, timeout=60):
    deadline = time.monotonic() + timeout
    while not ready():
        dead = [name for name, d in cluster.daemons.items() if d.poll() is not None]
        if dead or time.monotonic() > deadline:
            reason = f"{', '.join(dead)} exited" if dead else f"timed out after {timeout}s"
            raise RuntimeError(f"Slurm test cluster: waiting for {what}: {reason}\n{cluster.logs()}")
        time.sleep(0.2)


def start_cluster(tmpdir, nodes=("localhost",)) -> Cluster:
    """Start munged, slurmctld and one slurmd per node under `tmpdir`; return once every node is idle.

    Fails the calling test when the Slurm/munge binaries are missing (`make slurm-deps`)
    or when not running as root. The daemons are killed by `stop()`, at interpreter exit
    at the latest, and right away when the start fails.
    """
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        pytest.fail(f"Slurm/munge not installed (missing {', '.join(missing)}); run `make slurm-deps`", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the Slurm test cluster runs its daemons as root", pytrace=False)
    root = Path(tmpdir).resolve()
    for sub in ("munge", "state", "spool", "log", "bin", "dev"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, nodes, os.cpu_count()))
    for gpu in range(GPUS_PER_NODE):
        (root / "dev" / f"gpu{gpu}").touch()
    (root / "gres.conf").write_text(f"Name=gpu File={root / 'dev'}/gpu[0-{GPUS_PER_NODE - 1}]\n")  # beside slurm.conf
    for client in ("srun", "scontrol"):  # called inside jobs, which do not inherit SLURM_CONF
        wrapper = root / "bin" / client
        wrapper.write_text(f'#!/bin/sh\nSLURM_CONF="{conf}" exec "{shutil.which(client)}" "$@"\n')
        wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SQUEUE_"))}
    env.update(SLURM_CONF=str(conf), PATH=f"{wrapper.parent}{os.pathsep}{env.get('PATH', '')}")
    cluster = Cluster(root, env, tuple(nodes))
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
        for node in nodes:
            (root / "spool" / node).mkdir(exist_ok=True)
            cluster.start_slurmd(node)
        cluster.wait_idle()
    except BaseException:
        cluster.stop()
        raise
    return cluster
