"""Docs that run: every command quoted in README.md and docs/*.md (```bash blocks), in the Snakefile's and the
configs' comments is executed here, so a quoted command cannot rot.

- `snakemake ...`: parsed by Snakemake's own parser from the repository root (profiles loaded as there): it names a
  target, gets the default workflow profile's rerun-incomplete and rerun triggers; then as quoted plus `-n` (a dry
  run: it would train), in a copy of the workflow; it must plan jobs (a forced one, not `all`, with `--forcerun`;
  one node per job with config/one_node.yaml);
- `make T`: `make -n T`; `source .venv/bin/activate`: the venv `make install` creates;
- `mdetr-phrasecut SUB ...`, `python benchmarks/X.py ...`: `--help`, which must list every option the command and
  its comment quote; repository paths they name must exist;
- `cp SRC DST` (the demo's stage-0 checkpoint): SRC is an output of the block's snakemake command, DST the file the
  embedded config's download entry names;
- `python -m pytest ARGS`: its tests/ paths name test modules (or tests in them).
A quoted command of any other kind fails the test until it is covered here.
Commands quoted inline (`snakemake --unlock`, `make test-without-root`, `mdetr-phrasecut audit ...`): Snakemake's parser
accepts them, `make -n` knows the target, `--help` lists the options, a module or file they name exists.
Config keys quoted in README.md, docs/*.md and config/README.md (`resources.<stage>.partition`,
`statistics.unit: image`, `{train: {stage1: ...}}`) must be keys of the config schema.
"""
import importlib.util
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
from helpers.paths import BIN
from helpers.workflow import copy_workflow

from mdetr_phrasecut import cli

REPO = Path(__file__).resolve().parents[1]
COMMENTED = ["Snakefile", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "config").glob("*.yaml")),
             *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "workflow" / "profiles").glob("*/config.yaml"))]
SRC = REPO / "src" / "mdetr_phrasecut"
SCHEMA = yaml.safe_load((SRC / "assets" / "config.schema.yaml").read_text())
DOCS = ["README.md", "config/README.md",
        *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))]
FILE_NAME = re.compile(r"\.(py|smk|md|json|yaml|csv|tsv|pth|png)$")
PATH_ARG = re.compile(r"^(config|benchmarks|resources|src|tests|workflow)/")


def split_command(line):
    """(words, comment) of a shell line: `a && b` gives one entry per command."""
    code, _, comment = line.partition(" #")
    return [shlex.split(part) for part in code.split("&&")], comment


def doc_commands():
    """(where, block number, words, comment) of every command line in the ```bash blocks of README and docs/."""
    for name in DOCS:
        text = (REPO / name).read_text()
        for number, block in enumerate(re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)):
            for line in block.replace("\\\n", " ").splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    words, comment = split_command(line)
                    for w in words:
                        yield name, number, w, comment


def comment_commands():
    """Commands quoted in comments: `#   command` (indented after the `#`)."""
    for name in COMMENTED:
        for number, line in enumerate((REPO / name).read_text().splitlines()):
            m = re.match(r"\s*#\s{2,}(\S.*)$", line)
            if m:
                words, comment = split_command(m[1])
                for w in words:
                    yield name, number, w, comment


COMMANDS = list(doc_commands()) + list(comment_commands())


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
    argv, path = sys.argv, list(sys.path)
    sys.argv = [words[1], "--help"]
    sys.path.insert(0, str((REPO / words[1]).parent))  # as `python benchmarks/X.py` puts its folder first
    try:
        with pytest.raises(SystemExit) as done:
            call()
    finally:
        sys.argv, sys.path[:] = argv, path
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
            check_plan(context, words, dry_runs[tuple(words)])
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
            plan = last_dry_run.get((where, block), "")
            assert f"output: {src}" in plan, f"{context}: {src} is no output of the block"
            downloads = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["downloads"]
            urls = [e["url"] for e in downloads.values()]
            assert f"file://{{repo}}/{dst}" in urls, f"{context}: no download entry of config/config.yaml names {dst}"
        elif words[:3] == ["python", "-m", "pytest"]:
            assert collects_tests(words[3:]), f"{context}: names no test module of tests/"
        else:
            pytest.fail(f"{context}: no way to run this quoted command here; cover it in {Path(__file__).name}")
        ran.append(context)
    assert sum(c.split(",")[0] in DOCS for c in ran) >= 15 and any(c.startswith("Snakefile") for c in ran)


