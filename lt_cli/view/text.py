"""A document view as plain text (pipes, files, ``grep``) and as rich renderables (the terminal)."""

from __future__ import annotations

from typing import Any

from .model import CandidateView, DocumentView


def number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def headline(doc: DocumentView, position: str = "") -> str:
    """``doc-17 (3/12) · candidates · 2 chunks · ESS 2.70 · ELBO_1 -120.40, ELBO_4 -118.10``"""
    parts = [doc.id + (f" ({position})" if position else ""), doc.kind, f"{len(doc.chunks)} chunk{'s' if len(doc.chunks) != 1 else ''}"]
    if doc.ess is not None:
        parts.append(f"ESS {doc.ess:.2f}")
    if doc.elbo:
        parts.append(", ".join(f"ELBO_{n} {v:.2f}" for n, v in sorted(doc.elbo.items(), key=lambda kv: int(kv[0]))))
    if doc.mean_log_w is not None:
        parts.append(f"mean log w {doc.mean_log_w:.2f}")
    return " · ".join(parts)


def candidate_figures(c: CandidateView) -> str:
    return (f"w {number(c.weight, 3)}  log q {number(c.log_q)}  log p {number(c.log_p)}  log w {number(c.log_w)}  "
            f"{c.n_tokens if c.n_tokens is not None else '-'} tokens  {c.finish_reason or '-'}")


def chunk_title(chunk) -> str:
    return f"chunk {chunk.index + 1}" + (f" · ESS {chunk.ess:.2f}" if chunk.ess is not None else "") + (" · latent given" if chunk.fixed else "")


def fixed_line(chunk) -> str:
    """A chunk with a given latent: its K candidates are copies of it (log q 0, equal weights)."""
    c = chunk.candidates[0]
    return f"latent given, not sampled: {len(chunk.candidates)} copies, log p {number(c.log_p)}, equal weights"


def shown_latent(latent: str) -> str:
    return latent if latent else "(empty)"


def _indented(label: str, text: str, width: int = 9) -> list[str]:
    lines = text.split("\n") or [""]
    return [f"  {label:<{width}}| {lines[0]}"] + [f"  {'':<{width}}| {line}" for line in lines[1:]]


def plain_lines(doc: DocumentView, position: str = "") -> list[str]:
    """The document as lines of plain text: thoughts and texts interleaved, candidates ranked."""
    out = [f"== {headline(doc, position)}"]
    for label, value in doc.fields:
        if label in ("problem", "prompt"):
            out += _indented(label, value)
    for chunk in doc.chunks:
        if len(doc.chunks) > 1:
            out.append(f"-- {chunk_title(chunk)}")
        for kind, value in chunk.parts():
            out += _indented(kind, value)
        if chunk.fixed and chunk.candidates:
            out.append(f"  {fixed_line(chunk)}")
        elif chunk.candidates:
            out.append("  candidates, heaviest first (> drawn by lt select):")
            for c in chunk.candidates:
                out.append(f"    {'>' if c.drawn else ' '} #{c.index}  {candidate_figures(c)}")
                out += [f"         {line}" for line in (shown_latent(c.latent).split("\n"))]
    for label, value in doc.fields:
        if label not in ("problem", "prompt"):
            out.append(f"  {label}: {value}")
    return out


def renderable(doc: DocumentView, position: str = "") -> Any:
    """The document for a rich console: thoughts in italic color, texts plain, candidates as a table."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    items: list[Any] = [Text(headline(doc, position), style="bold")]
    for label, value in doc.fields:
        if label in ("problem", "prompt"):
            items.append(Text.assemble((f"{label}: ", "dim"), value))
    for chunk in doc.chunks:
        if len(doc.chunks) > 1:
            items.append(Text(chunk_title(chunk), style="dim"))
        for kind, value in chunk.parts():
            items.append(Text.assemble(("thought ", "bold magenta"), (value, "italic magenta")) if kind == "thought" else Text(value))
        if chunk.fixed and chunk.candidates:
            items.append(Text(fixed_line(chunk), style="dim"))
        elif chunk.candidates:
            table = Table(show_edge=False, pad_edge=False, box=None, header_style="dim")
            for name, justify in (("", "left"), ("#", "right"), ("weight", "right"), ("log q", "right"), ("log p", "right"), ("log w", "right"),
                                  ("tokens", "right"), ("end", "left"), ("thought", "left")):
                table.add_column(name, justify=justify, overflow="fold" if name == "thought" else "ellipsis", no_wrap=name != "thought")
            for c in chunk.candidates:
                table.add_row("drawn" if c.drawn else "", str(c.index), number(c.weight, 3), number(c.log_q), number(c.log_p), number(c.log_w),
                              str(c.n_tokens) if c.n_tokens is not None else "-", c.finish_reason or "-", shown_latent(c.latent),
                              style="green" if c.drawn else None)
            items.append(table)
    for label, value in doc.fields:
        if label not in ("problem", "prompt"):
            items.append(Text.assemble((f"{label}: ", "dim"), value))
    return Group(*items)
