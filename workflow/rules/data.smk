# Downloads (checksummed, resumable), the original PhraseCut files (synthetic or downloaded), their
# conversion to MDETR's COCO format, and the audit of MDETR's released annotations against it.
ORIGINAL_FILES = ["image_data_split.json", "name_att_rel_count.json"] + [f"refer_{s}.json" for s in SPLITS]


def original(name, corpus="main"):
    """An original PhraseCut file: written by `synth`, or the download entry named in dataset.originals."""
    if config["dataset"]["source"] == "synth":
        return f"{data_dir(corpus)}/{name}"
    return download_path(config["dataset"]["originals"][name])


def images_dir(corpus="main"):
    """The folder a rule depends on for the images (an extracted download, or synth's images/)."""
    if config["dataset"]["source"] == "synth":
        return f"{data_dir(corpus)}/images"
    return f"{download_path(config['dataset']['images'])}.unpacked"


def images_arg(wildcards, input):
    """The folder of {image_id}.jpg handed to the subcommands."""
    if config["dataset"]["source"] == "synth":
        return input.images
    return f"{input.images}/{config['dataset']['images_subdir']}"


for _name in config["downloads"]:

    rule:
        name:
            f"download_{_name}"
        output:
            archive=ensure(download_path(_name), non_empty=True),
            **({"unpacked": directory(download_path(_name) + ".unpacked")} if config["downloads"][_name]["extract"] else {}),
        params:
            args=download_args(_name),
            record=record(lambda w, name=_name: {"downloads": {name: config["downloads"][name]}}),
        log:
            f"results/logs/download_{_name}.log",
        shell:  # stderr to the log and the console (warnings, an unverified file's sha256); stdout as is
            "{{ mdetr-phrasecut --record {params.record} download {params.args} --out {output.archive:q} "
            "2>&1 1>&3 3>&- | tee {log:q} >&2 3>&-; }} 3>&1"


if config["dataset"]["source"] == "synth":

    rule synth:
        """Synthetic PhraseCut in the exact original on-disk format: the embedded default's dataset (`main`)
        and the larger, disjoint one its stage-0 checkpoint is pre-trained on (`pretrain`)."""
        output:
            files=[f"results/{{corpus}}/phrasecut/{name}" for name in ORIGINAL_FILES],
            images=directory("results/{corpus}/phrasecut/images"),
        params:
            args=lambda w: synth_args(SYNTH_SECTIONS[w.corpus]),
            out=lambda w: data_dir(w.corpus),
            record=record(lambda w: {"dataset": {SYNTH_SECTIONS[w.corpus]: config["dataset"][SYNTH_SECTIONS[w.corpus]]}}),
        benchmark:
            "results/benchmarks/synth_{corpus}.tsv"
        log:
            "results/logs/synth_{corpus}.log",
        shell:
            "mdetr-phrasecut --record {params.record} synth --out {params.out} {params.args} 2> {log}"


rule convert:
    """Original PhraseCut annotations -> MDETR's finetune_phrasecut_{split}.json."""
    input:
        refer=lambda w: original(f"refer_{w.split}.json", w.corpus),
        split=lambda w: original("image_data_split.json", w.corpus),
    output:
        ensure("results/{corpus}/coco/finetune_phrasecut_{split}.json", non_empty=True),
    params:
        mode=config["dataset"]["conversion_mode"],
        root=lambda w, input: Path(input.refer).parent,
        record=record(lambda w: {"dataset": {"conversion_mode": config["dataset"]["conversion_mode"]}}),
    benchmark:
        "results/benchmarks/convert_{corpus}_{split}.tsv"
    log:
        "results/logs/convert_{corpus}_{split}.log",
    shell:
        "mdetr-phrasecut --record {params.record} convert --root {params.root:q} --split {wildcards.split} --mode {params.mode} "
        "--out {output:q} 2> {log}"


rule audit_annotations:
    """Compare MDETR's released finetune_phrasecut_{split}.json with our conversion of the originals."""
    input:
        mdetr=lambda w: f"{download_path(config['dataset']['mdetr_annotations'])}.unpacked",
        refer=lambda w: original(f"refer_{w.split}.json"),
    output:
        "results/audit/mdetr_annotations_{split}.json",
    params:
        released=lambda w, input: f"{input.mdetr}/{config['dataset']['mdetr_annotations_subdir']}/finetune_phrasecut_{w.split}.json",
        root=lambda w, input: Path(input.refer).parent,
        record=record(lambda w: {"dataset": {"conversion_mode": "compat",
                                             "mdetr_annotations_subdir": config["dataset"]["mdetr_annotations_subdir"]}}),
    log:
        "results/logs/audit_annotations_{split}.log",
    shell:
        "mdetr-phrasecut --record {params.record} audit-annotations --mdetr {params.released:q} "
        "--root {params.root:q} --split {wildcards.split} --out {output:q} 2> {log}"
