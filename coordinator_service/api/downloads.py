"""A stored artifact as a download, streamed from the store: ETag (its sha256), If-None-Match,
one byte Range and If-Range."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import Response, status
from fastapi.responses import StreamingResponse

from coordinator_service.api.ranges import parse_range
from coordinator_service.artifacts import ArtifactStore

MEDIA_TYPE = "application/octet-stream"


def etag_of(sha256: str) -> str:
    return f'"{sha256}"'


def artifact_response(
    store: ArtifactStore,
    sha256: str,
    *,
    size: int,
    range_header: str | None,
    if_range: str | None,
    if_none_match: str | None,
    headers: Mapping[str, str],
) -> Response:
    """304 when the client holds this content; else 206 for a range, 200 for the whole artifact.

    A bad range is refused (422, 416) even when If-Range would have it ignored."""
    etag = etag_of(sha256)
    if if_none_match == etag:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"etag": etag})
    byte_range = parse_range(range_header, size) if range_header is not None else None
    common = {**headers, "etag": etag, "x-content-sha256": sha256, "accept-ranges": "bytes"}
    if byte_range is None or (if_range is not None and if_range != etag):  # another version: all of it
        return StreamingResponse(
            store.open_range(sha256), media_type=MEDIA_TYPE, headers={**common, "content-length": str(size)}
        )
    return StreamingResponse(
        store.open_range(sha256, byte_range.start, byte_range.end),
        status_code=status.HTTP_206_PARTIAL_CONTENT,
        media_type=MEDIA_TYPE,
        headers={**common, "content-range": byte_range.content_range(size), "content-length": str(byte_range.length)},
    )
