"""Loopback imitations of the hosts the published recipe downloads from, one server (own port) each.

    with FakeHosts(drive_scan_limit=4096) as hosts:
        url = hosts.zenodo.add(record=5519755, name="mdetr_annotations.tar.gz", data=b"...")
        hosts.drive.add("FILE_ID", data=b"...", quota=False)       # -> http://127.0.0.1:P/uc?id=FILE_ID
        hosts.stanford.add("/data/gqa/images.zip", data=b"...")
        hosts.hf.add("datasets/junbeomHong/phrasecut", "refer_train.json", data=b"...")  # -> hf:// URL
        hosts.localize("https://zenodo.org/record/5519755/files/x")  # -> the loopback URL
        hosts.env()            # HF_ENDPOINT (and an isolated HF cache) for subprocesses
        hosts.drive.requests   # [(method, path, Range header, status), ...]

What each one does, as the real host does it (2026):
- Zenodo: `/record/N/files/X` answers 301 to `/records/N/files/X?download=1`, which serves the bytes.
- Google Drive: `/uc?id=ID` answers 303 to the usercontent host's `/download?id=ID&export=download` for a
  file up to the scan limit; above it, 200 with the HTML "can't scan this file for viruses" page whose
  form (hidden id, export, confirm=t, uuid) leads to the bytes. A dead id is 404 (an HTML page); a file
  over its quota is the HTML "Too many users have viewed or downloaded this file recently" page.
- Stanford (nlp.stanford.edu): static files.
- Hugging Face Hub: HEAD/GET `/datasets/OWNER/REPO/resolve/REV/PATH` (a model: `/OWNER/REPO/resolve/...`) with
  X-Repo-Commit, ETag and Content-Length, as `huggingface_hub.hf_hub_download` needs (no Xet headers: plain HTTP
  transfer); `/api/models/OWNER/REPO/tree/REV` (datasets likewise), the file list `snapshot_download` reads;
  unknown repo / revision / file: 404 with the Hub's X-Error-Code.
Every file answer honours Range (206, 416) and Content-Length; `fault=http_server.Fault(...)` makes
one file's byte answers (GET, not HEAD) fail (truncated, corrupt, an error status, slow) like http_server.serve's.
"""
import hashlib
import html
import json
import shutil
import tempfile
import threading
import time
import urllib.parse
import uuid
from http.server import ThreadingHTTPServer

from .http_server import Fault, FaultCounter, QuietHandler, run, send_bytes

NOT_FOUND_PAGE = b"<!DOCTYPE html><html><head><title>Not Found</title></head><body><h1>Not Found</h1></body></html>"

SCAN_PAGE = (  # drive.google.com/uc?id=ID above the scan limit (one line, as served)
    '<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>'
    '<meta http-equiv="content-type" content="text/html; charset=utf-8"/></head><body><div class="uc-main">'
    '<div id="uc-text"><p class="uc-warning-caption">Google Drive can\'t scan this file for viruses.</p>'
    '<p class="uc-warning-subcaption"><span class="uc-name-size"><a href="/open?id={id}">{name}</a> ({size})'
    '</span> is too large for Google to scan for viruses. Would you still like to download this file?</p>'
    '<form id="download-form" action="{action}" method="get"><input type="submit" id="uc-download-link" '
    'class="goog-inline-block jfk-button jfk-button-action" value="Download anyway"/>'
    '<input type="hidden" name="id" value="{id}"><input type="hidden" name="export" value="download">'
    '<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="{uuid}"></form>'
    '</div></div><div class="uc-footer"><hr class="uc-footer-divider"></div></body></html>')

QUOTA_PAGE = (
    '<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title>'
    '<meta http-equiv="content-type" content="text/html; charset=utf-8"/></head><body><div class="uc-main">'
    '<div id="uc-text"><p class="uc-error-caption">Sorry, you can&#39;t view or download this file at this time.'
    '</p><p class="uc-error-subcaption">Too many users have viewed or downloaded this file recently. Please try '
    'accessing the file again later. If the file you are trying to access is particularly large or is shared '
    'with many people, it may take up to 24 hours to be able to view or download the file. If you still '
    'can&#39;t access a file after 24 hours, contact your domain administrator.</p></div></div></body></html>')


class _Dispatch(QuietHandler):
    def do_GET(self):
        self.server.answer(self)

    do_HEAD = do_GET  # the same answer without its body (see Host.send_*)


