"""Every benchmark script (found by glob, so scripts added later are covered too) runs at its smallest size
(`--smoke` where the script has it, else its small default) and ends with one JSON object carrying a ratio."""
import json
import math
import os
import subprocess
import sys

import pytest

from helpers.paths import REPO

SCRIPTS = sorted(p for p in (REPO / "benchmarks").glob("*.py") if "__main__" in p.read_text())


def ratios(obj):
    """Values of every `ratio` / `*_ratio` key of a (nested) JSON object."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "ratio" or key.endswith("_ratio"):
                yield value
            yield from ratios(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from ratios(value)


def test_the_benchmarks_folder_is_found():
    assert {"convert.py", "evaluate.py", "model_forward.py", "train_throughput.py"} <= {p.name for p in SCRIPTS}


def test_no_script_folder_shadows_the_standard_library():
    """benchmarks/ (each script's sys.path[0]) and tests/ (on sys.path under pytest) hold no module named like a
    standard-library one, which an `import` anywhere in that process would pick up instead."""
    modules = {p.stem for folder in ("benchmarks", "tests", "tests/helpers") for p in (REPO / folder).glob("*.py")}
    assert "convert" in modules and not modules & sys.stdlib_module_names


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_runs_at_its_smallest_size(script, tmp_path):
    args = ["--smoke"] if '"--smoke"' in script.read_text() else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"{script.name} {args}: exit {done.returncode}\n{done.stderr[-3000:]}"
    lines = done.stdout.strip().splitlines()
    assert lines, f"{script.name}: printed nothing"
    result = json.loads(lines[-1])
    assert isinstance(result, dict), f"{script.name}: the last line is not a JSON object"
    found = list(ratios(result))
    assert found, f"{script.name}: no `ratio` field in {lines[-1][:300]}"
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in found), found
