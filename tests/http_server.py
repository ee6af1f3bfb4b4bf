"""A loopback HTTP server for tests: serves given bytes per path, honours Range, and simulates faults.

    with serve({"/a.bin": data}, faults={"/a.bin": Fault(truncate_after=1000, times=1)}) as server:
        download(server.url("/a.bin"), ...)
        server.requests  # [(path, Range header or None, status), ...]
"""
import contextlib
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Fault:
    """What goes wrong for one path. `times`: how many requests suffer truncate/corrupt/status (None: all)."""

    truncate_after: int | None = None  # drop the connection after this many body bytes
    corrupt: bool = False  # flip every byte of the body (length unchanged)
    ignore_range: bool = False  # answer 200 with the whole file even to a Range request
    status: int | None = None  # answer this error status instead
    times: int | None = None


class _Handler(BaseHTTPRequestHandler):
    timeout = 10  # seconds a stalled client may hold a thread

    def do_GET(self):
        server = self.server
        with server.lock:
            count = server.counts.get(self.path, 0)
            server.counts[self.path] = count + 1
        data = server.files.get(self.path)
        fault = server.faults.get(self.path, Fault())
        active = fault.times is None or count < fault.times
        range_header = self.headers.get("Range")

        status = 404 if data is None else fault.status if active and fault.status else 200
        start = 0
        if status == 200 and range_header and not fault.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-\d*", range_header)[1])
            status = 206 if start < len(data) else 416
        with server.lock:
            server.requests.append((self.path, range_header, status))

        if status >= 400:
            self.send_response(status)
            if status == 416:
                self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = data[start:]
        if active and fault.corrupt:
            body = bytes(b ^ 0xFF for b in body)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if active and fault.truncate_after is not None:
            body = body[:fault.truncate_after]
        self.wfile.write(body)  # HTTP/1.0: the connection closes after the response

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files, faults):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files, self.faults = dict(files), dict(faults or {})
        self.counts, self.requests = {}, []
        self.lock = threading.Lock()

    def url(self, path):
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@contextlib.contextmanager
def serve(files, faults=None):
    """Run the server on 127.0.0.1 (ephemeral port) in a thread for the duration of the block."""
    server = _Server(files, faults)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
