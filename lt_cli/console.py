"""Everything a human reads goes to stderr; stdout carries records only.

Three things write to stdout behind a program's back (see docs/architecture.md): vLLM's logger,
rich's default console, and rich's Progress re-routing ``print``. ``lt`` answers all three:

* one module-level ``err`` console bound to stderr, used for logs, tables and progress;
* ``Progress(redirect_stdout=False)`` so records are never swallowed by a live display;
* :func:`protect_stdout`: before the first record goes to stdout, file descriptor 1 is duplicated to
  a private descriptor used only for records, and fd 1 is pointed at stderr, so C extensions,
  subprocesses (vLLM engine workers) and stray ``print`` calls land on stderr.

When stderr is not a terminal (Slurm logs, CI) a plain progress line is printed every
``LT_PROGRESS_INTERVAL`` seconds (default 10) instead of a live bar.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from typing import BinaryIO, Iterator

from rich.console import Console

err = Console(stderr=True, highlight=False, soft_wrap=True)

_record_stream: BinaryIO | None = None
#: fd 1 was closed when lt started (``lt ... >&-``): it now holds /dev/null, records are refused
_stdout_was_closed = False


def guard_std_streams() -> None:
    """Give closed standard descriptors (``>&-``, ``2>&-``) /dev/null, before anything opens a file.

    A file opened while fd 1 is closed would get fd 1, and every stray write to stdout (C
    libraries, subprocesses) would land in it. lt remembers that stdout was closed and refuses to
    write records there (one error line, before any work) instead of failing after all the work.
    """
    global _stdout_was_closed
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            if fd == 1:
                _stdout_was_closed = True


def log(message: str) -> None:
    """One plain log line on stderr (rich markup allowed)."""
    err.print(message)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}")


def protect_stdout() -> BinaryIO:
    """Return the binary stream records must be written to, guarding fd 1 on first call.

    In a real process (stdout has a file descriptor) fd 1 is duplicated to a private fd and then
    redirected to stderr, and ``sys.stdout`` becomes ``sys.stderr``. Under test runners that
    replace ``sys.stdout`` with an in-memory object, that object's buffer is returned unchanged.
    """
    global _record_stream
    if _record_stream is not None:
        return _record_stream
    if sys.stdout is None or _stdout_was_closed:
        from .errors import UsageError

        raise UsageError("stdout is closed: pass -o FILE to write the output to a file")
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        _record_stream = sys.stdout.buffer
        return _record_stream
    sys.stdout.flush()
    private_fd = os.dup(fd)
    os.dup2(sys.stderr.fileno(), fd)
    sys.stdout = sys.stderr
    _record_stream = os.fdopen(private_fd, "wb", buffering=1 << 16)
    return _record_stream


def require_stdout(what: str) -> None:
    """Refuse at the start, not after hours of work, when stdout is closed and ``what`` goes there."""
    if sys.stdout is None or _stdout_was_closed:
        from .errors import UsageError

        raise UsageError(f"stdout is closed: {what} goes there (redirect it to a file or /dev/null)")


def reset_record_stream() -> None:
    """Forget the cached record stream (tests run many commands in one process)."""
    global _record_stream
    _record_stream = None


class ProgressReporter:
    """Counts work items; a rich bar on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, description: str, total: int | None = None, unit: str = "items"):
        self.description = description
        self.total = total
        self.unit = unit
        self.done = 0
        self._start = time.monotonic()
        self._last_line = self._start
        self._interval = float(os.environ.get("LT_PROGRESS_INTERVAL", "10"))
        self._progress = None
        self._task = None
        if err.is_terminal and not os.environ.get("LT_NO_PROGRESS"):
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err,
                redirect_stdout=False,
                redirect_stderr=False,
                transient=True,
            )

    def __enter__(self) -> "ProgressReporter":
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total)
        return self

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._progress is not None:
            self._progress.update(self._task, advance=n)
            return
        now = time.monotonic()
        if now - self._last_line >= self._interval:
            self._last_line = now
            self._plain_line()

    def _plain_line(self) -> None:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        rate = self.done / elapsed
        line = f"{self.description}: {self.done:,}"
        if self.total:
            line += f"/{self.total:,}"
            if rate > 0:
                line += f" {self.unit}, {rate:.2f} {self.unit}/s, ETA {(self.total - self.done) / rate:,.0f}s"
        else:
            line += f" {self.unit}, {rate:.2f} {self.unit}/s"
        print(line, file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
        elif self.done:
            self._plain_line()


@contextlib.contextmanager
def progress(description: str, total: int | None = None, unit: str = "items") -> Iterator[ProgressReporter]:
    with ProgressReporter(description, total, unit) as reporter:
        yield reporter
