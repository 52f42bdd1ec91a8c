"""File descriptors for ``serve``: the connection cap must leave room for the jobs beside the API.

Every open socket holds a descriptor, and the in-process worker's jobs (database connections,
artifact files, torch) draw on the same table: sockets past the limit would make a job fail with
"Too many open files". So the soft RLIMIT_NOFILE is raised to the hard limit where it is lower, and
``serve`` refuses to start when the cap and the reserve below do not fit (docs/operating.md).
"""

from __future__ import annotations

import resource

# Descriptors kept for everything but client sockets: the listening socket, database connections,
# artifact and dataset files a job opens, torch's threads and libraries, logs.
RESERVED_FOR_JOBS = 512


class TooFewDescriptors(RuntimeError):
    pass


def reserve_descriptors(max_connections: int) -> int:
    """Raises the soft limit on open files to the hard limit (where allowed) and returns it; raises
    :class:`TooFewDescriptors` when ``max_connections`` plus the reserve for jobs exceed it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + RESERVED_FOR_JOBS
    target = max(soft, needed) if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # not allowed here: the check below says what is missing
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise TooFewDescriptors(
            f"--max-connections {max_connections} needs at least {needed} open files "
            f"({RESERVED_FOR_JOBS} kept for jobs), but the limit is {soft} (hard limit {hard}): "
            f"raise it (ulimit -n {needed}, or LimitNOFILE= in systemd) or lower --max-connections"
        )
    return soft
