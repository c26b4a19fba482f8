"""PLACEHOLDER: being built; replace this whole file (HELP, EXAMPLES, command)."""

from __future__ import annotations

from .common import run_command

HELP = "(being built)"
EXAMPLES = "lt synthesize --help"


@run_command
def command() -> int:
    from ..errors import LtError

    raise LtError("not built yet")
