"""Telling a fault of the environment from an error of the work, and describing either to an admin.

An environmental fault (the disk is full, the process ran out of file descriptors, the database is
unreachable) says nothing about the job or the request that met it: a job is put back to wait until
it clears, a request is answered 507 or 503 (DESIGN.md section 4, "Faults are not failures").

What admins see of an error (a job's ``error``, a round's or federation's ``failure_reason``) is one
line, ``ExceptionType: message``, with no traceback and no absolute server path: a path under one of
the given roots (the data dir) is shown relative to it, any other by its last part. The traceback
goes to the server log only.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from sqlalchemy.exc import DBAPIError, OperationalError

MAX_MESSAGE = 500
# An absolute POSIX path: a slash not inside a word, a URL ("https://host/x") or a relative path.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/[^\s'\"`:;,()\[\]{}<>]+")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class EnvironmentFault:
    """An error about the machine, not the work: it clears by itself or by an operator."""

    reason: str  # e.g. "disk full"
    storage: bool  # out of disk space or quota (HTTP 507); otherwise short of another resource (503)


_ERRNO_FAULTS = {
    errno.ENOSPC: EnvironmentFault("disk full", storage=True),
    errno.EDQUOT: EnvironmentFault("disk quota exceeded", storage=True),
    errno.EMFILE: EnvironmentFault("too many open files", storage=False),
    errno.ENFILE: EnvironmentFault("too many open files in the system", storage=False),
}
DATABASE_UNREACHABLE = EnvironmentFault("database unreachable", storage=False)


def environment_fault(exc: BaseException) -> EnvironmentFault | None:
    """The environmental fault behind ``exc`` (itself or an exception it was raised from or while
    handling), or None when it is an error of the work."""
    for cause in _chain(exc):
        if isinstance(cause, OSError) and cause.errno in _ERRNO_FAULTS:
            return _ERRNO_FAULTS[cause.errno]
        if isinstance(cause, OperationalError) or (isinstance(cause, DBAPIError) and cause.connection_invalidated):
            return DATABASE_UNREACHABLE
    return None


def one_line(exc: BaseException, *, roots: Sequence[str] = ()) -> str:
    """``ExceptionType: message`` on one line, an absolute path made relative to the first of ``roots``
    (absolute directories) that holds it, or cut to its last part; at most :data:`MAX_MESSAGE` characters."""
    message = _WHITESPACE.sub(" ", str(exc)).strip()
    message = _ABSOLUTE_PATH.sub(lambda match: _shown_path(match.group(0), roots), message)
    line = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 1] + "…"


def _shown_path(path: str, roots: Sequence[str]) -> str:
    pure = PurePosixPath(path)
    for root in roots:
        if pure.is_relative_to(root) and pure != PurePosixPath(root):
            return str(pure.relative_to(root))
    return pure.name or path


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
