"""The words every part of the platform shares, defined once (typing only: no pydantic, no torch).

The library (``creamfl``), the wire schemas and both services import these, so a new payload
dtype or server schedule is added in one place.
"""

from __future__ import annotations

from typing import Literal

Modality = Literal["image", "text"]
AggregationStrategy = Literal["creamfl", "mean"]
PayloadDtype = Literal["float16", "float32", "int8"]
ServerSchedule = Literal["joint", "separate"]
TextEncoder = Literal["scratch", "minilm"]
