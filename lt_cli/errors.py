"""User-facing errors: one line on stderr and a documented exit code, never a traceback.

Exit codes (docs/cli.md): 0 success, 1 runtime failure, 2 bad input or usage (``FILE:LINE: reason``),
3 partial success (some records rejected with ``--skip-bad``), 130 interrupted.
"""

from __future__ import annotations


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
        super().__init__(f"{source}:{line}: {reason}")
