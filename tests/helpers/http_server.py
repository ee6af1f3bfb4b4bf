"""A loopback HTTP server for tests: serves given bytes per path, honours Range, and simulates faults.

    with serve({"/a.bin": data}, faults={"/a.bin": Fault(truncate_after=1000, times=1)}) as server:
        download(server.url("/a.bin"), ...)
        server.requests  # [(path, Range header or None, status), ...]

`send_bytes` (one response with Range and faults) and `run` (a server in a thread) are shared with
fake_hosts.py, the imitations of the real hosts.
"""
import contextlib
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Fault:
    """What goes wrong for one path. `times`: how many requests suffer truncate/corrupt/status (None: all)."""

    truncate_after: int | None = None  # drop the connection after this many body bytes
    corrupt: bool = False  # flip every byte of the body (length unchanged)
    ignore_range: bool = False  # answer 200 with the whole file even to a Range request
    status: int | None = None  # answer this error status instead
    delay: float = 0  # seconds to wait before the body
    times: int | None = None


class FaultCounter:
    """Counts requests per key, so that a Fault with `times` stops after that many."""

    def __init__(self):
        self.counts, self.lock = {}, threading.Lock()

    def active(self, key, fault) -> bool:
        with self.lock:
            count = self.counts.get(key, 0)
            self.counts[key] = count + 1
        return fault.times is None or count < fault.times


def send_bytes(handler, data, fault=None, active=True, headers=(), body=True) -> int:
    """Answer `handler`'s request with `data` (206 for a Range request, 416 past the end), suffering
    `fault` when `active`; `headers` are added to a successful answer. Returns the status sent."""
    fault = fault or Fault()
    range_header = handler.headers.get("Range")
    status, start = (fault.status, 0) if active and fault.status else (200, 0)
    if status == 200 and range_header and not fault.ignore_range:
        start = int(re.fullmatch(r"bytes=(\d+)-\d*", range_header)[1])
        status = 206 if start < len(data) else 416
    handler.send_response(status)
    if status >= 400:
        if status == 416:
            handler.send_header("Content-Range", f"bytes */{len(data)}")
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return status
    payload = data[start:]
    if active and fault.corrupt:
        payload = bytes(b ^ 0xFF for b in payload)
    for name, value in headers:
        handler.send_header(name, value)
    handler.send_header("Accept-Ranges", "bytes")
    handler.send_header("Content-Length", str(len(payload)))
    if status == 206:
        handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
    handler.end_headers()
    if active and fault.truncate_after is not None:
        payload = payload[:fault.truncate_after]
    if active:
        time.sleep(fault.delay)
    if body:
        with contextlib.suppress(ConnectionError):  # the client may hang up mid-body
            handler.wfile.write(payload)  # HTTP/1.0: the connection closes after the response
    return status


class QuietHandler(BaseHTTPRequestHandler):
    """Tells its server each answer's status before sending it, so a client that has an answer finds it logged."""

    timeout = 10  # seconds a stalled client may hold a thread

    def send_response(self, code, message=None):
        self.server.note(self, code)
        super().send_response(code, message)

    def log_message(self, *args):
        pass


class _Handler(QuietHandler):
    def do_GET(self):
        server = self.server
        data = server.files.get(self.path)
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            fault = server.faults.get(self.path, Fault())
            send_bytes(self, data, fault, server.counter.active(self.path, fault))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files, faults):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files, self.faults = dict(files), dict(faults or {})
        self.counter, self.requests = FaultCounter(), []
        self.lock = threading.Lock()

    def note(self, handler, status):
        with self.lock:
            self.requests.append((handler.path, handler.headers.get("Range"), status))

    def url(self, path):
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@contextlib.contextmanager
def run(server):
    """Serve `server` in a thread for the duration of the block, then shut it down."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def serve(files, faults=None):
    """Run the server on 127.0.0.1 (ephemeral port) in a thread for the duration of the block."""
    with run(_Server(files, faults)) as server:
        yield server
