"""Files lt creates beside an output are never opened through a symbolic link.

Why: lock, partial, rejects, cache and log files have predictable names next to an output, so
anyone who can write into that folder could plant a link there and make the next run write, or
truncate, the link's target. These helpers refuse a link (and anything but a regular file) with
one line, checking in the same system call as the open where they can (``O_NOFOLLOW``), and
leave the link and its target untouched. A folder lt creates at a predictable name and writes
into (``checkpoints/``, a tracker's folder) is checked the same way (:func:`check_folder`): a link
there would send every file lt, or a library lt hands the folder to, writes into the link's
target. They depend on nothing but :mod:`lt_cli.errors`, so the lock, cache and output modules
use them without importing the JSONL layer.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

from .errors import FileError, UsageError


_NOT_A_FILE = "not a regular file (lt creates this file itself; move what is there away)"


def _link_error(path: str | os.PathLike) -> UsageError:
    try:
        target = f" (to {os.readlink(path)})"
    except OSError:
        target = ""
    return UsageError(
        f"{path} is a symbolic link{target}: lt never writes through a link at a path it creates beside an output "
        "(someone who can write into the folder may have planted it); remove it and rerun (lt left it and its target untouched)"
    )


def _check_kind(path: str | os.PathLike, is_kind, refusal: str) -> bool:
    """True when ``path`` passes ``is_kind`` (a ``stat.S_IS*``), False when it does not exist; a
    symbolic link, or anything else there, is refused with one line (exit 2). Checks the path
    itself (``lstat``), never what a link points to."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise FileError.from_os(exc, path) from None
    if stat.S_ISLNK(mode):
        raise _link_error(path)
    if not is_kind(mode):
        raise UsageError(f"{path}: {refusal}")
    return True


def check_plain_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a regular file, False when it does not exist; a symbolic link or
    anything else (a FIFO, a folder) there is refused with one line (exit 2)."""
    return _check_kind(path, stat.S_ISREG, _NOT_A_FILE)


def check_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a real folder, False when it does not exist; a symbolic link (even to
    a folder) or anything else there is refused with one line (exit 2). For folders lt creates
    itself at a predictable name, never for one the user named."""
    return _check_kind(path, stat.S_ISDIR, "not a folder (lt creates this folder itself; move what is there away)")


def open_no_follow(path: str | os.PathLike, flags: int, mode: int = 0o666) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` (``O_NOFOLLOW``, in the same system
    call, so no link can be swapped in between a check and the open) and anything but a regular
    file there. Why: lock, partial, rejects and cache files have predictable names beside an
    output; a link planted at one would make lt write, or truncate, the link's target."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP and os.path.islink(path):
            raise _link_error(path) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"{path}: {_NOT_A_FILE}")
    os.set_blocking(fd, True)
    return fd


def open_binary_no_follow(path: str | os.PathLike, mode: str) -> BinaryIO:
    """:func:`open_no_follow` as a binary file object; ``mode`` is ``"wb"``, ``"ab"`` or ``"r+b"``."""
    flags = {"wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND, "r+b": os.O_RDWR}[mode]
    return os.fdopen(open_no_follow(path, flags), mode)
