"""`mdetr-phrasecut SUBCOMMAND`: one entry point, one subcommand per pipeline stage.

Each subcommand lives in its own module exposing `add_arguments(parser)` and `main(args)`;
modules are imported lazily so `--help` stays fast.
"""
import argparse
import importlib
import sys

from .errors import InputError

COMMANDS = {
    "synth": ("mdetr_phrasecut.data.synth", "write a synthetic dataset in the original PhraseCut format"),
    "convert": ("mdetr_phrasecut.data.convert", "convert PhraseCut annotations to MDETR's COCO format"),
    "download": ("mdetr_phrasecut.data.download", "fetch a file by URL, resumable and checksum-verified"),
    "audit-annotations": ("mdetr_phrasecut.data.annotations_audit", "compare MDETR's annotations with our conversion"),
    "train": ("mdetr_phrasecut.engine.train", "train stage 1 (detector) or stage 2 (mask head)"),
    "evaluate": ("mdetr_phrasecut.evaluation.evaluate", "run a checkpoint on a split and score it"),
    "table": ("mdetr_phrasecut.evaluation.table", "write results/table.md from measured metrics"),
    "plots": ("mdetr_phrasecut.evaluation.plots", "draw metric, training-curve and prediction plots"),
    "predict": ("mdetr_phrasecut.predict", "segment one phrase in one image"),
    "audit": ("mdetr_phrasecut.provenance", "verify the provenance chain behind an artifact"),
}


def build_parser(selected=None):
    parser = argparse.ArgumentParser(prog="mdetr-phrasecut", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == selected:  # import only the module that runs
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        return importlib.import_module(args._module).main(args) or 0
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
