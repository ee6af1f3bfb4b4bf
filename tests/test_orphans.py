"""No process outlives the one that started it: a torchrun worker dies with its killed launcher, and one whose
launcher died before its first line exits at once; scoring and data-loader workers die with their process."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def gone(pid, within=10.0) -> bool:
    """Whether process `pid` has ended (or is a zombie) within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat")
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except (OSError, IndexError):
            return True
        time.sleep(0.05)
    return False


def wait_for_pids(path, count, within=60.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists() and len(pids := path.read_text().split()) >= count:
            return [int(p) for p in pids[:count]]
        time.sleep(0.05)
    raise AssertionError(f"{path}: no {count} pids written")


def fake_torchrun(tmp_path, worker_code, then):
    """A launcher named `torchrun` (as torchrun's console script shows in /proc) that starts `worker_code` in a
    session of its own with torchrun's environment, as torchrun does, then runs `then`."""
    script = tmp_path / "torchrun"
    script.write_text(
        "import os, subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {worker_code!r}], start_new_session=True, "
        f"stderr=open({str(tmp_path / 'worker.err')!r}, 'w'), env={{**os.environ, 'TORCHELASTIC_RUN_ID': 'test', "
        f"'PYTHONPATH': {str(SRC)!r}}})\n{then}\n")
    return subprocess.Popen([sys.executable, str(script)])


def test_a_torchrun_worker_dies_with_its_killed_launcher(tmp_path):
    """kill -9 of the launcher takes its worker along (torchrun puts workers in sessions of their own)."""
    pid_file = tmp_path / "worker.pid"
    worker = ("import os, time; from mdetr_phrasecut.infra.lifetime import die_with_launcher; "
              f"die_with_launcher(os.getppid()); open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
              "time.sleep(120)")
    launcher = fake_torchrun(tmp_path, worker, "time.sleep(120)")
    [worker_pid] = wait_for_pids(pid_file, 1)
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait()
    assert gone(worker_pid), "the worker outlived its launcher"


def test_a_worker_whose_launcher_died_before_its_first_line_exits(tmp_path):
    """torchrun killed while its worker starts (Python still importing): the worker's parent is then init or a
    subreaper, not a launcher, and the CLI's entry ends it before it does anything."""
    pid_file = tmp_path / "worker.pid"
    worker = (f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(1); "
              "from mdetr_phrasecut.cli import main; main(['audit', 'no-such-file'])")
    launcher = fake_torchrun(tmp_path, worker, "")  # exits at once
    launcher.wait()
    [worker_pid] = wait_for_pids(pid_file, 1)
    assert gone(worker_pid), "the orphaned worker kept running"
    err = (tmp_path / "worker.err").read_text()
    assert "launcher is gone" in err and "no-such-file" not in err, err


def test_scoring_and_data_loader_workers_die_with_their_process(tmp_path):
    """kill -9 of a process scoring in a pool and iterating a loader with workers: every worker ends at once
    (a pool's workers would otherwise wait for work forever, torch's loader workers check every 5 s)."""
    pid_file = tmp_path / "workers.pid"
    code = f"""
import multiprocessing, os, time, torch
from mdetr_phrasecut.engine.distributed import DistEnv
from mdetr_phrasecut.engine.sampling import val_loader
from mdetr_phrasecut.evaluation.phrasecut_metrics import _scored

class Slow(torch.utils.data.Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, i):
        with open({str(pid_file)!r}, "a") as f:
            print(os.getpid(), file=f)
        time.sleep(120)

def jobs():  # pulled by the scoring loop while its pool is up: start a loader and wait on it
    with open({str(pid_file)!r}, "a") as f:
        print(*(p.pid for p in multiprocessing.active_children()), file=f)
    next(iter(val_loader(Slow(), 1, DistEnv(), list, num_workers=1)[0]))
    yield

list(_scored(jobs(), None, workers=2, chunk_size=1))
"""
    parent = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(SRC)})
    workers = wait_for_pids(pid_file, 3)  # two scoring processes, one loader worker
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    assert all(gone(pid, within=2) for pid in workers), "a worker outlived its process"
