"""Configs as command lines: one generic codec between a command's config dataclass and its flags.

Why: ``lt bootstrap`` runs every stage either in this process (calling the command's runner with
its config) or through a launcher (as an ``lt`` command line). Both must mean the same thing, so
a stage is described once, as its config, and :func:`to_argv` renders that config as the argv that
rebuilds it; the commands build their config from their flags with :func:`build`. A test parses
every rendered argv with the real CLI and checks that the same config comes back.

The rules, the same for every command:

* A config is a dataclass. Its *leaves* are its flags: ``--`` + the field name with ``-`` for
  ``_`` (``max_new_tokens`` -> ``--max-new-tokens``). A field holding another dataclass is a
  *group*: its leaves are promoted (no prefix), unless the field says otherwise with
  :func:`group` (``prefix="select_"`` turns ``method`` into ``--select-method``; ``include``
  exposes a subset, the rest keep their defaults, groups nested in it included: ``lt bootstrap``'s
  ``train`` template does not expose the ``tracking`` group of ``lt train``).
* Leaf names are unique in a config (checked by :func:`leaves`).
* :func:`to_argv` leaves out a leaf equal to its default; it renders ``True``/``False`` as
  ``--name``/``--no-name``, a list as a repeated flag (or one comma-separated value with
  ``csv=True``), and the ``positional`` leaf (the input file) as a bare argument.
* A leaf marked ``flag=False`` has no flag: it can only keep its default under a launcher.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import MISSING, Field
from functools import lru_cache
from typing import Any, Iterator

from .errors import UsageError


def flag(*, positional: bool = False, csv: bool = False, enabled: bool = True) -> dict:
    """Field metadata of a leaf: ``positional`` (bare argument), ``csv`` (one a,b,c value),
    ``enabled=False`` (no flag; the field always keeps its default on a command line)."""
    return {"lt_flag": {"positional": positional, "csv": csv, "enabled": enabled}}


def group(*, prefix: str = "", include: tuple[str, ...] | None = None) -> dict:
    """Field metadata of a nested config: flag names get ``prefix``; only ``include`` are exposed."""
    return {"lt_group": {"prefix": prefix, "include": include}}


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


#: the default of a leaf that has none (a required field)
NO_DEFAULT = _NoDefault()


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One flag of a config: its name (``max_new_tokens``), the path of fields that reaches it."""

    name: str
    path: tuple[str, ...]
    field: Field
    positional: bool = False
    csv: bool = False
    enabled: bool = True
    #: the value the leaf has in a default config (a group's default can differ from its class's:
    #: ``lt synthesize`` defaults to ``--backend api``)
    default_value: Any = NO_DEFAULT

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def negative(self) -> str:
        return "--no-" + self.name.replace("_", "-")

    def default(self) -> Any:
        return self.default_value


def _field_default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return NO_DEFAULT


