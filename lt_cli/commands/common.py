"""Options shared by commands, and the error handling every command runs under.

A command is thin: its parameters are the leaves of its config dataclass (same names, see
:mod:`lt_cli.flags`), it builds the config with ``flags.build`` and hands it to its runner through
:func:`lt_cli.runners.run`, the same call ``lt bootstrap`` makes for a stage.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Annotated, Any, Callable, Optional

import typer

from ..errors import LtError
from ..flags import parse_tokens  # noqa: F401  (commands import it from here)

def one_of(source: str, *, extra: list[str] | tuple[str, ...] = (), without: list[str] | tuple[str, ...] = ()) -> Callable[[str], list[str]]:
    """Shell completion (``autocompletion=``) of an option that takes one of a fixed set of values,
    read from the library's own constant ``source`` (``module.NAME``: a tuple, or a function
    returning the values) when asked: ``lt --help`` imports nothing, and the completion scripts
    (``scripts/gen_completions.py`` asks every option) never offer a value the command refuses.
    Options that take a path say so with ``metavar="FILE"``, ``"DIR"`` or ``"MODEL"`` (a folder or
    a hub id)."""

    def values() -> list[str]:
        import importlib

        module, _, name = source.rpartition(".")
        found = getattr(importlib.import_module(module), name)
        return [v for v in [*(found() if callable(found) else found), *extra] if v not in without]

    def complete(incomplete: str) -> list[str]:
        return [v for v in values() if v.startswith(incomplete)]

    return complete


BACKENDS = one_of("lt_cli.backends.backend_names")
BACKEND_DTYPES = one_of("lt_cli.backends.base.DTYPES")
DEVICES = one_of("lt_cli.backends.base.DEVICES")
TRAIN_DTYPES = one_of("lt_cli.training.config.DTYPES")
LAYOUTS = one_of("lt_cli.formats.LAYOUTS")
TASKS = one_of("lt_cli.evaluation.registry.task_names")
VARIANTS = one_of("lt_cli.evaluation.generation.VARIANTS")
STOP_RULES = one_of("lt_cli.estep.adaptive.STOP_RULES")
FINETUNE_TASKS = one_of("lt_cli.evaluation.registry.task_names", without=("nll", "elbo"))
REPORT_TO = one_of("lt_cli.tracking.REPORT_TO", extra=("none",))

#: help sections (``--help`` groups options under these titles; see lt_cli/cli.py)
IO_PANEL = "Input and output"
BACKEND_PANEL = "Backend"
CONFIG_PANEL = "Config file"
TRACKING_PANEL = "Tracking"

InputArg = Annotated[Optional[str], typer.Argument(help="Input JSONL (.gz ok); '-' or nothing reads stdin.", show_default=False, metavar="FILE")]
OutputOpt = Annotated[Optional[str], typer.Option(
    "--output", "-o", help="Output JSONL (.gz ok), written atomically; default stdout.", show_default=False, rich_help_panel=IO_PANEL, metavar="FILE",
)]
ShardOpt = Annotated[Optional[str], typer.Option(
    "--shard", help="Process only records I mod N of the input, as I/N.", show_default=False, rich_help_panel=IO_PANEL,
)]
LimitOpt = Annotated[Optional[int], typer.Option(
    "--limit", help="Read only the first N input records (before sharding).", show_default=False, rich_help_panel=IO_PANEL,
)]
SkipBadOpt = Annotated[bool, typer.Option(
    "--skip-bad", help="Count and set aside malformed records instead of stopping (exit 3 if any).", rich_help_panel=IO_PANEL,
)]
RejectsOpt = Annotated[Optional[str], typer.Option(
    "--rejects", help="Where --skip-bad writes rejected lines (default OUTPUT.rejects.jsonl or ./lt-rejects.jsonl).", show_default=False,
    rich_help_panel=IO_PANEL, metavar="FILE",
)]
RestartOpt = Annotated[bool, typer.Option(
    "--restart", help="Discard a leftover OUTPUT.partial and start over (a partial of another run is refused).", rich_help_panel=IO_PANEL,
)]
SeedOpt = Annotated[int, typer.Option("--seed", help="User seed; every draw derives from it and from what it is about.")]

BackendOpt = Annotated[str, typer.Option(
    "--backend", help="transformers (alias hf), vllm or api (OpenAI-compatible HTTP).", rich_help_panel=BACKEND_PANEL, autocompletion=BACKENDS,
)]
DtypeOpt = Annotated[str, typer.Option(
    "--dtype", help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16.", rich_help_panel=BACKEND_PANEL, autocompletion=BACKEND_DTYPES,
)]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Sequences per forward pass inside the backend.", rich_help_panel=BACKEND_PANEL)]
MaxModelLenOpt = Annotated[Optional[int], typer.Option(
    "--max-model-len", help="Context length (default: the model's).", show_default=False, rich_help_panel=BACKEND_PANEL,
)]
CacheOpt = Annotated[Optional[str], typer.Option(
    "--cache", help="SQLite sample cache (default OUTPUT.cache.sqlite with -o; none on stdout or a device such as /dev/null).", show_default=False,
    rich_help_panel=BACKEND_PANEL,
    metavar="FILE",
)]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not read or write a sample cache.", rich_help_panel=BACKEND_PANEL)]
PrefixChunksOpt = Annotated[int, typer.Option(
    "--prefix-chunks", help="Previous raw chunks given as context (reference: 3; select --model: must match sample-thoughts).",
    rich_help_panel="Prompts",
)]
QuirksOpt = Annotated[bool, typer.Option(
    "--reference-quirks", help="Reproduce the reference's first-chunk prompt and its log p off-by-one (select --model: must match sample-thoughts).",
    rich_help_panel="Prompts",
)]
DocsPerCallOpt = Annotated[Optional[int], typer.Option(
    "--docs-per-call", help="Documents whose chunks go to the backend in one call (default 8; 128 with vllm).", show_default=False,
    rich_help_panel=BACKEND_PANEL,
)]

# tracking (lt_cli/tracking.py, TrackingConfig): the same five flags on every command that logs statistics
ReportToOpt = Annotated[Optional[list[str]], typer.Option(
    "--report-to", help="Also log statistics to tensorboard, wandb and/or jsonl (repeat or comma-separate; none: off).", show_default=False,
    rich_help_panel=TRACKING_PANEL, autocompletion=REPORT_TO,
)]
WandbProjectOpt = Annotated[Optional[str], typer.Option(
    "--wandb-project", help="W&B project (default: $WANDB_PROJECT, else lt).", show_default=False, rich_help_panel=TRACKING_PANEL,
)]
WandbEntityOpt = Annotated[Optional[str], typer.Option(
    "--wandb-entity", help="W&B entity (default: $WANDB_ENTITY, else your default).", show_default=False, rich_help_panel=TRACKING_PANEL,
)]
RunNameOpt = Annotated[Optional[str], typer.Option(
    "--run-name", help="The run's name in the tracker (default: $WANDB_NAME, else the run or output name).", show_default=False,
    rich_help_panel=TRACKING_PANEL,
)]
TrackingDirOpt = Annotated[Optional[str], typer.Option(
    "--tracking-dir", help="Folder for TensorBoard events, tracking.jsonl and W&B files (default: beside the output).", show_default=False,
    rich_help_panel=TRACKING_PANEL, metavar="DIR",
)]


def tracking_flags(flags: dict) -> dict:
    """``flags`` with ``report_to`` as a list (typer gives None when the flag is absent)."""
    return {**flags, "report_to": list(flags.get("report_to") or [])}


ConfigOpt = Annotated[Optional[str], typer.Option(
    "--config", help="Settings from a TOML (or JSON/YAML) file whose keys are the config's fields; flags given here win (docs/config.md).",
    show_default=False, rich_help_panel=CONFIG_PANEL, metavar="FILE",
)]
PrintConfigOpt = Annotated[bool, typer.Option(
    "--print-config", help="Print the resolved config (TOML, or the --config file's format) to stdout and exit; --config reads it back.",
    rich_help_panel=CONFIG_PANEL,
)]
#: the parameters that are no field of a config: the typer context, ConfigOpt and PrintConfigOpt
FILE_PARAMS = ("ctx", "config_file", "print_config")


def given_on_command_line(ctx: Any) -> set[str]:
    """Names of the parameters the user gave on the command line (not left at their defaults);
    ``ctx`` is the command's ``typer.Context``."""
    if ctx is None:
        return set()
    given = ("COMMANDLINE", "ENVIRONMENT", "PROMPT")
    return {name for name in ctx.params if getattr(ctx.get_parameter_source(name), "name", None) in given}