class Host(ThreadingHTTPServer):
    """One fake host on 127.0.0.1: `base` is its URL, `requests` what it was asked and answered."""

    daemon_threads = True
    real_bases = ()  # the real host's URLs that `FakeHosts.localize` maps onto this one

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Dispatch)
        self.base = f"http://127.0.0.1:{self.server_address[1]}"
        self.requests, self.lock, self.counter = [], threading.Lock(), FaultCounter()
        self.times = []  # time.time() of each request, in the order of `requests`
        self.files, self.faults = {}, {}

    def answer(self, handler):
        path, _, query = handler.path.partition("?")
        self.route(handler, urllib.parse.unquote(path), urllib.parse.parse_qs(query))

    def note(self, handler, status):
        with self.lock:
            self.requests.append((handler.command, handler.path, handler.headers.get("Range"), status))
            self.times.append(time.time())

    def route(self, handler, path, query):
        """Answer `handler`'s request for `path` (unquoted) with `query` (parsed)."""
        raise NotImplementedError

    def send_file(self, handler, key, headers=()):
        fault = self.faults.get(key)
        active = fault is not None and handler.command == "GET" and self.counter.active(key, fault)  # not HEAD
        send_bytes(handler, self.files[key], fault, active, headers, body=handler.command == "GET")

    @staticmethod
    def send_page(handler, status, page, headers=(), content_type="text/html; charset=utf-8"):
        body = page if isinstance(page, bytes) else page.encode()
        handler.send_response(status)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command == "GET":
            handler.wfile.write(body)

    @staticmethod
    def redirect(handler, status, location):
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def _put(self, key, data, fault):
        self.files[key] = bytes(data)
        if fault is not None:
            self.faults[key] = fault


