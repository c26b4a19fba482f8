"""What kind of path an argument names: stdin/stdout, a device, a Hugging Face Hub split.

Why its own module: the JSONL layer (io.py), the output writer, whole-file writes, the cache and
provenance all ask these questions, and they need nothing else from one another to do it. Kept
here, at the bottom, with no lt imports, they let those modules depend downwards only.
"""

from __future__ import annotations

import os
import stat


def is_std(path: str | os.PathLike | None) -> bool:
    """``None`` or ``"-"``: stdin for an input, stdout for an output."""
    return path is None or str(path) == "-"


def is_device(path: str | os.PathLike | None) -> bool:
    """True for an existing path that is neither a regular file nor a folder: ``/dev/null``, a FIFO,
    ``/dev/stdout``, ``>(gzip > x)``. Such an output is written as a stream (no temporary file, no
    rename over it, no sidecar files beside it), never replaced."""
    if is_std(path):
        return False
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def is_hub(path: str | os.PathLike | None) -> bool:
    """``hf://datasets/...``: a Hugging Face Hub dataset split, streamed (:mod:`lt_cli.hub`)."""
    return isinstance(path, str) and path.startswith("hf://")


def display_name(path: str | os.PathLike | None) -> str:
    return "<stdin>" if is_std(path) else str(path)
