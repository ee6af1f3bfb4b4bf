"""Provenance records next to every artifact (their audit: `provenance_audit.py`).

A step that writes `out` also writes `out.prov.json`: the sha256 of its outputs and inputs
(with the path of each input's own record), the config slice it used, the code and package
versions, the command line, host and timing. Paths in a record are relative to the record's
folder, so a results tree can be moved as a whole. `audit(target)` walks the records back from
a target and names every artifact that is missing, altered, or was produced from an input or a
config other than the current one (`provenance_audit.py`).

A folder is hashed once, where it is produced: `record` writes `<folder>.manifest.json` beside it
(relative path, size, mtime and sha256 of every file, and the folder's digest over paths and sha256s).
Later digests of the folder (every consumer's record, `audit`) compare sizes and mtimes with the
manifest and cite its digest, re-hashing only when they differ; `audit --deep` re-hashes everything.
"""
import contextlib
import functools
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from .. import __version__
from ..errors import InputError
from .io import atomic_write_json, sha256_file

SUFFIX = ".prov.json"
FORMAT = "mdetr-phrasecut-provenance/1"
MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = "mdetr-phrasecut-manifest/1"
SKIPPED = {".snakemake_timestamp"}  # Snakemake adds it to folder outputs after the step
PACKAGES = ("torch", "torchvision", "timm", "transformers", "numpy", "scipy", "pandas", "pillow",
            "pycocotools", "snakemake", "snakemake-executor-plugin-slurm")
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the package (code_version hashes all of it)


def record_path(artifact) -> Path:
    """Where the provenance record of `artifact` lives: `<artifact>.prov.json`."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SUFFIX)


def manifest_path(folder) -> Path:
    """Where the manifest of a folder lives: `<folder>.manifest.json`, beside it."""
    folder = Path(folder)
    return folder.with_name(folder.name + MANIFEST_SUFFIX)


def _files(folder: Path):
    """(relative path, stat) of every file under `folder`, in path order (by components, as `Path` sorts)."""
    found = []

    def scan(path, prefix):
        with os.scandir(path) as entries:
            for e in entries:
                if e.is_dir():
                    scan(e.path, f"{prefix}{e.name}/")
                elif e.is_file() and e.name not in SKIPPED:
                    found.append((f"{prefix}{e.name}", e.stat()))

    scan(folder, "")
    return sorted(found, key=lambda f: f[0].split("/"))


def _tree_digest(pairs) -> str:
    """sha256 over (relative path, sha256) of a folder's files, in path order."""
    h = hashlib.sha256()
    for rel, sha in pairs:
        h.update(f"{rel}\0{sha}\n".encode())
    return h.hexdigest()


def write_manifest(folder) -> str:
    """Hash every file of `folder` once and write its manifest; returns the folder's digest."""
    folder = Path(folder)
    files = [(rel, st.st_size, st.st_mtime_ns, sha256_file(folder / rel)) for rel, st in _files(folder)]
    folder_digest = _tree_digest((rel, sha) for rel, _, _, sha in files)
    atomic_write_json(manifest_path(folder), {"format": MANIFEST_FORMAT, "sha256": folder_digest,
                                              "files": [list(f) for f in files]})
    return folder_digest


def _manifest_digest(folder: Path) -> str | None:
    """The manifest's digest when the folder still holds exactly its files with their sizes and mtimes."""
    try:
        manifest = json.loads(manifest_path(folder).read_text())
        if manifest.get("format") != MANIFEST_FORMAT:
            return None
        listed = [(rel, size, mtime) for rel, size, mtime, _ in manifest["files"]]
        if _tree_digest((f[0], f[3]) for f in manifest["files"]) != manifest["sha256"]:
            return None  # the manifest itself was edited
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if listed != [(rel, st.st_size, st.st_mtime_ns) for rel, st in _files(folder)]:
        return None
    return manifest["sha256"]


