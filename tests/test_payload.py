"""Representation payloads: round trips per wire dtype, the safetensors format on the wire, malformed input."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from creamfl.payload import PAYLOAD_DTYPES, decode_payload, encode_payload, representation_problem


def reps(n: int = 6, dim: int = 5, seed: int = 0) -> Tensor:
    """Rows of very different magnitudes, so per-row int8 scales matter."""
    generator = torch.Generator().manual_seed(seed)
    magnitudes = torch.logspace(-3, 2, n).unsqueeze(1)  # 1e-3 .. 1e2
    return torch.randn(n, dim, generator=generator) * magnitudes


# --- round trips ---------------------------------------------------------------------------------


def test_float32_round_trip_is_exact() -> None:
    # Prepare
    image = reps()

    # Execute
    decoded = decode_payload(encode_payload({"image": image}, dtype="float32"))

    # Assert
    assert set(decoded) == {"image"}
    assert decoded["image"].dtype == torch.float32
    assert torch.equal(decoded["image"], image)


def test_float16_round_trip_is_float16_rounding() -> None:
    # Prepare
    image = reps()

    # Execute
    decoded = decode_payload(encode_payload({"image": image}, dtype="float16"))

    # Assert
    assert decoded["image"].dtype == torch.float32
    assert torch.equal(decoded["image"], image.half().float())
    assert torch.allclose(decoded["image"], image, rtol=1e-3, atol=1e-7)


def test_float16_is_the_default() -> None:
    # Prepare
    image = reps()

    # Execute
    stored = st_load(encode_payload({"image": image}))

    # Assert
    assert stored["image"].dtype == torch.float16


def test_int8_round_trip_error_within_half_a_step_per_row() -> None:
    # Prepare
    image = reps(n=8, dim=16, seed=1)
    step = image.abs().amax(dim=1, keepdim=True) / 127.0  # [n, 1]

    # Execute
    decoded = decode_payload(encode_payload({"image": image}, dtype="int8"))["image"]

    # Assert
    assert decoded.dtype == torch.float32
    assert decoded.shape == image.shape
    error = (decoded - image).abs()
    assert (error <= step / 2 + 1e-6 * step + 1e-12).all()
    # The largest element of each row is represented exactly (it maps to +-127).
    row_max_index = image.abs().argmax(dim=1)
    rows = torch.arange(8)
    assert torch.allclose(decoded[rows, row_max_index], image[rows, row_max_index], rtol=1e-6)


def test_int8_small_rows_keep_their_own_precision() -> None:
    # Prepare: one row 1e5 times smaller than the other; a single global scale would zero it.
    image = torch.tensor([[1000.0, -500.0, 250.0], [0.01, -0.005, 0.0025]])

    # Execute
    decoded = decode_payload(encode_payload({"image": image}, dtype="int8"))["image"]

    # Assert
    assert torch.allclose(decoded[1], image[1], rtol=1e-2)


def test_int8_zero_row_round_trips_to_zero() -> None:
    # Prepare
    image = torch.zeros(3, 4)
    image[1] = torch.tensor([1.0, -2.0, 3.0, -4.0])

    # Execute
    decoded = decode_payload(encode_payload({"image": image}, dtype="int8"))["image"]

    # Assert
    assert torch.isfinite(decoded).all()
    assert torch.equal(decoded[0], torch.zeros(4))
    assert torch.equal(decoded[2], torch.zeros(4))
    assert torch.allclose(decoded[1], image[1], atol=4.0 / 254 + 1e-6)


@pytest.mark.parametrize("dtype", PAYLOAD_DTYPES)
def test_multiple_modalities_in_one_payload(dtype: str) -> None:
    # Prepare
    image = reps(n=4, dim=3, seed=2)
    text = reps(n=4, dim=3, seed=3)

    # Execute
    decoded = decode_payload(encode_payload({"image": image, "text": text}, dtype=dtype))  # type: ignore[arg-type]

    # Assert
    assert set(decoded) == {"image", "text"}
    for name, original in (("image", image), ("text", text)):
        assert decoded[name].dtype == torch.float32
        assert decoded[name].shape == original.shape
        step = original.abs().amax(dim=1, keepdim=True) / 127.0
        assert ((decoded[name] - original).abs() <= step / 2 + 1e-6).all()
    # The two modalities are not mixed up.
    assert not torch.allclose(decoded["image"], decoded["text"])


@pytest.mark.parametrize(
    "dtype",
    [
        "float16",
        "float32",
        "int8",
    ],
)
def test_non_contiguous_and_grad_inputs_encode(dtype: str) -> None:
    # Prepare: a transposed view that requires grad.
    base = reps(n=5, dim=5, seed=4).requires_grad_()
    view = base.T

    # Execute
    decoded = decode_payload(encode_payload({"image": view}, dtype=dtype))  # type: ignore[arg-type]

    # Assert
    step = view.detach().abs().amax(dim=1, keepdim=True) / 127.0
    assert ((decoded["image"] - view.detach()).abs() <= step / 2 + 1e-6).all()


def test_empty_payload_round_trips() -> None:
    assert decode_payload(encode_payload({}, dtype="float16")) == {}


# --- the wire format --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "stored_dtype", "tag"),
    [("float16", torch.float16, "F16"), ("float32", torch.float32, "F32"), ("int8", torch.int8, "I8")],
)
def test_bytes_are_a_safetensors_file(dtype: str, stored_dtype: torch.dtype, tag: str) -> None:
    # Prepare
    image = reps(n=3, dim=4, seed=5)

    # Execute
    data = encode_payload({"image": image}, dtype=dtype)  # type: ignore[arg-type]

    # Assert: the safetensors library reads it back with the wire dtype.
    stored = st_load(data)
    assert stored["image"].dtype == stored_dtype
    assert stored["image"].shape == (3, 4)
    # And the raw layout is safetensors': 8-byte little-endian header length, then a JSON header.
    (header_len,) = struct.unpack("<Q", data[:8])
    assert 8 + header_len <= len(data)
    header = json.loads(data[8 : 8 + header_len])
    assert header["image"]["dtype"] == tag
    assert header["image"]["shape"] == [3, 4]
    if dtype == "int8":
        assert set(stored) == {"image", "image.scale"}
        assert stored["image.scale"].dtype == torch.float32
        assert stored["image.scale"].shape == (3,)
        assert header["image.scale"]["dtype"] == "F32"
        assert torch.allclose(stored["image.scale"], image.abs().amax(dim=1) / 127.0)
    else:
        assert set(stored) == {"image"}
    # Data: header + the tensors' bytes, nothing else (no pickle stream appended or prepended).
    end = max(entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__")
    assert len(data) == 8 + header_len + end


def test_no_pickle_on_the_wire() -> None:
    # Prepare
    data = encode_payload({"image": reps()}, dtype="float16")

    # Execute
    (header_len,) = struct.unpack("<Q", data[:8])

    # Assert: a pickle would start with the PROTO opcode 0x80; torch.save writes a zip ("PK").
    assert data[0] != 0x80
    assert data[:2] != b"PK"
    assert header_len < len(data)
    assert data[8:9] == b"{"
    assert b"torch" not in data[: 8 + header_len]


def test_decode_reads_a_payload_written_by_safetensors_directly() -> None:
    # Prepare: a peer that uses safetensors on its own (the format is the contract, not this module).
    quantised = torch.tensor([[127, -64], [0, 127]], dtype=torch.int8)
    scale = torch.tensor([0.5, 2.0])
    data = st_save({"text": quantised, "text.scale": scale, "image": torch.tensor([[1.5, -2.0]], dtype=torch.float16)})

    # Execute
    decoded = decode_payload(data)

    # Assert
    assert torch.equal(decoded["text"], torch.tensor([[63.5, -32.0], [0.0, 254.0]]))
    assert torch.equal(decoded["image"], torch.tensor([[1.5, -2.0]]))
    assert decoded["image"].dtype == torch.float32


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"garbage", b"\x00" * 7, b"\xff" * 64, b"{}"])
def test_garbage_bytes_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_payload(data)


@pytest.mark.parametrize("cut", [1, 4, 10, 30])
def test_truncated_bytes_raise_value_error(cut: int) -> None:
    # Prepare
    data = encode_payload({"image": reps(), "text": reps(seed=9)}, dtype="float32")

    # Execute / Assert
    with pytest.raises(ValueError):
        decode_payload(data[:-cut])


def test_truncated_header_raises_value_error() -> None:
    # Prepare
    data = encode_payload({"image": reps()}, dtype="int8")

    # Execute / Assert
    with pytest.raises(ValueError):
        decode_payload(data[:20])


@pytest.mark.parametrize("dtype", ["bfloat16", "float64", "int4", "", "FLOAT16"])
def test_unknown_dtype_raises_value_error(dtype: str) -> None:
    with pytest.raises(ValueError):
        encode_payload({"image": reps()}, dtype=dtype)  # type: ignore[arg-type]


def test_int8_without_scale_raises_value_error() -> None:
    # Prepare
    data = st_save({"image": torch.ones(2, 3, dtype=torch.int8)})

    # Execute / Assert
    with pytest.raises(ValueError):
        decode_payload(data)


def test_int8_with_wrong_scale_shape_raises_value_error() -> None:
    # Prepare
    data = st_save({"image": torch.ones(2, 3, dtype=torch.int8), "image.scale": torch.ones(3)})

    # Execute / Assert
    with pytest.raises(ValueError):
        decode_payload(data)


def test_a_name_reserved_for_int8_scales_is_refused() -> None:
    # Prepare: decode_payload treats "<name>.scale" as int8 scales, so such a name could not round-trip.
    rep = reps(n=2, dim=3)

    # Execute / Assert
    with pytest.raises(ValueError, match="reserved"):
        encode_payload({"image.scale": rep}, dtype="float32")


# --- what may be aggregated -----------------------------------------------------------------------


def test_an_int8_payload_of_finite_scales_can_still_decode_to_inf_and_is_a_problem() -> None:
    # Prepare: every value 127 with a finite row scale of 3e38: 127 * 3e38 is beyond float32
    data = st_save({"image": torch.full((3, 4), 127, dtype=torch.int8), "image.scale": torch.full((3,), 3e38)})

    # Execute
    decoded = decode_payload(data)["image"]

    # Assert
    assert bool(torch.isinf(decoded).all())
    assert representation_problem(decoded, shape=(3, 4)) == "the representations contain NaN or Inf"


@pytest.mark.parametrize("dtype", PAYLOAD_DTYPES)
def test_honest_unit_rows_are_no_problem_in_any_wire_dtype(dtype: str) -> None:
    # Prepare
    image = torch.nn.functional.normalize(reps(n=8, dim=16), dim=1)

    # Execute
    decoded = decode_payload(encode_payload({"image": image}, dtype=dtype))["image"]  # type: ignore[arg-type]

    # Assert
    assert representation_problem(decoded, shape=(8, 16)) is None


@pytest.mark.parametrize(
    ("rows", "shape", "reason"),
    [
        (torch.tensor([[1e4, 0.0, 0.0], [0.0, -1e4, 0.0]]), (2, 3), None),  # norms exactly the bound
        (torch.full((2, 3), 1.001e4 / 3**0.5), (2, 3), "row 0 has L2 norm 1e+04, above 10000"),
        (torch.full((2, 3), 3e38), (2, 3), "row 0 has L2 norm 5.2e+38, above 10000"),
        (torch.tensor([[0.0, float("nan")], [1.0, 0.0]]), (2, 2), "NaN or Inf"),
        (torch.tensor([[0.0, 1.0], [float("-inf"), 0.0]]), (2, 2), "NaN or Inf"),
        (torch.ones(2, 3), (3, 2), "expected shape [3, 2], got [2, 3]"),
        (torch.ones(2, 3, dtype=torch.int64), (2, 3), "floating point"),
    ],
)
def test_representation_problem_names_what_is_wrong(rows: Tensor, shape: tuple[int, int], reason: str | None) -> None:
    # Execute
    problem = representation_problem(rows, shape=shape)

    # Assert
    if reason is None:
        assert problem is None
    else:
        assert problem is not None and reason in problem, problem