def resolve(flags: dict, from_flags: Callable[[dict], Any], *, skip: frozenset[str] = frozenset()) -> Any | None:
    """The command's config: its flags (``from_flags``) over ``--config FILE`` over the defaults.

    ``flags`` are the command's parameters, ``ctx`` (its ``typer.Context``) among them.

    With ``--print-config`` the config is printed (in the file's format, TOML without one) and
    None is returned: the command exits 0 without running.
    """
    ctx, path, show = flags.pop("ctx", None), flags.pop("config_file", None), flags.pop("print_config", False)
    config = from_flags(flags)
    if path:
        from ..configfile import merge, read

        config = merge(config, read(path, type(config)), given_on_command_line(ctx))
    if show:
        print_config(config, path, skip=skip, command=getattr(ctx, "info_name", None))
        return None
    return config


def print_config(config: Any, path: str | None, *, skip: frozenset[str] = frozenset(), command: str | None = None) -> None:
    """Write ``config`` to stdout as a config file (TOML, or the format of ``path``)."""
    from .. import __version__
    from ..configfile import dumps, format_of
    from ..console import protect_stdout

    fmt = format_of(path) if path else "toml"
    name = command or "COMMAND"
    header = f"lt {name} config (lt {__version__}); pass it back with: lt {name} --config FILE (flags given there win)"
    stream = protect_stdout()
    stream.write(dumps(config, fmt, skip=skip, header=header).encode("utf-8"))
    stream.flush()


