"""A small real HTTP/1.1 proxy in front of a coordinator, injecting faults by rule.

One request per connection: it asks the coordinator to close after each exchange (and the
agent's client sees ``connection: close``), so requests never share a connection. Rules match a
method and a path fragment and apply a fixed number of times:

- ``status``: answer this status (e.g. 503 with ``Retry-After``) without asking the coordinator;
- ``drop_after``: relay the response head and this many body bytes, then hang up;
- ``then``: forward the request, let the coordinator answer, call ``then`` (e.g. kill the
  coordinator), and hang up without relaying the answer; with ``cut_request``, forward only the
  head and half the body before calling ``then``.

When the coordinator is down the proxy answers 502, as a reverse proxy would.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Rule:
    method: str
    path_contains: str
    times: int = 1
    status: int | None = None
    retry_after: str | None = None
    drop_after: int | None = None
    cut_request: bool = False
    then: Callable[[], None] | None = None
    applied: int = 0


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    outcome: str  # "relayed <status>", "injected <status>", "dropped", "withheld", "bad gateway"


@dataclass
class FaultProxy:
    upstream_port: int
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._server.close()

    def requests(self, method: str, path_contains: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.method == method and path_contains in s.path]

    # --- internals -----------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _rule_for(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.method == method and rule.path_contains in path and rule.applied < rule.times:
                    rule.applied += 1
                    return rule
        return None

    def _record(self, method: str, path: str, headers: dict[str, str], outcome: str) -> None:
        with self._lock:
            self.seen.append(Seen(method, path, headers, outcome))

    def _serve(self, client: socket.socket) -> None:
        with client:
            try:
                request = _read_request(client)
            except (OSError, ValueError):
                return
            if request is None:
                return
            method, path, headers, head, body = request
            rule = self._rule_for(method, path)
            if rule is not None and rule.status is not None:
                extra = {"Retry-After": rule.retry_after} if rule.retry_after is not None else {}
                client.sendall(_response(rule.status, extra))
                self._record(method, path, headers, f"injected {rule.status}")
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=120)
            except OSError:
                client.sendall(_response(502, {}))
                self._record(method, path, headers, "bad gateway")
                return
            with upstream:
                if rule is not None and rule.cut_request and rule.then is not None:
                    upstream.sendall(head + body[: len(body) // 2])
                    time.sleep(0.2)  # let the coordinator start on the body
                    self._record(method, path, headers, "withheld")
                    rule.then()
                    return
                upstream.sendall(head + body)
                answer = _read_all(upstream)
            if rule is not None and rule.then is not None:
                self._record(method, path, headers, "withheld")
                rule.then()
                return
            if rule is not None and rule.drop_after is not None:
                head_end = answer.index(b"\r\n\r\n") + 4
                client.sendall(answer[: head_end + rule.drop_after])
                self._record(method, path, headers, "dropped")
                return
            client.sendall(answer)
            status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "?"
            self._record(method, path, headers, f"relayed {status}")


def _read_request(client: socket.socket) -> tuple[str, str, dict[str, str], bytes, bytes] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(65536)
        if not chunk:
            return None
        data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        raise ValueError("the proxy forwards only requests with a Content-Length")
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = client.recv(65536)
        if not chunk:
            return None
        body += chunk
    kept = [line for line in lines[1:] if not line.lower().startswith("connection:")]
    head = "\r\n".join([lines[0], *kept, "Connection: close", "", ""]).encode("latin-1")
    return method, path, headers, head, body


def _read_all(upstream: socket.socket) -> bytes:
    parts = []
    while True:
        chunk = upstream.recv(65536)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)


def _response(status: int, headers: dict[str, str]) -> bytes:
    body = json.dumps({"error": {"code": "injected", "message": f"injected by the test proxy ({status})"}}).encode()
    lines = [f"HTTP/1.1 {status} Injected", "Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += ["Connection: close", "", ""]
    return "\r\n".join(lines).encode() + body
