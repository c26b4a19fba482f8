"""The runners of ``lt sample-thoughts`` and ``lt select``: the E-step wired to files.

``run_sample_thoughts(SampleThoughtsRun)`` and ``run_select(SelectRun)`` are what the commands call
and what ``lt bootstrap`` calls in-process (:mod:`lt_cli.runners`). Each streams its input through
:func:`lt_cli.stream.run_stream` (validation, sharding, resume, atomic output), opens its backend
and cache lazily (:mod:`lt_cli.session`), prints a summary on stderr and, with ``-o FILE``, writes
the same summary as ``FILE.stats.json`` for the next stage and the bootstrap report.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Any, Iterable, Iterator

from .. import __version__
from ..chunking import ensure_chunks
from ..errors import LtError, UsageError
from ..files import write_json
from ..provenance import run_identity
from ..records import document_id
from ..session import backend_session
from ..stream import run_stream
from ..tracking import log_summary, preflight
from .config import SampleThoughtsRun, SelectRun
from .propose import sample_candidates, score_candidates
from .select import chunk_log_w, first_candidates, is_adaptive, select_document, validate_candidates_document
from .stats import SampleStats, SelectionStats

Record = dict[str, Any]

STATS_SUFFIX = "stats.json"


def run_sample_thoughts(run: SampleThoughtsRun) -> int:
    """``lt sample-thoughts``: K scored candidates per chunk for every document; the exit code."""
    from ..backends import canonical_backend_name
    from ..console import log
    from ..records import validate_document

    backend_name = canonical_backend_name(run.backend.backend)
    config = replace(run.sample, docs_per_call=run.sample.group_size(backend_name))
    config.check_runnable()
    preflight(run.tracking, run.stream.output)  # installed, and no link where it will write
    backend_config = run.backend.config({"logprobs": True} if backend_name == "api" else {})
    stats = SampleStats()

    def produce(records: Iterable[Record], skip: int) -> Iterator[Record]:
        with backend_session(backend_name, backend_config, run.cache.path(run.stream.output), cache_label="sample") as (backend, cache):
            for doc in sample_candidates(backend, records, config, cache, skip=skip):
                stats.add(doc)
                yield doc

    started = time.monotonic()
    code = run_stream(
        run.stream, produce, validate=validate_document, description="sample-thoughts", on_resumed=lambda records: [stats.add(r) for r in records],
        identity=run_identity("sample-thoughts", run), count_tokens=latent_tokens, token_unit="latent tokens",
    )
    seconds = time.monotonic() - started
    if stats.candidates:
        log(stats.line())
        log(stats.compute.line(seconds))
    _write_stats(run.stream.sidecar(STATS_SUFFIX), "sample-thoughts", stats.to_json(), run, seconds)
    log_summary(run.tracking, output=run.stream.output, prefix="sample", summary=stats.to_json(), run_config=run)
    return code


def latent_tokens(document: Record) -> int:
    """Tokens sampled for a document's candidates (its progress figure, tokens/s)."""
    return sum(int(c.get("n_tokens") or 0) for chunk in document.get("chunks") or [] for c in chunk.get("candidates") or [])


