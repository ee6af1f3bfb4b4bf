"""Atomic writes and checksums: every artifact is written to a temp file and renamed into place."""
import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
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
    """torch.save through a temp file, so a checkpoint is never half-written."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def sha256_file(path, chunk=1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
