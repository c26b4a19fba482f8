"""`lt view`: look at any lt JSONL: documents with their thoughts, candidates ranked by weight."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import InputArg, one_of, run_command

HELP = "Show lt JSONL for a person: thoughts interleaved with the text, candidates by weight, ESS and ELBO."
EXAMPLES = """\
lt view candidates.jsonl                        # in a terminal: one document at a time (n/p, / filter, q)
lt view augmented.jsonl | less                  # in a pipe: plain text
lt view candidates.jsonl --selected augmented.jsonl --ess-below 1.5
lt view candidates.jsonl --grep 'times 12' --html view.html   # one self-contained page, searchable
lt eval --model ckpt/ --task gsm8k --log-samples s.jsonl && lt view s.jsonl --finish length
"""
DETAILS = """\
Reads raw, chunked, teacher (lt synthesize), candidates (lt sample-thoughts), augmented (lt select)
and eval sample (lt eval --log-samples) records, from a file or stdin. Each chunk shows its thought
(in the prior layout's order: the thought, then the text it explains) and, when it has them, its
candidates ranked by normalised weight softmax(log w) with log q, log p, log w (nats), tokens and
how they ended (stop: <EoL>; length: --max-new-tokens), the one lt select drew marked; each document
its ESS and ELBO_n. Filters (flags, the terminal's / key and the HTML search box take the same
words): id:GLOB, ess<X, finish:stop|length, text:REGEX, thought:REGEX, or a bare REGEX on either.
See docs/view.md.
"""


@run_command
def command(
    input: InputArg = None,
    html: Annotated[Optional[str], typer.Option(
        "--html", help="Write one self-contained HTML page (no server, no network) instead of showing the documents.", show_default=False,
        rich_help_panel="Output", metavar="FILE",
    )] = None,
    selected: Annotated[Optional[str], typer.Option(
        "--selected", help="lt select's output for these candidates: mark the candidate it drew in each chunk.", show_default=False,
        rich_help_panel="Input", metavar="FILE",
    )] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Read only the first N records.", show_default=False, rich_help_panel="Input")] = None,
    id: Annotated[Optional[str], typer.Option(
        "--id", help="Only documents whose id matches this glob (doc-1*).", show_default=False, rich_help_panel="Filter",
    )] = None,
    ess_below: Annotated[Optional[float], typer.Option(
        "--ess-below", help="Only documents whose ESS (mean over chunks) is below this.", show_default=False, rich_help_panel="Filter",
    )] = None,
    finish: Annotated[Optional[str], typer.Option(
        "--finish", help="Only documents with a generation that ended this way: stop (<EoL>) or length (--max-new-tokens).", show_default=False,
        rich_help_panel="Filter", autocompletion=one_of("lt_cli.view.model.FINISH_REASONS"),
    )] = None,
    grep: Annotated[Optional[str], typer.Option("--grep", help="Only documents whose text or thoughts match this regex.", show_default=False,
                                                rich_help_panel="Filter")] = None,
    grep_text: Annotated[Optional[str], typer.Option("--grep-text", help="Only documents whose text matches this regex.", show_default=False,
                                                     rich_help_panel="Filter")] = None,
    grep_thought: Annotated[Optional[str], typer.Option(
        "--grep-thought", help="Only documents with a thought (or candidate) matching this regex.", show_default=False, rich_help_panel="Filter",
    )] = None,
    plain: Annotated[bool, typer.Option("--plain", help="Plain text even in a terminal (what a pipe gets).", rich_help_panel="Output")] = False,
) -> int:
    import sys

    from ..view import Filter, read_views

    keep = Filter(id=id, ess_below=ess_below, finish=finish, text=grep_text, thought=grep_thought, any=grep)
    keep.check()
    if input is None and sys.stdin is not None and sys.stdin.isatty():
        from .common import check_stdin

        check_stdin(input)
    documents = read_views(input, selected=selected, limit=limit, keep=keep)
    if html:
        from ..console import log
        from ..paths import display_name
        from ..view import write_html

        n = write_html(documents, html, title=display_name(input), note=f"filter: {keep.describe()}" if keep else "")
        log(f"wrote {html} ({n:,} documents)")
        if n > 10_000:
            from ..console import warn

            warn(f"{html} holds {n:,} documents: a browser may be slow to open it (--limit N or a filter makes it smaller)")
        return 0
    if not plain and sys.stdout.isatty() and _has_tty():
        from ..view.pager import run_pager

        run_pager(documents)
        return 0
    from ..console import protect_stdout
    from ..view.text import plain_lines

    stream = protect_stdout()
    for doc in documents:
        stream.write(("\n".join(plain_lines(doc)) + "\n\n").encode("utf-8"))
    stream.flush()
    return 0


def _has_tty() -> bool:
    import os

    try:
        os.close(os.open("/dev/tty", os.O_RDWR))
        return True
    except OSError:
        return False
