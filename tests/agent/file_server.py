"""A small real HTTP server standing in for the coordinator's public-set routes: JSON documents, and
files with ETag, ``Range: bytes=N-`` and ``If-Range``, with faults injected per path on demand.

- ``cut``: the next answers for a path send their head and this many body bytes, then hang up;
- ``corrupt``: the next answers for a path carry the file with one byte changed (same length, same
  ETag): bytes that fail the hash the client expects.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Served:
    path: str
    range: str | None
    if_range: str | None
    status: int
    body_bytes: int  # body bytes written (before any cut)


@dataclass
class FileServer:
    documents: dict[str, Any] = field(default_factory=dict)  # path -> JSON body
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # path -> (bytes, sha256 for the ETag)
    cut: dict[str, list[int]] = field(default_factory=dict)  # path -> body bytes of the next answers
    corrupt: dict[str, int] = field(default_factory=dict)  # path -> how many answers to corrupt
    served: list[Served] = field(default_factory=list)
    url: str = ""

    def answers(self, path: str) -> list[Served]:
        return [s for s in self.served if s.path == path]


@contextmanager
def file_server() -> Iterator[FileServer]:
    state = FileServer()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the test reads ``served``

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            with lock:
                document = state.documents.get(path)
                found = state.files.get(path)
                cuts = state.cut.get(path)
                cut = cuts.pop(0) if cuts else None
                corrupt = state.corrupt.get(path, 0) > 0
                if corrupt:
                    state.corrupt[path] -= 1
            if document is not None:
                self._send(200, json.dumps(document).encode(), {"Content-Type": "application/json"}, path)
            elif found is None:
                self._send(404, b'{"error": {"code": "not_found", "message": "no such file", "details": {}}}', {}, path)
            else:
                data, sha = found
                if corrupt:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                self._file(path, data, sha, cut)

        def _file(self, path: str, data: bytes, sha: str, cut: int | None) -> None:
            etag = f'"{sha}"'
            headers = {"ETag": etag, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
            wanted, if_range = self.headers.get("Range"), self.headers.get("If-Range")
            start = 0
            if wanted is not None and (if_range is None or if_range == etag):
                start = int(wanted.removeprefix("bytes=").split("-", 1)[0])
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            status = 206 if "Content-Range" in headers else 200
            self._send(status, data[start:], headers, path, cut=cut)

        def _send(
            self, status: int, body: bytes, headers: dict[str, str], path: str, *, cut: int | None = None
        ) -> None:
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            written = body if cut is None else body[:cut]
            self.wfile.write(written)
            self.wfile.flush()
            if cut is not None:
                self.close_connection = True
            with lock:
                state.served.append(
                    Served(path, self.headers.get("Range"), self.headers.get("If-Range"), status, len(written))
                )

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="file-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
