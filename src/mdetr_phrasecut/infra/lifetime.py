"""No process outlives the process that started it: the kernel's parent-death signal (Linux `prctl`), checked
against the parent a process was started by. Free of torch and of the package's heavier modules, so the CLI arms
it before importing them."""
import ctypes
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h
# How a torchrun agent shows in its command line: the console script, `python -m torch.distributed.run`, or our
# `mdetr-phrasecut launch` (torchrun in that process)
LAUNCHER_NAMES = ("torchrun", "mdetr-phrasecut")
LAUNCHER_MODULES = ("torch.distributed.run", "mdetr_phrasecut.cli")


def die_with_parent(parent: int):
    """Have the kernel SIGKILL this process when its parent, `parent` (the pid the caller knows started it), dies;
    SIGKILL it now if `parent` is already gone (it died before this process got here, and the process was handed
    to init or a subreaper). A process started through a fork server (whose parent is the server) only gets that
    check, as does one without Linux's `prctl`."""
    if os.getppid() == parent and sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent and not alive(parent):
        os.kill(os.getpid(), signal.SIGKILL)


def alive(pid: int) -> bool:
    """Whether process `pid` exists (a process of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def command_line(pid: int):
    """The arguments of process `pid` (None where /proc cannot tell)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None


def is_launcher(pid: int) -> bool:
    """Whether process `pid` is a torchrun agent (where /proc cannot tell: whether it is not init)."""
    args = command_line(pid)
    if args is None:
        return pid != 1
    return any(Path(a).name in LAUNCHER_NAMES or a in LAUNCHER_MODULES for a in args)


def die_with_launcher(parent: int):
    """Under torchrun (`TORCHELASTIC_RUN_ID` set), end this worker with its launcher, `parent` (its parent when
    the process started): at once if that is no longer a torchrun agent (killed before this worker's first line;
    the worker was handed to init or a subreaper), else by the kernel when it dies. torchrun starts each worker in
    a session of its own, so a launcher killed outright (kill -9, the OOM killer) would otherwise leave its workers
    training on, or asleep in a rendezvous retry, writing the very checkpoints a re-run resumes from."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    if not is_launcher(parent):
        print(f"error: this torchrun worker's launcher is gone (its parent is now process {parent}, "
              f"{' '.join(command_line(parent) or ['?']).strip()!r}); exiting", file=sys.stderr, flush=True)
        os._exit(1)
    die_with_parent(parent)
