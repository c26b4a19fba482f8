"""``lt view``: any lt JSONL shown for a person: one document at a time in a terminal, plain text
in a pipe, a self-contained HTML page with ``--html`` (:mod:`.model` builds the one view the three
renderings share)."""

from __future__ import annotations

from .model import CandidateView, ChunkView, DocumentView, Filter, attach_selection, document_view, read_views

__all__ = ["CandidateView", "ChunkView", "DocumentView", "Filter", "attach_selection", "document_view", "read_views", "write_html"]


def write_html(documents, path: str, title: str, note: str = "") -> int:
    """Write the HTML view of ``documents`` to ``path`` atomically; the number of documents."""
    from ..files import write_text
    from .html import render_html

    docs = list(documents)
    write_text(path, render_html(docs, title, note))
    return len(docs)
