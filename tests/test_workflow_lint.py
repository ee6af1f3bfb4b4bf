"""The workflow's shape: `snakemake --lint` (both configs), `snakefmt --check` and `ruff check` find nothing, every
rule's conda environment carries the pins of requirements.txt, one training rule over `{stage}` with its processes as
`threads`, each local training process taking its share of a job's threads (results would depend on them
otherwise), every file a data job reads among its inputs, and short job commands (long JSON values passed as
`@FILE`, which the CLI reads in its place)."""
import json
import os
import re
import subprocess
import sys

from pathlib import Path

import pytest
import yaml

from mdetr_phrasecut import cli
from mdetr_phrasecut.config import read_mapping
from helpers.requirements import read_requirements

CONFIGS = {"embedded": [], "published": ["--configfile", "config/phrasecut.yaml"]}
FILE_OPTIONS = ("--record", "--config-json")  # the JSON values a job passes as @FILE


def run(repo_dir, *args):
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=repo_dir, capture_output=True, text=True)


@pytest.mark.parametrize("config", CONFIGS)
def test_lint_finds_nothing(repo_dir, config):
    out = run(repo_dir, "--lint", *CONFIGS[config])
    assert out.returncode == 0 and "Lints for" not in out.stdout + out.stderr, (out.stdout + out.stderr)[-3000:]
    assert "Congratulations" in out.stdout + out.stderr


def test_snakefmt_check_finds_nothing(repo_dir):
    snakefmt = Path(sys.executable).parent / "snakefmt"
    out = subprocess.run([snakefmt, "--check", "Snakefile", "workflow"], cwd=repo_dir, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]


