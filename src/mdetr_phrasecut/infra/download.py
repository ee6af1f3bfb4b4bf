"""Fetch a file from its URL or, failing that, from its mirrors: resumable, content-checked, sha256-verified, atomic.

Sources are tried in order: http(s)://, file:// or a local path; `hf://datasets/OWNER/REPO[@REV]/PATH` (the
Hugging Face Hub through `huggingface_hub.hf_hub_download`, which honours HF_ENDPOINT); and `Source(url, member)`,
one member of the zip / tar archive at `url`, the archive fetched once into a cache folder that every entry naming
it shares (under a file lock, so two jobs at once fetch it once).

An HTTP transfer goes to `DEST.part` (`DEST.<hash>.part` for a mirror); an interrupted one resumes with a Range
request. An HTML page where a file should be is read: a download-confirmation form (Google Drive's virus-scan
warning above its scan limit) is followed, with gdown's parser; any other page (a quota page, an error page) fails
that source. Every fetched file must look like its `kind` (json, zip, tar, pth: leading bytes) before its sha256 is
checked; only then does it appear as `DEST`. A failed source is one warning line, and the next one is tried.
`extract` unpacks a .zip / .tar(.gz) archive into a folder that likewise appears only when complete.

`snapshot` fetches a Hub repository at a pinned revision (`hf://[models/]OWNER/REPO@REVISION`, e.g. a text
encoder) into a folder through `huggingface_hub.snapshot_download`: the files `transformers` loads a model from
(configs, tokenizer files, safetensors weights), checked against the sha256 over the folder's files if given.
"""
import contextlib
import hashlib
import http.client
import logging
import os
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..arguments import OUT_DIR, PathArg
from ..errors import InputError
from .io import built_folder, sha256_file

log = logging.getLogger(__name__)

