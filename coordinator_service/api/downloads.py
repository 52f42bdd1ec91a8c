"""A stored artifact as a download, streamed from the store: ETag (its sha256), If-None-Match,
one byte Range and If-Range."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Response, status
from fastapi.responses import StreamingResponse

from coordinator_service.api.ranges import parse_range
from coordinator_service.artifacts import ArtifactStore

MEDIA_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class Conditions:
    """A download's conditional headers: ``Range``, ``If-Range``, ``If-None-Match``."""

    range: str | None
    if_range: str | None
    if_none_match: str | None

    def whole(self, sha256: str) -> bool:
        """Whether the whole artifact is asked for (not a part, not a cache check)."""
        return self.range is None and self.if_none_match != etag_of(sha256)


def download_conditions(
    range_header: Annotated[str | None, Header(alias="range")] = None,
    if_range: Annotated[str | None, Header()] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Conditions:
    return Conditions(range_header, if_range, if_none_match)


ConditionsDep = Annotated[Conditions, Depends(download_conditions)]


def etag_of(sha256: str) -> str:
    return f'"{sha256}"'


def artifact_response(
    store: ArtifactStore,
    sha256: str,
    *,
    size: int,
    conditions: Conditions,
    headers: Mapping[str, str],
) -> Response:
    """304 when the client holds this content; else 206 for a range, 200 for the whole artifact.

    A bad range is refused (422, 416) even when If-Range would have it ignored."""
    etag = etag_of(sha256)
    if conditions.if_none_match == etag:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"etag": etag})
    byte_range = parse_range(conditions.range, size) if conditions.range is not None else None
    common = {**headers, "etag": etag, "x-content-sha256": sha256, "accept-ranges": "bytes"}
    another_version = conditions.if_range is not None and conditions.if_range != etag
    if byte_range is None or another_version:  # all of it
        return StreamingResponse(
            store.open_range(sha256), media_type=MEDIA_TYPE, headers={**common, "content-length": str(size)}
        )
    return StreamingResponse(
        store.open_range(sha256, byte_range.start, byte_range.end),
        status_code=status.HTTP_206_PARTIAL_CONTENT,
        media_type=MEDIA_TYPE,
        headers={**common, "content-range": byte_range.content_range(size), "content-length": str(byte_range.length)},
    )
