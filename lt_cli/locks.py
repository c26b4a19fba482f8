"""One writer per output: ``OUTPUT.lock``, held with ``flock`` while a command writes ``OUTPUT``.

Why: a job submitted twice with the same ``-o`` would otherwise append every record twice to the
same ``OUTPUT.partial``, or train two runs into one folder. The second process must refuse at once
and say who holds the output. ``flock`` is released by the kernel when its holder dies, even by
``kill -9``, so a stale lock file never blocks a rerun: it is taken over. The file holds the
holder's pid, host, command line and start time (JSON), which the refused process prints.

The lock file is removed when its holder finishes (success or error); only a killed process leaves
it behind, unlocked. After taking the lock the holder checks that the path still names the file it
locked (another process may have removed it in between) and retries otherwise.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from .errors import BusyError

LOCK_SUFFIX = ".lock"


def lock_path(output: str | os.PathLike) -> Path:
    output = Path(output)
    return output.with_name(output.name + LOCK_SUFFIX)


def _holder() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(["lt", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith(("lt", "__main__.py")) else " ".join(sys.argv),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _describe(path: Path) -> str:
    import orjson

    try:
        holder = orjson.loads(path.read_bytes())
        return f"pid {holder['pid']} on {holder['host']} since {holder['started_at']} ({holder['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


class OutputLock:
    """``with OutputLock(output, what="-o"):`` holds ``OUTPUT.lock``; raises :class:`BusyError` when
    another process holds it."""

    def __init__(self, output: str | os.PathLike, *, what: str = "output"):
        self.output = Path(output)
        self.path = lock_path(output)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        import fcntl

        from .errors import FileError

        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise FileError.from_os(exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise BusyError(
                    f"{self.output} is being written by {_describe(self.path)}: wait for it to finish, or stop it, "
                    f"or choose another {self.what}"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder we waited on removed the file: lock the new one
        import orjson

        os.ftruncate(fd, 0)
        os.write(fd, orjson.dumps(_holder(), option=orjson.OPT_APPEND_NEWLINE))
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding it, so nobody locks a file about to vanish
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
