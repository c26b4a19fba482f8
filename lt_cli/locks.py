"""One writer per output: ``OUTPUT.lock``, held with ``flock`` while a command writes ``OUTPUT``.

Why: a job submitted twice with the same ``-o`` would otherwise append every record twice to the
same ``OUTPUT.partial``, or train two runs into one folder. The second process must refuse at once
and say who holds the output. ``flock`` is released by the kernel when its holder dies, even by
``kill -9``, so a stale lock file never blocks a rerun: it is taken over. The file holds the
holder's pid, host, command line and start time (JSON), which the refused process prints.

The lock file is removed when its holder finishes (success or error); only a killed process leaves
it behind, unlocked. After taking the lock the holder checks that the path still names the file it
locked (another process may have removed it in between) and retries otherwise.

The lock's path is predictable, so it is opened without following links (``O_NOFOLLOW``,
:func:`lt_cli.nofollow.open_no_follow`): a symbolic link planted at ``OUTPUT.lock`` by someone who can
write into the folder is refused with one line (exit 2), and neither the link nor its target is
touched. A lock path that is not a regular file, or a file with other hard links, is refused the
same way (truncating it would truncate every name it has).
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


def _describe(fd: int) -> str:
    """Who holds the lock, read from the locked file itself (never through a path)."""
    import orjson

    try:
        holder = orjson.loads(os.pread(fd, 1 << 16, 0))
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

        from .errors import FileError, UsageError
        from .nofollow import open_no_follow

        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = open_no_follow(self.path, os.O_RDWR | os.O_CREAT)
            except OSError as exc:
                raise FileError.from_os(exc) from None
            if os.fstat(fd).st_nlink > 1:
                os.close(fd)
                raise UsageError(f"{self.path} has other hard links: lt will not write its lock into a file that has other names; remove it")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe(fd)
                os.close(fd)
                raise BusyError(
                    f"{self.output} is being written by {holder}: wait for it to finish, or stop it, "
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
