"""`mdetr-phrasecut unlock` (`make demo` runs it first): a killed Snakemake's lock and temp folders are cleared, so
the re-run is one command; a live Snakemake's are left alone."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def test_unlock_clears_a_killed_runs_lock_and_temp_folders_but_not_a_live_ones(tmp_path):
    (tmp_path / "Snakefile").write_text('rule a:\n    output: "a"\n    shell: "sleep ${{PAUSE:-0}}; touch {output}"\n')
    tmp, locks = tmp_path / ".snakemake" / "tmp", tmp_path / ".snakemake" / "locks"
    tmp.mkdir(parents=True)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TMPDIR": str(tmp)}

    def run(*args, **extra):
        return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=tmp_path, env={**env, **extra},
                              capture_output=True, text=True, timeout=120)

    live = subprocess.Popen([str(BIN / "snakemake"), "--cores", "1", "a"], cwd=tmp_path, env={**env, "PAUSE": "60"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (locks.is_dir() and any(locks.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.1)
    unlock = run("mdetr-phrasecut", "unlock", "--tmpdir", str(tmp), "--", "--cores", "1")
    assert unlock.returncode == 0 and f"pid {live.pid}" in unlock.stderr, unlock.stderr
    assert any(locks.iterdir()) and list(tmp.glob("snakemake*"))  # the live run's

    os.killpg(live.pid, signal.SIGKILL)
    live.wait()
    unlock = run("mdetr-phrasecut", "unlock", "--tmpdir", str(tmp), "--", "--cores", "1")
    assert unlock.returncode == 0 and "removed the lock" in unlock.stderr, unlock.stderr
    assert not (locks.is_dir() and any(locks.iterdir())) and not list(tmp.glob("snakemake*"))
    assert run("snakemake", "--cores", "1", "a").returncode == 0 and (tmp_path / "a").exists()


def test_make_demo_unlocks_before_it_runs_snakemake():
    repo = Path(__file__).resolve().parents[1]
    plan = subprocess.run(["make", "-n", "demo"], cwd=repo, capture_output=True, text=True, timeout=60).stdout
    lines = [line for line in plan.splitlines() if "--workflow-profile workflow/profiles/default" in line]
    assert len(lines) == 2 and "mdetr-phrasecut unlock --tmpdir" in lines[0], plan
    assert lines[1].startswith("TMPDIR=") and lines[1].endswith(" all"), plan
