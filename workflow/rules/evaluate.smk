# Test evaluation (PhraseCut protocol), the released checkpoints' evaluation, results/table.md and plots
# (helpers: common.smk).
EVALUATE_SHELL = (
    "mdetr-phrasecut --record {params.record} evaluate --spec {params.spec:q} \\\n"
    "  --checkpoint {input.ckpt:q} \\\n"
    "  --coco {input.coco:q} --index {input.index:q} \\\n"
    "  --root {params.root:q} --images {params.images:q} --split {params.split} \\\n"
    "  --out-dir {params.out_dir:q} --dataset {params.dataset} \\\n"
    "  2> {log}  # " + EVALUATE_SETTINGS
)


rule evaluate:
    """Our stage-2 checkpoint on the test split: predictions, per-phrase scores, metrics per subset."""
    input:
        **evaluate_inputs(f"results/runs/{{run}}/{EVALUATED}/checkpoint.pth"),
    output:
        metrics=ensure("results/runs/{run}/test/metrics.json", non_empty=True),
        per_task="results/runs/{run}/test/per_task.json",
        predictions="results/runs/{run}/test/predictions.npz",
    log:
        "results/logs/evaluate_{run}.log",
    benchmark:
        "results/benchmarks/evaluate_{run}.tsv"
    conda:
        CONDA_ENV
    threads: EVALUATE_THREADS
    resources:
        **slurm_resources("evaluate"),
    params:
        **EVALUATE_PARAMS,
    shell:
        EVALUATE_SHELL


rule evaluate_released:
    """The published checkpoint of a run, evaluated without training: reproduces the published numbers."""
    input:
        **evaluate_inputs(lambda w: download_path(config["runs"][w.run]["released"])),
    output:
        metrics=ensure("results/released/{run}/test/metrics.json", non_empty=True),
        per_task="results/released/{run}/test/per_task.json",
        predictions="results/released/{run}/test/predictions.npz",
    log:
        "results/logs/evaluate_released_{run}.log",
    conda:
        CONDA_ENV
    threads: EVALUATE_THREADS
    resources:
        **slurm_resources("evaluate"),
    params:
        **EVALUATE_PARAMS,
    shell:
        EVALUATE_SHELL


rule recipe_audit:
    """The released checkpoint's own training args beside our stage-2 config, parameter by parameter."""
    input:
        ckpt=lambda w: download_path(config["runs"][w.run]["released"]),
    output:
        md="results/audit/recipe_{run}.md",
        json="results/audit/recipe_{run}.json",
    log:
        "results/logs/recipe_audit_{run}.log",
    conda:
        CONDA_ENV
    params:
        spec=lambda w: args_file(stage_spec(w.run, EVALUATED, downloaded=False)),
        world_size=stage_resources(EVALUATED)["nodes"] * stage_processes(EVALUATED),
        record=record(lambda w: stage_slice(w.run, EVALUATED)),
        stage=EVALUATED,
    shell:
        "mdetr-phrasecut --record {params.record} recipe-audit --checkpoint {input.ckpt:q} \\\n"
        "  --spec {params.spec:q} --stage {params.stage} --world-size {params.world_size} --run {wildcards.run} \\\n"
        "  --out-md {output.md:q} --out-json {output.json:q} 2> {log}"


TABLE_SHELL = (
    "mdetr-phrasecut --record {params.record} table \\\n"
    "  --metrics {params.metrics} \\\n"
    "  --runs-json {params.runs} --dataset {params.dataset} \\\n"
    "  --out {output.md:q} --csv {output.csv:q} \\\n"
    "  {params.jobs} \\\n"
    "  {params.statistics} 2> {log}"
)


TABLE_METRICS, TABLE_ROWS = table_runs(RUNS, "results/runs", ROW_TRAINING)
RELEASED_METRICS, RELEASED_ROWS = table_runs(RELEASED_RUNS, "results/released")


rule table:
    """results/table.md (+ .csv): the published table regenerated from measured metrics, published values beside."""
    input:
        **table_statistics_inputs(RUNS, "runs"),
        metrics=TABLE_METRICS,
        browsers=[str(Path(m).parent / "browser") for m in TABLE_METRICS],
        plots=expand("results/runs/{run}/plots/examples.png", run=ROW_TRAINING.values()),
    output:
        md=report("results/table.md", caption="../report/table.rst", category="Results"),
        csv="results/table.csv",
    log:
        "results/logs/table.log",
    conda:
        CONDA_ENV
    params:
        **table_params(TABLE_ROWS, "runs"),
    shell:
        TABLE_SHELL


rule released_table:
    """results/released/table.md: the published checkpoints evaluated here, beside the published numbers."""
    input:
        **table_statistics_inputs(RELEASED_RUNS, "released"),
        metrics=RELEASED_METRICS,
        browsers=[str(Path(m).parent / "browser") for m in RELEASED_METRICS],
    output:
        md=report("results/released/table.md", caption="../report/table.rst", category="Results"),
        csv="results/released/table.csv",
    log:
        "results/logs/released_table.log",
    conda:
        CONDA_ENV
    params:
        **table_params(RELEASED_ROWS, "released"),
    shell:
        TABLE_SHELL


