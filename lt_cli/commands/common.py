"""Options shared by commands, and the error handling every command runs under."""

from __future__ import annotations

import functools
import os
import sys
from typing import Annotated, Callable, Optional

import typer

from ..errors import LtError

InputArg = Annotated[Optional[str], typer.Argument(help="Input JSONL (.gz ok); '-' or nothing reads stdin.", show_default=False)]
OutputOpt = Annotated[Optional[str], typer.Option("--output", "-o", help="Output JSONL (.gz ok), written atomically; default stdout.", show_default=False)]
ShardOpt = Annotated[Optional[str], typer.Option("--shard", help="Process only records I mod N of the input, as I/N.", show_default=False)]
SkipBadOpt = Annotated[bool, typer.Option("--skip-bad", help="Count and set aside malformed records instead of stopping (exit 3 if any).")]
RejectsOpt = Annotated[Optional[str], typer.Option("--rejects", help="Where --skip-bad writes rejected lines (default OUTPUT.rejects.jsonl or ./lt-rejects.jsonl).", show_default=False)]
SeedOpt = Annotated[int, typer.Option("--seed", help="User seed; every draw derives from it and from what it is about.")]


def rejects_path(output: str | None, rejects: str | None) -> str:
    if rejects:
        return rejects
    if output and output != "-":
        return output + ".rejects.jsonl"
    return "lt-rejects.jsonl"


def check_stdin(input_path: str | None) -> None:
    """Refuse to wait on an interactive terminal: print a hint instead of hanging."""
    if (input_path is None or input_path == "-") and sys.stdin is not None and sys.stdin.isatty():
        raise LtError("no input: pass a JSONL file or pipe records into stdin (see --help)")


def report_bad(reader, rejects) -> int:
    """After a --skip-bad run: say how many records were rejected; return the exit code (0 or 3)."""
    from ..console import warn

    if reader.bad_count:
        where = f" (see {rejects.path})" if rejects is not None and rejects.count else ""
        warn(f"{reader.bad_count} malformed record(s) skipped{where}")
        return 3
    return 0


def run_command(func: Callable) -> Callable:
    """Turn lt errors into one line on stderr and an exit code; handle closed pipes and Ctrl-C."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            code = func(*args, **kwargs)
        except LtError as exc:
            print(f"lt: error: {exc}", file=sys.stderr, flush=True)
            raise typer.Exit(exc.exit_code)
        except BrokenPipeError:
            # Python docs, "Note on SIGPIPE": silence the rest of the output and exit quietly.
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError, AttributeError):
                pass
            from .. import console

            if console._record_stream is not None:
                try:
                    os.dup2(devnull, console._record_stream.fileno())
                except (OSError, ValueError, AttributeError):
                    pass
            raise typer.Exit(1)
        except KeyboardInterrupt:
            print("lt: interrupted", file=sys.stderr, flush=True)
            raise typer.Exit(130)
        if code:
            raise typer.Exit(code)

    return wrapper