class Zenodo(Host):
    real_bases = ("https://zenodo.org",)

    def add(self, record, name, data, fault=None):
        """Serve `data` as file `name` of record `record`; returns the (old-style) record URL the config uses."""
        self._put((int(record), name), data, fault)
        return f"{self.base}/record/{record}/files/{name}"

    def route(self, handler, path, query):
        parts = path.strip("/").split("/", 3)
        if len(parts) == 4 and parts[0] in ("record", "records") and parts[1].isdigit() and parts[2] == "files":
            key = (int(parts[1]), parts[3])
            if key in self.files:
                if parts[0] == "record":
                    location = f"{self.base}/records/{parts[1]}/files/{urllib.parse.quote(parts[3])}?download=1"
                    return self.redirect(handler, 301, location)
                return self.send_file(handler, key, [
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Disposition", f'attachment; filename="{parts[3]}"')])
        return self.send_page(handler, 404, NOT_FOUND_PAGE)


class DriveUsercontent(Host):
    """drive.usercontent.google.com: the bytes behind Drive's `uc` links (the files live in `drive`)."""

    real_bases = ("https://drive.usercontent.google.com",)

    def __init__(self, drive):
        super().__init__()
        self.drive = drive

    def route(self, handler, path, query):
        file_id = query.get("id", [""])[0]
        entry = self.drive.entries.get(file_id)
        if path != "/download" or entry is None:
            return self.send_page(handler, 404, NOT_FOUND_PAGE)
        if entry["quota"]:
            return self.send_page(handler, 200, QUOTA_PAGE)
        confirmed = query.get("confirm") == ["t"] and query.get("uuid") == [entry["uuid"]]
        if len(self.drive.files[file_id]) > self.drive.scan_limit and not confirmed:
            return self.send_page(handler, 200, self.drive.scan_page(file_id))
        return self.send_file(handler, file_id, [
            ("Content-Type", "application/octet-stream"),
            ("Content-Disposition", f'attachment; filename="{entry["name"]}"')])


class Drive(Host):
    real_bases = ("https://drive.google.com",)

    def __init__(self, scan_limit):
        super().__init__()
        self.scan_limit, self.entries = scan_limit, {}
        self.usercontent = DriveUsercontent(self)
        self.files, self.faults = self.usercontent.files, self.usercontent.faults  # the bytes are served there

    def add(self, file_id, data, quota=False, name=None, fault=None):
        """Serve `data` as Drive file `file_id` (`quota`: over its download quota); returns its `uc?id=` URL.
        `fault` applies to the usercontent answers with the bytes."""
        self.entries[file_id] = {"quota": quota, "name": name or f"{file_id}.bin", "uuid": str(uuid.uuid4())}
        self.usercontent._put(file_id, data, fault)
        return f"{self.base}/uc?id={file_id}"

    def scan_page(self, file_id):
        entry = self.entries[file_id]
        return SCAN_PAGE.format(id=html.escape(file_id), name=html.escape(entry["name"]), uuid=entry["uuid"],
                                size=f"{len(self.files[file_id]) / 2**20:.1f}M",
                                action=f"{self.usercontent.base}/download")

    def route(self, handler, path, query):
        file_id = query.get("id", [""])[0]
        if path != "/uc" or file_id not in self.entries:
            return self.send_page(handler, 404, NOT_FOUND_PAGE)
        if self.entries[file_id]["quota"]:
            return self.send_page(handler, 200, QUOTA_PAGE)
        if len(self.files[file_id]) > self.scan_limit:
            return self.send_page(handler, 200, self.scan_page(file_id))
        location = f"{self.usercontent.base}/download?id={urllib.parse.quote(file_id)}&export=download"
        return self.redirect(handler, 303, location)


class Stanford(Host):
    real_bases = ("https://nlp.stanford.edu", "http://nlp.stanford.edu")

    def add(self, path, data, fault=None):
        """Serve `data` at `path` ("/data/gqa/images.zip"); returns its URL."""
        self._put(path, data, fault)
        return f"{self.base}{path}"

    def route(self, handler, path, query):
        if path not in self.files:
            return self.send_page(handler, 404, NOT_FOUND_PAGE)
        return self.send_file(handler, path, [("Content-Type", "application/zip")])


class HfHub(Host):
    real_bases = ("https://huggingface.co",)

    def __init__(self):
        super().__init__()
        self.commits = {}  # repo -> its one commit (40 hex digits)

    def add(self, repo, path, data, fault=None, commit=None):
        """Serve `data` as `path` of `repo` ("datasets/OWNER/NAME", or "OWNER/NAME": a model) at revision main and
        its one commit (`commit`, default one made from the name); returns its hf:// URL."""
        self.commits.setdefault(repo, commit or hashlib.sha1(repo.encode()).hexdigest())
        self._put((repo, path), data, fault)
        return f"hf://{repo}/{path}"

    def route(self, handler, path, query):
        if path == "/api/agent-harnesses":  # huggingface_hub's best-effort registry fetch (empty here)
            return self.send_page(handler, 200, b'{"standardEnvVars": [], "harnesses": {}}',
                                  content_type="application/json")
        api = path.startswith("/api/")  # /api/models/OWNER/NAME/tree/REV, /api/datasets/OWNER/NAME/tree/REV
        parts = path.removeprefix("/api").strip("/").split("/")
        if parts[0] == "models" and api:
            parts = parts[1:]
        n = 3 if parts[0] in ("datasets", "spaces") else 2  # OWNER/NAME/resolve/REV/PATH for a model
        repo, verb, rev = "/".join(parts[:n]), parts[n:n + 1], "/".join(parts[n + 1:n + 2])
        if verb != (["tree"] if api else ["resolve"]) or not rev or repo not in self.commits:
            return self._error(handler, "RepoNotFound", "Repository not found")
        commit = self.commits[repo]
        if rev not in ("main", commit):
            return self._error(handler, "RevisionNotFound", f"Invalid rev id: {rev}")
        if api:  # the whole tree, one page: what snapshot_download lists
            tree = [{"type": "file", "path": p, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                    for (r, p), data in self.files.items() if r == repo]
            return self.send_page(handler, 200, json.dumps(tree), content_type="application/json")
        file = "/".join(parts[n + 2:])
        key = (repo, file)
        if key not in self.files:
            return self._error(handler, "EntryNotFound", f"{file} does not exist on \"{rev}\"",
                               [("X-Repo-Commit", commit)])
        etag = hashlib.sha256(self.files[key]).hexdigest()
        return self.send_file(handler, key, [
            ("Content-Type", "application/octet-stream"), ("X-Repo-Commit", commit), ("ETag", f'"{etag}"')])

    def _error(self, handler, code, message, headers=()):
        return self.send_page(handler, 404, json.dumps({"error": message}),
                              [("X-Error-Code", code), ("X-Error-Message", message), *headers], "application/json")


class FakeHosts:
    """Zenodo, Google Drive (with its usercontent host), Stanford and the HF Hub on loopback, for a `with` block."""

    def __init__(self, drive_scan_limit=100 * 2**20):
        self.zenodo, self.drive, self.stanford, self.hf = Zenodo(), Drive(drive_scan_limit), Stanford(), HfHub()
        self.hosts = [self.zenodo, self.drive, self.drive.usercontent, self.stanford, self.hf]
        self.hf_home = None

    def __enter__(self):
        self.hf_home = tempfile.mkdtemp(prefix="fake-hf-home-")
        self._runs = [run(host) for host in self.hosts]
        for r in self._runs:
            r.__enter__()
        return self

    def __exit__(self, *exc):
        for r in reversed(self._runs):
            r.__exit__(None, None, None)
        shutil.rmtree(self.hf_home, ignore_errors=True)

    def env(self):
        """Environment for a process that should reach the fake Hub (and an empty HF cache of its own)."""
        return {"HF_ENDPOINT": self.hf.base, "HF_HOME": self.hf_home, "HF_HUB_OFFLINE": "0",
                "HF_HUB_DISABLE_TELEMETRY": "1"}

    def localize(self, url):
        """A real host's URL -> the same URL on its loopback imitation (hf:// and other URLs unchanged)."""
        for host in self.hosts:
            for real in host.real_bases:
                if url == real or url.startswith(real + "/"):
                    return host.base + url[len(real):]
        return url


__all__ = ["FakeHosts", "Fault"]
