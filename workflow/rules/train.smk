# Stage 1 fine-tunes the detector from a pre-trained checkpoint; stage 2 freezes it and trains the smallconv
# mask head. `pretrain` makes the embedded demo's stage-0 checkpoint (MDETR's detection objective, from scratch).


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
        spec=lambda w: quoted_json(stage_spec(w.run, "pretrain")),
        record=record(lambda w: stage_slice(w.run, "pretrain")),
        images=images_arg,
        launch=launcher("pretrain"),
    resources:
        **slurm_resources("pretrain"),
    benchmark:
        "results/benchmarks/pretrain_{run}.tsv"
    log:
        "results/logs/pretrain_{run}.log",
    shell:
        "{params.launch} --record {params.record} train --stage pretrain --spec-json {params.spec} --coco-dir " + coco_dir("pretrain") + " "
        "--images {params.images:q} --out-dir results/pretrain/{wildcards.run} 2> {log}"


rule stage1:
    """Detector fine-tuning (`load` semantics: weights only, EMA preferred)."""
    input:
        **train_inputs(),
        init=lambda w: download_path(config["runs"][run_of(w.run)]["pretrained"]),
    output:
        ckpt=ensure("results/runs/{run}/stage1/checkpoint.pth", non_empty=True),
        log_csv="results/runs/{run}/stage1/log.csv",
    params:
        spec=lambda w: quoted_json(stage_spec(w.run, "stage1")),
        record=record(lambda w: stage_slice(w.run, "stage1")),
        images=images_arg,
        launch=launcher("stage1"),
    resources:
        **slurm_resources("stage1"),
    benchmark:
        "results/benchmarks/stage1_{run}.tsv"
    log:
        "results/logs/stage1_{run}.log",
    shell:
        "{params.launch} --record {params.record} train --stage stage1 --spec-json {params.spec} --coco-dir " + coco_dir() + " "
        "--images {params.images:q} --init {input.init:q} --out-dir results/runs/{wildcards.run}/stage1 2> {log}"


rule stage2:
    """Frozen stage-1 detector (EMA weights, strict) + smallconv mask head."""
    input:
        **train_inputs(),
        init="results/runs/{run}/stage1/checkpoint.pth",
    output:
        ckpt=ensure("results/runs/{run}/stage2/checkpoint.pth", non_empty=True),
        log_csv="results/runs/{run}/stage2/log.csv",
    params:
        spec=lambda w: quoted_json(stage_spec(w.run, "stage2")),
        record=record(lambda w: stage_slice(w.run, "stage2")),
        images=images_arg,
        launch=launcher("stage2"),
    resources:
        **slurm_resources("stage2"),
    benchmark:
        "results/benchmarks/stage2_{run}.tsv"
    log:
        "results/logs/stage2_{run}.log",
    shell:
        "{params.launch} --record {params.record} train --stage stage2 --spec-json {params.spec} --coco-dir " + coco_dir() + " "
        "--images {params.images:q} --init {input.init:q} --out-dir results/runs/{wildcards.run}/stage2 2> {log}"


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
