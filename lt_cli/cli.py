"""The ``lt`` command: registers subcommands. Imports nothing heavy (no torch, transformers,
vllm or datasets), so ``lt --help`` and shell completion stay fast; commands import what they need
inside their bodies.

Each command module defines ``HELP`` (one line), ``EXAMPLES`` (example lines, shown first in
``--help``) and ``command`` (the typer function, thin: flags in, one library call).
"""

from __future__ import annotations

import importlib

import typer
import typer.core

from . import __version__

HELP = """Reasoning to Learn from Latent Thoughts (BoLT) as Unix commands over JSONL.

Examples:

\b
  lt bootstrap --iters 3        # the embedded CPU demo, end to end
  lt chunk docs.jsonl > chunked.jsonl
  lt synthesize --backend api --model gpt-4o-mini docs.jsonl -o teacher.jsonl
  lt sample-thoughts --model M --k 8 docs.jsonl | lt select > augmented.jsonl
  lt train --model M --data augmented.jsonl --output ckpt/
  lt eval --model ckpt/ --task gsm8k --limit 50
  lt view candidates.jsonl      # thoughts, candidates by weight, ESS, ELBO

Every command reads and writes JSONL (stdin/stdout by default); logs and progress go to stderr.
"""

#: (command name, module under lt_cli.commands), in pipeline order.
COMMANDS = [
    ("chunk", "chunk"),
    ("synthesize", "synthesize"),
    ("sample-thoughts", "sample_thoughts"),
    ("select", "select"),
    ("train", "train"),
    ("eval", "eval"),
    ("finetune-eval", "finetune_eval"),
    ("bootstrap", "bootstrap"),
    ("merge", "merge"),
    ("push", "push"),
    ("env", "env"),
    ("view", "view"),
]


def _usage_error_types() -> tuple[type, ...]:
    """Click's usage error class: typer's own copy of click (newer typer) and click itself (older
    typer, or installed beside it), whichever exist."""
    types: list[type] = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            types.append(importlib.import_module(name).UsageError)
        except (ImportError, AttributeError):
            pass
    return tuple(types)


_USAGE_ERRORS = _usage_error_types()


def _as_lt_error(exc: Exception) -> Exception:
    """Make click's usage error (a bad value, an unknown option or command, a missing argument)
    print like every other usage error: one ``lt: error:`` line, exit 2 (docs/reliability.md),
    instead of a usage block and ``Error: ...``. ``lt`` alone still prints the help."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        return exc
    message = " ".join(exc.format_message().split()).rstrip(".")
    message = message[:1].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""

    def show(file=None) -> None:
        import sys

        print(f"lt: error: {message}{hint}", file=sys.stderr, flush=True)

    exc.show = show  # what typer calls (rich_markup_mode=None) before exiting with exc.exit_code (2)
    return exc


class LtGroup(typer.core.TyperGroup):
    """The ``lt`` group: its and its commands' usage errors as one ``lt: error:`` line."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except _USAGE_ERRORS as exc:
            raise _as_lt_error(exc)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _USAGE_ERRORS as exc:
            raise _as_lt_error(exc)


app = typer.Typer(
    name="lt",
    cls=LtGroup,
    help=HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    add_completion=True,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"lt {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also show the libraries' own progress bars and logs (LT_VERBOSE=1)."),
) -> None:
    if verbose:
        import os

        os.environ["LT_VERBOSE"] = "1"  # inherited by the stages lt bootstrap launches


class SectionedCommand(typer.core.TyperCommand):
    """A command whose ``--help`` lists its options in sections: each option's ``rich_help_panel``
    names its section (typer draws those panels only with rich markup, which lt's plain help, kept
    readable in pipes and logs, does not use). Options without a panel come first, as "Options"."""

    def format_options(self, ctx, formatter) -> None:
        arguments, sections = [], {"Options": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append(record)
            else:
                sections.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(record)
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        for title, records in sections.items():
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


def command_help(module) -> str:
    examples = "\n".join("  " + line for line in module.EXAMPLES.strip("\n").splitlines())
    return f"{module.HELP}\n\nExamples:\n\n\b\n{examples}\n\n{getattr(module, 'DETAILS', '')}".rstrip() + "\n"


for _name, _module_name in COMMANDS:
    _module = importlib.import_module(f".commands.{_module_name}", __package__)
    app.command(
        _name, cls=SectionedCommand, help=command_help(_module), short_help=_module.HELP, no_args_is_help=getattr(_module, "NO_ARGS_IS_HELP", False),
    )(_module.command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