def test_ruff_finds_nothing(repo_dir):
    """The Python code passes ruff with the rules of pyproject.toml ([tool.ruff])."""
    ruff = Path(sys.executable).parent / "ruff"
    out = subprocess.run([ruff, "check", "--no-cache", "src", "tests", "benchmarks"], cwd=repo_dir, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout[-3000:]


def test_conda_env_of_the_rules_has_the_pins_of_requirements(repo_dir):
    env = yaml.safe_load((repo_dir / "workflow" / "envs" / "mdetr-phrasecut.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert dict(p.lower().split("==") for p in pip_section) == read_requirements(repo_dir / "requirements.txt")
    assert "python=3.11" in env["dependencies"]
    deploy = (repo_dir / "workflow" / "envs" / "mdetr-phrasecut.post-deploy.sh").read_text()
    assert "pip install --no-deps -e ." in deploy  # the package itself, into the rules' environment


def dry_run_jobs(repo_dir, *args):
    """[(rule, {field: value}, shell command)] of a dry run with 4 cores (so `threads` are not capped)."""
    out = run(repo_dir, "-n", "-p", "--forceall", "--cores", "4", *args)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out.stdout):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        if rule:
            fields = dict(re.findall(r"^    (\w+): (.*)$", block, re.M))
            fields["wildcards"] = dict(w.split("=") for w in fields.get("wildcards", "").split(", ") if w)
            jobs.append((rule[1], fields, re.search(r"^Shell command: ((?:.*\\\n)*.*)$", block, re.M)[1]))
    return jobs


def test_one_training_rule_over_stage_with_its_processes_as_threads(repo_dir):
    jobs = dry_run_jobs(repo_dir, "results/runs/demo/test/metrics.json")
    train = {f["wildcards"]["stage"]: (f, command) for rule, f, command in jobs if rule == "train"}
    assert set(train) == {"stage1", "stage2"}
    for stage, init in (("stage1", "results/downloads/demo_pretrained/"), ("stage2", "results/runs/demo/stage1/")):
        fields, command = train[stage]
        assert fields["threads"] == "2"  # resources.default.tasks_per_node: torchrun's two processes
        assert ("torchrun --standalone --nproc-per-node=2 --signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 "
                "-m mdetr_phrasecut.cli") in command
        assert f"train --stage {stage} " in command and f"--init {init}" in command
        assert f"--out-dir results/runs/demo/{stage} " in command and f"2> results/logs/{stage}_demo.log" in command
    evaluate = next(fields for rule, fields, _ in jobs if rule == "evaluate")
    workers = read_mapping(repo_dir / "config" / "config.yaml")["evaluate"]["workers"]
    assert evaluate["threads"] == str(workers) != "1"


def test_each_local_process_takes_its_share_of_a_jobs_threads(repo_dir):
    """Snakemake exports OMP_NUM_THREADS and MKL_NUM_THREADS = the job's threads (here 2, torchrun's processes on
    the node): each of the two computes with one intra-op thread, as one process on each of two nodes does; a
    process started alone keeps both."""
    code = ("import torch; from mdetr_phrasecut.engine.distributed import init_distributed; "
            "before = torch.get_num_threads(); init_distributed('cpu'); print(before, torch.get_num_threads())")
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    env.pop("LOCAL_WORLD_SIZE", None)
    for local_processes, want in ((None, ["2", "2"]), ("2", ["2", "1"]), ("1", ["2", "2"])):
        run_env = env if local_processes is None else {**env, "LOCAL_WORLD_SIZE": local_processes}
        out = subprocess.run([sys.executable, "-c", code], env=run_env, capture_output=True, text=True, check=True)
        assert out.stdout.split() == want, (local_processes, out.stdout)


@pytest.mark.parametrize("config", CONFIGS)
def test_job_commands_are_short_and_their_json_is_read_from_files(repo_dir, config):
    """No job's command carries the JSON of --record or --config-json, its @FILE holds it, nor a stage's spec, its
    --spec file holds it; each named by its content. Every job's command is broken into lines within 200
    characters as a dry run prints them (a training job's fits on a few), a stage's ending with its key settings."""
    jobs = dry_run_jobs(repo_dir, "all", *CONFIGS[config])
    assert {rule for rule, _, _ in jobs} >= {"convert", "train", "evaluate", "plots", "table", "audit"}
    embedded = read_mapping(repo_dir / "config" / "config.yaml")
    for rule, fields, command in jobs:
        if rule == "all":  # no command
            continue
        words = command.split()
        values = {option: words[i + 1] for i, option in enumerate(words) if option in FILE_OPTIONS + ("--spec",)}
        assert "--config-json" in values if rule == "audit" else "--record" in values, (rule, command)
        assert all(re.fullmatch(r"@?\.snakemake/args/[0-9a-f]{16}\.json", v) for v in values.values()), (rule, command)
        assert ("--spec" in values) == (rule in ("pretrain", "train", "evaluate", "evaluate_released", "recipe_audit"))
        assert not values.get("--spec", "").startswith("@"), (rule, command)  # a file the command opens itself
        assert all(len(v) < 400 for v in re.findall(r"'[\[{].*?[\]}]'", command)), (rule, command)  # small JSON
        read = {option: json.loads((repo_dir / v.lstrip("@")).read_text()) for option, v in values.items()}
        if "--record" in read:
            assert set(read["--record"]["outputs"]) == set(fields["output"].split(", ")), (rule, command)
        assert max(map(len, command.splitlines())) <= 200 - len("Shell command: "), (rule, command)
        if rule in ("pretrain", "train"):  # the key settings, readable; the whole spec is in --spec
            assert re.search(r"  # \w+ (pretrain|stage\d): \d+ epochs, lr \S+, batch \d+ per process, seed \d+$",
                             command), command
        if rule.startswith("evaluate"):
            settings = r"  # threshold \S+, size \d+/\d+, batch \d+ x \d+, (EMA|model) weights$"
            assert re.search(settings, command), command
        if rule == "train":
            assert len(command) < 700, command
            stage = fields["wildcards"]["stage"]
            assert list(read["--record"]["config"]["train"]) == [stage]
            if config == "embedded":
                assert read["--spec"]["train"]["epochs"] == embedded["train"][stage]["epochs"]


def test_an_argument_file_stands_for_its_lines_and_a_missing_one_is_one_line(tmp_path, capsys, monkeypatch):
    record = {"outputs": [], "inputs": [], "config": {"a": [1, "two"]}}
    (tmp_path / "record.json").write_text(json.dumps(record) + "\n")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.md").write_text("| run |\n")
    parser, _ = cli.build_parser("audit")
    args = parser.parse_args(["--record", f"@{tmp_path / 'record.json'}", "audit", "results/table.md"])
    assert args.record == record and args.command == "audit" and args.target == Path("results/table.md")
    assert cli.main(["--record", f"@{tmp_path / 'gone.json'}", "audit", "results/table.md"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gone.json" in err


@pytest.mark.parametrize("config", CONFIGS)
def test_jobs_reading_an_originals_folder_wait_for_its_image_split(repo_dir, config):
    """convert and audit_annotations read `--root`'s image_data_split.json as well as its refer file: both are
    inputs, else a job may start before the split file is downloaded (as audit_annotations once did)."""
    jobs = [(rule, fields) for rule, fields, _ in dry_run_jobs(repo_dir, "all", *CONFIGS[config])
            if rule in ("convert", "audit_annotations")]
    assert {rule for rule, _ in jobs} >= ({"convert", "audit_annotations"} if config == "published" else {"convert"})
    for rule, fields in jobs:
        assert "image_data_split.json" in fields["input"] and "refer_" in fields["input"], (rule, fields["input"])
