"""Docs that run: every command quoted in README.md (```bash blocks), in the Snakefile's and the configs' comments
is executed here, so a quoted command cannot rot.

- `snakemake ...`: as quoted plus `-n` (a dry run: it would train), in a copy of the workflow; it must plan jobs;
- `make T`: `make -n T`; `source .venv/bin/activate`: the venv `make install` creates;
- `mdetr-phrasecut SUB ...`, `python benchmarks/X.py ...`: `--help`, which must list every option the command and
  its comment quote; repository paths they name must exist;
- `cp SRC DST` (the demo's stage-0 checkpoint): SRC is an output of the block's snakemake command, DST the file the
  embedded config's download entry names;
- `python -m pytest ARGS`: its tests/ paths name test modules (or tests in them).
A quoted command of any other kind fails the test until it is covered here.
"""
import os
import re
import runpy
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from test_workflow import BIN, copy_workflow

from mdetr_phrasecut import cli

REPO = Path(__file__).resolve().parents[1]
COMMENTED = ["Snakefile", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "config").glob("*.yaml")),
             *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "workflow" / "profiles").glob("*/config.yaml"))]
PATH_ARG = re.compile(r"^(config|benchmarks|resources|src|tests|workflow)/")


def split_command(line):
    """(words, comment) of a shell line: `a && b` gives one entry per command."""
    code, _, comment = line.partition(" #")
    return [shlex.split(part) for part in code.split("&&")], comment


def readme_commands():
    """(where, block number, words, comment) of every command line in README's ```bash blocks."""
    text = (REPO / "README.md").read_text()
    for number, block in enumerate(re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                words, comment = split_command(line)
                for w in words:
                    yield "README.md", number, w, comment


def comment_commands():
    """Commands quoted in comments: `#   command` (indented after the `#`)."""
    for name in COMMENTED:
        for number, line in enumerate((REPO / name).read_text().splitlines()):
            m = re.match(r"\s*#\s{2,}(\S.*)$", line)
            if m:
                words, comment = split_command(m[1])
                for w in words:
                    yield name, number, w, comment


COMMANDS = list(readme_commands()) + list(comment_commands())


def quoted_options(words, comment):
    return {w.split("=")[0] for w in words + re.findall(r"--[\w-]+", comment) if w.startswith("--")}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("docs"))


def dry_run(workspace, words):
    assert words[0] == "snakemake"
    args = [w for w in words[1:] if w not in ("-n", "--dry-run")]
    run = subprocess.run([str(BIN / "snakemake"), *args, "-n"], cwd=workspace, capture_output=True, text=True,
                         env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "Job stats:" in run.stdout, run.stdout[-2000:]
    return run.stdout


def help_text(capsys, words):
    """The --help of a `mdetr-phrasecut SUB` or `python benchmarks/X.py` command, run in this process."""
    if words[0] == "mdetr-phrasecut":
        call = lambda: cli.main([words[1], "--help"])  # noqa: E731
    else:
        assert words[:1] == ["python"] and words[1].startswith("benchmarks/"), words
        call = lambda: runpy.run_path(str(REPO / words[1]), run_name="__main__")  # noqa: E731
    argv = sys.argv
    sys.argv = [words[1], "--help"]
    try:
        with pytest.raises(SystemExit) as done:
            call()
    finally:
        sys.argv = argv
    assert done.value.code == 0
    return capsys.readouterr().out


def collects_tests(args):
    """Each tests/ path (or path::test) among pytest's arguments names a test module (or a test in it)."""
    paths = [a for a in args if a.startswith("tests/")]
    for arg in paths:
        path, _, name = arg.partition("::")
        source = (REPO / path).read_text() if (REPO / path).is_file() else ""
        if not re.search(rf"^def {name or 'test_'}", source, re.M):
            return False
    return bool(paths)


def test_every_quoted_command_runs(workspace, capsys):
    unique = list(dict.fromkeys(tuple(words) for _, _, words, _ in COMMANDS if words[0] == "snakemake"))
    with ThreadPoolExecutor(2) as pool:  # the dry runs, two at a time
        dry_runs = dict(zip(unique, pool.map(lambda words: dry_run(workspace, list(words)), unique)))
    ran = []
    last_dry_run = {}  # (where, block) -> stdout of its last snakemake dry run
    for where, block, words, comment in COMMANDS:
        context = f"{where}, block/line {block}: {shlex.join(words)}"
        tool = words[0]
        if tool == "snakemake":
            last_dry_run[(where, block)] = dry_runs[tuple(words)]
        elif tool == "make":
            run = subprocess.run(["make", "-n", *words[1:]], cwd=REPO, capture_output=True, text=True)
            assert run.returncode == 0 and run.stdout.strip(), context + run.stderr
        elif tool == "source":
            venv = words[1].split("/bin/activate")[0]
            # -B: what `make install` runs on a fresh clone, also where the venv exists already
            make = subprocess.run(["make", "-n", "-B", "install"], cwd=REPO, capture_output=True, text=True).stdout
            assert f"-m venv {venv}" in make, context
        elif tool == "mdetr-phrasecut" or tool == "python" and words[1].startswith("benchmarks/"):
            text = help_text(capsys, words)
            missing = sorted(o for o in quoted_options(words, comment) if o not in text and o != "--help")
            assert not missing, f"{context}: options not in --help: {missing}"
            for arg in words:
                assert not PATH_ARG.match(arg) or (REPO / arg).exists(), f"{context}: {arg} does not exist"
        elif tool == "cp":
            src, dst = words[1:]
            assert f"output: {src}" in last_dry_run.get((where, block), ""), f"{context}: {src} is no output of the block"
            urls = [e["url"] for e in yaml.safe_load((REPO / "config" / "config.yaml").read_text())["downloads"].values()]
            assert f"file://{{repo}}/{dst}" in urls, f"{context}: no download entry of config/config.yaml names {dst}"
        elif words[:3] == ["python", "-m", "pytest"]:
            assert collects_tests(words[3:]), f"{context}: names no test module of tests/"
        else:
            pytest.fail(f"{context}: no way to run this quoted command here; cover it in {Path(__file__).name}")
        ran.append(context)
    assert sum(c.startswith("README.md") for c in ran) >= 15 and any(c.startswith("Snakefile") for c in ran)


def test_every_path_in_the_architecture_doc_exists():
    """docs/architecture.md: each quoted repository path exists (a glob matches; a bare `x.py` is in the folder its
    paragraph last named), and each `path::name` names a def, class or assignment of that file."""
    checked = []
    for paragraph in (REPO / "docs" / "architecture.md").read_text().split("\n\n"):
        folder = None
        for quoted in re.findall(r"`([^`\s]+)`", paragraph):
            path, _, name = quoted.partition("::")
            if PATH_ARG.match(path) or path in ("Snakefile", "README.md"):
                target = REPO / path
                folder = target if path.endswith("/") else target.parent
            elif re.fullmatch(r"[\w.]+\.(py|smk)", path) and folder is not None:
                target = folder / path
            else:
                continue
            exists = any(REPO.glob(path)) if "*" in path else target.exists()
            assert exists, f"docs/architecture.md: {quoted}: {target.relative_to(REPO)} does not exist"
            if name:
                assert re.search(rf"^\s*(def|class) {name}\b|^{name} = ", target.read_text(), re.M), \
                    f"docs/architecture.md: {quoted}: no {name} in {path}"
            checked.append(quoted)
    assert len(checked) >= 50 and any("::" in q for q in checked) and any("/" not in q for q in checked)
