"""A config file's text as plain data, and the line that sets each key (TOML, JSON, YAML).

Why apart from configfile.py (which maps that data onto a config dataclass): every error about a
config file names the file, the line and the key, but ``tomllib`` and ``json`` return data without
lines, so the lines are found here, by format, beside the parse. Nothing here knows about configs:
text in, ``(data, {key path: line})`` out, or a :class:`~lt_cli.errors.UsageError` naming the file
(and the line, where the parser says) when the text does not parse. YAML needs PyYAML, imported
only for a YAML file.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import UsageError

#: a key's path from the top of the file (``("train", "lr")``)
Path_ = tuple[str, ...]


def load(path: str, fmt: str, text: str) -> tuple[Any, dict[Path_, int]]:
    """The data of a config text of format ``fmt`` and the line of each key path (1-based)."""
    if fmt == "toml":
        import tomllib

        try:
            return tomllib.loads(text), _toml_lines(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path}: invalid TOML: {exc}") from None
    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        return data, _json_lines(text, data)
    try:
        import yaml
    except ImportError:
        raise UsageError(f"--config {path}: YAML needs PyYAML (pip install pyyaml); TOML needs nothing") from None
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        raise UsageError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    lines: dict[Path_, int] = {}

    def visit(n, prefix: Path_) -> None:
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                here = prefix + (str(key.value),)
                lines[here] = key.start_mark.line + 1
                visit(value, here)

    if node is not None:
        visit(node, ())
    return data, lines


_TOML_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_TOML_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def _toml_key_parts(text: str) -> Path_:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", text)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


def _toml_lines(text: str) -> dict[Path_, int]:
    """``{key path: line}`` of a TOML text (headers, keys and dotted keys; multi-line values are
    attributed to the line of their key)."""
    lines: dict[Path_, int] = {}
    table: Path_ = ()
    in_multiline = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_multiline:
            if in_multiline in line:
                in_multiline = None
            continue
        header = _TOML_HEADER.match(line)
        if header:
            table = _toml_key_parts(header.group(1))
            lines.setdefault(table, number)
            continue
        key = _TOML_KEY.match(line)
        if key:
            path = table + _toml_key_parts(key.group(1))
            lines.setdefault(path, number)
            rest = line[key.end():]
            for quote in ('"""', "'''"):
                if rest.count(quote) == 1:
                    in_multiline = quote
    return lines


def _json_lines(text: str, data: Any) -> dict[Path_, int]:
    """``{key path: line}`` of a JSON text: each key is looked for after its parent's key."""
    lines: dict[Path_, int] = {}

    def visit(obj: Any, prefix: Path_, start: int) -> None:
        if not isinstance(obj, dict):
            return
        position = start
        for key, value in obj.items():
            match = re.compile(r'"' + re.escape(json.dumps(key)[1:-1]) + r'"\s*:').search(text, position)
            if match is None:
                continue
            lines[prefix + (key,)] = text.count("\n", 0, match.start()) + 1
            visit(value, prefix + (key,), match.end())
            position = match.end()

    visit(data, (), 0)
    return lines
