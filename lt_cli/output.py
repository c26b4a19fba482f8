"""Writing records: to stdout, or to a file that appears atomically, one writer at a time.

* Records go to a temporary file beside ``OUTPUT`` that is renamed over it only when the command
  succeeds; on any error (disk full, Ctrl-C, SIGTERM, a bad record) the temporary file is removed,
  so nothing appears under the final name and nothing is left under another.
* Resumable outputs (``resume=True``) keep their progress in ``OUTPUT.partial`` (flushed per
  record) and what wrote it in ``OUTPUT.partial.json`` (:mod:`lt_cli.provenance`). A rerun of the
  same command on the same input continues after the last complete record, so the final file is
  byte-identical to an uninterrupted run; a rerun that differs is refused (``restart=True``
  discards the partial instead).
* ``OUTPUT.lock`` (:mod:`lt_cli.locks`) is held from the first check to the rename: a second
  process writing the same output stops at once, naming the first.
* ``marker=True`` writes ``OUTPUT.done`` (record count and sha256) after the rename: the completion
  marker that ``lt merge`` requires of every shard.
* The output path is checked before any work (a directory, a parent that is a file), and a failed
  write names the output and its cause in one line (:class:`~lt_cli.errors.FileError`).
* An output that is not a regular file (``/dev/null``, ``/dev/full``, a FIFO) is written as a
  stream: no temporary file, partial, lock or marker beside it, a flush per record, and a write of
  zero bytes when it is opened, so a device that refuses writes fails before any work.
* The files beside an output (``.lock``, ``.partial``) are opened without following links
  (:func:`lt_cli.nofollow.open_no_follow`). A partial is read up to a torn last line (an interrupted
  write, dropped with a note on stderr); a complete line that is not a JSON object (a damaged or
  hand-edited partial) is refused, naming the partial and the line, because the records after it
  would otherwise be silently recomputed or lost.
"""

from __future__ import annotations

import errno
import gzip
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable

import orjson

from .errors import FileError, UsageError
from .files import _mkstemp_public, file_sha256, write_json
from .interrupts import raise_if_received
from .io import Record, Shard, dumps, parse_shard
from .paths import is_device, is_std
from .nofollow import check_plain_file, open_binary_no_follow
from .locks import OutputLock


def _write_failed(exc: OSError, where: str | os.PathLike) -> BaseException:
    if isinstance(exc, BrokenPipeError) or exc.errno == errno.EPIPE:
        return exc  # a closed pipe on stdout: handled quietly by commands.common.run_command
    return FileError.from_os(OSError(exc.errno, exc.strerror), where)


def check_output_path(path: Path, flag: str = "-o") -> None:
    """Refuse an output that cannot be a file before any work is done."""
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory (give a file name)")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{flag} {path}: {parent} is not a directory")
            break


