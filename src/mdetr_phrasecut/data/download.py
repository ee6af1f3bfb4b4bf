"""Fetch a file by URL (http(s)://, file:// or a local path): resumable, sha256-verified, atomic.

The transfer goes to `DEST.part`; an interrupted transfer resumes with an HTTP Range request, and the
file appears as `DEST` only once its sha256 (and Content-Length) checked out. `extract` unpacks a
.zip / .tar(.gz) archive into a folder that likewise appears only when complete.
"""
import hashlib
import http.client
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from ..errors import InputError
from ..io import sha256_file

log = logging.getLogger(__name__)

TRANSFER_ERRORS = (OSError, http.client.HTTPException)  # urllib.error.URLError is an OSError


class _RangeNotSatisfiable(Exception):
    """The source holds no bytes past the part file's length (it is complete, or bogus)."""


def download(url, dest, sha256, *, retries=3, chunk_size=1 << 20, timeout=60, progress=True,
             allow_unverified=False, retry_wait=1.0) -> Path:
    """Fetch `url` into `dest` and return `dest`, verified against `sha256` (hex).

    An existing `dest` with the right checksum is kept as is; one with a wrong checksum is removed and
    fetched again. Each of the `retries` attempts resumes the part file left by a broken transfer; a
    checksum mismatch discards it. `sha256=None` needs `allow_unverified=True` and only logs the hash.
    Raises InputError (naming URL, file and checksums) when no attempt gives a verified file.
    """
    dest = Path(dest)
    if sha256 is None:
        if not allow_unverified:
            raise InputError(f"{url}: no sha256 given for {dest}; pass a checksum or allow_unverified")
    elif not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise InputError(f"{url}: sha256 for {dest} is not 64 hex digits: {sha256!r}")
    else:
        sha256 = sha256.lower()
    if retries < 1:
        raise InputError(f"{url}: retries must be at least 1, got {retries}")

    if dest.exists():
        actual = sha256_file(dest)
        if sha256 is None:
            log.warning("%s: existing file kept UNVERIFIED, sha256 %s", dest, actual)
            return dest
        if actual == sha256:
            return dest
        log.warning("%s: existing file has sha256 %s, expected %s; fetching it again", dest, actual, sha256)
        dest.unlink()

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failure = ""
    for attempt in range(1, retries + 1):
        if attempt > 1:
            time.sleep(retry_wait * (attempt - 1))
        try:
            actual = _fetch_to_part(url, part, sha256, chunk_size, timeout, progress, dest.name)
        except TRANSFER_ERRORS as e:  # the part file is kept: the next attempt resumes it
            failure = _describe(e)
            log.warning("%s: attempt %d/%d failed: %s", url, attempt, retries, failure)
            continue
        if sha256 is None:
            log.warning("%s: %s downloaded UNVERIFIED, sha256 %s", url, dest, actual)
        elif actual != sha256:
            failure = f"{dest}: sha256 {actual} does not match expected {sha256}"
            log.warning("%s: attempt %d/%d: %s; fetching it again", url, attempt, retries, failure)
            part.unlink()
            continue
        os.replace(part, dest)
        return dest
    raise InputError(f"{url}: download to {dest} failed after {retries} attempts: {failure}")


def _fetch_to_part(url, part, expected, chunk_size, timeout, progress, label) -> str:
    """Complete `part` from `url` (resuming from its current length) and return its sha256."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        stream, start, total = _open(url, offset, timeout)
    except _RangeNotSatisfiable:
        if expected is not None and sha256_file(part) == expected:
            return expected
        log.warning("%s: %s (%d bytes) does not match the source; starting over", url, part, offset)
        stream, start, total = _open(url, 0, timeout)

    hasher = hashlib.sha256()
    if start:
        with open(part, "rb") as f:
            while block := f.read(chunk_size):
                hasher.update(block)
    received = start
    with stream, open(part, "ab" if start else "wb") as out, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
            disable=not progress) as bar:
        while block := stream.read(chunk_size):
            out.write(block)
            hasher.update(block)
            received += len(block)
            bar.update(len(block))
        out.flush()
        os.fsync(out.fileno())
    if total is not None and received != total:
        raise ConnectionError(f"transfer truncated: received {received} of {total} bytes")
    return hasher.hexdigest()


def _open(url, offset, timeout):
    """Open `url` at byte `offset`; return (stream, start, total size or None).

    `start` is the offset the source honoured: 0 when an HTTP server ignored the Range request.
    """
    scheme = urllib.parse.urlparse(url).scheme
    if scheme in ("http", "https"):
        return _open_http(url, offset, timeout)
    path = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path)) if scheme == "file" else Path(url)
    size = path.stat().st_size
    if offset > size:
        raise _RangeNotSatisfiable()
    stream = open(path, "rb")
    stream.seek(offset)
    return stream, offset, size


def _open_http(url, offset, timeout):
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            raise _RangeNotSatisfiable() from e
        raise
    if response.status != 206:  # the whole file (a server may ignore Range)
        length = response.headers.get("Content-Length")
        return response, 0, int(length) if length is not None else None
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", "").strip())
    if not match or int(match[1]) != offset:
        response.close()
        return _open_http(url, 0, timeout)
    return response, offset, None if match[2] == "*" else int(match[2])


def _describe(error) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"{error.reason}"
    return f"{type(error).__name__}: {error}"


def extract(archive, out_dir) -> Path:
    """Unpack a .zip or .tar(.gz/.bz2/.xz) `archive` into `out_dir` and return it.

    Members are unpacked into a temporary sibling folder that is renamed onto `out_dir` when all went
    well, so a partial extraction never appears as `out_dir`. Members that would land outside the
    folder (absolute paths, `..`, links pointing out) are refused with an InputError.
    """
    archive, out_dir = Path(archive), Path(out_dir)
    if out_dir.exists():
        raise InputError(f"{archive}: extraction target {out_dir} already exists; remove it to extract again")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, tmp)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, tmp)
        else:
            raise InputError(f"{archive}: not a zip or tar archive")
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _extract_zip(archive, root):
    with zipfile.ZipFile(archive) as zf:
        base = root.resolve()
        for name in zf.namelist():
            if not (base / name).resolve().is_relative_to(base):
                raise InputError(f"{archive}: member {name!r} would be extracted outside {root}; refused")
        zf.extractall(root)


def _extract_tar(archive, root):
    with tarfile.open(archive, "r:*") as tf:
        try:
            tf.extractall(root, filter="data")
        except tarfile.FilterError as e:
            raise InputError(f"{archive}: member {e.tarinfo.name!r} refused: {e}") from e


def add_arguments(parser):
    parser.add_argument("--url", required=True, help="http(s):// or file:// URL, or a local path")
    parser.add_argument("--sha256", help="expected sha256 (hex); required unless --allow-unverified")
    parser.add_argument("--out", required=True, type=Path, help="destination file")
    parser.add_argument("--extract-to", type=Path, help="also unpack the (zip / tar.gz) file into this folder")
    parser.add_argument("--retries", type=int, default=3, help="attempts before giving up (default 3)")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="accept a file without a checksum (its sha256 is printed)")


def main(args):
    if args.sha256 is None and not args.allow_unverified:
        raise InputError(f"download {args.url}: --sha256 is required (or pass --allow-unverified)")
    path = download(args.url, args.out, args.sha256, retries=args.retries, allow_unverified=args.allow_unverified)
    if args.extract_to is not None:
        extract(path, args.extract_to)
    print(args.sha256.lower() if args.sha256 else sha256_file(path))
