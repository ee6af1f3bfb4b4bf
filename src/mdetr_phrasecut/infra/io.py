"""Safe file I/O: atomic writes that never overwrite an input, the one image opener, checksums.

Every artifact is written to a hidden temp file next to it (`.NAME.HOST.PID.XXXX[SUFFIX].tmp`, mode following
the umask) and renamed into place; temp files left by a killed writer of the same output on this host are
removed by the next write. Inside `guard(...)` (the CLI wraps every subcommand in one) an output that resolves
to a file the command reads (same file, hard link or symlink) is refused, and an output path that cannot be
written (a folder, a parent that is a file, a read-only file system) is one `InputError` naming the option.
"""
import contextlib
import contextvars
import hashlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

from ..errors import InputError
from .lifetime import alive

_GUARD = contextvars.ContextVar("io_guard", default=None)
_HOST = socket.gethostname().split(".")[0].replace("/", "_")


class _Guard:
    """The inputs (by inode) and the output options of one command."""

    def __init__(self, inputs, outputs):
        self.inputs = {}
        self.outputs = {Path(os.path.abspath(p)): name for p, name, _ in outputs}
        self.out_dirs = [Path(os.path.abspath(p)) for p, _, kind in outputs if kind == "dir"]
        for path, name in inputs:
            self.add_input(path, name)

    def add_input(self, path, name=None):
        with contextlib.suppress(OSError):
            st = os.stat(path)
            self.inputs.setdefault((st.st_dev, st.st_ino), f"{name} {path}" if name else str(path))

    def field(self, path) -> str:
        """`--option PATH` for an output given by (or inside the folder of) an option, else the path."""
        path = Path(os.path.abspath(path))
        for out, name in self.outputs.items():
            if path == out:
                return f"{name} {out}"
            if out in path.parents:
                return f"{name} {out}: {path.relative_to(out)}"
        return str(path)


@contextlib.contextmanager
def guard(inputs=(), outputs=()):
    """Within the block, atomic writes refuse to replace an input and name the option of a failing output.
    `inputs`: (path, option) pairs; `outputs`: (path, option, "file" | "dir")."""
    token = _GUARD.set(_Guard(inputs, outputs))
    try:
        yield
    finally:
        _GUARD.reset(token)


def note_input(path):
    """Record that the running command reads `path` (the shared readers call this); files inside one of its own
    output folders are its state (e.g. the checkpoint a training run resumes and rewrites), not inputs."""
    g = _GUARD.get()
    if g is not None and not any(d in Path(os.path.abspath(path)).parents for d in g.out_dirs):
        g.add_input(path)


def _describe(path) -> str:
    g = _GUARD.get()
    return g.field(path) if g is not None else str(path)


def check_output(path):
    """InputError when `path` is an input of the running command or cannot be a file."""
    path = Path(path)
    g = _GUARD.get()
    with contextlib.suppress(OSError):
        st = os.stat(path)
        if g is not None and (st.st_dev, st.st_ino) in g.inputs:
            raise InputError(f"{_describe(path)}: is an input of this command ({g.inputs[st.st_dev, st.st_ino]}); "
                             "refusing to overwrite it")
    if path.is_dir():
        raise InputError(f"{_describe(path)}: is a folder, expected a file path")


def remove_stale_temps(path, suffix=""):
    """Delete temp files of `path` left by killed writers on this host (their process is gone)."""
    path = Path(path)
    prefix = f".{path.name}.{_HOST}."
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            name = entry.name
            if name.startswith(prefix) and name.endswith(suffix + ".tmp"):
                pid = name[len(prefix):].split(".", 1)[0]
                if pid.isdigit() and int(pid) != os.getpid() and not alive(int(pid)):
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def _make_parent(path: Path):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        parent = next(p for p in path.parents if p.exists())
        raise InputError(f"{_describe(path)}: cannot create it, {parent} is a file, not a folder") from None
    except OSError as e:
        raise InputError(f"{_describe(path)}: cannot create its folder: {e.strerror}") from None


def temp_sibling(path, suffix="", directory=False) -> Path:
    """A new hidden temp file (or folder) next to `path`, named for stale-temp cleanup, mode per the umask."""
    path = Path(path)
    _make_parent(path)
    remove_stale_temps(path, suffix)
    make = tempfile.mkdtemp if directory else tempfile.mkstemp
    try:
        made = make(prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=suffix + ".tmp", dir=path.parent)
    except OSError as e:
        raise InputError(f"{_describe(path)}: cannot write there: {e.strerror}") from None
    if not directory:
        os.close(made[0])
        made = made[1]
    os.chmod(made, (0o777 if directory else 0o666) & ~_umask())
    return Path(made)


def replace_folder(built, out):
    """Put the finished folder `built` at `out`. An earlier `out` is set aside first and deleted only once `built`
    is in place; if that fails, it is put back."""
    built, out = Path(built), Path(out)
    old = None
    if out.is_dir():
        old = temp_sibling(out, ".old", directory=True)
        os.replace(out, old)
    try:
        os.replace(built, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old)


@contextlib.contextmanager
def built_folder(out):
    """Yield a new temporary sibling of the folder `out` to build in; when the block ends well it replaces `out`
    (`replace_folder`), otherwise it is removed and `out` is left as it was."""
    built = temp_sibling(out, directory=True)
    try:
        yield built
        replace_folder(built, out)
    finally:
        shutil.rmtree(built, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    check_output(path)
    tmp = temp_sibling(path, suffix)
    try:
        yield tmp
        check_output(path)  # an input noted while the block ran
        os.replace(tmp, path)
    except OSError as e:
        if e.filename not in (str(tmp), str(path)):
            raise
        raise InputError(f"{_describe(path)}: cannot write: {e.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_bytes(path, data: bytes):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path, text: str):
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_scalar(obj):
    """numpy / torch scalars -> Python numbers (json's `default` hook)."""
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def atomic_write_json(path, obj, indent=None):
    atomic_write_text(path, json.dumps(obj, indent=indent, default=_json_scalar))


def atomic_torch_save(obj, path):
    """torch.save through a temp file, so a checkpoint is never half-written; through an open file, so the zip's
    archive name is torch's fixed `archive/` rather than the temp file's random name, and the same object gives
    the same bytes (and sha256) on every run."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def open_image(path, what="image"):
    """The image at `path`, decoded, as RGB; a missing, corrupt or oversized (decompression-bomb) file is an
    InputError naming it (`what`: the record it belongs to)."""
    from PIL import Image

    note_input(path)
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise InputError(f"{path}: {what} file is missing") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"{path}: {what} is corrupt or unreadable ({type(e).__name__}: {e})") from None


def sha256_file(path, chunk=1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
