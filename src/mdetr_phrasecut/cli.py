"""`mdetr-phrasecut SUBCOMMAND`: one entry point, one subcommand per pipeline stage.

Each subcommand lives in its own module exposing `add_arguments(parser)` (typed with `arguments`) and
`main(args)`; modules are imported lazily so `--help` stays fast. Any bad input -- a usage error, a bad value,
an output that would overwrite an input -- is one line on stderr and exit status 2. With `--record`, a
successful run also writes a provenance record next to each output (see `infra/provenance.py`); the workflow's rules
always pass it. An argument `@FILE` stands for FILE's lines, one argument each (the workflow passes its long JSON
values so: `--record @.snakemake/args/<hash>.json`).
"""
import argparse
import contextlib
import importlib
import os
import sys

from .infra import io
from .arguments import declared_paths, json_object
from .errors import InputError
from .infra.lifetime import die_with_launcher

COMMANDS = {
    "synth": ("mdetr_phrasecut.data.synth", "write a synthetic dataset in the original PhraseCut format"),
    "convert": ("mdetr_phrasecut.data.convert", "convert PhraseCut annotations to MDETR's COCO format"),
    "download": ("mdetr_phrasecut.infra.download", "fetch a file by URL, resumable and checksum-verified"),
    "index": ("mdetr_phrasecut.data.annotation_index", "pack a COCO annotation file into a memory-mapped index"),
    "audit-annotations": ("mdetr_phrasecut.data.annotations_audit", "compare MDETR's annotations with our conversion"),
    "recipe-audit": ("mdetr_phrasecut.engine.recipe_audit", "a released checkpoint's training args beside our config"),
    "train": ("mdetr_phrasecut.engine.train", "train stage 1 (detector) or stage 2 (mask head)"),
    "evaluate": ("mdetr_phrasecut.evaluation.evaluate", "run a checkpoint on a split and score it"),
    "table": ("mdetr_phrasecut.evaluation.table", "write results/table.md from measured metrics"),
    "compare": ("mdetr_phrasecut.evaluation.compare", "subsets side by side with intervals, or two evaluations paired"),
    "plots": ("mdetr_phrasecut.evaluation.plots", "draw metric, training-curve and prediction plots"),
    "browser": ("mdetr_phrasecut.evaluation.browser", "a static page of every phrase's IoU, masks and subsets"),
    "model-card": ("mdetr_phrasecut.evaluation.model_card", "a Hugging Face model card of a trained checkpoint"),
    "export-checkpoint": ("mdetr_phrasecut.model.export", "keep a checkpoint's (EMA) weights only, in float16"),
    "predict": ("mdetr_phrasecut.predict", "segment one phrase in one image"),
    "audit": ("mdetr_phrasecut.infra.provenance_audit", "verify the provenance chain behind an artifact"),
    "launch": ("mdetr_phrasecut.infra.launch", "start torchrun on every node of a Slurm job (one srun task each)"),
    "unlock": ("mdetr_phrasecut.infra.unlock", "after a killed Snakemake, remove its lock when no Snakemake runs here"),
}


class Parser(argparse.ArgumentParser):
    """Usage errors are InputErrors (one line), not argparse's usage block."""

    def error(self, message):
        raise InputError(f"{self.prog}: {message}")


def build_parser(selected=None):
    """(the parser, the parser of subcommand `selected` or None)."""
    parser = Parser(prog="mdetr-phrasecut", description=__doc__.splitlines()[0], fromfile_prefix_chars="@")
    parser.add_argument("--record", type=json_object, metavar="JSON",
                        help='{"outputs": [...], "inputs": [...], "config": {...}}: on success, write a provenance '
                             "record next to each output (config: the slice that made them, nested as in the file)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = None
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == selected:  # import only the module that runs
            importlib.import_module(module).add_arguments(p)
            chosen = p
    return parser, chosen


def _selected(argv):
    """The subcommand's name: the first word that is one (global options may come first)."""
    return next((a for a in argv if a in COMMANDS), None)


def main(argv=None):
    die_with_launcher(os.getppid())  # first: a torchrun worker whose launcher is gone must not start training
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser, sub = build_parser(_selected(argv))
        args = parser.parse_args(argv)
        inputs, outputs = declared_paths(sub, args)
        with io.guard(inputs, outputs):
            for path, _, kind in outputs:
                if kind == "file":
                    io.check_output(path)
            with _provenance(args, argv):
                return importlib.import_module(args._module).main(args) or 0
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _provenance(args, argv):
    """Records are written once, by the first process of a distributed run."""
    if args.record is None or int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0))) != 0:
        return contextlib.nullcontext()
    from .infra.provenance import recorded_step

    return recorded_step(args.record, ["mdetr-phrasecut", *argv])


if __name__ == "__main__":
    sys.exit(main())
