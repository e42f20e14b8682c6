"""Compact JSON for the records path, written and read by orjson with the standard library as the fallback.

The records path encodes and decodes JSON on every execution (the stored
record, the webhook body, the outbox rows the workers read back). orjson does
each faster than the standard library. The two differ in spelling, not in
meaning: orjson writes non-ASCII text as UTF-8 where the standard library
escapes it, and a NaN or infinite float as ``null``. What orjson refuses falls back to the standard
library: an int beyond 64 bits or text that is not valid UTF-8 when writing,
``NaN`` and ``Infinity`` (which the standard library writes) when reading.
Either way a value JSON cannot hold is written as ``str(value)``.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_stdlib_dumps = json.JSONEncoder(separators=(",", ":"), default=str).encode


def dumps(value: Any) -> str:
    """``value`` as compact JSON text."""
    return dumpb(value).decode("utf-8")


def dumpb(value: Any) -> bytes:
    """``value`` as compact JSON, UTF-8 encoded (a request body)."""
    try:
        return orjson.dumps(value, default=str)
    except orjson.JSONEncodeError:
        return _stdlib_dumps(value).encode("utf-8")


def loads(text: str | bytes) -> Any:
    """The value of JSON text, ``NaN`` and ``Infinity`` included."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
