"""One JSON value per line, with orjson, and exact integers of any size.

Why not orjson alone: it reads an integer literal outside [-2**63, 2**64) as a float (two distinct
ids collapse into 1.8446744073709552e+19) and refuses to write one, which breaks the promise that
unknown fields pass through untouched. Why not the json module alone: it parses lt's records about
four times slower.

So a line is read by orjson unless it holds 19 digits in a row. Every integer orjson cannot keep
has that many, and lt's own numbers never do (a float carries at most 17 significant digits), so
the json module (exact integers) reads only the rare line that needs it; the check is one
``bytes.translate`` and one substring search (``bench/reliability_io.py`` measures its cost).
Writing falls back only when orjson refuses a value: integers out of its range are swapped for
placeholder strings, the record is written by orjson (every other byte is what orjson writes) and
the digits are put back.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import orjson

LINE_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY

#: digits -> "0", every other byte -> " ": a run of 19 digits becomes 19 zeros
_DIGIT_TABLE = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_RUN = b"0" * 19
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def needs_exact_parse(data: bytes) -> bool:
    """True when ``data`` has 19 or more digits in a row (an integer orjson might turn into a float)."""
    return _LONG_RUN in data.translate(_DIGIT_TABLE)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _exact_loads(data: bytes) -> Any:
    """The json module's reading (exact integers), failing the way orjson fails."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise orjson.JSONDecodeError("str is not valid UTF-8: surrogates not allowed", data.decode("utf-8", "replace"), exc.start) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise orjson.JSONDecodeError(exc.msg, exc.doc, exc.pos) from None
    except ValueError as exc:
        raise orjson.JSONDecodeError(str(exc), text, 0) from None


def loads(data: bytes | str) -> Any:
    """Parse one JSON document; integers of any size stay exact (see the module docstring)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if needs_exact_parse(data):
        return _exact_loads(data)
    return orjson.loads(data)


def dumps(value: Any, option: int = LINE_OPTIONS, default: Any = None) -> bytes:
    """Serialise like ``orjson.dumps`` (one line with ``LINE_OPTIONS``); integers beyond 64 bits are
    written exactly instead of raising."""
    try:
        return orjson.dumps(value, option=option) if default is None else orjson.dumps(value, option=option, default=default)
    except TypeError as exc:
        if "Integer exceeds 64-bit range" not in str(exc):
            raise
    nonce = uuid.uuid4().hex
    digits: list[str] = []

    def swap(item: Any) -> Any:
        kind = type(item)
        if kind is int and not _INT_MIN <= item <= _INT_MAX:
            digits.append(str(item))
            return f"\x00{nonce}-{len(digits) - 1}\x00"
        if kind is dict:
            return {key: swap(v) for key, v in item.items()}
        if kind is list or kind is tuple:
            return [swap(v) for v in item]
        return item

    data = orjson.dumps(swap(value), option=option, default=default)
    for index, text in enumerate(digits):
        data = data.replace(f'"\\u0000{nonce}-{index}\\u0000"'.encode("ascii"), text.encode("ascii"), 1)
    return data
