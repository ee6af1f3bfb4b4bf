"""`mdetr-phrasecut unlock [--tmpdir DIR] [-- SNAKEMAKE OPTIONS]`: after a killed Snakemake (kill -9, a lost
terminal, the OOM killer), clear what it left in this working directory -- its lock (`snakemake --unlock`) and the
`snakemake*` temp folders it made under DIR -- but only when no Snakemake process of this directory is alive: a
running one keeps its lock, and the next `snakemake` then refuses to run beside it, as it should."""
import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import InputError
from .lifetime import command_line


def running_snakemakes(workdir: Path) -> list:
    """Pids of the live Snakemake processes whose working directory is `workdir` (read from /proc)."""
    workdir = workdir.resolve()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        args = command_line(int(entry.name))
        if not args or not any(Path(a).name == "snakemake" for a in args[:3]):  # python .../snakemake, -m snakemake
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == workdir:
                found.append(int(entry.name))
        except OSError:  # ended meanwhile, or another user's
            continue
    return found


def add_arguments(parser):
    parser.add_argument("--tmpdir", type=Path,
                        help="the TMPDIR the runs of this directory were given (`make demo`: .snakemake/tmp): "
                             "remove the snakemake* folders a killed run left there")
    parser.add_argument("snakemake_args", nargs=argparse.REMAINDER,
                        help="-- then the options of the run (profile, config files), for `snakemake --unlock`")


def main(args):
    if not Path("/proc/self/cwd").exists():
        raise InputError("unlock: cannot tell which Snakemake processes are running here (no /proc); check by hand, "
                         "then run `snakemake --unlock`")
    here = Path.cwd()
    alive = running_snakemakes(here)
    if alive:
        print(f"unlock: Snakemake is running in {here} (pid {', '.join(map(str, alive))}); leaving its lock",
              file=sys.stderr)
        return
    locks = here / ".snakemake" / "locks"
    if locks.is_dir() and any(locks.iterdir()):
        rest = args.snakemake_args[1:] if args.snakemake_args[:1] == ["--"] else args.snakemake_args
        done = subprocess.run(["snakemake", "--unlock", *rest], capture_output=True, text=True)
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            raise InputError(f"unlock: `snakemake --unlock` failed: {reason}")
        print(f"unlock: removed the lock a killed Snakemake left in {here}", file=sys.stderr)
    if args.tmpdir is not None and args.tmpdir.is_dir():
        for stale in args.tmpdir.glob("snakemake*"):
            shutil.rmtree(stale, ignore_errors=True)
