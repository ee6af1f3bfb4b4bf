"""Wall time of each stage of the embedded demo (`make demo`), from Snakemake's per-rule benchmark files.

    python benchmarks/demo_stages.py            # runs the embedded default in a temporary copy of the workflow
    python benchmarks/demo_stages.py --results results   # reads an existing run's results/benchmarks/
    python benchmarks/demo_stages.py --smoke             # only synthetic data (16 images) and one conversion

Prints one JSON object on its last line: seconds and peak RSS (MB) per stage, the total, and each stage's share
of the total and of the demo's 15-minute budget (`ratio`: the total over the budget).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 15 * 60
WORKFLOW_FILES = ("Snakefile", "workflow", "config", "resources", "src/mdetr_phrasecut/assets")
SMOKE_TARGET = "results/main/coco/finetune_phrasecut_test.json"
SMOKE_SYNTH = {"train_images": 8, "val_images": 4, "test_images": 4}


def run_demo(workspace: Path, cores: int, smoke: bool = False) -> float:
    """Run the embedded default (`smoke`: only up to SMOKE_TARGET, on SMOKE_SYNTH's few images) in a copy of
    the workflow; returns the wall time."""
    for name in WORKFLOW_FILES:
        src, dst = REPO / name, workspace / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    targets = ["all"]
    if smoke:
        config = yaml.safe_load((REPO / "config/config.yaml").read_text())
        config["dataset"]["synth"].update(SMOKE_SYNTH)
        (workspace / "config/smoke.yaml").write_text(yaml.safe_dump(config))
        targets = [SMOKE_TARGET, "--configfile", "config/smoke.yaml"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(cores), *targets], cwd=workspace, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def stage_times(results: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted((results / "benchmarks").glob("*.tsv")):
        frame = pd.read_csv(tsv, sep="\t")
        rows.append({"stage": tsv.stem, "seconds": float(frame["s"].iloc[0]),
                     "max_rss_mb": float(frame["max_rss"].iloc[0])})
    return pd.DataFrame(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, help="read this results/ folder instead of running the demo")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--smoke", action="store_true",
                        help="smallest size: only the demo's synthetic data (8+4+4 images) and one conversion")
    args = parser.parse_args()
    wall = None
    with tempfile.TemporaryDirectory() as tmp:
        results = args.results
        if results is None:
            wall = run_demo(Path(tmp), args.cores, args.smoke)
            results = Path(tmp) / "results"
        times = stage_times(results)
    total = float(times["seconds"].sum())
    times["share_of_total"] = times["seconds"] / total
    times["share_of_budget"] = times["seconds"] / BUDGET_S
    print(times.to_string(index=False))
    print(json.dumps({"stages": times.set_index("stage").round(3).to_dict(orient="index"),
                      "total_stage_seconds": round(total, 1), "wall_seconds": wall and round(wall, 1),
                      "budget_seconds": BUDGET_S, "ratio": round(total / BUDGET_S, 3),
                      "ratio_of": "total stage seconds / the demo's budget"}))


if __name__ == "__main__":
    main()