def check_plan(context, words, dry_run_out):
    """What a dry run plans is what the command means: `--forcerun X` forces X and runs the target, not `all`;
    config/one_node.yaml puts every job on one node (torchrun there, never `srun --nodes=N`)."""
    planned = set(re.findall(r"^(?:local)?rule (\w+):", dry_run_out, re.M))
    if "--forcerun" in words:
        assert "reason: Forced execution" in dry_run_out, f"{context}: nothing forced"
        assert "all" in words or "all" not in planned, f"{context}: plans `all`: its target was swallowed"
    if "config/one_node.yaml" in words:
        nodes = set(re.findall(r"\bnodes=(\d+)", dry_run_out))
        assert nodes == {"1"} and "srun" not in dry_run_out, f"{context}: a job on more than one node: {nodes}"
        assert "torchrun --standalone --nproc-per-node=8 " in dry_run_out, context


def snakemake_commands():
    """{words: where} of every quoted snakemake command."""
    found = {}
    for where, block, words, _ in COMMANDS:
        if words[0] == "snakemake":
            found.setdefault(tuple(words), f"{where}, block/line {block}")
    return found


def test_every_quoted_snakemake_command_names_its_target_and_gets_the_workflow_profile(monkeypatch):
    """Parsed as Snakemake parses it, from the repository root: a target (not swallowed by `--forcerun` or
    `--configfile`, which take every word after them), config files that exist, and the default workflow profile's
    rerun-incomplete and rerun triggers, also beside `--profile slurm`."""
    from snakemake.cli import parse_args

    profile = yaml.safe_load((REPO / "workflow" / "profiles" / "default" / "config.yaml").read_text())
    assert profile["rerun-incomplete"] is True
    monkeypatch.chdir(REPO)
    commands = snakemake_commands()
    for words, where in commands.items():
        context = f"{where}: {shlex.join(words)}"
        args = parse_args(list(words[1:]))[1]
        assert args.targets, f"{context}: no target"
        assert all((REPO / f).is_file() for f in args.configfile or []), f"{context}: {args.configfile}"
        assert args.rerun_incomplete, f"{context}: no rerun-incomplete"
        triggers = {t.name.lower().replace("_", "-") for t in args.rerun_triggers}
        assert triggers == set(profile["rerun-triggers"]), f"{context}: {triggers}"
    assert any("--profile" in words for words in commands) and any("--forcerun" in words for words in commands)


def schema_has(node, parts, schema):
    """Whether the dotted config path `parts` is a key of `node` (a schema node); a placeholder (`<stage>`,
    `{run}`, `*`, `X`) stands for any key. A run's `model` and `train` overrides are the top-level sections'."""
    while "$ref" in node or "allOf" in node:
        node = {**{k: v for k, v in node.items() if k not in ("$ref", "allOf")},
                **(schema["definitions"][node["$ref"].split("/")[-1]] if "$ref" in node else node["allOf"][0])}
    if not parts:
        return True
    if "oneOf" in node:  # runs.<run>.published: null or an object
        return any(schema_has(branch, parts, schema) for branch in node["oneOf"])
    key, rest = parts[0], parts[1:]
    props = node.get("properties", {})
    if re.fullmatch(r"<\w+>|\{\w+\}|\*|[A-Z]", key):
        children = list(props.values()) + [v for v in [node.get("additionalProperties")] if isinstance(v, dict)]
        return any(schema_has(child, rest, schema) for child in children)
    if key in props:
        return schema_has(props[key], rest, schema)
    extra = node.get("additionalProperties")
    return isinstance(extra, dict) and schema_has(extra, rest, schema)


