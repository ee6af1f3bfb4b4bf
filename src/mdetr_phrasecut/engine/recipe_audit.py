"""`recipe-audit`: a released checkpoint's own training arguments (the `args` argparse.Namespace the release's
main.py saves in every checkpoint) beside our resolved config for the stage it belongs to, parameter by parameter.

Writes OUT.md and OUT.json: one row per parameter of ours (`same`, `differs`, or `not recorded` when the
checkpoint's args lack it), and the checkpoint's arguments we have no counterpart for (`unknown`, listed with their
values). Never fails on what the args hold: missing, unreadable or odd `args` are reported as such.
"""
import argparse
import json
import math

from ..arguments import IN_FILE, OUT_FILE, POSITIVE_INT
from ..config import load_spec, resolve_stage
from ..infra.io import atomic_write_json, atomic_write_text
from ..model.checkpoint_file import read_checkpoint
from ..stages import EVALUATED, TRAIN_STAGES

# our key -> how the release's args express it (a name, or a function of the args dict; None: not derivable)
DERIVED = {
    "freeze_detr": lambda a: a["frozen_weights"] is not None if "frozen_weights" in a else None,
    "eval_every": "eval_skip",
}
# the release's arguments that are bookkeeping, not recipe (paths, run names, distributed plumbing)
BOOKKEEPING = {"run_name", "dataset_config", "coco_path", "vg_img_path", "vg_ann_path", "clevr_img_path",
               "clevr_ann_path", "phrasecut_ann_path", "phrasecut_orig_ann_path", "modulated_lvis_ann_path",
               "output_dir", "device", "resume", "load", "start_epoch", "eval", "dist_url", "rank", "gpu",
               "distributed", "dist_backend", "job_dir", "timeout", "partition", "comment", "ngpus", "nodes",
               "combine_datasets", "combine_datasets_val", "test", "test_type"}


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _plain(value):
    """A JSON-able form of an argument value."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return repr(value)


def release_args(ckpt: dict) -> tuple:
    """(the checkpoint's args as a dict, a note on what they were)."""
    args = ckpt.get("args")
    if isinstance(args, argparse.Namespace):
        return vars(args), "argparse.Namespace"
    if isinstance(args, dict):
        return dict(args), "dict"
    return {}, f"no usable args ({type(args).__name__})"


def audit(args: dict, ours: dict) -> dict:
    """Rows of (parameter, release, ours, status) for every key of `ours`; the args' other keys as `unknown`."""
    rows, used = [], set()
    for key in sorted(ours):
        how = DERIVED.get(key, key)
        if callable(how):
            theirs = how(args)
            used.add("frozen_weights")
        else:
            theirs = args.get(how)
            used.add(how)
        recorded = theirs is not None or (not callable(how) and how in args)
        status = "not recorded" if not recorded else "same" if _same(theirs, ours[key]) else "differs"
        rows.append({"parameter": key, "release": _plain(theirs) if recorded else None,
                     "ours": _plain(ours[key]), "status": status})
    unknown = {k: _plain(v) for k, v in sorted(args.items()) if k not in used and k not in BOOKKEEPING}
    return {"rows": rows, "differences": [r["parameter"] for r in rows if r["status"] == "differs"],
            "not_recorded": [r["parameter"] for r in rows if r["status"] == "not recorded"], "unknown": unknown}


def markdown(report: dict) -> str:
    lines = [f"# Recipe audit: {report['run']}", "",
             f"The released checkpoint `{report['checkpoint']}` ({report['args_kind']}) beside our {report['stage']} "
             f"config: {len(report['differences'])} differ, {len(report['not_recorded'])} not recorded in the "
             f"checkpoint, {len(report['unknown'])} of its arguments unknown to us.", "",
             "| parameter | release (checkpoint args) | ours | |", "|---|---|---|---|"]
    flag = {"same": "", "differs": "**differs**", "not recorded": "not recorded"}
    for r in report["rows"]:
        lines.append(f"| {r['parameter']} | {json.dumps(r['release'])} | {json.dumps(r['ours'])} | "
                     f"{flag[r['status']]} |")
    lines += ["", "Arguments of the checkpoint we have no counterpart for:", ""]
    lines += [f"- {k}: {json.dumps(v)}" for k, v in report["unknown"].items()] or ["- none"]
    return "\n".join(lines) + "\n"


def add_arguments(parser):
    parser.add_argument("--checkpoint", required=True, type=IN_FILE, help="the released checkpoint")
    parser.add_argument("--spec", required=True, type=IN_FILE,
                        help='JSON file: our {"model": {...}, "train": {...}} of that stage')
    parser.add_argument("--stage", default=EVALUATED, choices=TRAIN_STAGES, help="the stage it was trained in")
    parser.add_argument("--world-size", type=POSITIVE_INT, required=True, help="our processes for that stage")
    parser.add_argument("--run", required=True, help="the run's name (shown)")
    parser.add_argument("--out-md", required=True, type=OUT_FILE)
    parser.add_argument("--out-json", required=True, type=OUT_FILE)


def main(args):
    ours = resolve_stage(load_spec(args.spec), args.stage).as_args()
    ours["world_size"] = args.world_size
    theirs, kind = release_args(read_checkpoint(args.checkpoint))
    report = {"run": args.run, "checkpoint": str(args.checkpoint), "stage": args.stage, "args_kind": kind,
              **audit(theirs, ours)}
    atomic_write_json(args.out_json, report, indent=1)
    atomic_write_text(args.out_md, markdown(report))
    differ = ", ".join(report["differences"]) or "none"
    print(f"recipe audit {args.run}: released checkpoint vs our {args.stage}: differ: {differ}; "
          f"{len(report['not_recorded'])} not recorded, {len(report['unknown'])} unknown ({args.out_md})")
    return 0
