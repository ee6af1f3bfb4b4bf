"""Argument types of the subcommands: each path, number and JSON value is checked while the command line is parsed,
so bad input is one line naming the option before any work starts (argparse: `argument --x: ...`).

Paths are typed by role: `IN_FILE`/`IN_DIR` must exist as that kind; `OUT_FILE`/`OUT_DIR` must be creatable as
that kind (not the other kind already, every existing parent a writable folder). `cli.main` hands the inputs and
outputs to `io.guard`, so no output may resolve to an input.
"""
import argparse
import json
import math
import os
from pathlib import Path
from typing import NamedTuple

from .errors import InputError


class PathArg:
    """A path of `role` "in" or "out" and `kind` "file", "dir" or "any": either (an output: as other options
    decide). `rewritten`: an input the command itself rewrites (a resumed checkpoint), not guarded."""

    def __init__(self, role: str, kind: str, rewritten: bool = False):
        self.role, self.kind, self.rewritten = role, kind, rewritten

    def __call__(self, text: str) -> Path:
        path = Path(text)
        want = "a file" if self.kind == "file" else "a folder"
        if self.role == "in":
            if not path.exists():
                raise argparse.ArgumentTypeError(f"{path}: not found")
            if self.kind != "any" and path.is_dir() != (self.kind == "dir"):
                raise argparse.ArgumentTypeError(f"{path}: is {'a folder' if path.is_dir() else 'a file'}, "
                                                 f"expected {want}")
            if not os.access(path, os.R_OK):
                raise argparse.ArgumentTypeError(f"{path}: cannot be read (permission denied)")
            return path
        if self.kind != "any" and path.exists() and path.is_dir() != (self.kind == "dir"):
            raise argparse.ArgumentTypeError(f"{path}: is {'a folder' if path.is_dir() else 'a file'}, "
                                             f"expected {want} to write")
        here = path.absolute()
        parent = next(p for p in ((here, *here.parents) if self.kind == "dir" else here.parents) if p.exists())
        if not parent.is_dir():
            raise argparse.ArgumentTypeError(f"{path}: cannot be created, {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"{path}: cannot be written, {parent} is not writable "
                                             "(permissions or a read-only file system)")
        return path


IN_FILE, IN_DIR, IN_ANY = PathArg("in", "file"), PathArg("in", "dir"), PathArg("in", "any")
OUT_FILE, OUT_DIR = PathArg("out", "file"), PathArg("out", "dir")


class Named(NamedTuple):
    name: str
    path: Path


class NamedPathArg(PathArg):
    """`NAME=PATH`: a path and the fact it stands for (a run, a stage), given by the workflow so that no command
    reads meaning out of a path; the path checked as `PathArg`. `argument(name, path)` writes one."""

    def __call__(self, text: str) -> Named:
        name, sep, path = text.partition("=")
        if not sep or not name.strip() or not path:
            raise argparse.ArgumentTypeError(f"{text}: expected NAME=PATH")
        try:
            return Named(name, super().__call__(path))
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{name}={e}") from None

    @staticmethod
    def argument(name: str, path) -> str:
        if "=" in name:
            raise InputError(f"{name}: a name given as NAME=PATH cannot hold '='")
        return f"{name}={path}"


NAMED_IN_FILE, NAMED_IN_DIR = NamedPathArg("in", "file"), NamedPathArg("in", "dir")


def by_name(values, option, names=None):
    """{name: path} of `NamedPathArg` values, each name once; with `names`, exactly those (in that order)."""
    paths = {}
    for name, path in values or ():
        if name in paths:
            raise InputError(f"{option}: {name} is given twice")
        paths[name] = path
    if names is not None:
        if set(paths) != set(names):
            raise InputError(f"{option}: expected one file for each of {', '.join(names)}, got {', '.join(paths)}")
        paths = {name: paths[name] for name in names}
    return paths


def number(kind=int, minimum=None, maximum=None):
    """An int or finite float type within [minimum, maximum]."""
    bounds = " and ".join(b for b in (minimum is not None and f">= {minimum}", maximum is not None and f"<= {maximum}")
                          if b)
    wanted = f"{'an integer' if kind is int else 'a finite number'}{' ' + bounds if bounds else ''}"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or (minimum is not None and value < minimum) \
                or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    return parse


POSITIVE_INT, NONNEGATIVE_INT = number(int, 1), number(int, 0)
PROBABILITY = number(float, 0.0, 1.0)


def json_object(text: str) -> dict:
    """Inline JSON that must be an object."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {type(value).__name__}")
    return value


def json_object_or_file(value: str) -> dict:
    """Inline JSON (an object), or an existing file holding it."""
    if not value.lstrip().startswith("{"):
        path = IN_FILE(value)
        try:
            value = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise argparse.ArgumentTypeError(f"{path}: cannot be read ({e})") from None
    return json_object(value)


def text(value: str) -> str:
    """A non-empty string (not only whitespace)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def declared_paths(parser: argparse.ArgumentParser, args) -> tuple:
    """([(path, option)] guarded inputs, [(path, option, kind)] outputs) of the parsed `args`."""
    inputs, outputs = [], []
    for action in parser._actions:
        if not isinstance(action.type, PathArg) or getattr(args, action.dest, None) is None:
            continue
        values = getattr(args, action.dest)
        name = action.option_strings[0] if action.option_strings else action.dest
        for value in values if isinstance(values, list) else [values]:
            value = value.path if isinstance(value, Named) else value
            if action.type.role == "out":
                outputs.append((value, name, action.type.kind))
            elif not action.type.rewritten:
                inputs.append((value, name))
    return inputs, outputs
