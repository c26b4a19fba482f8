"""User-facing errors: one line on stderr and a documented exit code, never a traceback.

Exit codes (the same for every command; docs/reliability.md):

* 0 success;
* 1 the run failed while working: a file could not be written or read (disk full, read-only file
  system, permission denied), out of memory, a backend or server failure, a numerical failure;
* 2 the command line or the input is wrong: a bad flag, a missing or unusable path (a directory
  where a file is expected, a file that is not gzip, a damaged model folder), a malformed record
  (``FILE:LINE: reason``), a leftover output of a different run that lt will not resume;
* 3 partial success: ``--skip-bad`` set malformed records aside;
* 4 busy: another lt process is writing the same output (its pid, host and command are named);
* 130 interrupted (SIGINT, Ctrl-C); 143 terminated (SIGTERM, what ``timeout`` and Slurm send).
"""

from __future__ import annotations

import errno as errno_codes
import os


class LtError(Exception):
    """An error the user can fix; printed as ``lt: error: <message>``."""

    exit_code = 1


class UsageError(LtError):
    exit_code = 2


class RecordError(LtError):
    """A malformed input record: the message is ``FILE:LINE: reason``."""

    exit_code = 2

    def __init__(self, source: str, line: int, reason: str):
        self.source = source
        self.line = line
        self.reason = reason
        super().__init__(f"{source}:{line}: {reason}" if line else f"{source}: {reason}")


class BusyError(LtError):
    """Another process holds the lock of the output this run would write."""

    exit_code = 4


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that the cleanup of Ctrl-C runs too (exit 143)."""


#: causes worth naming in words of their own (strerror is used for the rest)
_CAUSES = {
    errno_codes.ENOSPC: "no space left on device",
    errno_codes.EROFS: "read-only file system",
    errno_codes.EACCES: "permission denied",
    errno_codes.EPERM: "operation not permitted",
    errno_codes.EISDIR: "is a directory",
    errno_codes.ENOTDIR: "not a directory",
    errno_codes.ENOENT: "no such file or directory",
    errno_codes.EDQUOT: "disk quota exceeded",
    errno_codes.EIO: "input/output error",
}


def os_cause(exc: OSError) -> str:
    """The cause of an OSError in a few lowercase words (``no space left on device``)."""
    if exc.errno in _CAUSES:
        return _CAUSES[exc.errno]
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def describe_os_error(exc: OSError, path: str | os.PathLike | None = None) -> str:
    """``PATH: cause`` for an OSError (the path it names, else ``path``)."""
    where = exc.filename if exc.filename is not None else path
    if exc.filename2 is not None:
        where = f"{exc.filename} -> {exc.filename2}"
    return f"{os.fsdecode(where) if isinstance(where, bytes) else where}: {os_cause(exc)}" if where is not None else os_cause(exc)


class FileError(LtError):
    """A file system operation failed (``PATH: cause``); exit 1, or 2 when the path itself is the
    wrong kind of thing (``is a directory``, ``not a directory``)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code

    @classmethod
    def from_os(cls, exc: OSError, path: str | os.PathLike | None = None) -> "FileError":
        usage = exc.errno in (errno_codes.EISDIR, errno_codes.ENOTDIR)
        return cls(describe_os_error(exc, path), exit_code=2 if usage else 1)


def exception_text(exc: BaseException) -> str:
    """An exception's whole message on one line (transformers' messages span several; the first
    alone can stop mid-sentence, as in "... from one of:")."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__
