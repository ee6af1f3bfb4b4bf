# Bootstrap intervals and verdicts of the tables, cost per table row, results/subsets.md, paired comparisons
# with the released checkpoints. Included before evaluate.smk, whose table rules use the helpers below.
STATISTICS_ARGS = "--resamples {resamples} --level {level} --seed {seed} --unit {unit}".format(**config["statistics"])
COST_STAGES = ("stage1", "stage2", "evaluate")  # the jobs behind a row of results/table.md
# {row's training: metrics.json of every seed} of the runs with seeds (the table's --seeds-json)
SEED_METRICS = {ROW_TRAINING[run]: [f"results/runs/{t}/test/metrics.json" for t in run_trainings(run)]
                for run in RUNS if config["runs"][run]["seeds"]}


def table_statistics_inputs(runs, kind):
    """A table rule's inputs beyond the metrics, in the order of `runs`: per-phrase results (intervals); for
    our runs (kind "runs", not "released"), the benchmark files of every training (cost) and the metrics of
    every seed of the runs that have seeds."""
    if kind == "released":
        return {"per_task": expand("results/released/{run}/test/per_task.json", run=runs)}
    trainings = [t for run in runs for t in run_trainings(run)]
    return {"per_task": [f"results/runs/{ROW_TRAINING[run]}/test/per_task.json" for run in runs],
            "benchmarks": expand("results/benchmarks/{stage}_{run}.tsv", run=trainings, stage=COST_STAGES),
            "seeds": [path for paths in SEED_METRICS.values() for path in paths]}


def table_statistics_args(wildcards, input):
    """`table` flags: the bootstrap's; for our runs, the benchmark files with the GPUs each stage's job holds
    and the metrics of every seed."""
    args = f"--per-task {' '.join(map(shlex.quote, input.per_task))} {STATISTICS_ARGS}"
    if hasattr(input, "benchmarks"):
        gpus = {s: stage_resources(s)["nodes"] * stage_resources(s)["gpus_per_node"] for s in COST_STAGES}
        args += f" --benchmarks {' '.join(map(shlex.quote, input.benchmarks))} --gpus-json {quoted_json(gpus)}"
        args += f" --seeds-json {quoted_json(SEED_METRICS)}" if SEED_METRICS else ""
    return args


rule subsets:
    """results/subsets.md (+ .csv, .png): every PhraseCut subset of every run side by side, with intervals."""
    input:
        per_task=expand("results/runs/{run}/test/per_task.json", run=ROW_TRAINING.values()),
    output:
        md=report("results/subsets.md", caption="../report/subsets.rst", category="Results"),
        csv="results/subsets.csv",
        plot=report("results/subsets.png", caption="../report/subsets.rst", category="Results"),
    params:
        labels=" ".join(shlex.quote(config["runs"][r]["label"]) for r in RUNS),
        record=record(lambda w: {"runs": {r: config["runs"][r] for r in RUNS}, "statistics": config["statistics"]}),
    log:
        "results/logs/subsets.log",
    shell:
        "mdetr-phrasecut --record {params.record} compare --per-task {input.per_task:q} --labels {params.labels} "
        "--out {output.md:q} --csv {output.csv:q} --plot {output.plot:q} " + STATISTICS_ARGS + " 2> {log}"


rule compare_released:
    """Our run minus the released checkpoint on the same test phrases: paired differences, intervals, p-values."""
    input:
        ours=lambda w: f"results/runs/{ROW_TRAINING[w.run]}/test/per_task.json",
        released="results/released/{run}/test/per_task.json",
    output:
        md=report("results/compare/{run}_vs_released.md", caption="../report/compare.rst", category="Results"),
        csv="results/compare/{run}_vs_released.csv",
        plot=report("results/compare/{run}_vs_released.png", caption="../report/compare.rst", category="Results"),
    params:
        record=record(lambda w: {"runs": {w.run: config["runs"][w.run]}, "statistics": config["statistics"]}),
    log:
        "results/logs/compare_released_{run}.log",
    shell:
        "mdetr-phrasecut --record {params.record} compare --paired --per-task {input.ours:q} {input.released:q} "
        "--labels ours released --out {output.md:q} --csv {output.csv:q} --plot {output.plot:q} "
        + STATISTICS_ARGS + " 2> {log}"
