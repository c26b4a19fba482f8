"""Any lt record as a document a person reads (``lt view``): its chunks with their thoughts, a
chunk's candidates ranked by weight, and the document's ESS and ELBO.

One model, three renderings (plain text, the terminal pager, the HTML page), so they can never
disagree. Nothing here re-derives the format: chunk texts and latents come from the record schema
(:mod:`lt_cli.records`), the reading order of a thought and its text from :mod:`lt_cli.formats`,
the weights, ESS and ELBO from the E-step's own functions (:mod:`lt_cli.estep.select`), and the
thought/answer split of an eval output from the graders (:mod:`lt_cli.evaluation.graders`).

Kinds of record (docs/formats.md): ``raw`` (``text``), ``chunked`` (``chunks``), ``thoughts``
(chunks with ``latent``: lt synthesize, lt select), ``candidates`` (chunks with ``candidates``: lt
sample-thoughts, lt select --keep-candidates, lt eval --task elbo --log-samples), ``rephrased`` (a
document-level ``latent``: WRAP) and ``eval`` (lt eval --log-samples of a generation task).
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

Record = dict[str, Any]

#: what a candidate's end is called: it stopped at <EoL> (``stop``) or at --max-new-tokens (``length``)
FINISHED = {True: "stop", False: "length"}
FINISH_REASONS = ("stop", "length")


@dataclass
class CandidateView:
    """One of a chunk's K samples."""

    index: int  # its position in the record (sample j)
    latent: str
    log_q: float | None
    log_p: float | None
    log_w: float | None
    n_tokens: int | None
    finished: bool | None
    #: its self-normalised importance weight softmax(log w)_j (None when unscored)
    weight: float | None = None
    #: the candidate lt select drew for the chunk
    drawn: bool = False

    @property
    def finish_reason(self) -> str | None:
        return FINISHED.get(self.finished) if self.finished is not None else None


@dataclass
class ChunkView:
    index: int
    text: str
    #: the chunk's thought: its latent, or the drawn candidate's
    thought: str | None = None
    #: the latent is given, not inferred (``latent_fixed``)
    fixed: bool = False
    #: ranked by weight, heaviest first (unscored: in sampling order)
    candidates: list[CandidateView] = field(default_factory=list)
    ess: float | None = None

    def parts(self) -> list[tuple[str, str]]:
        """``[("thought", ...), ("text", ...)]`` in reading order (:func:`lt_cli.formats.reading_order`)."""
        from ..formats import reading_order

        return reading_order(self.thought, self.text)


@dataclass
class DocumentView:
    number: int  # 1-based position in the input
    id: str
    kind: str
    chunks: list[ChunkView]
    #: mean ESS over chunks (samples)
    ess: float | None = None
    #: ELBO_n per document (nats), by n
    elbo: dict[str, float] = field(default_factory=dict)
    mean_log_w: float | None = None
    #: eval samples and other records: (label, value) shown under the document
    fields: list[tuple[str, str]] = field(default_factory=list)
    #: how the document's generations ended (``stop``, ``length``; eval: the backend's reason)
    finish_reasons: set[str] = field(default_factory=set)

    def thoughts(self) -> Iterator[str]:
        for chunk in self.chunks:
            if chunk.thought:
                yield chunk.thought
            for candidate in chunk.candidates:
                yield candidate.latent

    def texts(self) -> Iterator[str]:
        for chunk in self.chunks:
            yield chunk.text
        for label, value in self.fields:
            if label in ("prompt", "problem", "gold"):
                yield value


# ------------------------------------------------------------------------------------ building
def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _candidates(chunk: dict) -> tuple[list[CandidateView], float | None]:
    from ..estep.select import chunk_log_w
    from ..estep.weights import effective_sample_size, softmax

    raw = chunk.get("candidates") or []
    log_w = chunk_log_w(chunk) if raw else None
    weights = softmax(log_w) if log_w else None
    selected = chunk.get("selected")
    views = [
        CandidateView(
            j, str(c.get("latent") or ""), _number(c.get("log_q")), _number(c.get("log_p")), _number(c.get("log_w")),
            c.get("n_tokens") if isinstance(c.get("n_tokens"), int) else None, c.get("finished") if isinstance(c.get("finished"), bool) else None,
            weights[j] if weights else None, drawn=selected == j,
        )
        for j, c in enumerate(raw)
    ]
    if weights:
        views.sort(key=lambda v: (-(v.weight or 0.0), v.index))
    return views, effective_sample_size(log_w) if log_w else None


