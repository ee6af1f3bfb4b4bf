# Stage 1 fine-tunes the detector from a pre-trained checkpoint; stage 2 freezes it and trains the smallconv
# mask head. `pretrain` makes the embedded demo's stage-0 checkpoint (MDETR's detection objective, from scratch).


def train_init(wildcards):
    """What a stage starts from: stage 1 the run's pre-trained checkpoint, stage 2 the run's stage 1."""
    if wildcards.stage == "stage1":
        return download_path(config["runs"][run_of(wildcards.run)]["pretrained"])
    return f"results/runs/{wildcards.run}/stage1/checkpoint.pth"


def train_inputs(corpus="main"):
    split = config["dataset"]
    return dict(
        train=f"{coco_dir(corpus)}/finetune_phrasecut_{split['train_split']}.json",
        val=f"{coco_dir(corpus)}/finetune_phrasecut_{split['val_split']}.json",
        images=images_dir(corpus),
    )


rule pretrain:
    """Stage 0 for the embedded demo; its output is committed as resources/demo_pretrained.pth (see README)."""
    input:
        **train_inputs("pretrain"),
    output:
        ckpt=ensure("results/pretrain/{run}/checkpoint.pth", non_empty=True),
        log_csv="results/pretrain/{run}/log.csv",
    params:
        spec=lambda w: json_file(stage_spec(w.run, "pretrain")),
        record=record(lambda w: stage_slice(w.run, "pretrain")),
        images=images_arg,
        launch=launcher("pretrain"),
    threads: stage_processes("pretrain")
    resources:
        **slurm_resources("pretrain"),
    benchmark:
        "results/benchmarks/pretrain_{run}.tsv"
    log:
        "results/logs/pretrain_{run}.log",
    shell:
        "{params.launch} --record {params.record} train --stage pretrain --spec-json {params.spec} --coco-dir " + coco_dir("pretrain") + " "
        "--images {params.images:q} --out-dir results/pretrain/{wildcards.run} 2> {log}"


rule train:
    """Stage 1: detector fine-tuning (`load` semantics: weights only, EMA preferred). Stage 2: the frozen stage-1
    detector (EMA weights, strict) + smallconv mask head."""
    input:
        **train_inputs(),
        init=train_init,
    output:
        ckpt=ensure("results/runs/{run}/{stage}/checkpoint.pth", non_empty=True),
        log_csv="results/runs/{run}/{stage}/log.csv",
    wildcard_constraints:
        stage="stage1|stage2",
    threads: lambda w: stage_processes(w.stage)
    params:
        spec=lambda w: json_file(stage_spec(w.run, w.stage)),
        record=record(lambda w: stage_slice(w.run, w.stage)),
        images=images_arg,
        launch=lambda w: launcher(w.stage),
    resources:
        **train_resources(("stage1", "stage2")),
    benchmark:
        "results/benchmarks/{stage}_{run}.tsv"
    log:
        "results/logs/{stage}_{run}.log",
    shell:
        "{params.launch} --record {params.record} train --stage {wildcards.stage} --spec-json {params.spec} --coco-dir " + coco_dir() + " "
        "--images {params.images:q} --init {input.init:q} --out-dir results/runs/{wildcards.run}/{wildcards.stage} 2> {log}"


rule stage0:
    """The pre-trained detector as distributed: EMA weights only, float16. The demo's copy is committed as
    resources/demo_pretrained.pth (see README) and enters the DAG through the download rule."""
    input:
        "results/pretrain/{run}/checkpoint.pth",
    output:
        "results/pretrain/{run}/stage0.pth",
    params:
        record=record(lambda w: {}),
    log:
        "results/logs/stage0_{run}.log",
    shell:
        "mdetr-phrasecut --record {params.record} export-checkpoint --checkpoint {input:q} --out {output:q} 2> {log}"