rule plots:
    """Precision vs IoU threshold, M-IoU per subset, training curves and qualitative predictions of a run."""
    input:
        metrics="results/runs/{run}/test/metrics.json",
        per_task="results/runs/{run}/test/per_task.json",
        predictions="results/runs/{run}/test/predictions.npz",
        logs=expand("results/runs/{{run}}/{stage}/log.csv", stage=LOGGED_STAGES),
        refer=original(f"refer_{TEST}.json"),
        images=images_dir(),
    output:
        **{
            kind: report(
                f"results/runs/{{run}}/plots/{kind}.png",
                caption=f"../report/{kind}.rst",
                category="Plots",
                subcategory="{run}",
                labels={"run": "{run}", "plot": kind},
            )
            for kind in ("precision_iou", "subset_miou", "training_curves", "examples")
        },
    log:
        "results/logs/plots_{run}.log",
    benchmark:
        "results/benchmarks/plots_{run}.tsv"
    conda:
        CONDA_ENV
    params:
        root=lambda w, input: Path(input.refer).parent,
        images=images_arg,
        split=TEST,
        logs=lambda w, input: named(LOGGED_STAGES, input.logs),
        out_dir=lambda w, output: Path(output.examples).parent,
        record=record(lambda w: {}),  # no config key: only its inputs
    shell:
        "mdetr-phrasecut --record {params.record} plots \\\n"
        "  --metrics {input.metrics:q} \\\n"
        "  --per-task {input.per_task:q} \\\n"
        "  --predictions {input.predictions:q} \\\n"
        "  --log {params.logs} \\\n"
        "  --root {params.root:q} --images {params.images:q} --split {params.split} \\\n"
        "  --out-dir {params.out_dir:q} 2> {log}"


rule audit:
    """Verify the provenance chain behind results/table.md: names any artifact missing, altered, or made from
    another input or config than the current one."""
    input:
        "results/table.md",
    output:
        "results/audit.json",
    log:
        "results/logs/audit.log",
    conda:
        CONDA_ENV
    params:
        config=lambda w: json_file({k: v for k, v in config.items() if k not in HOW_JOBS_RUN}),
    shell:
        "mdetr-phrasecut audit {input:q} --config-json {params.config} --out {output:q} 2> {log}"


BROWSER_SHELL = (
    "mdetr-phrasecut --record {params.record} browser \\\n"
    "  --per-task {input.per_task:q} \\\n"
    "  --predictions {input.predictions:q} \\\n"
    "  --root {params.root:q} --images {params.images:q} --split {params.split} \\\n"
    "  --out-dir {output:q} \\\n"
    "  --title {params.title:q}{params.paired} \\\n"
    "  {params.selection} 2> {log}"
)
BROWSER_PARAMS = dict(
    root=lambda w, input: Path(input.refer).parent,
    images=images_arg,
    split=TEST,
    paired=browser_paired,
    selection=BROWSER_ARGS,
    record=record(lambda w: {"browser": config["browser"]}),
)


rule browser:
    """Failure browser of our evaluation (results/runs/{run}/test/browser/index.html), paired with the released
    checkpoint's evaluation when the run has one."""
    input:
        unpack(browser_inputs("results/runs")),
    output:
        directory("results/runs/{run}/test/browser"),
    log:
        "results/logs/browser_{run}.log",
    conda:
        CONDA_ENV
    params:
        **BROWSER_PARAMS,
        title=lambda w: f"run {w.run}: {config['dataset']['name']}, {TEST}",
    shell:
        BROWSER_SHELL


rule browser_released:
    """Failure browser of the released checkpoint's evaluation (results/released/{run}/test/browser/index.html)."""
    input:
        unpack(browser_inputs("results/released")),
    output:
        directory("results/released/{run}/test/browser"),
    log:
        "results/logs/browser_released_{run}.log",
    conda:
        CONDA_ENV
    params:
        **BROWSER_PARAMS,
        title=lambda w: f"run {w.run}, released checkpoint: {config['dataset']['name']}, {TEST}",
    shell:
        BROWSER_SHELL


rule model_card:
    """results/runs/{run}/MODEL_CARD.md: the Hugging Face model card of a trained checkpoint (metrics with
    intervals, recipe, cost, provenance hashes); `export-checkpoint --hub-folder` ships it as README.md."""
    input:
        metrics="results/runs/{run}/test/metrics.json",
        per_task="results/runs/{run}/test/per_task.json",
        checkpoints=expand("results/runs/{{run}}/{stage}/checkpoint.pth", stage=RUN_STAGES),
        benchmarks=expand("results/benchmarks/{stage}_{{run}}.tsv", stage=COST_STAGES),
    output:
        "results/runs/{run}/MODEL_CARD.md",
    log:
        "results/logs/model_card_{run}.log",
    conda:
        CONDA_ENV
    params:
        benchmarks=lambda w, input: named(COST_STAGES, input.benchmarks),
        gpus=quoted_json(COST_GPUS),
        statistics=STATISTICS_ARGS,
        record=record(lambda w: {"statistics": config["statistics"]}),
    shell:
        "mdetr-phrasecut --record {params.record} model-card --name {wildcards.run} \\\n"
        "  --metrics {input.metrics:q} \\\n"
        "  --per-task {input.per_task:q} \\\n"
        "  --checkpoints {input.checkpoints:q} \\\n"
        "  --benchmarks {params.benchmarks} \\\n"
        "  --gpus-json {params.gpus} --out {output:q} \\\n"
        "  {params.statistics} 2> {log}"