def quoted_config_keys(text):
    """Config paths quoted in markdown: `a.b.c` or `a.b: value` (first key a top-level section; a Python module
    path `model.positive_map.f` is not one) and flow mappings `{section: {...}}` / `section: {...}`."""
    sections = set(SCHEMA["properties"])
    for span in re.findall(r"`([^`\n]+)`", text):
        dotted = re.fullmatch(r"([a-z_]+(?:\.(?:[\w*]+|<\w+>|\{\w+\}))+)(?::\s.*)?", span)
        if dotted and dotted[1].split(".")[0] in sections and not FILE_NAME.search(dotted[1]):
            parts = dotted[1].split(".")
            is_module = any((SRC / Path(*parts[:i])).with_suffix(".py").exists() for i in range(1, len(parts) + 1))
            if not is_module:
                yield span, parts
        elif ":" in span:
            try:
                value = yaml.safe_load(span)
            except yaml.YAMLError:
                continue
            if isinstance(value, dict) and value and set(value) <= sections:
                yield from ((span, path) for path in mapping_paths(value))


def mapping_paths(mapping, prefix=()):
    for key, value in mapping.items():
        if isinstance(value, dict) and value and not (prefix[-1:] == ("published",)):
            yield from mapping_paths(value, (*prefix, str(key)))
        else:
            yield [*prefix, str(key)]


def test_every_config_key_quoted_in_the_docs_is_a_key_of_the_schema():
    checked = []
    for name in DOCS:
        for span, parts in quoted_config_keys((REPO / name).read_text()):
            if parts[0] == "runs" and len(parts) > 2 and parts[2] in ("model", "train"):
                parts = [parts[2], *parts[3:]]  # a run's overrides of the top-level section
            assert schema_has(SCHEMA, parts, SCHEMA), f"{name}: `{span}`: {'.'.join(parts)} is no key of the schema"
            checked.append(span)
    assert len(checked) >= 10 and "resources.<stage>.partition" in checked, checked


def defines(text, name):
    """Whether `text` (Python, Snakemake or YAML) defines `name`: a def, class, rule, assignment or mapping key."""
    return re.search(rf"^\s*(?:(?:def|class|rule)\s+{name}\b|{name}\s*(?::|=(?!=)))", text, re.M) is not None


def identifier_like(word):
    """A bare word that reads as a name of the code, not as prose or a placeholder: a CONSTANT, a CamelCase class or
    a snake_case name."""
    return re.fullmatch(r"[A-Za-z_]\w*", word) is not None and (
        "_" in word.strip("_") or re.fullmatch(r"[A-Z][A-Z0-9_]{3,}", word) is not None
        or re.fullmatch(r"[A-Z][a-z0-9]+[A-Z]\w*", word) is not None)


def test_every_name_in_the_architecture_doc_is_defined_where_it_says():
    """docs/architecture.md: each bare name quoted like `COST_STAGES` or `StageConfig` is defined in src/ or
    workflow/, and in the file it is said to be of (`NAME` of `path`)."""
    sources = {path: path.read_text() for folder in ("src", "workflow") for path in (REPO / folder).rglob("*")
               if path.suffix in (".py", ".smk", ".yaml") and path.is_file()}
    text = (REPO / "docs" / "architecture.md").read_text()
    names = sorted({word for word in re.findall(r"`([^`\s]+)`", text) if identifier_like(word)})
    for name in names:
        assert any(defines(source, name) for source in sources.values()), \
            f"docs/architecture.md: `{name}` is defined nowhere in src/ or workflow/"
    placed = re.findall(r"`(\w+)` (?:of|in) `([\w./-]+\.(?:py|smk))`", text)
    for name, path in placed:
        if identifier_like(name):
            assert defines((REPO / path).read_text(), name), f"docs/architecture.md: `{name}` is not defined in {path}"
    assert {"COST_STAGES", "STAGES", "StageConfig"} <= set(names) and placed, (names, placed)


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