class OutputWriter:
    """Write records to stdout or atomically to a file; see the module docstring.

    Use as a context manager: leaving it with an exception discards a non-resumable temporary file
    (nothing appears under the final name) and keeps a resumable ``.partial`` for the next run.
    ``identity`` (resumable outputs) is what this run is (:func:`lt_cli.provenance.stream_identity`),
    or a function returning it (called once the lock is held: hashing a large input then never
    delays the refusal of a second writer); a leftover partial with another identity is refused,
    or discarded with ``restart``.
    """

    def __init__(
        self,
        path: str | os.PathLike | None,
        *,
        resume: bool = False,
        marker: bool = False,
        shard: "Shard | str | None" = None,
        identity: "dict[str, Any] | Callable[[], dict[str, Any]] | None" = None,
        restart: bool = False,
        lock: bool = True,
        flag: str = "-o",
    ):
        self.path = None if is_std(path) else Path(path)
        #: the flag that named this output, for messages (``--log-samples``)
        self.flag = flag
        #: /dev/null, a FIFO...: written as a stream, like stdout (never replaced by a rename)
        self.device = is_device(path)
        self.resume = resume and self.path is not None and not self.device
        # ``shard`` (I/N of a --shard run) turns the marker on and records which shard this is, so
        # ``lt merge`` can check that it got every shard, in order, each complete.
        self.shard = parse_shard(shard) if isinstance(shard, str) else shard
        self.marker = (marker or self.shard is not None) and self.path is not None and not self.device
        self.identity = identity
        self.restart = restart
        self.count = 0
        #: records already present from an interrupted earlier run (resume only)
        self.done = 0
        self.resumed_records: list[Record] = []
        self._file: BinaryIO | None = None
        self._tmp: Path | None = None
        self._lock = OutputLock(self.path, what=flag) if (lock and self.path is not None and not self.device) else None

    @property
    def partial_path(self) -> Path:
        assert self.path is not None
        return self.path.with_name(self.path.name + ".partial")

    @property
    def meta_path(self) -> Path:
        from .provenance import meta_path

        return meta_path(self.partial_path)

    # ------------------------------------------------------------------------------ opening
    def __enter__(self) -> "OutputWriter":
        if self.path is None:
            from .console import protect_stdout

            self._file = protect_stdout()
            return self
        if self.device:
            try:
                self._file = open(self.path, "wb")
                # zero bytes: /dev/full refuses them (ENOSPC), /dev/null and pipes take them, a
                # reader sees nothing; a device that cannot be written fails before any work
                os.write(self._file.fileno(), b"")
            except OSError as exc:
                if self._file is not None:
                    self._file.close()
                    self._file = None
                raise FileError.from_os(OSError(exc.errno, exc.strerror), self.path) from None
            return self
        check_output_path(self.path, self.flag)
        if self._lock is not None:
            self._lock.acquire()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._lock is not None:
                self._remove_stale_temporaries()
            if self.resume:
                self._open_partial()
            else:
                fd, tmp = _mkstemp_public(self.path)
                self._tmp = Path(tmp)
                self._file = os.fdopen(fd, "wb")
        except OSError as exc:
            self._release()
            raise FileError.from_os(exc, self.path) from None
        except BaseException:
            self._release()
            raise
        return self

    def _remove_stale_temporaries(self) -> None:
        """Temporary files of this output left by a killed writer (``kill -9`` runs no cleanup).
        Only the lock holder writes them, and this process holds the lock: any found are stale."""
        import glob

        assert self.path is not None
        for stale in glob.glob(os.path.join(glob.escape(str(self.path.parent)), f".{glob.escape(self.path.name)}.*.tmp")):
            Path(stale).unlink(missing_ok=True)

    def _check_partial(self, partial: Path) -> None:
        """Refuse (or with ``restart`` discard) a partial that this run would not have written."""
        from .console import log
        from .provenance import differences

        check_plain_file(self.meta_path)
        records = partial.read_bytes().count(b"\n")
        if self.restart:
            log(f"--restart: discarding {partial} ({records:,} record(s))")
            partial.unlink()
            return
        if self.identity is None:
            return
        try:
            problems = differences(orjson.loads(self.meta_path.read_bytes()), self.identity)
        except FileNotFoundError:
            problems = [f"no record of what wrote it ({self.meta_path.name} is missing)"]
        except (ValueError, OSError) as exc:
            problems = [f"{self.meta_path.name} is unreadable ({exc})"]
        if problems:
            raise UsageError(
                f"{partial} holds {records:,} record(s) of a different run: {'; '.join(problems)}. "
                "Pass --restart to discard them and start over (cached samples are reused), or choose another -o"
            )

    def _open_partial(self) -> None:
        if callable(self.identity):
            self.identity = self.identity()
        partial = self.partial_path
        if check_plain_file(partial):
            self._check_partial(partial)
        if not check_plain_file(partial) and self.identity is not None:
            write_json(self.meta_path, self.identity)  # before the first record: a partial always has one
        if check_plain_file(partial):
            self._read_partial(partial)
        self._file = open_binary_no_follow(partial, "ab")

    def _read_partial(self, partial: Path) -> None:
        """Keep the partial's complete records; drop a torn last line (an interrupted write) and
        say so; refuse a complete line that is not a JSON object (see the module docstring)."""
        from .console import log
        from .io import loads

        with open_binary_no_follow(partial, "r+b") as f:
            data = f.read()
            keep = 0
            for line_no, line in enumerate(data.splitlines(keepends=True), start=1):
                if not line.endswith(b"\n"):
                    log(f"{partial}: dropped its torn last line ({len(line):,} bytes, an interrupted write); that record is computed again")
                    break
                try:
                    record = loads(line)
                except orjson.JSONDecodeError:
                    record = None
                if not isinstance(record, dict):
                    lines = data.count(b"\n")
                    raise UsageError(
                        f"{partial}:{line_no}: not a JSON record (the partial was damaged or edited by hand): "
                        f"pass --restart to discard its {lines:,} line(s) and start over (cached samples are reused), "
                        f"or cut it before line {line_no} to keep the {line_no - 1:,} record(s) before it"
                    )
                self.resumed_records.append(record)
                keep += len(line)
            f.truncate(keep)
        self.done = len(self.resumed_records)
        self.count = self.done

    # ------------------------------------------------------------------------------ writing
    def write(self, record: Record) -> None:
        self.write_raw(dumps(record))

    def write_raw(self, line: bytes) -> None:
        """Append one already-serialised JSONL line (newline-terminated) as is: ``lt merge`` copies
        shard lines whose sha256 it verifies, byte for byte, without a parse/dump round trip."""
        assert self._file is not None, "OutputWriter used outside its context"
        raise_if_received()  # an interrupt a library swallowed stops the stream here
        try:
            self._file.write(line if line.endswith(b"\n") else line + b"\n")
            self.count += 1
            if self.resume or self.device:
                self._file.flush()
        except OSError as exc:
            raise _write_failed(exc, self.path or "stdout") from None

    # ------------------------------------------------------------------------------ closing
    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.path is None:
                self._flush_stdout(failing=exc_type is not None)
            elif self.device:
                self._close_device(failing=exc_type is not None)
            else:
                self._finish(ok=exc_type is None)
        finally:
            self._release()

    def _flush_stdout(self, failing: bool) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
        except OSError as exc:
            if not failing:  # the first error is the one to report
                raise _write_failed(exc, "stdout") from None

    def _close_device(self, failing: bool) -> None:
        assert self._file is not None and self.path is not None
        try:
            self._file.close()
        except OSError as exc:
            if not failing:
                raise _write_failed(exc, self.path) from None

    def _finish(self, ok: bool) -> None:
        assert self.path is not None and self._file is not None
        try:
            self._file.close()
        except OSError as exc:
            if ok:
                self._discard()
                raise FileError.from_os(exc, self.path) from None
        if not ok:
            self._discard()
            return
        try:
            raise_if_received()  # nothing is committed after Ctrl-C or SIGTERM
        except KeyboardInterrupt:
            self._discard()
            raise
        source = self.partial_path if self.resume else self._tmp
        assert source is not None
        compressed: Path | None = None
        try:
            if self.path.suffix == ".gz":
                fd, tmp = _mkstemp_public(self.path)
                compressed = Path(tmp)
                with os.fdopen(fd, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
                    with open(source, "rb") as src:
                        while block := src.read(1 << 20):
                            gz.write(block)
                source.unlink()
                source = compressed
            os.replace(source, self.path)
        except OSError as exc:
            if compressed is not None:
                compressed.unlink(missing_ok=True)
            self._discard()
            raise FileError.from_os(OSError(exc.errno, exc.strerror), self.path) from None
        if self.resume:
            self.meta_path.unlink(missing_ok=True)
        if self.marker:
            done: dict[str, Any] = {"records": self.count, "sha256": file_sha256(self.path)}
            if self.shard is not None:
                done["shard"] = str(self.shard)
            try:
                write_json(self.path.with_name(self.path.name + ".done"), done)
            except OSError as exc:
                raise FileError.from_os(exc, self.path.with_name(self.path.name + ".done")) from None

    def _discard(self) -> None:
        """After a failure: remove the temporary file; a resumable partial stays for the rerun
        when it holds records (an empty one, and its identity, would only be a leftover)."""
        if not self.resume and self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
        if self.resume and self.count == 0:
            self.partial_path.unlink(missing_ok=True)
            self.meta_path.unlink(missing_ok=True)


def open_output(
    path: str | os.PathLike | None,
    *,
    resume: bool = False,
    marker: bool = False,
    shard: "Shard | str | None" = None,
    identity: "dict[str, Any] | Callable[[], dict[str, Any]] | None" = None,
    restart: bool = False,
    flag: str = "-o",
) -> OutputWriter:
    return OutputWriter(path, resume=resume, marker=marker, shard=shard, identity=identity, restart=restart, flag=flag)
