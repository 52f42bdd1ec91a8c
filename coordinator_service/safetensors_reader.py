"""A safetensors file read from a binary file object, one tensor at a time.

The ``safetensors`` library opens files by path, or loads a whole buffer; an upload is a staged
artifact read back through a file object and must not sit in memory whole. So the format (an
8-byte little-endian header length, a JSON header, then the tensors' bytes back to back) is read
here, refusing what the library refuses: a malformed or truncated header, an unknown dtype, a
shape that does not fit its bytes, gaps, overlaps or bytes past the last tensor.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import torch

# A payload's header names three tensors at most (a few hundred bytes). The library allows 100 MB;
# parsing that much JSON per upload would cost far more memory than the body it describes.
MAX_HEADER_BYTES = 1 << 20
_USIZE = 1 << 64
METADATA = "__metadata__"

DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "F8_E5M2": torch.float8_e5m2,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2FNUZ": torch.float8_e5m2fnuz,
    "F8_E4M3FNUZ": torch.float8_e4m3fnuz,
    "F8_E8M0": torch.float8_e8m0fnu,
    "I16": torch.int16,
    "U16": torch.uint16,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I32": torch.int32,
    "U32": torch.uint32,
    "F32": torch.float32,
    "I64": torch.int64,
    "U64": torch.uint64,
    "F64": torch.float64,
    "C64": torch.complex64,
}


class MalformedSafetensors(ValueError):
    pass


@dataclass(frozen=True)
class TensorEntry:
    dtype: str  # the safetensors code: F16, F32, I8, ...
    shape: tuple[int, ...]
    offset: int  # from the start of the file
    length: int  # bytes


class SafetensorsReader:
    """The header of ``handle`` (seekable), checked at once; :meth:`load` reads one tensor."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.entries: Mapping[str, TensorEntry] = _read_header(handle)

    def load(self, name: str) -> torch.Tensor:
        entry = self.entries[name]
        dtype = DTYPES[entry.dtype]
        if entry.length == 0:
            return torch.empty(entry.shape, dtype=dtype)
        self._handle.seek(entry.offset)
        data = bytearray(self._handle.read(entry.length))  # writable: torch.frombuffer warns otherwise
        if len(data) != entry.length:
            raise MalformedSafetensors(f"tensor {name!r} is cut short")
        return torch.frombuffer(data, dtype=dtype).reshape(entry.shape)


def _read_header(handle: BinaryIO) -> dict[str, TensorEntry]:
    size = handle.seek(0, os.SEEK_END)
    handle.seek(0)
    if size < 8:
        raise MalformedSafetensors("header too small")
    (header_len,) = struct.unpack("<Q", handle.read(8))
    if header_len > MAX_HEADER_BYTES:
        raise MalformedSafetensors(f"header of {header_len} bytes is over the limit of {MAX_HEADER_BYTES}")
    if header_len > size - 8:
        raise MalformedSafetensors(f"header of {header_len} bytes runs past the end of the file")
    raw = handle.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedSafetensors(f"invalid header: {exc}") from exc
    if not isinstance(header, dict):
        raise MalformedSafetensors("the header is not a JSON object")
    _check_metadata(header.pop(METADATA, None))
    data_start = 8 + header_len
    entries = {name: _entry(name, info, data_start) for name, info in header.items()}
    _check_layout(entries, data_start, size)
    return entries


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _check_metadata(metadata: Any) -> None:
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(value, str) for value in metadata.values())
    ):
        raise MalformedSafetensors(f"{METADATA} must map names to strings")


def _entry(name: str, info: Any, data_start: int) -> TensorEntry:
    if not isinstance(info, dict):
        raise MalformedSafetensors(f"tensor {name!r} is not described by an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise MalformedSafetensors(f"tensor {name!r} has an unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_usize(n) for n in shape):
        raise MalformedSafetensors(f"tensor {name!r} has an invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_usize(n) for n in offsets)):
        raise MalformedSafetensors(f"tensor {name!r} has invalid data_offsets {offsets!r}")
    begin, end = offsets
    if end < begin:
        raise MalformedSafetensors(f"invalid offset for tensor {name!r}")
    elements = 1
    for n in shape:
        elements *= n
    if elements * DTYPES[dtype].itemsize != end - begin:
        raise MalformedSafetensors(f"tensor {name!r}: shape {shape} of {dtype} does not fill {end - begin} bytes")
    return TensorEntry(dtype=dtype, shape=tuple(shape), offset=data_start + begin, length=end - begin)


def _is_usize(value: Any) -> bool:
    return type(value) is int and 0 <= value < _USIZE  # bool is an int subclass: not a size


def _check_layout(entries: Mapping[str, TensorEntry], data_start: int, size: int) -> None:
    """The tensors' bytes follow one another from the header on, with nothing after the last one."""
    position = data_start
    for name, entry in sorted(entries.items(), key=lambda item: (item[1].offset, item[1].length)):
        if entry.offset != position:
            raise MalformedSafetensors(f"invalid offset for tensor {name!r}")
        position += entry.length
    if position > size:
        raise MalformedSafetensors("the tensors run past the end of the file")
    if position < size:
        raise MalformedSafetensors(f"{size - position} bytes follow the last tensor")
