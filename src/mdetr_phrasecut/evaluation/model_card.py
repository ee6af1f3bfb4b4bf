"""`mdetr-phrasecut model-card`: results/runs/{run}/MODEL_CARD.md, a Hugging Face model card of a trained checkpoint.

YAML metadata (huggingface_hub's ModelCardData: licence, task, dataset, `model-index` results) and the body of
the Hub's model-card layout, from what the pipeline measured and recorded: the test metrics with their bootstrap
intervals (`metrics.json`, `per_task.json`), the recipe as trained and the provenance hashes (the training
stages' `checkpoint.pth.prov.json` records), the training cost (the rules' benchmark files). `export-checkpoint
--hub-folder` copies it as the folder's README.md.
"""
import json
import os

from ..arguments import IN_FILE, NAMED_IN_FILE, OUT_FILE, by_name, json_object, text
from ..data.phrasecut_format import load_json
from ..errors import InputError
from ..infra.io import atomic_write_text
from ..infra.provenance import record_path
from .cost import cost_text, costs
from . import metrics as registry
from .statistics import add_bootstrap_arguments, bootstrap_options, interval_text, intervals, load_per_task
from .table import load_metrics

LICENSE = "apache-2.0"  # the release's (ashkamath/mdetr) licence, which the weights follow
CITATION = """@inproceedings{kamath2021mdetr,
  title={MDETR -- Modulated Detection for End-to-End Multi-Modal Understanding},
  author={Kamath, Aishwarya and Singh, Mannat and LeCun, Yann and Synnaeve, Gabriel and Misra, Ishan and
          Carion, Nicolas},
  booktitle={ICCV}, year={2021}
}
@inproceedings{wu2020phrasecut,
  title={PhraseCut: Language-Based Image Segmentation in the Wild},
  author={Wu, Chenyun and Lin, Zhe and Cohen, Scott and Bui, Trung and Maji, Subhransu},
  booktitle={CVPR}, year={2020}
}"""


def read_records(checkpoints):
    """{stage: provenance record} of training stages' checkpoints (`record_path`, see provenance.py), the stage
    named by the record's config slice (`train: {stage: ...}`)."""
    records = {}
    for path in map(record_path, checkpoints):
        if not path.is_file():
            raise InputError(f"{path}: provenance record not found (the checkpoint was not written with --record)")
        record = load_json(path)
        for key in ("outputs", "inputs", "config"):
            if not isinstance(record, dict) or key not in record:
                raise InputError(f"{path}: {key} is missing (not a provenance record of `--record`)")
        stages = list(record["config"].get("train") or {})
        if len(stages) != 1 or stages[0] in records:
            raise InputError(f"{path}: config.train must name the one stage the record is of, got {stages}")
        for kind in ("outputs", "inputs"):  # relative to the record's folder -> to here (absolute when outside)
            for entry in record[kind]:
                absolute = os.path.normpath(os.path.abspath(path.parent / entry["path"]))
                here = os.path.relpath(absolute)
                entry["path"] = absolute if here.startswith("..") else here
        records[stages[0]] = record
    return records


def card_data(name, metrics, stats, options, hashes):
    from huggingface_hub import EvalResult, ModelCardData

    results = [EvalResult(task_type="image-segmentation", task_name="Referring expression segmentation",
                          dataset_type="phrasecut", dataset_name=metrics["dataset"], dataset_split=metrics["split"],
                          metric_type=m.hub_type or m.key, metric_name=m.title,
                          metric_value=round(100 * stats[m.key]["value"], 2))
               for m in registry.reported()]
    ci = {m.key: [round(100 * stats[m.key]["lo"], 2), round(100 * stats[m.key]["hi"], 2)] for m in registry.reported()}
    return ModelCardData(
        model_name=name, license=LICENSE, library_name="pytorch", pipeline_tag="image-segmentation",
        tags=["mdetr", "phrasecut", "referring-expression-segmentation", "vision-language"],
        datasets=["phrasecut"], metrics=sorted(set(r.metric_type for r in results)), eval_results=results,
        confidence_intervals={"level": options["level"], "resamples": options["resamples"], "unit": options["unit"],
                              "seed": options["seed"], "percent": ci},
        provenance=hashes)


def _recipe(records):
    """Markdown of the config each stage was trained with (from its record), as YAML."""
    import yaml

    lines = []
    for stage, record in records.items():
        lines += [f"**{stage}**", "", "```yaml", yaml.safe_dump(record["config"], sort_keys=True).strip(), "```", ""]
    return "\n".join(lines)


