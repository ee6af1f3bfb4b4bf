"""Missing fixtures fail the tests that need them, naming what is missing; no test skips."""
import ast
import subprocess
from pathlib import Path

import pytest

from helpers.markers import mark
from helpers.paths import require

TESTS = Path(__file__).resolve().parent
SKIPS = {"skip", "importorskip", "skipif"}


def test_require_fails_naming_the_missing_path(tmp_path):
    assert require(tmp_path) == tmp_path
    with pytest.raises(pytest.fail.Exception, match=f"test fixture not found: {tmp_path / 'gone'}$"):
        require(tmp_path / "gone")


def test_no_test_skips():
    found = []
    for path in sorted(TESTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in SKIPS:
                found.append(f"{path.name}:{node.lineno}: {node.attr}")
    assert not found


def test_an_empty_parameter_list_fails_collection(request):
    assert request.config.getini("empty_parameter_set_mark") == "fail_at_collect"



class Item:
    """What the collection hook (helpers/markers.py::mark) reads of a collected test."""

    def __init__(self, module, fixturenames):
        self.module, self.fixturenames, self.markers = type("M", (), {"__name__": module}), fixturenames, []

    def add_marker(self, marker):
        self.markers.append(marker.name)


def test_without_root_deselects_exactly_the_tests_needing_root_packages_and_says_so(repo_dir):
    """`make test-without-root` deselects (never skips) the tests marked system_packages, listing them first, and
    installs nothing with apt; a test is marked exactly when it takes a Slurm cluster fixture (helpers/markers.py marks
    it) or drives Chromium (its decorator), as read from the sources."""
    needs, marked = set(), set()
    for path in sorted(TESTS.glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
                continue
            args = [a.arg for a in node.args.args]
            calls = {c.func.id for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
            if {"cluster", "cluster3"} & set(args) or "chromium" in calls:
                needs.add(f"{path.name}::{node.name}")
            item = Item(path.stem, args)
            mark(item)
            decorated = any("system_packages" in ast.unparse(d) for d in node.decorator_list)
            if decorated or "system_packages" in item.markers:
                marked.add(f"{path.name}::{node.name}")
    assert marked == needs and len(needs) >= 6, (marked ^ needs)
    make = subprocess.run(["make", "-n", "test-without-root"], cwd=repo_dir, capture_output=True, text=True).stdout
    assert "-m system_packages | grep ::" in make and '-m "not system_packages"' in make, make
    assert "apt-get" not in make, make