def run_select(run: SelectRun) -> int:
    """``lt select``: one latent per chunk, ELBO/ESS per document, a summary table; the exit code."""
    method, k = run.select.method, run.select.k
    preflight(run.tracking, run.stream.output)  # installed, and no link where it will write
    stats = SelectionStats()
    #: chunks whose suffix was cut to fit all K candidates' joint strings: the first k keep that cut
    cut_before = [0]

    def select_all(documents: Iterable[Record], skip: int) -> Iterator[Record]:
        # Skipped (resumed) documents are counted too, so a resumed run reports the same statistics.
        for index, record in enumerate(documents):
            doc = ensure_chunks(record)  # accepts the reference's "suffix" name for chunk text
            if k is not None:
                cut_before[0] += sum(1 for c in doc["chunks"] if len(c.get("candidates") or []) > k and c.get("num_suffix_token_truncated"))
                first_candidates(doc, k)
            stats.add(doc)
            if index < skip:
                continue
            needs = any(chunk_log_w(c) is None for c in doc["chunks"])
            if needs and method in ("importance", "argmax") and not all(len(c["candidates"]) == 1 for c in doc["chunks"]):
                raise UsageError(
                    f"document {document_id(doc)} has candidates without log_w: pass --model (and --backend) "
                    "so select can score them, or use --method uniform|first"
                )
            yield select_document(doc, method, run.select.seed, keep_candidates=run.select.keep_candidates)

    def produce(records: Iterable[Record], skip: int) -> Iterator[Record]:
        if run.backend.model is None:
            yield from select_all(records, skip)
            return
        from ..backends import canonical_backend_name

        backend_name = canonical_backend_name(run.backend.backend)
        config = replace(run.sample, docs_per_call=run.sample.group_size(backend_name))
        with backend_session(backend_name, run.backend.config(), run.cache.path(run.stream.output)) as (backend, cache):
            # Every document is scored (resumed ones come from the cache) so the statistics cover them.
            yield from select_all(score_candidates(backend, records, config, cache), skip)

    started = time.monotonic()
    code = run_stream(run.stream, produce, validate=_validator(k), description="select", identity=run_identity("select", run))
    seconds = time.monotonic() - started
    _print_table(stats, f"lt select --method {method}" + (f" --k {k}" if k is not None else ""), seconds)
    if cut_before[0]:
        from ..console import warn

        warn(f"{cut_before[0]:,} chunk(s) had their suffix cut when all their candidates were scored together; with --k {k} "
             "their log w still use that cut, not the (shorter or no) cut a run with --k would score (docs/estep.md)")
    _write_stats(run.stream.sidecar(STATS_SUFFIX), "select", stats.to_json(), run, seconds)
    log_summary(run.tracking, output=run.stream.output, prefix="select", summary=stats.to_json(), run_config=run)
    return code


def _validator(k: int | None):
    """Checks every record before any work: well-formed candidates, and one K for the whole stream."""
    seen: list[int] = []

    def validate(record: Record) -> None:
        validate_candidates_document(record)
        counts = {len(chunk["candidates"]) for chunk in record["chunks"]}
        if k is not None:
            first_candidates(ensure_chunks(record), k)  # a copy: the count check only
            return
        if not counts or is_adaptive(record):
            return  # an adaptive run's chunks differ in their candidates by design
        if len(counts) > 1 or (seen and counts != {seen[0]}):
            found = sorted(counts | set(seen[:1]))
            raise ValueError(f"candidates per chunk differ ({', '.join(map(str, found))}): pass --k N to use the first N of every chunk")
        if not seen:
            seen.append(counts.pop())

    return validate


def _print_table(stats: SelectionStats, title: str, seconds: float) -> None:
    from rich.table import Table

    from ..console import err

    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for name, value in stats.rows():
        table.add_row(name, value)
    table.add_row("seconds (this run)", f"{seconds:.1f}")
    err.print(table)


def _write_stats(path: str | None, command: str, stats: dict[str, Any], run: Any, seconds: float) -> None:
    """``OUTPUT.stats.json``: the summary, this process's wall seconds (kept apart: the summary is
    the same for a resumed and an uninterrupted run, the seconds are not) and the config that
    produced it (written after the output exists)."""
    if path is not None:
        write_json(path, {"command": command, "stats": stats, "seconds": round(seconds, 3), "config": asdict(run), "lt_version": __version__})


def read_stats(output: str) -> dict[str, Any]:
    """The statistics a finished ``lt sample-thoughts`` or ``lt select -o OUTPUT`` wrote."""
    from pathlib import Path

    from ..files import read_json

    path = Path(f"{output}.{STATS_SUFFIX}")
    if not path.exists():
        raise LtError(f"{path}: missing (did the stage that writes {output} finish?)")
    return read_json(path)["stats"]
