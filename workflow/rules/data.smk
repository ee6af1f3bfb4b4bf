# Downloads (checksummed, resumable; docs/downloads.md), the original PhraseCut files (synthetic or downloaded),
# their conversion to MDETR's COCO format, and the audit of MDETR's released annotations against it.
# They run where Snakemake runs (compute nodes may have no network), unless `submit_downloads` makes them jobs
# like the others; every other job has the Hub offline (common.smk).
for _name in config["downloads"]:

    rule:
        name:
            download_rule(_name)
        output:
            **(
                {"unpacked": directory(f"{download_path(_name)}.unpacked")}
                if config["downloads"][_name]["extract"]
                else {}
            ),
            archive=(
                directory(download_path(_name))
                if config["downloads"][_name]["kind"] == "snapshot"
                else ensure(download_path(_name), non_empty=True)
            ),
        log:
            f"results/logs/download_{_name}.log",
        localrule: not config["submit_downloads"]
        conda:
            CONDA_ENV
        params:
            args=download_args(_name),
            record=record(lambda w, name=_name: download_slice(name)),
        shell:  # stderr to the log and the console (warnings, an unverified file's sha256); stdout as is
            "{{ HF_HUB_OFFLINE=0 mdetr-phrasecut --record {params.record} download \\\n"
            "  {params.args} \\\n"
            "  --out {output.archive:q} 2>&1 1>&3 3>&- | tee {log:q} >&2 3>&-; }} 3>&1"


if config["dataset"]["source"] == "synth":

    rule synth:
        """Synthetic PhraseCut in the exact original on-disk format: the embedded default's dataset (`main`)
        and the larger, disjoint one its stage-0 checkpoint is pre-trained on (`pretrain`)."""
        output:
            files=[f"results/{{corpus}}/phrasecut/{name}" for name in ORIGINAL_FILES],
            images=directory("results/{corpus}/phrasecut/images"),
        log:
            "results/logs/synth_{corpus}.log",
        benchmark:
            "results/benchmarks/synth_{corpus}.tsv"
        conda:
            CONDA_ENV
        params:
            args=lambda w: synth_args(SYNTH_SECTIONS[w.corpus]),
            out=lambda w, output: Path(output.images).parent,
            record=record(
                lambda w: {"dataset": {SYNTH_SECTIONS[w.corpus]: config["dataset"][SYNTH_SECTIONS[w.corpus]]}}
            ),
        shell:
            "mdetr-phrasecut --record {params.record} synth --out {params.out} \\\n  {params.args} 2> {log}"


rule convert:
    """Original PhraseCut annotations -> MDETR's finetune_phrasecut_{split}.json."""
    input:
        refer=lambda w: original(f"refer_{w.split}.json", w.corpus),
        split=lambda w: original("image_data_split.json", w.corpus),
    output:
        ensure("results/{corpus}/coco/finetune_phrasecut_{split}.json", non_empty=True),
    log:
        "results/logs/convert_{corpus}_{split}.log",
    benchmark:
        "results/benchmarks/convert_{corpus}_{split}.tsv"
    conda:
        CONDA_ENV
    params:
        mode=config["dataset"]["conversion_mode"],
        root=lambda w, input: Path(input.refer).parent,
        record=record(lambda w: {"dataset": {"conversion_mode": config["dataset"]["conversion_mode"]}}),
    shell:
        "mdetr-phrasecut --record {params.record} convert \\\n"
        "  --root {params.root:q} --split {wildcards.split} --mode {params.mode} \\\n"
        "  --out {output:q} 2> {log}"


rule index:
    """finetune_phrasecut_{split}.json packed into the memory-mapped index training and evaluation read."""
    input:
        "results/{corpus}/coco/finetune_phrasecut_{split}.json",
    output:
        directory("results/{corpus}/coco/finetune_phrasecut_{split}.index"),
    log:
        "results/logs/index_{corpus}_{split}.log",
    benchmark:
        "results/benchmarks/index_{corpus}_{split}.tsv"
    conda:
        CONDA_ENV
    params:
        record=record(lambda w: {}),
    shell:
        "mdetr-phrasecut --record {params.record} index --coco {input:q} \\\n  --out {output:q} 2> {log}"


rule audit_annotations:
    """Compare MDETR's released finetune_phrasecut_{split}.json with our conversion of the originals."""
    input:
        mdetr=lambda w: f"{download_path(config['dataset']['mdetr_annotations'])}.unpacked",
        refer=lambda w: original(f"refer_{w.split}.json"),
        split=lambda w: original("image_data_split.json"),
    output:
        "results/audit/mdetr_annotations_{split}.json",
    log:
        "results/logs/audit_annotations_{split}.log",
    conda:
        CONDA_ENV
    params:
        released=lambda w, input: Path(
            input.mdetr, config["dataset"]["mdetr_annotations_subdir"], f"finetune_phrasecut_{w.split}.json"
        ),
        root=lambda w, input: Path(input.refer).parent,
        record=record(
            lambda w: {
                "dataset": {
                    "conversion_mode": "compat",
                    "mdetr_annotations_subdir": config["dataset"]["mdetr_annotations_subdir"],
                }
            }
        ),
    shell:
        "mdetr-phrasecut --record {params.record} audit-annotations \\\n"
        "  --mdetr {params.released:q} \\\n"
        "  --root {params.root:q} --split {wildcards.split} \\\n"
        "  --out {output:q} 2> {log}"
