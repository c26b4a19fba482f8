"""A backend's own options (``BackendConfig.options``, ``--backend-option``) as a typed dataclass.

The API and vLLM backends each keep their options in a dataclass; this reads one from a dict of
strings or values, with ``LT_<PREFIX>_<NAME>`` environment variables filling options not given
explicitly (commands without a flag for an option still reach it: ``LT_API_MAX_RETRIES=2``,
``LT_VLLM_TENSOR_PARALLEL_SIZE=4``). Values are converted by the field's type: ``bool`` from
``1/true/yes/on``, ``int``, ``float``; an optional number stays None when given None.
"""

from __future__ import annotations

import os
import types
import typing
from dataclasses import fields
from typing import Any, TypeVar

from ..errors import LtError

T = TypeVar("T")

#: words read as true and as false (an option typed ``bool`` takes anything but a true word as false)
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def _number_type(annotation: Any) -> tuple[type | None, bool]:
    """(bool, int, float or None for anything else; whether None is allowed)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (members[0] if len(members) == 1 and members[0] in (bool, int, float) else None), True
    return (annotation if annotation in (bool, int, float) else None), False


def options_from_dict(cls: type[T], options: dict, *, backend: str, env_prefix: str) -> T:
    """``cls(**options)`` with the environment's ``{env_prefix}_{NAME}`` under them and every value
    converted to its field's type; an unknown name or a value that is not a number is an LtError
    naming ``backend``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise LtError(f"unknown {backend} backend option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    merged = {name: os.environ[f"{env_prefix}_{name.upper()}"] for name in known if f"{env_prefix}_{name.upper()}" in os.environ}
    merged.update(options)
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in merged.items():
        kind, optional = _number_type(hints[key])
        try:
            if kind is bool:
                value = value if isinstance(value, bool) else str(value).lower() in TRUE_WORDS
            elif kind in (int, float) and not (optional and value is None):
                value = kind(value)
        except (TypeError, ValueError):
            raise LtError(f"{backend} backend option {key}={value!r} is not a number") from None
        values[key] = value
    return cls(**values)
