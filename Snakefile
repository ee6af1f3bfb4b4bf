# MDETR referring-expression segmentation on PhraseCut.
#   snakemake --cores 2 results/table.md                 # embedded default (synthetic PhraseCut, CPU)
#   snakemake --profile slurm results/table.md --configfile config/phrasecut.yaml   # published recipe on Slurm
# (targets before --configfile, which takes every word after it as a config file)
# Rules are thin: each calls one `mdetr-phrasecut` subcommand; all logic lives in src/mdetr_phrasecut.
from snakemake.utils import min_version

min_version("9.0")

# The embedded default, unless configs are given with --configfile (they replace it rather than merge into it).
if not workflow.overwrite_configfiles:
    from mdetr_phrasecut.config import read_mapping

    read_mapping("config/config.yaml")  # a YAML syntax error names file, line and column (Snakemake's does not)

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/statistics.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    input:
        "results/table.md",
        "results/audit.json",
        "results/subsets.md",
        # the published checkpoints evaluated here, when the runs have them (published recipe), and ours vs theirs
        ["results/released/table.md"] if RELEASED_RUNS else [],
        expand("results/compare/{run}_vs_released.md", run=RELEASED_RUNS),
        # the released checkpoints' own training args beside our recipe (docs/fidelity.md)
        expand("results/audit/recipe_{run}.json", run=RELEASED_RUNS),
        # MDETR's released annotations vs our conversion, when configured (published recipe)
        expand(
            "results/audit/mdetr_annotations_{split}.json",
            split=SPLITS if config["dataset"]["mdetr_annotations"] else [],
        ),
