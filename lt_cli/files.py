"""Whole files: one JSON document, a text or bytes, written at once and atomically; read back whole.

Why apart from :mod:`lt_cli.io`: io.py is the record stream (JSONL read line by line, sharded,
validated, resumed), while configs, metrics, manifests, markers, reports and HTML views are
written whole. Every such write goes through a temporary file beside the final name (``O_EXCL``,
a fresh name) renamed over it, so a reader never sees half a file and a link planted at the name
is replaced, never written through. ``mkstemp`` creates files 0600; lt gives them the mode a
plain ``open`` would (0644 under umask 022), so other users of a shared run folder can read them
(:func:`make_public` does the same for files third-party savers wrote). A command's single JSON
output on stdout (:func:`write_stdout_json`) lives here too: it is a whole document, not a stream.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import orjson

from .errors import FileError
from .paths import is_device


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()


def make_public(folder: str | os.PathLike) -> None:
    """Give every file directly in ``folder`` the mode a plain ``open`` would (0644 under umask 022).

    safetensors writes ``model.safetensors`` 0600, which other users of a shared run folder could
    not read; savers that go through third-party code call this afterwards.
    """
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False):
            os.chmod(entry.path, _FILE_MODE)


def _mkstemp_public(final: Path) -> tuple[int, str]:
    """A temporary file beside ``final`` with the permissions a plain ``open`` would give it.

    ``mkstemp`` creates files 0600; after the rename they would be unreadable to other users.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.fchmod(fd, _FILE_MODE)
    return fd, tmp


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def to_jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    return obj


def write_json(path: str | os.PathLike, obj: Any, *, indent: bool = True, stream_device: bool = False) -> None:
    """Write one JSON document atomically (configs, metrics, manifests, markers); see
    :func:`write_bytes_atomic` for ``stream_device``."""
    option = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE | (orjson.OPT_INDENT_2 if indent else 0)
    write_bytes_atomic(path, orjson.dumps(to_jsonable(obj), option=option, default=str), stream_device=stream_device)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, stream_device: bool = False) -> None:
    """Write a whole file atomically: a temporary file beside it (``O_EXCL``, a fresh name) renamed
    over it, so a link planted at ``path`` is replaced, never written through, and a reader never
    sees half a file.

    ``stream_device``: ``path`` is one the user named (``lt eval -o``): a device or FIFO there
    (``/dev/stdout``) is written as a stream, never replaced by a rename. Never for a name lt
    derives (a sidecar): a link planted there to a device would otherwise be written through."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if stream_device and is_device(path):
        with open(path, "wb") as f:
            f.write(data)
        return
    fd, tmp = _mkstemp_public(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)  # never a hidden .tmp left beside it
        if isinstance(exc, OSError):  # named by the final path, not the temporary one
            raise FileError.from_os(OSError(exc.errno, exc.strerror), path) from None
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a UTF-8 text file atomically (config.toml, HTML views, lm-eval task files)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def read_json(path: str | os.PathLike) -> Any:
    return orjson.loads(Path(path).read_bytes())


def write_stdout_json(obj: Any, *, indent: bool = True) -> None:
    """A single JSON object as the command's data output (metrics), on the record stream."""
    option = orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY | (orjson.OPT_INDENT_2 if indent else 0)
    write_stdout_bytes(orjson.dumps(to_jsonable(obj), option=option, default=str))


def write_stdout_bytes(data: bytes) -> None:
    """A command's data output on the record stream, flushed; a failed write is one line naming
    stdout (``stdout: no space left on device``). A closed pipe is left to the command's handler
    (it exits quietly, as ``head`` expects)."""
    from .console import protect_stdout

    stream = protect_stdout()
    try:
        stream.write(data)
        stream.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise FileError.from_os(OSError(exc.errno, exc.strerror), "stdout") from None
