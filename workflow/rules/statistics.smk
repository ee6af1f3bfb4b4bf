# results/subsets.md and paired comparisons with the released checkpoints (helpers: common.smk).


rule subsets:
    """results/subsets.md (+ .csv, .png): every PhraseCut subset of every run side by side, with intervals."""
    input:
        per_task=expand("results/runs/{run}/test/per_task.json", run=ROW_TRAINING.values()),
    output:
        md=report("results/subsets.md", caption="../report/subsets.rst", category="Results"),
        csv="results/subsets.csv",
        plot=report("results/subsets.png", caption="../report/subsets.rst", category="Results"),
    log:
        "results/logs/subsets.log",
    conda:
        CONDA_ENV
    params:
        labels=" ".join(shlex.quote(config["runs"][r]["label"]) for r in RUNS),
        record=record(lambda w: {"runs": {r: shown(r, ("label",)) for r in RUNS}, "statistics": config["statistics"]}),
        statistics=STATISTICS_ARGS,
    shell:
        "mdetr-phrasecut --record {params.record} compare \\\n"
        "  --per-task {input.per_task:q} \\\n"
        "  --labels {params.labels} \\\n"
        "  --out {output.md:q} --csv {output.csv:q} --plot {output.plot:q} \\\n"
        "  {params.statistics} 2> {log}"


rule compare_released:
    """Our run minus the released checkpoint on the same test phrases: paired differences, intervals, p-values."""
    input:
        ours=lambda w: f"results/runs/{ROW_TRAINING[w.run]}/test/per_task.json",
        released="results/released/{run}/test/per_task.json",
    output:
        md=report("results/compare/{run}_vs_released.md", caption="../report/compare.rst", category="Results"),
        csv="results/compare/{run}_vs_released.csv",
        plot=report("results/compare/{run}_vs_released.png", caption="../report/compare.rst", category="Results"),
    log:
        "results/logs/compare_released_{run}.log",
    conda:
        CONDA_ENV
    params:
        record=record(lambda w: {"statistics": config["statistics"]}),
        statistics=STATISTICS_ARGS,
    shell:
        "mdetr-phrasecut --record {params.record} compare --paired \\\n"
        "  --per-task {input.ours:q} {input.released:q} --labels ours released \\\n"
        "  --out {output.md:q} --csv {output.csv:q} \\\n"
        "  --plot {output.plot:q} \\\n"
        "  {params.statistics} 2> {log}"
