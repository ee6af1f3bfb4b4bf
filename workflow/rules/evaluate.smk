# Test evaluation (PhraseCut protocol), the released checkpoints' evaluation, results/table.md and plots.
TEST = config["dataset"]["test_split"]


def evaluate_inputs(ckpt):
    return dict(
        ckpt=ckpt,
        coco=f"{coco_dir()}/finetune_phrasecut_{TEST}.json",
        refer=original(f"refer_{TEST}.json"),
        split=original("image_data_split.json"),
        counts=original("name_att_rel_count.json"),
        images=images_dir(),
    )


EVALUATE_SHELL = (
    "mdetr-phrasecut --record {params.record} evaluate --checkpoint {input.ckpt:q} --spec-json {params.spec} "
    "--coco {input.coco:q} --root {params.root:q} --images {params.images:q} --split " + TEST + " "
    "--out-dir {params.out_dir} --threshold {params.threshold} --size {params.size} --max-size {params.max_size} "
    "--batch-size {params.batch_size} --workers {params.workers} {params.ema} --dataset {params.dataset} 2> {log}"
)
EVALUATE_PARAMS = dict(
    root=lambda w, input: Path(input.refer).parent,
    images=images_arg,
    threshold=config["evaluate"]["threshold"],
    size=config["evaluate"]["size"],
    max_size=config["evaluate"]["max_size"],
    batch_size=config["evaluate"]["batch_size"],
    workers=config["evaluate"]["workers"],
    ema="" if config["evaluate"]["use_ema"] else "--no-ema",
    dataset=shlex.quote(config["dataset"]["name"]),
)


rule evaluate:
    """Our stage-2 checkpoint on the test split: predictions, per-phrase scores, metrics per subset."""
    input:
        **evaluate_inputs("results/runs/{run}/stage2/checkpoint.pth"),
    output:
        metrics=ensure("results/runs/{run}/test/metrics.json", non_empty=True),
        per_task="results/runs/{run}/test/per_task.json",
        predictions="results/runs/{run}/test/predictions.npz",
    params:
        spec=lambda w: json_file(stage_spec(w.run, "stage2")),
        record=record(lambda w: {**stage_slice(w.run, "stage2"), "evaluate": config["evaluate"]}),
        out_dir="results/runs/{run}/test",
        **EVALUATE_PARAMS,
    threads: config["evaluate"]["workers"]
    resources:
        **slurm_resources("evaluate"),
    benchmark:
        "results/benchmarks/evaluate_{run}.tsv"
    log:
        "results/logs/evaluate_{run}.log",
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
    params:
        spec=lambda w: json_file(stage_spec(w.run, "stage2")),
        record=record(lambda w: {**stage_slice(w.run, "stage2"), "evaluate": config["evaluate"]}),
        out_dir="results/released/{run}/test",
        **EVALUATE_PARAMS,
    threads: config["evaluate"]["workers"]
    resources:
        **slurm_resources("evaluate"),
    log:
        "results/logs/evaluate_released_{run}.log",
    shell:
        EVALUATE_SHELL


TABLE_SHELL = (
    "mdetr-phrasecut --record {params.record} table --metrics {input.metrics:q} --runs-json {params.runs} "
    "--dataset {params.dataset} --out {output.md:q} --csv {output.csv:q} {params.statistics} 2> {log}"
)


def table_params(rows):
    return dict(
        runs=quoted_json(rows),
        dataset=shlex.quote(config["dataset"]["name"]),
        record=record(lambda w: {"dataset": {"name": config["dataset"]["name"]},
                                 "runs": {run_of(row["run"]): config["runs"][run_of(row["run"])] for row in rows},
                                 "statistics": config["statistics"]}),
        statistics=table_statistics_args,
    )


TABLE_METRICS, TABLE_ROWS = table_runs(RUNS, "results/runs", ROW_TRAINING)
RELEASED_METRICS, RELEASED_ROWS = table_runs(RELEASED_RUNS, "results/released")


rule table:
    """results/table.md (+ .csv): the published table regenerated from measured metrics, published values beside."""
    input:
        metrics=TABLE_METRICS,
        plots=expand("results/runs/{run}/plots/examples.png", run=ROW_TRAINING.values()),
        **table_statistics_inputs(RUNS, "runs"),
    output:
        md=report("results/table.md", caption="../report/table.rst", category="Results"),
        csv="results/table.csv",
    params:
        **table_params(TABLE_ROWS),
    log:
        "results/logs/table.log",
    shell:
        TABLE_SHELL


rule released_table:
    """results/released/table.md: the published checkpoints evaluated here, beside the published numbers."""
    input:
        metrics=RELEASED_METRICS,
        **table_statistics_inputs(RELEASED_RUNS, "released"),
    output:
        md=report("results/released/table.md", caption="../report/table.rst", category="Results"),
        csv="results/released/table.csv",
    params:
        **table_params(RELEASED_ROWS),
    log:
        "results/logs/released_table.log",
    shell:
        TABLE_SHELL


rule plots:
    """Precision vs IoU threshold, M-IoU per subset, training curves and qualitative predictions of a run."""
    input:
        metrics="results/runs/{run}/test/metrics.json",
        per_task="results/runs/{run}/test/per_task.json",
        predictions="results/runs/{run}/test/predictions.npz",
        logs=["results/runs/{run}/stage1/log.csv", "results/runs/{run}/stage2/log.csv"],
        refer=original(f"refer_{TEST}.json"),
        images=images_dir(),
    output:
        **{
            kind: report(f"results/runs/{{run}}/plots/{kind}.png", caption=f"../report/{kind}.rst",
                         category="Plots", subcategory="{run}", labels={"run": "{run}", "plot": kind})
            for kind in ("precision_iou", "subset_miou", "training_curves", "examples")
        },
    params:
        root=lambda w, input: Path(input.refer).parent,
        images=images_arg,
        record=record(lambda w: {"runs": {run_of(w.run): config["runs"][run_of(w.run)]}}),
    benchmark:
        "results/benchmarks/plots_{run}.tsv"
    log:
        "results/logs/plots_{run}.log",
    shell:
        "mdetr-phrasecut --record {params.record} plots --run-dir results/runs/{wildcards.run} --root {params.root:q} "
        "--images {params.images:q} --split " + TEST + " --out-dir results/runs/{wildcards.run}/plots 2> {log}"


rule audit:
    """Verify the provenance chain behind results/table.md: names any artifact missing, altered, or made from
    another input or config than the current one."""
    input:
        "results/table.md",
    output:
        "results/audit.json",
    params:
        config=lambda w: json_file(config),
    log:
        "results/logs/audit.log",
    shell:
        "mdetr-phrasecut audit {input:q} --config-json {params.config} --out {output:q} 2> {log}"