def _hashes(metrics, records):
    """{what: sha256}: the checkpoint and test split the metrics came from, every input and output of each stage."""
    hashes = {"checkpoint": metrics["checkpoint_sha256"], "test_split": metrics["split_sha256"]}
    for stage, record in records.items():
        for kind in ("outputs", "inputs"):
            for entry in record[kind]:
                if entry.get("sha256"):
                    hashes[f"{stage} {kind[:-1]} {entry['path']}"] = entry["sha256"]
    return hashes


def render(name, metrics, stats, options, records, cost):
    from huggingface_hub import ModelCard

    hashes = _hashes(metrics, records)
    data = card_data(name, metrics, stats, options, hashes)
    code = next(iter(records.values())).get("code", {})
    rows = "\n".join(f"| {m.title} | {interval_text(*(100 * stats[m.key][k] for k in ('value', 'lo', 'hi')), m.digits)}"
                     " |" for m in registry.reported())
    body = f"""
# MDETR for referring-expression segmentation: training `{name}`

MDETR (Kamath et al., 2021) fine-tuned for PhraseCut: given an image and a phrase, the mask of the region the
phrase refers to. Trained and evaluated by the mdetr-phrasecut workflow (Snakemake + PyTorch), recipe below.

## Model details

- Architecture: MDETR (DETR with a RoBERTa text encoder), smallconv mask head; backbone
  `{records[list(records)[-1]]['config'].get('model', {}).get('backbone', 'see recipe')}`.
- Licence: {LICENSE} (as the released MDETR code and checkpoints); the data keep their own licences.
- Code: {json.dumps(code)}

## Uses

Segment the region of an image a short English phrase names (`mdetr-phrasecut predict`). Research use. Trained
on PhraseCut, a model inherits the biases of Visual Genome's images and phrases, and fails most on rare
categories and small regions: the failure browser of its evaluation shows where.

## Training details

Stage 1 fine-tunes the detector from the pre-trained checkpoint; stage 2 freezes it and trains the mask head.
The recipe as trained (the config each stage's provenance record holds):

{_recipe(records)}
Training cost: {cost}.

## Evaluation

Dataset: **{metrics['dataset']}**, split `{metrics['split']}`, {metrics['num_phrases']} phrases
({metrics['missing']} without a prediction). Values in %, with the {options['level']:.0%} percentile bootstrap
interval over {options['resamples']:,} resamples of the test {options['unit']}s (seed {options['seed']}).

| Metric | Value [interval] |
|---|---:|
{rows}

## Provenance

| Artifact | sha256 |
|---|---|
""" + "\n".join(f"| {what} | `{digest}` |" for what, digest in hashes.items()) + f"""

## Citation

```bibtex
{CITATION}
```
"""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def write_card(name, metrics_path, per_task_path, checkpoints, out, options, benchmarks=None, gpus=None):
    """Write the model card `out` of training `name`; checkpoints: the training stages', in order; benchmarks:
    {stage: its benchmark file}."""
    metrics = load_metrics(metrics_path)
    stats = intervals(load_per_task(per_task_path), subsets=("all",), **options)["all"]
    records = read_records(checkpoints)
    cost = (cost_text(costs([(name, stage, path) for stage, path in benchmarks.items()], [name], gpus or {})[name])
            if benchmarks else "not measured")
    atomic_write_text(out, render(name, metrics, stats, options, records, cost))


def add_arguments(parser):
    parser.add_argument("--name", required=True, type=text, help="the training, e.g. demo")
    parser.add_argument("--metrics", required=True, type=IN_FILE, help="results/runs/{run}/test/metrics.json")
    parser.add_argument("--per-task", required=True, type=IN_FILE, help="per_task.json beside it")
    parser.add_argument("--checkpoints", nargs="+", required=True, type=IN_FILE,
                        help="the stages' checkpoint.pth, in training order; their provenance records are read")
    parser.add_argument("--benchmarks", nargs="+", type=NAMED_IN_FILE,
                        help="STAGE=results/benchmarks/{stage}_{run}.tsv for each stage: the cost")
    parser.add_argument("--gpus-json", type=json_object, default={}, help='GPUs each stage holds, {"stage1": 32, ...}')
    parser.add_argument("--out", required=True, type=OUT_FILE, help="results/runs/{run}/MODEL_CARD.md")
    add_bootstrap_arguments(parser)


def main(args):
    write_card(args.name, args.metrics, args.per_task, args.checkpoints, args.out, bootstrap_options(args),
               by_name(args.benchmarks, "--benchmarks"), args.gpus_json)
