"""The one byte range a download may ask for (``Range: bytes=...``), resolved against the file's size.

Refusals are the API's JSON errors: 422 for a header that is not one ``bytes=start-end`` range,
416 for a range outside the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from coordinator_service.errors import Invalid, RangeNotSatisfiable

# At most 18 digits: beyond any file, and int() never meets Python's 4300-digit limit (a 500).
RANGE = re.compile(r"^bytes=(\d{0,18})-(\d{0,18})$")


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(value: str, size: int) -> ByteRange:
    """``bytes=a-b`` (``b`` past the end means to the end), ``bytes=a-`` or the suffix ``bytes=-n``."""
    match = RANGE.match(value.strip())
    if match is None or match.groups() == ("", ""):
        raise Invalid("Range must be one 'bytes=start-end' range", range=value)
    first, last = match.groups()
    if not first:  # a suffix: the last n bytes, all of them if n is more
        if int(last) == 0 or size == 0:
            raise RangeNotSatisfiable(f"range {value} selects no bytes of the {size}-byte file", size=size)
        return ByteRange(start=max(size - int(last), 0), end=size - 1)
    start = int(first)
    if start >= size or (last and int(last) < start):
        raise RangeNotSatisfiable(f"range {value} lies outside the {size}-byte file", size=size)
    return ByteRange(start=start, end=min(int(last), size - 1) if last else size - 1)