def require(**values: Any) -> None:
    """Refuse a required setting left unset by both the flags and the config file."""
    from ..errors import UsageError

    for name, value in values.items():
        if value is None or value == [] or value == "":
            raise UsageError(f"--{name.replace('_', '-')} is required (on the command line or as {name} in a --config file)")


def check_stdin(input_path: str | None) -> None:
    """Refuse to wait on an interactive terminal: print a hint instead of hanging."""
    if (input_path is None or input_path == "-") and sys.stdin is not None and sys.stdin.isatty():
        from ..errors import UsageError

        raise UsageError("no input: pass a JSONL file or pipe records into stdin (see --help)")


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
        from .. import console, interrupts
        from ..errors import FileError, Terminated, describe_os_error

        console.guard_std_streams()
        console.quiet_libraries()
        try:
            with interrupts.handling():
                code = func(*args, **kwargs)
                interrupts.raise_if_received()  # a library swallowed it: the command still stops
        except LtError as exc:
            raise _error_line(str(exc), exc.exit_code)
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(1)
        except Terminated:
            interrupts.settle()
            print("lt: terminated (SIGTERM)", file=sys.stderr, flush=True)
            raise typer.Exit(143)
        except KeyboardInterrupt:
            interrupts.settle()
            print("lt: interrupted", file=sys.stderr, flush=True)
            raise typer.Exit(130)
        except MemoryError:
            raise _error_line("out of memory (lower --batch-size, --docs-per-call or --k, or use a machine with more memory)", 1)
        except OSError as exc:
            raise _error_line(describe_os_error(exc), FileError.from_os(exc).exit_code)
        if code:
            raise typer.Exit(code)

    return wrapper
