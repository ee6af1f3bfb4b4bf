"""The markers conftest's collection hook gives each test: its xdist group and, where it needs root's apt packages,
`system_packages`."""
import pytest

# `make test` spreads the suite over the cores (pytest-xdist, `--dist loadgroup`), a test module to a worker as a
# whole, so a module's fixtures are made once; modules sharing a run share a worker (test_chaos.py compares its
# killed runs with test_workflow.py's demo run).
XDIST_GROUPS = {"test_chaos": "test_workflow"}

# Tests on a real Slurm cluster need Debian's slurm-wlm and munge (`make slurm-deps`, root): marked
# `system_packages` like the Chromium test, so `make test-without-root` deselects them by name (never skips them).
SYSTEM_FIXTURES = {"cluster", "cluster3"}


def mark(item):
    """Add a collected test's markers."""
    module = item.module.__name__
    item.add_marker(pytest.mark.xdist_group(XDIST_GROUPS.get(module, module)))
    if SYSTEM_FIXTURES & set(item.fixturenames):
        item.add_marker(pytest.mark.system_packages)
