"""What a table row cost: wall time, CPU-hours and GPU-hours of its stages, from Snakemake's benchmark files.

A rule's `benchmark:` file (e.g. `results/benchmarks/{stage}_{run}.tsv`; the rules say which training and stage
each file is of) holds its wall seconds `s` and `cpu_time`
(seconds of CPU used by the job's processes on the machine that ran it; for a multi-node Slurm job, only the
first node's). GPU-hours are wall time x the GPUs the stage's job holds (nodes x gpus_per_node of the config).
"""
from ..errors import InputError


def read_benchmark(path):
    """(wall seconds, CPU seconds) of a benchmark file, the mean over its repeats."""
    import pandas as pd

    try:
        df = pd.read_csv(path, sep="\t")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a Snakemake benchmark file: {e}") from None
    for column in ("s", "cpu_time"):
        values = pd.to_numeric(df[column], errors="coerce") if column in df else None
        if values is None or values.isna().any() or not len(values) or (values < 0).any():
            raise InputError(f"{path}: column {column} must hold non-negative numbers")
    return float(df["s"].mean()), float(df["cpu_time"].mean())


def costs(benchmarks, runs, gpus, owners=None):
    """{run: {"wall_s", "cpu_h", "gpu_h", "stages": [...], "trainings": [...]}} from `benchmarks`, (training,
    stage, benchmark file) each; gpus: {stage: GPUs its job holds} (a stage not listed holds none); owners:
    {training: run} for the trainings of another name that count towards a run (its other seeds)."""
    result = {run: {"wall_s": 0.0, "cpu_h": 0.0, "gpu_h": 0.0, "stages": [], "trainings": []} for run in runs}
    for training, stage, path in benchmarks:
        run = (owners or {}).get(training, training)
        if run not in result:
            raise InputError(f"{path}: the benchmark of {stage} of {training}, not a training of a run of the table "
                             f"({', '.join(runs)})")
        wall, cpu = read_benchmark(path)
        row = result[run]
        row["wall_s"] += wall
        row["cpu_h"] += cpu / 3600
        row["gpu_h"] += wall * gpus.get(stage, 0) / 3600
        row["stages"] += [stage] if stage not in row["stages"] else []
        row["trainings"] += [training] if training not in row["trainings"] else []
    return result


def cost_text(cost):
    """`1 h 12 min; 0.4 CPU-h; 38.4 GPU-h (stage1, stage2, evaluate)`, `(..., 3 seeds)` for several trainings."""
    minutes = cost["wall_s"] / 60
    wall = "{} h {} min".format(*divmod(round(minutes), 60)) if minutes >= 60 else f"{minutes:.1f} min"
    gpu = f"; {cost['gpu_h']:.1f} GPU-h" if cost["gpu_h"] else ""
    seeds = [f"{len(cost['trainings'])} seeds"] if len(cost["trainings"]) > 1 else []
    return f"{wall}; {cost['cpu_h']:.2f} CPU-h{gpu} ({', '.join(cost['stages'] + seeds)})"
