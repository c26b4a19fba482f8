"""Config files: a run's settings as one TOML (or JSON, or YAML) file, under ``--config FILE``.

Why: ``lt bootstrap`` has dozens of settings and ``lt train`` forty; a run is easier to share,
review and rerun as one file than as a long command line (``trl sft --config``, ``lm-eval
--config``, torchtitan's TOML recipes). The file is the command's config dataclass written out,
so it needs no schema of its own: the same walk over the dataclass that gives the flags
(:mod:`lt_cli.flags`) gives the file's keys, and a field added to a config is a key at once.

The rules, the same for every command:

* Keys are the config's field names; a nested dataclass is a section (``[train]``, ``[sample]``,
  ``[stream]``), as in the ``config.json`` a run records. At the top level a flag's name (with
  ``_``) may stand for its field (``lr = 1e-4`` for ``[train] lr``), so a file can be as flat as
  the command line.
* Precedence: a flag given on the command line > the file > the defaults.
* An unknown key, a value of the wrong type or a malformed file is one error naming the file, the
  line and the key (:mod:`lt_cli.configtext` parses each format and finds the lines).
* TOML has no null: an optional number can be written ``"none"``; a missing key keeps its default.
* :func:`dumps` writes a config back (``--print-config``); reading what it wrote gives the same
  config. A ``config.json`` a run recorded (``lt bootstrap``'s ``RUN/config.json``, ``lt train``'s
  ``OUTPUT/train_config.json``) or an ``OUTPUT.stats.json`` is read the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import typing
from dataclasses import MISSING
from pathlib import Path
from typing import Any

from .configtext import Path_, load
from .errors import UsageError
from .flags import NO_DEFAULT, _hints, build, leaves, parse_tokens

FORMATS = {".toml": "toml", ".json": "json", ".yaml": "yaml", ".yml": "yaml"}
#: the string that stands for null in a TOML file (for optional numbers and lists only)
NONE = "none"


@dataclasses.dataclass
class FileValues:
    """What a config file sets: ``{field path: value}`` (values already of the field's type)."""

    source: str
    format: str
    values: dict[Path_, Any]
    lines: dict[Path_, int]

    def line(self, path: Path_) -> int | None:
        """The line that sets ``path`` (or its nearest section), 1-based."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None

    def where(self, path: Path_) -> str:
        line = self.line(path)
        return f"{self.source}:{line}" if line else self.source

    def error(self, path: Path_, message: str) -> UsageError:
        return UsageError(f"{self.where(path)}: {'.'.join(path)}: {message}")


def format_of(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"--config {path}: use a .toml, .json or .yaml file")
    return FORMATS[suffix]


# ------------------------------------------------------------------------------------ reading
def read(path: str, cls: type) -> FileValues:
    """The settings a config file gives ``cls`` (UsageError naming the file and line on any fault)."""
    fmt = format_of(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"--config {path}: is a directory") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"--config {path}: not UTF-8 text ({exc.reason})") from None
    return parse(text, fmt, path, cls)


def parse(text: str, fmt: str, source: str, cls: type) -> FileValues:
    """The settings a config text of format ``fmt`` gives ``cls``; ``source`` names it in errors."""
    data, lines = load(source, fmt, text)
    if not isinstance(data, dict):
        raise UsageError(f"{source}: a config file holds a table of settings, not a {type(data).__name__}")
    if fmt == "json" and isinstance(data.get("config"), dict) and "command" in data:  # an OUTPUT.stats.json
        data = data["config"]
        lines = {key[1:]: line for key, line in lines.items() if key[:1] == ("config",) and len(key) > 1}
    found = FileValues(source, fmt, {}, lines)
    _walk(found, data, cls, (), top=True)
    return found


def defaults(cls: type) -> Any:
    """``cls`` with every field at its default (required ones None)."""
    return build(cls, {leaf.name: None for leaf in leaves(cls) if leaf.default() is NO_DEFAULT})


def read_text(text: str, fmt: str, cls: type) -> Any:
    """The config a config text describes (its values over the defaults)."""
    return merge(defaults(cls), parse(text, fmt, "<text>", cls), set())


def _section_type(kind: type, name: str) -> type | None:
    hint = _hints(kind).get(name)
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def _walk(found: FileValues, data: dict, kind: type, prefix: Path_, *, top: bool) -> None:
    fields = {f.name: f for f in dataclasses.fields(kind)}
    aliases = {leaf.name: leaf.path for leaf in leaves(kind)} if top else {}
    for key, value in data.items():
        key = str(key)
        path = prefix + (key,)
        if key in fields:
            section = _section_type(kind, key)
            if section is not None:
                if not isinstance(value, dict):
                    raise found.error(path, f"is a section of settings ({section.__name__}), not a single value")
                _walk(found, value, section, path, top=False)
                continue
            target = path
        elif key in aliases:
            target = aliases[key]
        else:
            known = sorted(set(fields) | set(aliases))
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            owner = "top level" if not prefix else f"[{'.'.join(prefix)}]"
            raise found.error(path, f"unknown key in the {owner} of a {kind.__name__}{hint}")
        if target in found.values:
            raise found.error(path, f"set twice (also as {'.'.join(target)})")
        owner_kind = kind if target == path else _owner(kind, target)
        found.values[target] = coerce(value, _hints(owner_kind)[target[-1]], lambda message: found.error(path, message))
        if target != path:
            found.lines.setdefault(target, found.line(path) or 0)


def _owner(cls: type, path: Path_) -> type:
    kind = cls
    for name in path[:-1]:
        kind = _hints(kind)[name]
    return kind


def coerce(value: Any, hint: Any, fail) -> Any:
    """``value`` as the field type ``hint`` (int from an integral float or "13e9"/"800M", float
    from an int, tuple from a list, null from "none" for optional non-strings); ``fail(message)``
    builds the error."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)]
        optional = len(inner) < len(args)
        if value is None and optional:
            return None
        if optional and isinstance(value, str) and value.lower() in (NONE, "null") and inner and inner[0] is not str:
            return None
        if len(inner) == 1:
            return coerce(value, inner[0], fail)
        return value
    if value is None:
        raise fail("cannot be null here")
    if hint is Any or hint is object:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise fail(f"must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise fail(f"must be a whole number, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return parse_tokens(value)
            except UsageError:
                pass
        raise fail(f"must be a whole number, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise fail(f"must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise fail(f"must be a string, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise fail(f"must be a list, got {value!r}")
        item = args[0] if args else Any
        items = [coerce(v, item, fail) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise fail(f"must be a table, got {value!r}")
        return dict(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        raise fail("is a section, not a single value")
    return value


# ------------------------------------------------------------------------------------ applying
def apply(config: Any, values: dict[Path_, Any]) -> Any:
    """``config`` with the fields at ``values``' paths replaced (nested dataclasses rebuilt, so
    their checks run again)."""
    direct: dict[str, Any] = {}
    nested: dict[str, dict[Path_, Any]] = {}
    for path, value in values.items():
        if len(path) == 1:
            direct[path[0]] = value
        else:
            nested.setdefault(path[0], {})[path[1:]] = value
    for name, sub in nested.items():
        direct[name] = apply(getattr(config, name), sub)
    return dataclasses.replace(config, **direct) if direct else config


def merge(config: Any, found: FileValues, given: set[str]) -> Any:
    """``config`` (built from the flags) under the file: the file's values, except the fields of
    the flags named in ``given`` (those given on the command line win)."""
    kept = [leaf.path for leaf in leaves(type(config)) if leaf.name in given]
    updates = {path: value for path, value in found.values.items() if not any(path[: len(k)] == k for k in kept)}
    try:
        return apply(config, updates)
    except UsageError as exc:
        raise UsageError(f"{found.source}: {exc}") from None


# ------------------------------------------------------------------------------------ writing
def to_data(config: Any, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The config as nested plain values (``dataclasses.asdict``), without the dotted paths in ``skip``."""
    data = dataclasses.asdict(config)
    for dotted in skip:
        *parents, last = dotted.split(".")
        node = data
        for name in parents:
            node = node.get(name, {})
        if isinstance(node, dict):
            node.pop(last, None)
    return data


def dumps(config: Any, fmt: str = "toml", *, skip: frozenset[str] = frozenset(), header: str = "") -> str:
    """The config as a file of format ``fmt`` that :func:`read` turns back into the same config."""
    data = to_data(config, skip)
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        import yaml

        return (header and _comment(header)) + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return (header and _comment(header)) + _toml(data, type(config), ())


def _comment(text: str) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in text.splitlines())


def _toml(data: dict[str, Any], kind: type | None, prefix: Path_) -> str:
    out: list[str] = []
    tables: list[tuple[str, dict]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
            continue
        if value is None:
            if kind is not None and _default_of(kind, key) not in (None, MISSING) and _optional_non_str(kind, key):
                out.append(f"{_toml_key(key)} = \"{NONE}\"")
            continue
        out.append(f"{_toml_key(key)} = {_toml_value(value)}")
    text = "\n".join(out) + ("\n" if out else "")
    for key, value in tables:
        known = kind is not None and dataclasses.is_dataclass(kind) and key in {f.name for f in dataclasses.fields(kind)}
        sub_kind = _section_type(kind, key) if known else None
        body = _toml(value, sub_kind, prefix + (key,))
        if body.strip():
            text += f"\n[{'.'.join(_toml_key(p) for p in prefix + (key,))}]\n" + body
    return text


def _default_of(kind: type, name: str) -> Any:
    for f in dataclasses.fields(kind):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:  # type: ignore[misc]
                return f.default_factory()  # type: ignore[misc]
    return MISSING


def _optional_non_str(kind: type, name: str) -> bool:
    args = [a for a in typing.get_args(_hints(kind).get(name)) if a is not type(None)]
    return bool(args) and args[0] is not str


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