def document_view(record: Record, number: int) -> DocumentView:
    """The view of one record of any lt kind (see the module docstring)."""
    from ..records import LATENT_FIXED, document_id

    if "output" in record and "prompt" in record:
        doc_id = str(record["id"]) if record.get("id") is not None else f"problem {record.get('index', number - 1)}"
        return _eval_view(record, number, doc_id)
    doc_id = document_id(record) if isinstance(record.get("text"), str) or isinstance(record.get("chunks"), list) else str(record.get("id", number))
    chunks = record.get("chunks") if isinstance(record.get("chunks"), list) else None
    if chunks is None:
        text = record.get("text") if isinstance(record.get("text"), str) else ""
        kind = "rephrased" if isinstance(record.get("latent"), str) else "raw"
        return DocumentView(number, doc_id, kind, [ChunkView(0, text, record.get("latent") if kind == "rephrased" else None)])
    views, any_candidates, any_latent = [], False, False
    for i, chunk in enumerate(chunks):
        text = chunk.get("text", chunk.get("suffix", ""))
        candidates, ess = _candidates(chunk)
        latent = chunk.get("latent") if isinstance(chunk.get("latent"), str) else None
        if latent is None:
            drawn = [c for c in candidates if c.drawn]
            latent = drawn[0].latent if drawn else None
        any_candidates |= bool(candidates)
        any_latent |= latent is not None
        views.append(ChunkView(i, str(text), latent, chunk.get(LATENT_FIXED) is True, candidates, ess))
    kind = "candidates" if any_candidates else "thoughts" if any_latent else "chunked"
    doc = DocumentView(number, doc_id, kind, views)
    _document_figures(doc, record, chunks)
    doc.finish_reasons = {c.finish_reason for chunk in views for c in chunk.candidates if c.finish_reason}
    return doc


def _document_figures(doc: DocumentView, record: Record, chunks: list) -> None:
    """ESS, ELBO_n and mean log w: as lt select recorded them, else computed from the candidates
    exactly as lt select does; an ELBO eval log carries ``elbo_N`` keys."""
    elbo = record.get("elbo")
    if isinstance(elbo, dict):
        doc.elbo = {str(n): float(v) for n, v in elbo.items() if _number(v) is not None}
    doc.ess, doc.mean_log_w = _number(record.get("ess")), _number(record.get("mean_log_w"))
    for key, value in record.items():
        found = re.fullmatch(r"elbo_(\d+)", str(key))
        if found and _number(value) is not None:
            doc.elbo.setdefault(found.group(1), float(value))
    if doc.kind == "candidates" and doc.ess is None and all(c.get("candidates") for c in chunks):
        from ..estep.select import document_diagnostics

        figures = document_diagnostics(chunks)
        doc.ess, doc.mean_log_w = figures["ess"], figures["mean_log_w"]
        if figures["elbo"] and not doc.elbo:
            doc.elbo = figures["elbo"]


def _eval_view(record: Record, number: int, doc_id: str) -> DocumentView:
    """An ``lt eval --log-samples`` line: the problem, the thought and the answer the model wrote."""
    from ..evaluation.graders import split_latent_output

    output = str(record.get("output") or "")
    if record.get("variant") == "latent":
        thought, answer = split_latent_output(output)
    else:
        thought, answer = None, output
    problem = next((str(record[k]) for k in ("question", "problem", "text") if isinstance(record.get(k), str)), None)
    fields = [("problem", problem)] if problem else [("prompt", str(record.get("prompt") or "")[-400:])]
    for label in ("extracted", "gold", "correct", "finish_reason", "sample"):
        if record.get(label) is not None:
            fields.append((label, str(record[label])))
    identity = f"{doc_id} #{record['sample']}" if record.get("sample") else doc_id
    reason = record.get("finish_reason")
    return DocumentView(number, identity, "eval", [ChunkView(0, answer, thought or None)], fields=fields, finish_reasons={str(reason)} if reason else set())


