"""The ``lt`` command: registers subcommands. Imports nothing heavy (no torch, transformers,
vllm or datasets), so ``lt --help`` and shell completion stay fast; commands import what they need
inside their bodies."""

from __future__ import annotations

import typer

from . import __version__
from .commands import chunk

HELP = """Reasoning to Learn from Latent Thoughts (BoLT) as Unix commands over JSONL.

Examples:

\b
  lt bootstrap --iters 3        # the embedded CPU demo, end to end
  lt chunk docs.jsonl > chunked.jsonl
  lt sample-thoughts --model M --k 8 docs.jsonl | lt select > augmented.jsonl
  lt train --model M --data augmented.jsonl --output ckpt/
"""

app = typer.Typer(
    name="lt",
    help=HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=True,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"lt {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
) -> None:
    pass


def _register(module, name: str) -> None:
    app.command(name, help=module.HELP, epilog=module.EPILOG, no_args_is_help=getattr(module, "NO_ARGS_IS_HELP", False))(module.command)


_register(chunk, "chunk")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