def _group_type(cls: type, f: Field) -> type | None:
    """The dataclass type of a group field, or None for a leaf (a dataclass marked with
    :func:`flag` is a leaf: it has no flags of its own)."""
    if "lt_flag" in f.metadata:
        return None
    hints = _hints(cls)
    kind = hints.get(f.name)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return kind
    return None


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@lru_cache(maxsize=None)
def leaves(cls: type) -> tuple[Leaf, ...]:
    """Every flag of ``cls`` in field order; raises TypeError when two leaves share a name."""
    found: list[Leaf] = []

    def walk(kind: type, path: tuple[str, ...], prefix: str, include: tuple[str, ...] | None, instance: Any) -> None:
        for f in dataclasses.fields(kind):
            sub = _group_type(kind, f)
            if include is not None and f.name not in include:
                continue  # not exposed (a nested group too: it keeps its default)
            if sub is not None:
                spec = f.metadata.get("lt_group", {})
                default = getattr(instance, f.name) if instance is not None else _field_default(f)
                walk(sub, path + (f.name,), prefix + spec.get("prefix", ""), spec.get("include"), None if default is NO_DEFAULT else default)
                continue
            spec = f.metadata.get("lt_flag", {})
            default = getattr(instance, f.name) if instance is not None else _field_default(f)
            found.append(Leaf(prefix + f.name, path + (f.name,), f, spec.get("positional", False), spec.get("csv", False), spec.get("enabled", True), default))

    walk(cls, (), "", None, None)
    names = [leaf.name for leaf in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TypeError(f"{cls.__name__}: flag name(s) used twice: {', '.join(duplicates)}")
    return tuple(found)


def build(cls: type, values: dict[str, Any]):
    """The config ``cls`` from flag values keyed by leaf name (missing leaves keep defaults).

    A key that is no leaf of ``cls`` is a programming error (TypeError), never silently dropped.
    """
    known = {leaf.name for leaf in leaves(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TypeError(f"{cls.__name__} has no flag(s) {', '.join(unknown)}")

    def make(kind: type, prefix: str, include: tuple[str, ...] | None, base: Any = None):
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(kind):
            sub = _group_type(kind, f)
            if include is not None and f.name not in include:
                continue  # not exposed: keeps the template's value
            if sub is not None:
                spec = f.metadata.get("lt_group", {})
                default = f.default_factory() if f.default_factory is not MISSING else None  # type: ignore[misc]
                kwargs[f.name] = make(sub, prefix + spec.get("prefix", ""), spec.get("include"), default)
            elif prefix + f.name in values:
                kwargs[f.name] = values[prefix + f.name]
        # a group starts from its field's default (a template such as TrainConfig(output=""))
        return dataclasses.replace(base, **kwargs) if base is not None else kind(**kwargs)

    return make(cls, "", None)


def get(config: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        config = getattr(config, name)
    return config


def flat(config: Any) -> dict[str, Any]:
    """``{leaf name: value}`` of a config (the inverse of :func:`build`)."""
    return {leaf.name: get(config, leaf.path) for leaf in leaves(type(config))}


def to_argv(command: str, config: Any) -> list[str]:
    """``[command, flags...]`` that rebuilds ``config`` when parsed by ``lt COMMAND``."""
    argv = [command]
    positional: list[str] = []
    for leaf in leaves(type(config)):
        value = get(config, leaf.path)
        default = leaf.default()
        if leaf.positional:
            if value is not None:
                positional.append(str(value))
            continue
        if default is not NO_DEFAULT and _same(value, default):
            continue
        if not leaf.enabled:
            raise UsageError(f"{command}: {leaf.name}={value!r} has no command-line flag; it cannot run under a launcher")
        argv += list(_render(leaf, value))
    return argv + positional


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return a == b


def _render(leaf: Leaf, value: Any) -> Iterator[str]:
    if value is None:
        raise UsageError(f"{leaf.option}: cannot render None over a non-None default")
    if isinstance(value, bool):
        yield leaf.option if value else leaf.negative
    elif isinstance(value, (list, tuple)):
        if leaf.csv:
            yield leaf.option
            yield ",".join(str(v) for v in value)
        else:
            for item in value:
                yield leaf.option
                yield str(item)
    elif isinstance(value, dict) or dataclasses.is_dataclass(value):
        raise UsageError(f"{leaf.option}: a {type(value).__name__} cannot be given on the command line")
    else:
        yield leaf.option
        yield str(value)


def from_json(cls: type, data: dict[str, Any]):
    """Rebuild a (nested) config from its ``dataclasses.asdict`` JSON; unknown keys are ignored
    (a config saved by an older lt), tuples come back as tuples."""
    kwargs: dict[str, Any] = {}
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, kind = data[f.name], hints.get(f.name)
        if isinstance(kind, type) and dataclasses.is_dataclass(kind) and isinstance(value, dict):
            value = from_json(kind, value)
        elif isinstance(value, list) and typing.get_origin(kind) is tuple:
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def json_paths(data: Any, prefix: str = "") -> dict[str, Any]:
    """A nested JSON object as ``{"a.b": value}`` (for comparing two saved configs field by field)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(json_paths(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def parse_tokens(value: str | None) -> int | None:
    """Token budgets are large: accept 13e9, 13_000_000_000, 800M, 13B."""
    if value is None:
        return None
    text = value.strip().replace("_", "").replace(",", "")
    multiplier = 1
    suffixes = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
    if text and text[-1].lower() in suffixes:
        multiplier = suffixes[text[-1].lower()]
        text = text[:-1]
    try:
        number = float(text) * multiplier
    except ValueError:
        raise UsageError(f"--tokens must be a number like 13e9 or 800M, got {value!r}") from None
    if number != int(number):
        raise UsageError(f"--tokens must be a whole number, got {value!r}")
    return int(number)
