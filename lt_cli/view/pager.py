"""The terminal view of ``lt view``: one document at a time, keys to move, ``/`` to filter.

Keys: ``n``/``j``/space/→ next, ``p``/``k``/← previous, ``g`` first, ``G`` last, ``/`` a filter
(the grammar of :class:`lt_cli.view.model.Filter`), ``c`` clear the filter, ``q`` quit. Keys are
read from the controlling terminal (``/dev/tty``), so ``cat x.jsonl | lt view`` works too.

:func:`browse` takes the key source and the console as arguments: tests drive it headless with a
list of keys and a recording console.
"""

from __future__ import annotations

import itertools
import os
from typing import Callable, Iterable, Iterator

from .model import DocumentView, Filter
from .text import renderable

HELP = "n/→ next · p/← previous · g first · G last · / filter · c clear filter · q quit"

NEXT = {"n", "j", " ", "right", "down", "enter"}
PREVIOUS = {"p", "k", "left", "up", "backspace"}


#: documents the pager holds (a larger input: narrow it with --limit, --id or the other filters)
PAGER_DOCUMENTS = 10_000


def browse(documents: list[DocumentView], console, keys: Iterator[str], ask: Callable[[str], str], *, start_filter: Filter | None = None,
           note: str = "") -> None:
    """Show ``documents`` one at a time on ``console`` until ``q`` (or the keys run out)."""
    from rich.text import Text

    from ..errors import UsageError

    active = start_filter or Filter()
    shown = [d for d in documents if active.matches(d)]
    position, message = 0, ""
    while True:
        console.clear()
        if shown:
            position = min(max(position, 0), len(shown) - 1)
            console.print(renderable(shown[position], f"{position + 1}/{len(shown)}"))
        else:
            console.print(Text("no document matches the filter" if documents else "no documents", style="yellow"))
        status = f"filter: {active.describe()} · " if active else ""
        console.print(Text(f"{status}{len(shown)} of {len(documents)} documents{note} · {HELP}" + (f" · {message}" if message else ""), style="dim"))
        message = ""
        key = next(keys, "q")
        if key in ("q", "escape", "ctrl-c"):
            return
        if key in NEXT:
            position += 1
        elif key in PREVIOUS:
            position -= 1
        elif key == "g":
            position = 0
        elif key == "G":
            position = len(shown) - 1
        elif key in ("/", "f"):
            query = ask("filter (id:GLOB ess<X finish:stop|length text:RE thought:RE, or a regex): ")
            try:
                active = Filter.parse(query)
            except UsageError as exc:
                message = str(exc)
                continue
            current = shown[position].number if shown else None
            shown = [d for d in documents if active.matches(d)]
            position = next((i for i, d in enumerate(shown) if current is not None and d.number >= current), 0)
        elif key == "c":
            active = Filter()
            shown = list(documents)
            position = 0


# ------------------------------------------------------------------------------------ the terminal
_ESCAPES = {b"\x1b[C": "right", b"\x1b[D": "left", b"\x1b[A": "up", b"\x1b[B": "down", b"\r": "enter", b"\n": "enter", b"\x7f": "backspace",
            b"\x1b": "escape", b"\x03": "ctrl-c"}


def terminal_keys(tty) -> Iterator[str]:
    """Key presses from a terminal in raw mode (arrow keys as ``left``/``right``/``up``/``down``)."""
    import termios
    import tty as ttymod

    fd = tty.fileno()
    while True:
        saved = termios.tcgetattr(fd)
        try:
            ttymod.setraw(fd)
            data = os.read(fd, 8)
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        if not data:
            return
        yield _ESCAPES.get(data, data.decode("utf-8", "replace")[:1])


def run_pager(documents: Iterable[DocumentView], start_filter: Filter | None = None) -> None:
    """The interactive view on the controlling terminal."""
    from rich.console import Console

    with open("/dev/tty", "r+b", buffering=0) as tty:
        import io

        text = io.TextIOWrapper(tty, encoding="utf-8", write_through=True)
        console = Console(file=text, highlight=False)

        def ask(prompt: str) -> str:
            text.write(prompt)
            text.flush()
            return text.readline().strip()

        held = list(itertools.islice(documents, PAGER_DOCUMENTS + 1))
        note = f" (the first {PAGER_DOCUMENTS:,} read: narrow the input with --limit or a filter)" if len(held) > PAGER_DOCUMENTS else ""
        browse(held[:PAGER_DOCUMENTS], console, terminal_keys(tty), ask, start_filter=start_filter, note=note)
