"""Missing fixtures fail the tests that need them, naming what is missing; no test skips."""
import ast
from pathlib import Path

import pytest

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
