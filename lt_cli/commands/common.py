"""Options shared by commands, and the error handling every command runs under.

A command is thin: its parameters are the leaves of its config dataclass (same names, see
:mod:`lt_cli.flags`), it builds the config with ``flags.build`` and hands it to its runner through
:func:`lt_cli.runners.run`, the same call ``lt bootstrap`` makes for a stage.
"""

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
LimitOpt = Annotated[Optional[int], typer.Option("--limit", help="Read only the first N input records (before sharding).", show_default=False)]
SkipBadOpt = Annotated[bool, typer.Option("--skip-bad", help="Count and set aside malformed records instead of stopping (exit 3 if any).")]
RejectsOpt = Annotated[Optional[str], typer.Option(
    "--rejects", help="Where --skip-bad writes rejected lines (default OUTPUT.rejects.jsonl or ./lt-rejects.jsonl).", show_default=False,
)]
RestartOpt = Annotated[bool, typer.Option("--restart", help="Discard a leftover OUTPUT.partial and start over (a partial of another run is refused).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="User seed; every draw derives from it and from what it is about.")]

BackendOpt = Annotated[str, typer.Option("--backend", help="transformers (alias hf), vllm or api (OpenAI-compatible HTTP).")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Sequences per forward pass inside the backend.")]
MaxModelLenOpt = Annotated[Optional[int], typer.Option("--max-model-len", help="Context length (default: the model's).", show_default=False)]
CacheOpt = Annotated[Optional[str], typer.Option(
    "--cache", help="SQLite sample cache (default OUTPUT.cache.sqlite with -o; none on stdout or a device such as /dev/null).", show_default=False,
)]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not read or write a sample cache.")]
PrefixChunksOpt = Annotated[int, typer.Option(
    "--prefix-chunks", help="Previous raw chunks given as context (reference: 3; select --model: must match sample-thoughts).",
)]
QuirksOpt = Annotated[bool, typer.Option(
    "--reference-quirks", help="Reproduce the reference's first-chunk prompt and its log p off-by-one (select --model: must match sample-thoughts).",
)]
DocsPerCallOpt = Annotated[Optional[int], typer.Option(
    "--docs-per-call", help="Documents whose chunks go to the backend in one call (default 8; 128 with vllm).", show_default=False,
)]

# tracking (lt_cli/tracking.py, TrackingConfig): the same five flags on every command that logs statistics
ReportToOpt = Annotated[Optional[list[str]], typer.Option(
    "--report-to", help="Also log statistics to tensorboard, wandb and/or jsonl (repeat or comma-separate; none: off).", show_default=False,
)]
WandbProjectOpt = Annotated[Optional[str], typer.Option(
    "--wandb-project", help="W&B project (default: $WANDB_PROJECT, else lt).", show_default=False,
)]
WandbEntityOpt = Annotated[Optional[str], typer.Option(
    "--wandb-entity", help="W&B entity (default: $WANDB_ENTITY, else your default).", show_default=False,
)]
RunNameOpt = Annotated[Optional[str], typer.Option(
    "--run-name", help="The run's name in the tracker (default: $WANDB_NAME, else the run or output name).", show_default=False,
)]
TrackingDirOpt = Annotated[Optional[str], typer.Option(
    "--tracking-dir", help="Folder for TensorBoard events, tracking.jsonl and W&B files (default: beside the output).", show_default=False,
)]


def tracking_flags(flags: dict) -> dict:
    """``flags`` with ``report_to`` as a list (typer gives None when the flag is absent)."""
    return {**flags, "report_to": list(flags.get("report_to") or [])}


def parse_tokens(value: Optional[str]) -> Optional[int]:
    """Token budgets are large: accept 13e9, 13_000_000_000, 800M, 13B."""
    if value is None:
        return None
    from ..errors import UsageError

    text = value.strip().replace("_", "").replace(",", "")
    multiplier = 1
    suffixes = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
    if text and text[-1].lower() in suffixes:
        multiplier = suffixes[text[-1].lower()]
        text = text[:-1]
    try:
        number = float(text) * multiplier
    except ValueError:
        raise UsageError(f"--tokens must be a number like 13e9 or 800M, got {value!r}") from None
    if number != int(number):
        raise UsageError(f"--tokens must be a whole number, got {value!r}")
    return int(number)


def check_stdin(input_path: str | None) -> None:
    """Refuse to wait on an interactive terminal: print a hint instead of hanging."""
    if (input_path is None or input_path == "-") and sys.stdin is not None and sys.stdin.isatty():
        from ..errors import UsageError

        raise UsageError("no input: pass a JSONL file or pipe records into stdin (see --help)")


def _raise_terminated(signum, frame) -> None:
    from ..errors import Terminated

    raise Terminated()


def _error_line(message: str, code: int) -> "typer.Exit":
    print(f"lt: error: {message}", file=sys.stderr, flush=True)
    return typer.Exit(code)


def _silence_stdout() -> None:
    """After a closed pipe: point stdout (and the record stream) at /dev/null so the interpreter's
    final flush cannot raise again (Python docs, "Note on SIGPIPE")."""
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


def run_command(func: Callable) -> Callable:
    """Run a command so that every failure is one ``lt: error:`` line and a documented exit code.

    lt's own errors carry their code; an OSError (disk full, read-only file system, permission
    denied) is ``PATH: cause`` with exit 1; running out of memory is exit 1; a closed pipe exits
    quietly; Ctrl-C exits 130 and SIGTERM 143, both after the same cleanup (temporary files
    removed, locks released, a resumable ``.partial`` kept). The codes are documented in
    docs/reliability.md and lt_cli/errors.py.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        import signal
        import threading

        from .. import console
        from ..errors import FileError, Terminated, describe_os_error

        console.guard_std_streams()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            code = func(*args, **kwargs)
        except LtError as exc:
            raise _error_line(str(exc), exc.exit_code)
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(1)
        except Terminated:
            print("lt: terminated (SIGTERM)", file=sys.stderr, flush=True)
            raise typer.Exit(143)
        except KeyboardInterrupt:
            print("lt: interrupted", file=sys.stderr, flush=True)
            raise typer.Exit(130)
        except MemoryError:
            raise _error_line("out of memory (lower --batch-size, --docs-per-call or --k, or use a machine with more memory)", 1)
        except OSError as exc:
            raise _error_line(describe_os_error(exc), FileError.from_os(exc).exit_code)
        finally:
            if previous is not None:  # in-process callers (tests) get their handler back
                signal.signal(signal.SIGTERM, previous)
        if code:
            raise typer.Exit(code)

    return wrapper
