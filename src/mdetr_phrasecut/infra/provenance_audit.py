"""`mdetr-phrasecut audit`: walk the provenance records back from an artifact and name every artifact in the
chain that is missing, altered, or was produced from an input or a config other than the current one."""
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..arguments import IN_ANY, OUT_FILE, json_object_or_file
from ..errors import InputError
from .io import atomic_write_json
from .provenance import FORMAT, digest, jsonable, record_path


@dataclass
class Problem:
    artifact: str
    kind: str  # missing | altered | unrecorded | different-input | different-config
    detail: str

    def __str__(self):
        return f"{self.artifact}: {self.kind}: {self.detail}"


@dataclass
class Artifact:
    path: str
    sha256: str | None = None
    record: str | None = None
    problems: list = field(default_factory=list)
    shipped: bool = True  # False: absent, and the record that names it says it is not shipped beside it


def _config_differences(recorded, current, prefix=""):
    """Dotted keys whose recorded value differs from the current config (keys absent there are not judged)."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        for key in sorted(recorded.keys() & current.keys()):
            yield from _config_differences(recorded[key], current[key], f"{prefix}{key}.")
    elif recorded != current:
        yield prefix.rstrip("."), recorded, current


def _read_record(path: Path):
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return None, f"unreadable record {path}: {e}"
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        return None, f"{path} is not a provenance record ({FORMAT})"
    for key in ("outputs", "inputs"):
        entries = rec.get(key)
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and isinstance(e.get("path"), str) and isinstance(e.get("sha256"), str)
                for e in entries):
            return None, f"{path}: field '{key}' is missing or not a list of {{path, sha256}} entries"
    return rec, None


def walk(target, config=None, deep=False) -> list[Artifact]:
    """Check every artifact in the chain behind `target`, target first (depth-first); `deep` re-hashes folders
    rather than trusting their manifests' sizes and mtimes."""
    current_config = None if config is None else jsonable(config)
    seen: dict[Path, Artifact] = {}

    def visit(path: Path, expected=None, consumer: Artifact | None = None) -> Artifact:
        art = seen.get(path)
        if art is None:
            art = seen[path] = Artifact(str(path))
            inspect(path, art, expected)
        if expected is None or art.sha256 is None:
            return art
        if art.sha256 != expected["sha256"]:
            if art.record is None:  # nothing else vouches for it: it changed under its consumer
                art.problems.append(Problem(art.path, "altered", (
                    f"sha256 {art.sha256[:12]} differs from {expected['sha256'][:12]} recorded by {consumer.path}")))
            elif not any(p.kind == "altered" for p in art.problems):  # remade since: the consumer is stale
                consumer.problems.append(Problem(consumer.path, "different-input", (
                    f"made from {art.path} with sha256 {expected['sha256'][:12]}, which is now "
                    f"{art.sha256[:12]} (its record {art.record} agrees); re-run the step")))
        if expected.get("record") and art.record is None and not any(p.kind == "unrecorded" for p in art.problems):
            art.problems.append(Problem(art.path, "unrecorded", (
                f"{consumer.path} used it when it had a provenance record, now gone")))
        return art

    def inspect(path: Path, art: Artifact, expected):
        rec_file = record_path(path)
        if not os.path.exists(path) and (expected or {}).get("shipped") is False:
            art.shipped = False  # a shipped artifact's record (resources/) names an input left out: its sha256 stands
        elif not os.path.exists(path):
            art.problems.append(Problem(art.path, "missing", "file not found"))
        else:
            art.sha256 = digest(path, deep)
        if not rec_file.is_file():
            return
        rec, error = _read_record(rec_file)
        if error:
            art.problems.append(Problem(art.path, "unrecorded", error))
            return
        art.record = str(rec_file)
        own = next((o for o in rec["outputs"] if (rec_file.parent / o["path"]).resolve() == path.resolve()), None)
        if own is None:
            art.problems.append(Problem(art.path, "unrecorded", f"{rec_file} does not list it among its outputs"))
        elif art.sha256 is not None and art.sha256 != own["sha256"]:
            art.problems.append(Problem(art.path, "altered", (
                f"sha256 {art.sha256[:12]} differs from {own['sha256'][:12]} in its own record")))
        if current_config is not None and isinstance(rec.get("config"), dict):
            for key, old, new in _config_differences(rec.get("config"), current_config):
                art.problems.append(Problem(art.path, "different-config", f"{key} was {old!r}, config says {new!r}"))
        for entry in rec["inputs"]:
            visit(Path(os.path.normpath(rec_file.parent / entry["path"])), entry, art)

    root = visit(Path(os.path.normpath(target)))
    if root.record is None and not root.problems:
        root.problems.append(Problem(root.path, "unrecorded", f"no provenance record {record_path(target)}"))
    return list(seen.values())


def audit(target, config=None, deep=False) -> list[Problem]:
    """Problems in the chain behind `target`, the target's first; empty when the chain is intact.

    `config` (optional) is the current config: any record whose config slice disagrees with it
    on a key both hold is reported as produced with a different config.
    """
    return [p for art in walk(target, config, deep) for p in art.problems]


def add_arguments(parser):
    parser.add_argument("target", type=IN_ANY, help="artifact whose provenance chain to verify, e.g. results/table.md")
    parser.add_argument("--config-json", type=json_object_or_file,
                        help="current config (a JSON file, or inline JSON) to compare the records' config slices with")
    parser.add_argument("--out", type=OUT_FILE, help="write the per-artifact report here as JSON")
    parser.add_argument("--deep", action="store_true",
                        help="re-hash every file of folder artifacts (default: trust the sizes and mtimes of their "
                             "manifests)")


def main(args):
    artifacts = walk(args.target, args.config_json, args.deep)
    for art in artifacts:
        status = ", ".join(sorted({p.kind for p in art.problems})) or ("ok" if art.shipped else "not shipped")
        print(f"{status:<16} {art.path}  sha256 {(art.sha256 or '-')[:12]}  record {art.record or '-'}")
        for p in art.problems:
            print(f"{'':<16}   {p.kind}: {p.detail}")
    problems = [p for art in artifacts for p in art.problems]
    if args.out:
        atomic_write_json(args.out, {"target": str(args.target), "ok": not problems,
                                     "artifacts": [asdict(a) for a in artifacts]}, indent=1)
    if problems:
        raise InputError(f"provenance of {args.target} is broken ({len(problems)} problem(s)); first: {problems[0]}")
    print(f"provenance of {args.target}: {len(artifacts)} artifact(s), all consistent")
