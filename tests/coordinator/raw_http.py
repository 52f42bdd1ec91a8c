"""HTTP/1.1 over a raw socket, for what an HTTP client library will not do: send headers and hold
the body back to see whether the server answers without it, stream a body with a Content-Length it
never sends, open sockets that never finish their headers. And what the server process holds:
its resident memory and its open file descriptors (Linux /proc)."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from coordinator_service.launcher import HOST

MiB = 1 << 20


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no answer (the connection closed first, or time ran out)
    body: bytes
    headers: dict[str, str]
    body_sent: int  # bytes of the request body sent before the answer came
    seconds: float  # from the last header byte sent to the answer
    closed: bool  # the server closed the connection after it answered


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def send_body_after_headers(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str],
    *,
    body_size: int,
    chunked: bool = False,
    hold_s: float = 1.0,
    timeout_s: float = 60.0,
) -> Answer:
    """Sends the headers, waits ``hold_s`` for an answer, then streams ``body_size`` bytes of a JSON
    string (``Transfer-Encoding: chunked`` or the declared Content-Length) until the server answers."""
    framing = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(body_size)}
    with socket.create_connection((HOST, port)) as raw:
        raw.sendall(request_head(method, path, {**headers, **framing}))
        started = time.monotonic()
        sent = 0
        answered = _readable(raw, hold_s)
        while not answered and sent < body_size:
            block = _json_block(sent, min(MiB, body_size - sent), body_size)
            try:
                raw.sendall(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
            except OSError:  # the server closed: its answer (if any) is waiting
                break
            sent += len(block)
            answered = _readable(raw, 0)
        if chunked and sent == body_size and not answered:
            raw.sendall(b"0\r\n\r\n")
        return _answer(raw, sent, started, timeout_s)


def _json_block(offset: int, size: int, total: int) -> bytes:
    """Bytes [offset, offset + size) of the body ``{"name":"aaa...a"}`` of ``total`` bytes."""
    block = bytearray(b"a" * size)
    prefix, suffix = b'{"name":"', b'"}'
    if offset < len(prefix):
        block[: len(prefix) - offset] = prefix[offset:]
    if offset + size > total - len(suffix):
        block[-len(suffix) :] = suffix
    return bytes(block)


def _readable(raw: socket.socket, timeout_s: float) -> bool:
    poller = select.poll()  # not select(): a test may hold more than 1024 descriptors
    poller.register(raw, select.POLLIN)
    return bool(poller.poll(timeout_s * 1000))


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def read_answer(raw: socket.socket, *, timeout_s: float) -> Response | None:
    """The next response on ``raw`` (its body by Content-Length); None when the connection closes
    first or nothing comes within ``timeout_s``."""
    raw.settimeout(timeout_s)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            piece = raw.recv(65536)
            if not piece:
                return None
            data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
        length = int(headers.get("content-length", "0"))
        while len(body) < length and (piece := raw.recv(65536)):
            body += piece
    except (TimeoutError, ConnectionResetError):
        return None
    return Response(int(status_line.split()[1]), headers, body[:length])


def _answer(raw: socket.socket, sent: int, started: float, timeout_s: float) -> Answer:
    response = read_answer(raw, timeout_s=timeout_s)
    seconds = time.monotonic() - started
    if response is None:
        return Answer(None, b"", {}, sent, seconds, closed=False)
    return Answer(response.status, response.body, response.headers, sent, seconds, closed=closes(raw))


def closes(raw: socket.socket, within_s: float = 3.0) -> bool:
    """Whether the server closes the connection within ``within_s`` (an end of stream or a reset)."""
    deadline = time.monotonic() + within_s
    try:
        while (left := deadline - time.monotonic()) > 0:
            raw.settimeout(left)
            if not raw.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def memory_mib(pid: int) -> tuple[int, int]:
    """(resident now, resident at its peak) of a process, in MiB."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024


def open_descriptors(pid: int, *, sockets_only: bool = False) -> int:
    """How many files (or sockets only) a process has open."""
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            count += not sockets_only or os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:")
    return count
