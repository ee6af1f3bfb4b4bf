"""Kill the embedded workflow (SIGKILL to Snakemake's whole process group) at chosen moments, re-run it as documented
(`mdetr-phrasecut unlock`, then the same command, as `make demo` does), and compare what it ends with to an
uninterrupted run. Shared by tests/test_chaos.py and benchmarks/chaos.py.

A moment is a condition on the workspace, polled every few milliseconds while Snakemake runs (e.g. "stage 1 has
written a checkpoint"); the kill lands as soon as it holds.
"""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pandas as pd
import torch

BIN = Path(sys.executable).parent
RUN = Path("results/runs/demo")
SNAKEMAKE_TMP = Path(".snakemake/tmp")  # TMPDIR of every run, as `make demo` sets it
TIMING_COLUMNS = ["images_per_s"]  # the only log column that may differ between identical runs


def snakemake_args(configfile="config/tiny.yaml", target="all") -> List[str]:
    return ["--configfile", configfile, "--cores", "2", "--", target]


def start(workspace: Path, args: List[str]) -> subprocess.Popen:
    """The documented command after a crash: `mdetr-phrasecut unlock --tmpdir .snakemake/tmp -- OPTIONS`, then
    `snakemake OPTIONS` with TMPDIR=.snakemake/tmp, in a session of its own (the process group a kill takes)."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TMPDIR": str(workspace / SNAKEMAKE_TMP)}
    (workspace / SNAKEMAKE_TMP).mkdir(parents=True, exist_ok=True)
    options = args[:args.index("--")]
    script = (f"mdetr-phrasecut unlock --tmpdir {SNAKEMAKE_TMP} -- {' '.join(options)} && "
              f"exec snakemake {' '.join(args)}")
    log = open(workspace / "chaos.log", "a")
    return subprocess.Popen(["bash", "-c", script], cwd=workspace, env=env, stdout=log, stderr=log,
                            start_new_session=True)


def _processes():
    """(pid, state, process group, working directory, command line) of every process /proc shows."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue
        yield int(entry.name), stat[0], int(stat[2]), cwd, args


def processes_in(workspace: Path) -> Dict[int, str]:
    """{pid: command line} of the live (not zombie) processes working in `workspace`."""
    root = str(workspace.resolve())
    return {pid: args for pid, state, _, cwd, args in _processes()
            if (cwd == root or cwd.startswith(root + "/")) and state != "Z"}


def _results(workspace: Path) -> Dict[str, Tuple[int, int]]:
    """{path: (mtime, size)} of the files under results/."""
    found = {}
    for path in (workspace / "results").rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                stat = path.stat()
                found[str(path.relative_to(workspace))] = (stat.st_mtime_ns, stat.st_size)
    return found


def _written_since(workspace: Path, before: Dict[str, Tuple[int, int]]) -> Dict[str, str]:
    """{path: the last 300 bytes it gained (all of it when it shrank: rewritten), as text} of the files under
    results/ changed since `before`."""
    written = {}
    for path, (mtime, size) in _results(workspace).items():
        old_mtime, old_size = before.get(path, (None, 0))
        if mtime == old_mtime:
            continue
        tail = b""
        with contextlib.suppress(OSError), (workspace / path).open("rb") as f:
            f.seek(max(old_size if size >= old_size else 0, size - 300))
            tail = f.read(300)
        written[path] = tail.decode(errors="replace")
    return written


@dataclass
class Kill:
    """One kill: when it landed (seconds after the start, the moment's name), what outlived it, and the files
    under results/ written once the killed process group was gone (by a process that outlived the kill), each with
    the bytes it gained (a log's last lines)."""

    moment: str
    at_s: float
    orphans: Dict[int, str] = field(default_factory=dict)
    written: Dict[str, str] = field(default_factory=dict)