def attach_selection(documents: Iterable[Record], selected: Iterable[Record]) -> Iterator[Record]:
    """Candidates documents with ``chunks[i].selected`` taken from lt select's output for them
    (matched by document id): what ``lt view CANDIDATES --selected AUGMENTED`` shows as drawn.

    Both are streamed: lt select keeps its input's order, so the two files advance together and
    only the documents read ahead of a mismatch are held."""
    from ..records import document_id

    ahead: dict[str, list] = {}
    source = iter(selected)
    for doc in documents:
        key = document_id(doc)
        while key not in ahead:
            other = next(source, None)
            if other is None:
                break
            ahead[document_id(other)] = [c.get("selected") for c in other.get("chunks") or []]
        indices = ahead.pop(key, None)
        if indices is not None and isinstance(doc.get("chunks"), list) and len(indices) == len(doc["chunks"]):
            doc = {**doc, "chunks": [{**c, "selected": j} if j is not None else c for c, j in zip(doc["chunks"], indices)]}
        yield doc


# ------------------------------------------------------------------------------------ filters
@dataclass
class Filter:
    """Which documents to show. One grammar for the flags, the pager's ``/`` and the HTML search
    box: words ``id:GLOB``, ``ess<X``, ``finish:REASON``, ``text:REGEX``, ``thought:REGEX``; any
    other word is a regex on text or thought."""

    id: str | None = None
    ess_below: float | None = None
    finish: str | None = None
    text: str | None = None
    thought: str | None = None
    any: str | None = None

    @classmethod
    def parse(cls, query: str) -> "Filter":
        from ..errors import UsageError

        found = cls()
        for word in query.split():
            key, sep, value = word.partition(":")
            if word.startswith("ess<"):
                try:
                    found.ess_below = float(word[4:])
                except ValueError:
                    raise UsageError(f"filter {word!r}: ess<X needs a number") from None
            elif sep and key in ("id", "finish", "text", "thought"):
                setattr(found, key, value)
            else:
                found.any = word if found.any is None else f"{found.any} {word}"
        found.check()
        return found

    def check(self) -> None:
        from ..errors import UsageError

        for name in ("text", "thought", "any"):
            pattern = getattr(self, name)
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise UsageError(f"filter {name}: bad regex {pattern!r} ({exc})") from None

    def __bool__(self) -> bool:
        return any(value is not None for value in vars(self).values())

    def describe(self) -> str:
        words = [f"id:{self.id}" if self.id else "", f"ess<{self.ess_below:g}" if self.ess_below is not None else "",
                 f"finish:{self.finish}" if self.finish else "", f"text:{self.text}" if self.text else "",
                 f"thought:{self.thought}" if self.thought else "", self.any or ""]
        return " ".join(w for w in words if w)

    def matches(self, doc: DocumentView) -> bool:
        if self.id is not None and not fnmatch.fnmatchcase(doc.id, self.id):
            return False
        if self.ess_below is not None and not (doc.ess is not None and doc.ess < self.ess_below):
            return False
        if self.finish is not None and self.finish not in doc.finish_reasons:
            return False
        if self.text is not None and not any(re.search(self.text, t) for t in doc.texts()):
            return False
        if self.thought is not None and not any(re.search(self.thought, t) for t in doc.thoughts()):
            return False
        if self.any is not None and not any(re.search(self.any, t) for t in (*doc.texts(), *doc.thoughts())):
            return False
        return True


def read_views(path: str | None, *, selected: str | None = None, limit: int | None = None, keep: Filter | None = None) -> Iterator[DocumentView]:
    """The documents of an lt JSONL file (or stdin), as views, filtered; malformed lines are the
    usual ``FILE:LINE`` error."""
    from ..io import read_records

    records: Iterable[Record] = read_records(path, limit=limit)
    if selected:
        records = attach_selection(records, read_records(selected))
    for number, record in enumerate(records, start=1):
        doc = document_view(record, number)
        if keep is None or keep.matches(doc):
            yield doc