def digest(path, deep=False) -> str:
    """sha256 of a file; of a folder, sha256 over its files' relative paths and sha256s, taken from its
    manifest when sizes and mtimes still match it (`deep`: always re-hashed)."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    cited = None if deep else _manifest_digest(path)
    return cited or _tree_digest((rel, sha256_file(path / rel)) for rel, _ in _files(path))


@functools.cache
def code_version() -> dict:
    """Git commit and dirty flag of the checkout holding this package (None outside git),
    the package version and a sha256 over the package's source files."""
    def git(*args):
        try:
            out = subprocess.run(["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain") if commit else None
    h = hashlib.sha256()
    for f in sorted(PACKAGE_DIR.rglob("*.py")):
        h.update(f"{f.relative_to(PACKAGE_DIR).as_posix()}\0{sha256_file(f)}\n".encode())
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status),
            "package_version": __version__, "source_sha256": h.hexdigest()}


@functools.cache
def package_versions() -> dict:
    """Installed versions of the libraries the results depend on (None when absent)."""
    versions = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _relative(path, start) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def jsonable(obj):
    return json.loads(json.dumps(obj, default=str, sort_keys=True))


def record(outputs, inputs, config_slice, command=None, started=None) -> None:
    """Write `<output>.prov.json` next to each output.

    `outputs`/`inputs` are paths (files or folders) that must exist; `config_slice` is the part of
    the config the step used, nested as in the config (so `audit` can compare it key by key);
    `command` defaults to sys.argv; `started` is the step's start time (epoch seconds, default now).
    """
    outputs, inputs = [Path(p) for p in outputs], [Path(p) for p in inputs]
    for kind, paths in (("output", outputs), ("input", inputs)):
        for p in paths:
            if not os.path.exists(p):
                raise InputError(f"--record: {kind} {p} does not exist (the step did not write it)"
                                 if kind == "output" else f"--record: input {p} does not exist")
    finished = time.time()
    started = finished if started is None else started
    output_digests = {p: write_manifest(p) if p.is_dir() else digest(p) for p in outputs}
    input_entries = [(p, digest(p), record_path(p) if record_path(p).is_file() else None) for p in inputs]
    common = {
        "format": FORMAT,
        "config": jsonable(config_slice),
        "code": code_version(),
        "packages": package_versions(),
        "command": list(sys.argv if command is None else command),
        "host": socket.gethostname(),
        "started": _iso(started),
        "finished": _iso(finished),
        "duration_s": round(finished - started, 3),
    }
    for out in outputs:
        start = out.parent
        atomic_write_json(record_path(out), {
            "outputs": [{"path": _relative(p, start), "sha256": d, **_manifest_entry(p, start)}
                        for p, d in output_digests.items()],
            "inputs": [{"path": _relative(p, start), "sha256": d, "record": r and _relative(r, start),
                        **_manifest_entry(p, start)} for p, d, r in input_entries],
            **common,
        }, indent=1)


def _manifest_entry(path: Path, start) -> dict:
    """{"manifest": its path} for a folder with a manifest (whose digest the entry cites)."""
    manifest = manifest_path(path)
    return {"manifest": _relative(manifest, start)} if path.is_dir() and manifest.is_file() else {}


@contextlib.contextmanager
def step(outputs, inputs=(), config=None, command=None):
    """`with step(outputs=[...], inputs=[...], config=slice):` records provenance when the block succeeds."""
    started = time.time()
    yield
    record(outputs, inputs, {} if config is None else config, command=command, started=started)


def _path_list(spec: dict, key: str, what: str) -> list:
    value = spec.get(key, [])
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise InputError(f"{what}: '{key}' must be a list of paths, got {json.dumps(value)[:80]}")
    return value


def recorded_step(spec, command):
    """`step` from the CLI's `--record` JSON ({"outputs": [...], "inputs": [...], "config": {...}}), checked first."""
    if not isinstance(spec, dict) or not spec.get("outputs"):
        raise InputError(f"--record: needs an object with a non-empty 'outputs' list, got {json.dumps(spec)[:80]}")
    if not isinstance(spec.get("config", {}), dict):
        raise InputError("--record: 'config' must be an object")
    return step(_path_list(spec, "outputs", "--record"), _path_list(spec, "inputs", "--record"), spec.get("config"),
                command=command)