def kill_when(workspace: Path, job: subprocess.Popen, moment: str, holds: Callable[[Path], bool],
              timeout: float = 600, grace: float = 10) -> Optional[Kill]:
    """SIGKILL `job`'s process group as soon as `holds(workspace)`; once every process of the group has exited,
    wait up to `grace` seconds for every other process working in `workspace` to end, and report those that did
    not (killing them) and what was written meanwhile (a process that outlives the kill by less than `grace`,
    say a training rank finishing its stage, still writes). None if the job ended before the moment came."""
    began = time.monotonic()
    while not holds(workspace):
        if job.poll() is not None or time.monotonic() - began > timeout:
            return None
        time.sleep(0.01)
    os.killpg(job.pid, signal.SIGKILL)
    kill = Kill(moment, time.monotonic() - began)
    job.wait()
    deadline = time.monotonic() + grace
    while any(group == job.pid and state != "Z" for _, state, group, _, _ in _processes()) \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    before = _results(workspace)
    while (left := processes_in(workspace)) and time.monotonic() < deadline:
        time.sleep(0.1)
    kill.orphans = left
    kill.written = _written_since(workspace, before)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return kill


def _exists(pattern):
    return lambda ws: any(ws.glob(pattern))


def _logged_rows(path, rows):
    def holds(ws):
        try:
            return len((ws / path).read_text().splitlines()) > rows
        except OSError:
            return False
    return holds


# Moments chosen to land in different rules (the test kills at each in turn). Stage 1 (3 steps, a checkpoint after
# each but the last: tests/test_workflow.py's DEMO_STAGES) is killed after its last step's row is logged and before
# its epoch-end checkpoint, so the resumed run must rewind its log past the checkpoint (else a duplicate row).
MOMENTS = {
    "conversion": _exists("results/logs/convert_main_*.log"),
    "stage1, a row logged after its last checkpoint":
        lambda ws: _logged_rows(RUN / "stage1" / "train_log.csv", 3)(ws)
        and (ws / RUN / "stage1" / "checkpoint_last.pth").exists()
        and not (ws / RUN / "stage1" / "val_log.csv").exists(),
    "evaluation, predictions half-written": _exists(f"{RUN}/test/.*.tmp"),
}


def stray_files(workspace: Path) -> List[str]:
    """Temp and part files left anywhere in the results, and Snakemake temp folders left in its TMPDIR."""
    stray = [p for p in (workspace / "results").rglob("*") if p.name.endswith((".tmp", ".part", ".rejected"))]
    stray += list((workspace / SNAKEMAKE_TMP).glob("snakemake*"))
    return sorted(str(p.relative_to(workspace)) for p in stray)


def outcome(workspace: Path) -> dict:
    """What a run ends with that must not depend on kills: test metrics and per-phrase results, training logs
    (without their timing column), the checkpoints' tensors, and the audit's verdict."""
    out = {"metrics": json.loads((workspace / RUN / "test" / "metrics.json").read_text()),
           "per_task": json.loads((workspace / RUN / "test" / "per_task.json").read_text())}
    for stage in ("stage1", "stage2"):
        for log in ("log.csv", "val.csv"):
            frame = pd.read_csv(workspace / RUN / stage / log)
            out[f"{stage}/{log}"] = frame.drop(columns=TIMING_COLUMNS, errors="ignore").to_dict("list")
        out[f"{stage}/checkpoint"] = torch.load(workspace / RUN / stage / "checkpoint.pth", map_location="cpu",
                                                weights_only=False)
    audit = subprocess.run([str(BIN / "mdetr-phrasecut"), "audit", "results/table.md"], cwd=workspace,
                           capture_output=True, text=True)
    out["audit"] = (audit.returncode, json.loads((workspace / "results" / "audit.json").read_text())["ok"])
    return out


def differences(a, b, where="") -> List[str]:
    """Where two outcomes differ (tensors compared exactly)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and \
            a.dtype == b.dtype and torch.equal(a, b)
        return [] if same else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b), key=str)
        return [d for k in keys for d in differences(a.get(k), b.get(k), f"{where}/{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if _equal(a, b) else [where]


def _equal(a, b):
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:  # NaN (e.g. an empty subset's mean)
        return True
    return a == b
