"""JSONL in and out: the one module every command uses to read and write records.

* ``None`` or ``"-"`` means stdin/stdout; ``.gz`` paths are (de)compressed transparently (written
  with mtime 0, so equal records give equal bytes).
* ``hf://datasets/OWNER/NAME[/CONFIG][@REVISION][:SPLIT]`` reads a Hugging Face Hub dataset split
  as a stream, one row per record (:mod:`lt_cli.hub`), wherever a JSONL input is taken.
* Records are dicts; unknown fields pass through untouched; blank lines are skipped.
* A malformed line raises :class:`~lt_cli.errors.RecordError` (``FILE:LINE: reason``, exit 2), or
  with ``skip_bad`` is counted and appended to a rejects file.
* ``--shard I/N`` keeps the records whose index among non-blank lines is ``I mod N``; lines of other
  shards are not even parsed, so a bad line is reported by the shard that owns it. ``--limit N``
  reads only the first N records (before sharding).
* Integers of any size pass through exactly (:mod:`lt_cli.jsoncodec`).
* An input that is a directory, unreadable, or named ``.gz`` without being gzip is one error line
  naming the file, before any record is read.
* Writing records (atomic files, resumable ``FILE.partial``, one writer per output, ``FILE.done``
  markers) is :mod:`lt_cli.output`.
  Whole files (one JSON document, a text: configs, metrics, manifests) are :mod:`lt_cli.files`.
* Files lt creates at predictable paths beside an output (``FILE.lock``, ``FILE.partial``, the
  rejects file, the sample cache) are opened without following links (:mod:`lt_cli.nofollow`).
"""

from __future__ import annotations

import gzip
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import orjson

from . import jsoncodec
from .errors import FileError, RecordError, UsageError
from .nofollow import open_binary_no_follow
from .paths import display_name, is_device, is_hub, is_std

Record = dict[str, Any]
Validator = Callable[[Record], None]

_DUMP_OPTIONS = jsoncodec.LINE_OPTIONS


def dumps(record: Any) -> bytes:
    """One JSONL line (with newline). Keys keep their insertion order; big integers stay exact."""
    return jsoncodec.dumps(record)


def loads(line: bytes) -> Any:
    """One JSON line (big integers stay exact); raises ``orjson.JSONDecodeError``."""
    return jsoncodec.loads(line)


# --------------------------------------------------------------------------------------- sharding
@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def owns(self, record_index: int) -> bool:
        return record_index % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(value: str | None) -> Shard | None:
    """Parse ``I/N`` (0 <= I < N). ``None`` or ``0/1`` mean no sharding."""
    if value is None or value == "":
        return None
    try:
        index_text, count_text = value.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise UsageError(f"--shard must look like I/N (for example 0/8), got {value!r}") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {value}: need 0 <= I < N")
    return None if count == 1 else Shard(index, count)


# --------------------------------------------------------------------------------------- reading
def input_exists(path: str | os.PathLike) -> bool:
    """An input that can be read: an existing file, or a well-formed Hub spec (not checked online)."""
    if is_hub(path):
        from .hub import HubSpec

        HubSpec.parse(str(path))
        return True
    return Path(path).exists()


def check_input_file(path: str | os.PathLike) -> Path | str:
    """A readable file (or a well-formed Hub spec, returned as given), or one error line naming it
    (no such file, a directory: exit 2)."""
    if is_hub(path):
        input_exists(path)
        return str(path)
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, not a JSONL file")
    return path


def _open_binary_input(path: str | os.PathLike | None) -> BinaryIO:
    if is_std(path):
        if sys.stdin is None:
            raise UsageError("stdin is closed: pass the input file as an argument")
        return sys.stdin.buffer
    if is_hub(path):
        from .hub import open_lines

        return open_lines(str(path))  # type: ignore[return-value]
    path = check_input_file(path)
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise FileError.from_os(exc, path) from None
    if path.suffix != ".gz":
        return raw
    magic = raw.peek(2)[:2]  # peek, not read + seek: the input may be a pipe
    if magic and magic != b"\x1f\x8b":
        raw.close()
        raise UsageError(f"{path}: not a gzip file (its name ends in .gz)")
    return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]


def count_records(path: str | os.PathLike | None, *, limit: int | None = None, shard: Shard | None = None) -> int | None:
    """How many records a reader of ``path`` will yield with ``limit`` and ``shard`` (for progress
    totals), counted as newline bytes in 1 MiB blocks (a .gz file is decompressed, nothing is
    parsed); None for stdin, a pipe or a device. Blank lines are counted too: an upper bound."""
    if is_std(path) or is_device(path) or not Path(path).is_file():
        return None
    try:
        with _open_binary_input(path) as f:
            lines, last = 0, b"\n"
            while block := f.read(1 << 20):
                lines += block.count(b"\n")
                last = block[-1:]
    except (OSError, EOFError, UsageError):
        return None
    lines += last != b"\n"
    if limit is not None:
        lines = min(lines, limit)
    if shard is not None:
        lines = len(range(shard.index, lines, shard.count))
    return lines