TRANSFER_ERRORS = (OSError, http.client.HTTPException)  # urllib.error.URLError is an OSError
KINDS = ("json", "zip", "tar", "pth", "archive")  # archive: zip or tar (a mirror's container)
MAGIC = {"zip": (b"PK\x03\x04", b"PK\x05\x06"), "pth": (b"PK\x03\x04", b"\x80"),  # torch.save: zip, or a pickle
         "tar": (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")}  # .tar.gz / .bz2 / .xz; a plain tar says ustar at 257
MAGIC["archive"] = MAGIC["zip"] + MAGIC["tar"]
PAGE_LIMIT = 1 << 20  # bytes of an HTML page read to tell what it is
HF_URL = re.compile(r"hf://(?P<type>datasets/|spaces/|models/)?(?P<repo>[^/@]+/[^/@]+)(?:@(?P<rev>[^/]+))?"
                    r"/(?P<path>.+)")
HF_REPO_URL = re.compile(r"hf://(?P<type>datasets/|spaces/|models/)?(?P<repo>[^/@]+/[^/@]+)@(?P<rev>[^/]+)/?")
HF_REPO_TYPES = {"datasets/": "dataset", "spaces/": "space"}  # else a model
SNAPSHOT_FILES = ("*.json", "*.txt", "*.model", "*.safetensors")  # what transformers loads, one weights format


@dataclass(frozen=True)
class Source:
    """Where a file comes from: `url`, or the member `member` of the zip / tar archive at `url`."""

    url: str
    member: str | None = None

    def __str__(self):
        return f"{self.url} (member {self.member})" if self.member else self.url


class _SourceFailed(Exception):
    """The source answered, but not with the file (a page, wrong bytes, no such member): try the next one."""


class _RangeNotSatisfiable(Exception):
    """The source holds no bytes past the part file's length (it is complete, or bogus)."""


def kind_of(path):
    """The kind a destination's file name implies (None: no content check beyond refusing HTML pages)."""
    name = Path(path).name.lower()
    for kind, suffixes in {"json": (".json",), "zip": (".zip",), "pth": (".pth", ".pt"),
                           "tar": (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")}.items():
        if name.endswith(suffixes):
            return kind
    return None


def download(url, dest, sha256, *, mirrors=(), kind=None, archive_dir=None, retries=3, chunk_size=1 << 20,
             timeout=60, progress=True, allow_unverified=False, retry_wait=1.0) -> Path:
    """Fetch `url` (or, failing that, each of `mirrors` in turn: URLs or `Source`s) into `dest`; return `dest`.

    The file must look like `kind` (default: from `dest`'s name) and match `sha256` (hex). An existing `dest`
    that does is kept as is; one with another checksum stays in place until a verified replacement is renamed onto
    it; one that is not a `kind` file at all (a page) is set aside as `dest.rejected`, removed only once a verified
    file is in place.
    Transfer failures are retried `retries` times per source, resuming the part file; a page or wrong bytes
    moves on to the next source at once. `sha256=None` needs `allow_unverified=True` and logs the hash.
    Member mirrors fetch their archive into `archive_dir` (default: `dest`'s folder).
    Raises InputError naming `dest` and each source's failure when no source gives a verified file.
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
    kind = kind or kind_of(dest)
    if kind is not None and kind not in KINDS:
        raise InputError(f"{url}: kind of {dest} must be one of {', '.join(KINDS)}, got {kind!r}")
    rejected = dest.with_name(dest.name + ".rejected")
    if dest.exists() and _existing_is_good(dest, sha256, kind, rejected):
        return dest

    dest.parent.mkdir(parents=True, exist_ok=True)
    sources = [Source(url)] + [m if isinstance(m, Source) else Source(m) for m in mirrors]
    parts = [_part_path(dest, i, source) for i, source in enumerate(sources)]
    options = {"chunk_size": chunk_size, "timeout": timeout, "progress": progress, "label": dest.name,
               "archive_dir": Path(archive_dir) if archive_dir is not None else dest.parent,
               "retries": retries, "retry_wait": retry_wait}
    failures = []
    for i, (source, part) in enumerate(zip(sources, parts)):
        failure = _try_source(source, part, kind, sha256, dest, options)
        if failure is None:
            os.replace(part, dest)
            rejected.unlink(missing_ok=True)
            for other in parts:  # what other sources left for a resume
                other.unlink(missing_ok=True)
                shutil.rmtree(f"{other}.hf", ignore_errors=True)
            return dest
        log.warning("%s: %s%s", source, failure, "; trying the next source" if i + 1 < len(sources) else "")
        failures.append(f"{source}: {failure}")
    kept = f" (the file found there before is kept as {rejected})" if rejected.exists() else ""
    if len(sources) == 1:
        raise InputError(f"{url}: download to {dest} failed: {failure}{kept}")
    raise InputError(f"{dest}: no source gave the file: " + "; ".join(failures) + kept)


def _existing_is_good(dest, sha256, kind, rejected) -> bool:
    """Whether an existing `dest` can stay: right kind and checksum (or no checksum, with a warning). One of
    the wrong kind (a page saved by an earlier, fooled download) is never used: it is moved to `rejected`."""
    problem = check_content(dest, kind)
    if problem:
        log.warning("%s: existing file set aside as %s: %s; fetching it again", dest, rejected.name, problem)
        os.replace(dest, rejected)
        return False
    actual = sha256_file(dest)
    if sha256 is None:
        log.warning("%s: existing file kept UNVERIFIED, sha256 %s", dest, actual)
        return True
    if actual == sha256:
        return True
    log.warning("%s: existing file has sha256 %s, expected %s; fetching it again (it stays until a verified "
                "copy replaces it)", dest, actual, sha256)
    return False


def _part_path(dest, index, source):
    """The part file of source `index`: a mirror's own, so that a resume never mixes two sources' bytes."""
    if index == 0:
        return dest.with_name(dest.name + ".part")
    return dest.with_name(f"{dest.name}.{hashlib.sha256(str(source).encode()).hexdigest()[:8]}.part")


def _try_source(source, part, kind, expected, dest, options):
    """Leave the verified file at `part` and return None, or return why this source failed (one line)."""
    plain = source.member is None and not source.url.startswith("hf://")  # the others retry inside
    retries = options["retries"] if plain else 1
    failure = ""
    for attempt in range(1, retries + 1):
        if attempt > 1:
            time.sleep(options["retry_wait"] * (attempt - 1))
        try:
            actual = _fetch(source, part, kind, expected, options)
        except _SourceFailed as e:  # retrying will not change it
            return str(e)
        except TRANSFER_ERRORS as e:  # the part file is kept: the next attempt resumes it
            failure = _describe(e)
            log.warning("%s: attempt %d/%d failed: %s", source, attempt, retries, failure)
            continue
        if expected is None:
            log.warning("%s: %s downloaded UNVERIFIED, sha256 %s", source, dest, actual)
        elif actual != expected:
            failure = f"{dest}: sha256 {actual} does not match expected {expected}"
            log.warning("%s: attempt %d/%d: %s; fetching it again", source, attempt, retries, failure)
            part.unlink()
            continue
        return None
    return f"{failure} (after {retries} attempts)" if retries > 1 else failure


def _fetch(source, part, kind, expected, options) -> str:
    """Complete `part` from `source`, check its content and return its sha256."""
    if source.member is not None:
        actual = _fetch_member(source, part, options)
    elif source.url.startswith("hf://"):
        actual = _fetch_hf(source.url, part)
    else:
        actual = _fetch_url(source.url, part, expected, options)
    problem = check_content(part, kind)
    if problem:
        part.unlink()
        raise _SourceFailed(problem)
    return actual


def _fetch_url(url, part, expected, options) -> str:
    """Complete `part` from `url` (resuming from its current length) and return its sha256."""
    chunk_size, timeout = options["chunk_size"], options["timeout"]
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
            total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=options["label"],
            disable=not options["progress"]) as bar:
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


def _open_http(url, offset, timeout, follow_form=True):
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            raise _RangeNotSatisfiable() from e
        if 400 <= e.code < 500 and e.code not in (408, 429):  # will not change by asking again
            raise _SourceFailed(_describe(e)) from e
        raise
    if response.headers.get_content_type() == "text/html":  # not a file: a confirmation form, or a failure
        with response:
            target, what = read_page(response.read(PAGE_LIMIT).decode("utf-8", "replace"))
        if target is None or not follow_form:
            raise _SourceFailed(f"got an HTML page: {what}")
        log.info("%s: %s; following its download form", url, what)
        return _open_http(target, offset, timeout, follow_form=False)
    if response.status != 206:  # the whole file (a server may ignore Range)
        length = response.headers.get("Content-Length")
        return response, 0, int(length) if length is not None else None
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", "").strip())
    if not match or int(match[1]) != offset:
        response.close()
        return _open_http(url, 0, timeout, follow_form)
    return response, offset, None if match[2] == "*" else int(match[2])


def read_page(page):
    """(URL its download-confirmation form leads to, or None; what the HTML `page` is, in a few words)."""
    import bs4
    from gdown.download import get_url_from_gdrive_confirmation
    from gdown.exceptions import FileURLRetrievalError

    try:  # gdown reads the page line by line: one line, so that a form's inputs are read with it
        return get_url_from_gdrive_confirmation(" ".join(page.splitlines())), "Google Drive virus-scan warning"
    except FileURLRetrievalError:
        pass
    if "Too many users have viewed or downloaded this file recently" in page:
        return None, "Google Drive quota exceeded"
    title = bs4.BeautifulSoup(page, "html.parser").title
    return None, " ".join(title.get_text().split()) if title and title.get_text().strip() else "untitled"


def check_content(path, kind):
    """Why the file at `path` is not a `kind` file (an HTML page, empty, wrong leading bytes), or None."""
    with open(path, "rb") as f:
        head = f.read(PAGE_LIMIT)
    if not head:
        return "got an empty file"
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:64].lower()
    if start.startswith((b"<!doctype html", b"<html")) or (kind and kind != "json" and start.startswith(b"<")):
        return f"got an HTML page: {read_page(head.decode('utf-8', 'replace'))[1]}"
    if kind == "json":
        ok = start[:1] in (b"{", b"[")
    elif kind is not None:
        ok = head.startswith(MAGIC[kind]) or (kind in ("tar", "archive") and head[257:262] == b"ustar")
    else:
        ok = True
    return None if ok else f"got {os.path.getsize(path)} bytes that are not a {kind} file (they start {head[:16]!r})"


def _fetch_hf(url, part) -> str:
    """`hf://[datasets/]OWNER/REPO[@REV]/PATH` through huggingface_hub into `part` (resumable in `part`.hf/)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    match = HF_URL.fullmatch(url)
    if not match:
        raise _SourceFailed("not an hf://[datasets/]OWNER/REPO[@REVISION]/PATH URL")
    staging = part.with_name(part.name + ".hf")
    repo_type = HF_REPO_TYPES.get(match["type"], "model")
    try:  # huggingface_hub retries and resumes by itself
        path = hf_hub_download(match["repo"], match["path"], repo_type=repo_type, revision=match["rev"],
                               local_dir=staging, endpoint=os.environ.get("HF_ENDPOINT"))
    except (OSError, ValueError, EntryNotFoundError) as e:  # ValueError: a malformed repo id or revision
        raise _SourceFailed(_describe(e)) from e
    os.replace(path, part)
    shutil.rmtree(staging, ignore_errors=True)
    return sha256_file(part)


def snapshot(url, dest, sha256=None, allow_unverified=False) -> Path:
    """Fetch the Hub repository `hf://[models/|datasets/]OWNER/REPO@REVISION` (its `SNAPSHOT_FILES`) into the folder
    `dest`, which appears only when complete; `sha256`: over the folder's files (`provenance.digest`)."""
    from huggingface_hub import snapshot_download

    from .provenance import digest

    match = HF_REPO_URL.fullmatch(url)
    if not match:
        raise InputError(f"{url}: a snapshot needs an hf://[models/]OWNER/REPO@REVISION URL (a pinned revision)")
    if sha256 is None and not allow_unverified:
        raise InputError(f"{url}: no sha256 given for {dest}; pass a checksum or allow_unverified")
    dest = Path(dest)
    if dest.exists():
        raise InputError(f"{url}: {dest} already exists; remove it to fetch the snapshot again")
    try:
        with built_folder(dest) as staging:
            snapshot_download(match["repo"], repo_type=HF_REPO_TYPES.get(match["type"], "model"),
                              revision=match["rev"], local_dir=staging, allow_patterns=list(SNAPSHOT_FILES),
                              endpoint=os.environ.get("HF_ENDPOINT"))
            shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping, not the repo's
            actual = digest(staging, deep=True)
            if not any(staging.iterdir()):
                raise InputError(f"{url}: the snapshot holds none of {', '.join(SNAPSHOT_FILES)}")
            if sha256 is None:
                log.warning("%s: %s downloaded UNVERIFIED, sha256 over its files %s", url, dest, actual)
            elif actual != sha256.lower():
                raise InputError(f"{url}: sha256 over the files of {dest} is {actual}, expected {sha256}")
    except (OSError, ValueError) as e:  # the Hub's errors (unreachable, no such repo or revision) are OSErrors
        raise InputError(f"{url}: snapshot to {dest} failed: {_describe(e)}") from e
    return dest


def _fetch_member(source, part, options) -> str:
    """Copy member `source.member` of the archive at `source.url` into `part`; return its sha256."""
    archive_dir = options["archive_dir"]
    name = re.sub(r"[^\w.-]+", "_", Path(urllib.parse.urlparse(source.url).path).name or "archive")
    archive = archive_dir / f"{name}-{hashlib.sha256(source.url.encode()).hexdigest()[:12]}"
    from filelock import FileLock

    archive_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{archive}.lock"):  # a second job waits, then finds the archive there
        try:
            download(source.url, archive, None, kind="archive", allow_unverified=True,
                     **{k: options[k] for k in ("retries", "chunk_size", "timeout", "progress", "retry_wait")})
        except InputError as e:
            raise _SourceFailed(f"archive: {e}") from e
    hasher = hashlib.sha256()
    with contextlib.ExitStack() as stack:
        stream = _open_member(stack, archive, source.member)
        out = stack.enter_context(open(part, "wb"))
        while block := stream.read(options["chunk_size"]):
            out.write(block)
            hasher.update(block)
        out.flush()
        os.fsync(out.fileno())
    return hasher.hexdigest()


def _open_member(stack, archive, member):
    if zipfile.is_zipfile(archive):
        container = stack.enter_context(zipfile.ZipFile(archive))
        names = container.namelist()
        if member in names:
            return stack.enter_context(container.open(member))
    else:
        container = stack.enter_context(tarfile.open(archive, "r:*"))
        names = [m.name for m in container.getmembers() if m.isfile()]
        if member in names:
            return stack.enter_context(container.extractfile(member))
    like = [n for n in names if Path(n).name == Path(member).name]
    hint = f" (it has {', '.join(like)})" if like else ""
    raise _SourceFailed(f"no member {member} in the archive {archive}{hint}")


def _describe(error) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"got HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"{error.reason}"
    return f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"


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
    with built_folder(out_dir) as tmp:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, tmp)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, tmp)
        else:
            raise InputError(f"{archive}: not a zip or tar archive")
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
    parser.add_argument("--url", required=True, help="http(s):// or file:// URL, hf://datasets/OWNER/REPO/PATH, "
                                                     "or a local path")
    parser.add_argument("--mirror", dest="mirrors", action="append", nargs=1, default=[], metavar="URL",
                        help="another source of the same file, tried in order after --url (repeatable)")
    parser.add_argument("--mirror-member", dest="mirrors", action="append", nargs=2, metavar=("URL", "MEMBER"),
                        help="a source that is member MEMBER of the zip / tar archive at URL (repeatable)")
    parser.add_argument("--sha256", help="expected sha256 (hex); required unless --allow-unverified")
    parser.add_argument("--kind", choices=(*KINDS[:-1], "snapshot"),
                        help="what the file must be (default: from --out's name); snapshot: --url is a Hub repository "
                             "at a revision, --out the folder it goes to")
    parser.add_argument("--out", required=True, type=PathArg("out", "any"),
                        help="destination file (a folder for --kind snapshot)")
    parser.add_argument("--archive-dir", type=OUT_DIR, help="where archives of --mirror-member are cached, shared by "
                                                         "every download naming them (default: --out's folder)")
    parser.add_argument("--extract-to", type=OUT_DIR, help="also unpack the (zip / tar.gz) file into this folder")
    parser.add_argument("--retries", type=int, default=3, help="attempts per source before the next (default 3)")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="accept a file without a checksum (its sha256 is printed)")


def main(args):
    if args.sha256 is None and not args.allow_unverified:
        raise InputError(f"download {args.url}: --sha256 is required (or pass --allow-unverified)")
    if args.kind == "snapshot":
        if args.mirrors or args.extract_to:
            raise InputError(f"download {args.url}: a snapshot takes no mirrors and no extraction")
        from .provenance import digest

        snapshot(args.url, args.out, args.sha256, args.allow_unverified)
        print(args.sha256.lower() if args.sha256 else digest(args.out, deep=True))
        return
    if args.out.is_dir():
        raise InputError(f"--out {args.out}: is a folder, expected a file to write (or --kind snapshot)")
    mirrors = [Source(*m) for m in args.mirrors]
    path = download(args.url, args.out, args.sha256, mirrors=mirrors, kind=args.kind, archive_dir=args.archive_dir,
                    retries=args.retries, allow_unverified=args.allow_unverified)
    if args.extract_to is not None:
        extract(path, args.extract_to)
    print(args.sha256.lower() if args.sha256 else sha256_file(path))
