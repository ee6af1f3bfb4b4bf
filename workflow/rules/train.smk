# Stage 1 fine-tunes the detector from a pre-trained checkpoint; stage 2 freezes it and trains the smallconv
# mask head. `pretrain` makes the embedded demo's stage-0 checkpoint (MDETR's detection objective, from scratch).
# Helpers: common.smk.
# One argument group a line (a dry run's lines stay short); the key settings close it, the whole spec is --spec.
TRAIN_SHELL = (
    "{params.launch} \\\n"
    "  --record {params.record} train --stage {params.stage} --spec {params.spec:q} \\\n"
    "  --coco-dir {params.coco_dir:q} --images {params.images:q} \\\n"
    "  {params.init} --out-dir {params.out_dir:q} \\\n"
    "  2> {log}  # {params.settings}"
)


rule pretrain:
    """Stage 0 for the embedded demo; its output is committed as resources/demo_pretrained.pth (see docs/demo.md)."""
    input:
        **train_inputs("pretrain"),
    output:
        ckpt=ensure("results/pretrain/{run}/checkpoint.pth", non_empty=True),
        log_csv="results/pretrain/{run}/log.csv",
    log:
        "results/logs/pretrain_{run}.log",
    benchmark:
        "results/benchmarks/pretrain_{run}.tsv"
    conda:
        CONDA_ENV
    threads: stage_processes("pretrain")
    resources:
        **slurm_resources("pretrain"),
    params:
        stage="pretrain",
        spec=lambda w: args_file(stage_spec(w.run, "pretrain")),
        settings=lambda w: train_settings(w.run, "pretrain"),
        record=record(lambda w: stage_slice(w.run, "pretrain")),
        coco_dir=lambda w, input: Path(input.train).parent,
        images=images_arg,
        init="",
        out_dir=lambda w, output: Path(output.ckpt).parent,
        launch=launcher("pretrain"),
    shell:
        TRAIN_SHELL


rule train:
    """Stage 1: detector fine-tuning (`load` semantics: weights only, EMA preferred). Stage 2: the frozen stage-1
    detector (EMA weights, strict) + smallconv mask head."""
    input:
        **train_inputs(),
        init=train_init,
    output:
        ckpt=ensure("results/runs/{run}/{stage}/checkpoint.pth", non_empty=True),
        log_csv="results/runs/{run}/{stage}/log.csv",
    log:
        "results/logs/{stage}_{run}.log",
    benchmark:
        "results/benchmarks/{stage}_{run}.tsv"
    wildcard_constraints:
        stage="|".join(RUN_STAGES),
    conda:
        CONDA_ENV
    threads: lambda w: stage_processes(w.stage)
    resources:
        **train_resources(RUN_STAGES),
    params:
        stage="{stage}",
        spec=lambda w: args_file(stage_spec(w.run, w.stage)),
        settings=lambda w: train_settings(w.run, w.stage),
        record=record(lambda w: stage_slice(w.run, w.stage)),
        coco_dir=lambda w, input: Path(input.train).parent,
        images=images_arg,
        init=lambda w, input: f"--init {shlex.quote(input.init)}",
        out_dir=lambda w, output: Path(output.ckpt).parent,
        launch=lambda w: launcher(w.stage),
    shell:
        TRAIN_SHELL


rule stage0:
    """The pre-trained detector as distributed: EMA weights only, float16. The demo's copy is committed as
    resources/demo_pretrained.pth (see docs/demo.md) and enters the DAG through the download rule."""
    input:
        "results/pretrain/{run}/checkpoint.pth",
    output:
        "results/pretrain/{run}/stage0.pth",
    log:
        "results/logs/stage0_{run}.log",
    conda:
        CONDA_ENV
    params:
        record=record(lambda w: {}),
    shell:
        "mdetr-phrasecut --record {params.record} export-checkpoint --checkpoint {input:q} --out {output:q} 2> {log}"
