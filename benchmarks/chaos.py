"""Chaos: the embedded workflow (tests/test_workflow.py's CI-sized config) killed with SIGKILL to its whole process
group at uniformly random moments, each time in a fresh copy, then re-run as documented (`mdetr-phrasecut unlock`,
the same command; tests/helpers/chaos_trials.py) and compared with an uninterrupted run.

    python benchmarks/chaos.py                 # 3 kills
    python benchmarks/chaos.py --kills 100     # the full run (about 2 h on 2 cores)
    python benchmarks/chaos.py --smoke         # 1 kill, synthetic data and conversion only (the suite's size)
    python benchmarks/chaos.py --kills 100 --trials chaos.jsonl   # also one JSON line per trial, as it ends

A kill lands at a moment drawn uniformly from [0, T), T the uninterrupted run's wall time; a trial whose run ends
before its moment is no kill (counted as `not_killed`, not re-run), and trials go on until `--kills` kills have
landed. A trial is `identical` when the re-run exits 0 and ends with the uninterrupted run's metrics, per-phrase
results, training logs (but their images/s column), checkpoint tensors and a clean audit (smoke: the converted
files, byte for byte); `differ` when it exits 0 with anything else; `failed` when it does not exit 0. `orphans`:
trials where a process outlived the kill (alive 10 s after it, or writing under results/ after it: each trial's
line gives the bytes written); `stray`: trials that left temp or part files or Snakemake temp folders. Prints one
JSON object on its last line, with `ratio` = identical / kills and the rules the kills landed in; each trial's
result is also printed to stderr as it ends (and appended to `--trials FILE`), so a long run's finished
trials survive its end.
"""
import argparse
import itertools
import json
import os
import platform
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from helpers.chaos_trials import (differences, kill_when, outcome, processes_in, snakemake_args,  # noqa: E402
                                  start, stray_files)
from mdetr_phrasecut.infra.io import sha256_file  # noqa: E402
from helpers.workflow import make_workspace  # noqa: E402

SMOKE_TARGET = "results/main/coco/finetune_phrasecut_test.json"
SMOKE_SYNTH = {"train_images": 6, "val_images": 3, "test_images": 3}


def workspace(root: Path, name: str, smoke: bool) -> Path:
    ws = make_workspace(root / name)
    if smoke:
        import yaml

        config = yaml.safe_load((ws / "config" / "tiny.yaml").read_text())
        config["dataset"]["synth"].update(SMOKE_SYNTH)
        (ws / "config" / "tiny.yaml").write_text(yaml.safe_dump(config))
    return ws


def result(ws: Path, smoke: bool):
    if smoke:
        coco = (ws / "results" / "main" / "coco").glob("*.json")
        return {p.name: sha256_file(p) for p in sorted(coco) if not p.name.endswith(".prov.json")}  # (timings)
    return outcome(ws)


def landed_in(ws: Path) -> str:
    """The rule(s) Snakemake had started and not finished when it was killed (from its console log)."""
    log = (ws / "chaos.log").read_text()
    started = re.findall(r"^(?:local)?rule (\w+):\n(?:.*\n)*?    jobid: (\d+)", log, re.M)
    done = set(re.findall(r"^Finished jobid: (\d+)", log, re.M))
    return "+".join(sorted({rule for rule, job in started if job not in done})) or "snakemake, no job running"


def machine() -> str:
    """CPU model and core count (what the figures depend on)."""
    cpuinfo = Path("/proc/cpuinfo")
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M) if cpuinfo.exists() else None
    return f"{model[1] if model else platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=3, help="kills that land, one a trial (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--smoke", action="store_true", help="1 kill, synthetic data and conversion only")
    parser.add_argument("--trials", type=Path, help="append one JSON line per trial to this file, as each ends")
    args = parser.parse_args()
    kills = 1 if args.smoke else args.kills
    target = SMOKE_TARGET if args.smoke else "all"
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        root = Path(tmp)
        ref = workspace(root, "uninterrupted", args.smoke)
        began = time.monotonic()
        if start(ref, snakemake_args(target=target)).wait() != 0:
            sys.exit((ref / "chaos.log").read_text()[-3000:] + "\nthe uninterrupted run failed")
        uninterrupted_s = time.monotonic() - began
        expected = result(ref, args.smoke)
        counts = Counter(identical=0, differ=0, failed=0, orphans=0, stray=0)
        landed, recovery = Counter(), []
        for trial in itertools.count():
            if len(recovery) == kills:
                break
            ws = workspace(root, f"trial{trial}", args.smoke)
            at = rng.uniform(0, uninterrupted_s)
            began = time.monotonic()
            job = start(ws, snakemake_args(target=target))
            kill = kill_when(ws, job, f"{at:.1f} s", lambda _: time.monotonic() - began >= at)
            if kill is not None:  # else the run ended first: no kill, nothing to re-run
                rules = landed_in(ws)
                landed[rules] += 1
                counts["orphans"] += bool(kill.orphans or kill.written)
                code = start(ws, snakemake_args(target=target)).wait()
                recovery.append(time.monotonic() - began)
                diff = []
                if code != 0:
                    counts["failed"] += 1
                else:
                    diff = differences(result(ws, args.smoke), expected)
                    counts["differ" if diff else "identical"] += 1
                stray = stray_files(ws) + [f"pid {pid}: {cmd}" for pid, cmd in processes_in(ws).items()]
                counts["stray"] += bool(stray)
                line = json.dumps({"trial": trial, "kill_at_s": round(at, 1), "landed_in": rules, "rerun_exit": code,
                                   "identical": code == 0 and not diff, "differs_in": diff[:5], "stray": stray[:5],
                                   "orphans": list(kill.orphans.values())[:5], "written_after_kill": kill.written,
                                   "kill_and_rerun_s": round(recovery[-1], 1)})
                print(line, file=sys.stderr, flush=True)
                if args.trials:
                    with args.trials.open("a") as out:
                        out.write(line + "\n")
            shutil.rmtree(ws)  # a long run keeps one trial's copy on disk at a time
    print(json.dumps({"kills": kills, **counts, "not_killed": trial - kills, "landed_in": dict(landed),
                      "uninterrupted_s": round(uninterrupted_s, 1),
                      "kill_and_rerun_s": round(sum(recovery) / kills, 1), "ratio": counts["identical"] / kills,
                      "machine": machine(),
                      "smoke": args.smoke}))


if __name__ == "__main__":
    main()