INLINE_TOOLS = ("snakemake", "mdetr-phrasecut", "make", "sudo", "python", "pytest", "conda")
EXTERNAL = {"hf"}  # other projects' tools, quoted as they document them


def inline_commands():
    """(where, words, span) of every command quoted inline in the docs: a code span starting with a tool's name."""
    for name in DOCS:
        text = re.sub(r"^```.*?^```", "", (REPO / name).read_text(), flags=re.S | re.M)
        for span in re.findall(r"`([^`\n]+)`", text):
            words = span.split()
            if len(words) > 1 and (words[0] in INLINE_TOOLS or words[0] in EXTERNAL):
                yield name, words, span


def test_every_inline_command_is_valid(capsys):
    from snakemake.cli import parse_args

    checked = []
    for where, words, span in inline_commands():
        context = f"{where}: `{span}`"
        if words[0] == "sudo":
            words = words[1:]
        tool = words[0]
        if tool == "snakemake":
            try:
                args = parse_args(words[1:])[1]
            except SystemExit:  # Snakemake's usage error (printed above)
                pytest.fail(f"{context}: Snakemake's parser refuses it")
            assert all((REPO / f).is_file() for f in args.configfile or []), context
        elif tool == "make":
            targets = [w for w in words[1:] if not w.startswith("-")]
            run = subprocess.run(["make", "-n", *targets], cwd=REPO, capture_output=True, text=True)
            assert run.returncode == 0, f"{context}: {run.stderr.strip()}"
        elif tool == "mdetr-phrasecut":
            if words[1] == "SUB":  # the placeholder for any subcommand
                continue
            assert words[1] in cli.COMMANDS, f"{context}: no subcommand {words[1]}"
            text = help_text(capsys, words)
            missing = sorted(o for o in quoted_options(words, "") if o.strip("[]") not in text and o != "--help")
            assert not missing, f"{context}: options not in --help: {missing}"
        elif tool == "python" and words[1] == "-m":
            module = words[2]
            assert importlib.util.find_spec(module), f"{context}: no module {module}"
            text = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                                  cwd=REPO).stdout
            assert all(o in text for o in quoted_options(words, "")), f"{context}: options not in --help"
        elif tool == "python" and words[1] == "-c":
            compile(span.split(" -c ", 1)[1].strip("\"'"), context, "exec")
        elif tool == "python":
            assert (REPO / words[1]).is_file(), f"{context}: no {words[1]}"
            text = help_text(capsys, words)
            assert all(o in text for o in quoted_options(words, "")), f"{context}: options not in --help"
        elif tool == "pytest":
            expression = words[words.index("-k") + 1]
            assert any(re.search(rf"^def test_\w*{expression}", p.read_text(), re.M)
                       for p in (REPO / "tests").glob("test_*.py")), f"{context}: selects no test"
        elif tool == "conda":
            assert (REPO / words[-1]).is_file(), f"{context}: no {words[-1]}"
        checked.append(span)
    assert {"make test-without-root", "snakemake --unlock"} <= set(checked) and len(checked) >= 30, checked


def anchors(path):
    """GitHub's anchors of a markdown file's headings."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower().replace("`", "")).replace(" ", "-") for h in headings}


def test_every_relative_link_in_the_docs_resolves():
    """[text](path#anchor) in README.md, config/README.md and docs/*.md: the file exists and has the heading."""
    checked = []
    for name in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", (REPO / name).read_text()):
            if re.match(r"https?://", target):
                continue
            path, _, anchor = target.partition("#")
            file = (REPO / name).parent / path if path else REPO / name
            assert file.exists(), f"{name}: link {target}: {file.relative_to(REPO)} does not exist"
            assert not anchor or anchor in anchors(file), f"{name}: link {target}: no heading #{anchor}"
            checked.append(target)
    assert len(checked) >= 30, checked