class RejectsWriter:
    """Appends rejected lines (with their source, line number and reason) to a JSONL file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.count = 0
        self._file: BinaryIO | None = None

    def write(self, source: str, line: int, reason: str, raw: bytes) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb") if is_device(self.path) else open_binary_no_follow(self.path, "wb")
        self.count += 1
        self._file.write(
            dumps({"source": source, "line": line, "reason": reason, "raw": raw.rstrip(b"\r\n").decode("utf-8", "replace")})
        )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class RecordReader:
    """Iterate the records of one JSONL file (or stdin), validating each.

    ``validate(record)`` raises ``ValueError(reason)`` for a record that is JSON but unusable
    (a missing field, say). ``bad_count`` counts lines rejected under ``skip_bad``.
    """

    def __init__(
        self,
        path: str | os.PathLike | None,
        *,
        validate: Validator | None = None,
        shard: Shard | None = None,
        skip_bad: bool = False,
        rejects: RejectsWriter | None = None,
        limit: int | None = None,
    ):
        self.path = path
        self.name = display_name(path)
        self.validate = validate
        self.shard = shard
        self.skip_bad = skip_bad
        self.rejects = rejects
        #: read only the first ``limit`` records of the input (before sharding, so the shards of a
        #: limited run are the shards of the limited input)
        self.limit = limit
        self.bad_count = 0
        self.count = 0

    def _reject(self, line_no: int, reason: str, raw: bytes) -> None:
        if not self.skip_bad:
            raise RecordError(self.name, line_no, reason)
        self.bad_count += 1
        if self.rejects is not None:
            self.rejects.write(self.name, line_no, reason, raw)

    def __iter__(self) -> Iterator[Record]:
        stream = _open_binary_input(self.path)
        record_index = -1
        try:
            for line_no, raw in enumerate(stream, start=1):
                stripped = raw.strip()
                if not stripped:
                    continue
                record_index += 1
                if self.limit is not None and record_index >= self.limit:
                    break
                if self.shard is not None and not self.shard.owns(record_index):
                    continue
                try:
                    record = jsoncodec.loads(stripped)
                except orjson.JSONDecodeError as exc:
                    reason = str(exc)
                    try:
                        stripped.decode("utf-8")
                    except UnicodeDecodeError:
                        reason = "invalid UTF-8"
                    self._reject(line_no, f"bad JSON: {reason}", raw)
                    continue
                if not isinstance(record, dict):
                    self._reject(line_no, f"expected a JSON object, got {type(record).__name__}", raw)
                    continue
                if self.validate is not None:
                    try:
                        self.validate(record)
                    except ValueError as exc:
                        self._reject(line_no, str(exc), raw)
                        continue
                self.count += 1
                yield record
        except EOFError:
            raise RecordError(self.name, 0, "truncated gzip stream") from None
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise RecordError(self.name, 0, f"corrupt gzip data ({exc})") from None
        except OSError as exc:
            raise FileError.from_os(exc, self.name) from None
        finally:
            if not is_std(self.path):
                if isinstance(stream, gzip.GzipFile) and stream.fileobj is not None:
                    stream.fileobj.close()
                stream.close()


def read_records(path: str | os.PathLike | None, **kwargs: Any) -> RecordReader:
    return RecordReader(path, **kwargs)


def read_all(path: str | os.PathLike | None, **kwargs: Any) -> list[Record]:
    return list(RecordReader(path, **kwargs))


def index_records(path: str | os.PathLike, *, validate: Validator | None = None) -> Iterator[tuple[int, int, Record]]:
    """``(byte offset, byte length, record)`` for each record of an uncompressed JSONL file, checked
    like :func:`read_records` (a bad line raises ``FILE:LINE: reason``). Callers keep the offsets and
    drop the records, then fetch records on demand with :func:`read_record_at` (large corpora that
    should not live in memory, read in shuffled order)."""
    if is_hub(path):
        raise UsageError(f"{path}: random access needs a local file (lt reads Hub datasets as a stream)")
    path = check_input_file(path)
    if path.suffix == ".gz":
        raise UsageError(f"{path}: random access needs an uncompressed file")
    name = str(path)
    offset = 0
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise FileError.from_os(exc, path) from None
    with f:
        for line_no, raw in enumerate(f, start=1):
            start = offset
            offset += len(raw)
            stripped = raw.strip()
            if not stripped:
                continue
            try:
                record = jsoncodec.loads(stripped)
            except orjson.JSONDecodeError as exc:
                raise RecordError(name, line_no, f"bad JSON: {exc}") from None
            if not isinstance(record, dict):
                raise RecordError(name, line_no, f"expected a JSON object, got {type(record).__name__}")
            if validate is not None:
                try:
                    validate(record)
                except ValueError as exc:
                    raise RecordError(name, line_no, str(exc)) from None
            yield start, len(raw), record


def read_record_at(fd: int, offset: int, length: int) -> Record:
    """The record at a byte range found by :func:`index_records` (``os.pread``: thread-safe)."""
    return jsoncodec.loads(os.pread(fd, length, offset))
