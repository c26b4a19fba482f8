"""Everything a human reads goes to stderr; stdout carries records only.

Three things write to stdout behind a program's back (see docs/architecture.md): vLLM's logger,
rich's default console, and rich's Progress re-routing ``print``. ``lt`` answers all three:

* one module-level ``err`` console bound to stderr, used for logs, tables and progress;
* ``Progress(redirect_stdout=False)`` so records are never swallowed by a live display;
* :func:`protect_stdout`: before the first record goes to stdout, file descriptor 1 is duplicated to
  a private descriptor used only for records, and fd 1 is pointed at stderr, so C extensions,
  subprocesses (vLLM engine workers) and stray ``print`` calls land on stderr.

When stderr is not a terminal (Slurm logs, CI) a plain progress line is printed every
``LT_PROGRESS_INTERVAL`` seconds (default 10) instead of a live bar: done/total, items/s,
tokens/s, elapsed and ETA (:class:`ProgressReporter`, the one progress printer of every stage).
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


def format_duration(seconds: float) -> str:
    """``1h02m``, ``3m05s``, ``59s``: the ETA and elapsed times of progress lines."""
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def quiet_libraries() -> None:
    """Turn off the progress bars of Hugging Face libraries (transformers' "Loading weights",
    hub downloads, datasets) unless ``LT_VERBOSE`` is set (``lt --verbose``): lt prints one
    progress line per stage itself. Must run before those libraries are imported; an explicit
    ``HF_HUB_DISABLE_PROGRESS_BARS`` or ``HF_DATASETS_DISABLE_PROGRESS_BARS`` is left alone."""
    if os.environ.get("LT_VERBOSE"):
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


class ProgressReporter:
    """One stage's progress: done/total, the rate in items/s (and tokens/s when items report
    tokens), elapsed time and ETA while the total is known.

    On a terminal it is a rich bar; otherwise (Slurm logs, CI, pipes) a plain line every
    ``LT_PROGRESS_INTERVAL`` seconds (default 10), or every ``every`` items when given (``lt train
    --log-every``), and one at the end. Rates count only the work of this process: items that an
    interrupted run had already finished (:meth:`resume`) count towards done, not towards the rate.
    The total may arrive later (:meth:`set_total`, from a thread counting the input's lines).
    """

    def __init__(self, description: str, total: int | None = None, unit: str = "items", *, every: int | None = None, token_unit: str = "tokens"):
        self.description = description
        self.total = total
        self.unit = unit
        self.token_unit = token_unit
        self.every = every
        self.done = 0
        self.resumed = 0
        self.tokens = 0
        self.status = ""
        self._start = time.monotonic()
        self._last_line = self._start
        self._printed = -1
        self._interval = float(os.environ.get("LT_PROGRESS_INTERVAL", "10"))
        self._progress = None
        self._task = None
        if err.is_terminal and not os.environ.get("LT_NO_PROGRESS"):
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[figures]}"),
                console=err,
                redirect_stdout=False,
                redirect_stderr=False,
                transient=True,
            )

    def __enter__(self) -> "ProgressReporter":
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, figures="")
        return self

    # ------------------------------------------------------------------ counting
    def resume(self, n: int) -> None:
        """``n`` items finished by an earlier, interrupted run."""
        self.done += n
        self.resumed += n
        self._refresh()

    def set_total(self, total: int | None) -> None:
        self.total = total
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=total)

    def advance(self, n: int = 1, *, tokens: int | None = None, status: str | None = None) -> None:
        self.done += n
        if tokens:
            self.tokens += tokens
        if status is not None:
            self.status = status
        self._refresh()
        if self._progress is not None:
            if self.every and self.done % self.every == 0:
                self._progress.console.print(self.line(), markup=False, highlight=False)
            return
        now = time.monotonic()
        if self.every:
            if self.done % self.every == 0:
                self._last_line = now
                self._plain_line()
        elif now - self._last_line >= self._interval:
            self._last_line = now
            self._plain_line()

    # ------------------------------------------------------------------ figures
    def rates(self) -> tuple[float, float]:
        """(items/s, tokens/s) of the work done in this process."""
        elapsed = max(time.monotonic() - self._start, 1e-9)
        return (self.done - self.resumed) / elapsed, self.tokens / elapsed

    def eta_s(self) -> float | None:
        rate = self.rates()[0]
        if not self.total or rate <= 0:
            return None
        return max(self.total - self.done, 0) / rate

    def figures(self) -> str:
        """``3.20 docs/s, 812 tokens/s, elapsed 37s, ETA 4m35s`` (+ the status)."""
        rate, token_rate = self.rates()
        parts = [f"{rate:.2f} {self.unit}/s" if rate < 100 else f"{rate:,.0f} {self.unit}/s"]
        if self.tokens:
            parts.append(f"{token_rate:,.0f} {self.token_unit}/s")
        parts.append(f"elapsed {format_duration(time.monotonic() - self._start)}")
        eta = self.eta_s()
        if eta is not None and self.done < (self.total or 0):
            parts.append(f"ETA {format_duration(eta)}")
        return ", ".join(parts) + (f" | {self.status}" if self.status else "")

    def line(self) -> str:
        """``sample-thoughts: 120/1,000 docs (12.0%), 3.20 docs/s, ..., ETA 4m35s``"""
        head = f"{self.description}: {self.done:,}"
        if self.total:
            head += f"/{self.total:,} {self.unit} ({100 * self.done / self.total:.1f}%)"
        else:
            head += f" {self.unit}"
        return f"{head}, {self.figures()}"

    def _refresh(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=self.done, figures=self.figures())

    def _plain_line(self) -> None:
        self._printed = self.done
        print(self.line(), file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
        elif self.done > self.resumed and self._printed != self.done:
            self._plain_line()


@contextlib.contextmanager
def progress(description: str, total: int | None = None, unit: str = "items", **options) -> Iterator[ProgressReporter]:
    with ProgressReporter(description, total, unit, **options) as reporter:
        yield reporter
