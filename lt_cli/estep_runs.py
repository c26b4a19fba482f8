"""The functions behind ``lt sample-thoughts`` and ``lt select`` (usable without the CLI).

The E-step itself (prompts, sampling, scoring, weights, selection) lives in :mod:`lt_cli.estep`;
this module wires it to files: the record stream (:func:`lt_cli.stream.run_stream`), the sample
cache, the backend and the stderr summaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from .errors import LtError
from .estep import (
    SELECT_METHODS,
    SampleConfig,
    chunk_log_w,
    first_candidates,
    sample_candidates,
    score_candidates,
    select_document,
    validate_candidates_document,
)
from .records import document_id, ensure_chunks
from .pipeline import backend_session, run_stream

Record = dict[str, Any]


@dataclass
class SelectionSummary:
    """Totals for the stderr table of ``lt select``."""

    docs: int = 0
    chunks: int = 0
    elbo_sums: dict = field(default_factory=dict)
    elbo_docs: dict = field(default_factory=dict)
    ess_sum: float = 0.0
    ess_docs: int = 0
    log_w_sum: float = 0.0
    log_w_docs: int = 0

    def add(self, document: Record) -> None:
        self.docs += 1
        self.chunks += len(document["chunks"])
        for n, value in (document.get("elbo") or {}).items():
            self.elbo_sums[n] = self.elbo_sums.get(n, 0.0) + value
            self.elbo_docs[n] = self.elbo_docs.get(n, 0) + 1
        if document.get("ess") is not None:
            self.ess_sum += document["ess"]
            self.ess_docs += 1
        if document.get("mean_log_w") is not None:
            self.log_w_sum += document["mean_log_w"]
            self.log_w_docs += 1

    def rows(self) -> list[tuple[str, str]]:
        rows = [("documents", f"{self.docs:,}"), ("chunks", f"{self.chunks:,}")]
        for n in sorted(self.elbo_sums, key=int):
            rows.append((f"mean ELBO_{n} per doc (nats)", f"{self.elbo_sums[n] / self.elbo_docs[n]:.4f}"))
        if self.ess_docs:
            rows.append(("mean ESS per chunk (not in reference)", f"{self.ess_sum / self.ess_docs:.4f}"))
        if self.log_w_docs:
            rows.append(("mean log w (nats)", f"{self.log_w_sum / self.log_w_docs:.4f}"))
        return rows

    def print(self, title: str = "lt select") -> None:
        from rich.table import Table

        from .console import err

        table = Table(title=title, show_header=False)
        table.add_column("what")
        table.add_column("value", justify="right")
        for name, value in self.rows():
            table.add_row(name, value)
        err.print(table)



def run_sample_thoughts(
    input_path: str | None,
    output_path: str | None,
    backend_name: str,
    backend_config,
    config: SampleConfig,
    *,
    cache_path: str | None = None,
    shard: str | None = None,
    skip_bad: bool = False,
    rejects: str | None = None,
) -> int:
    """``lt sample-thoughts`` as a function: K scored candidates per chunk for every document."""
    from .console import log
    from .records import validate_document

    if config.max_model_len is None:
        config.max_model_len = backend_config.max_model_len
    stats = {"chunks": 0, "candidates": 0, "unfinished": 0, "latent_tokens": 0}

    def produce(records: Iterable[Record], skip: int) -> Iterator[Record]:
        with backend_session(backend_name, backend_config, cache_path, cache_label="sample") as (backend, cache):
            for doc in sample_candidates(backend, records, config, cache, skip=skip):
                for chunk in doc["chunks"]:
                    stats["chunks"] += 1
                    for candidate in chunk["candidates"]:
                        stats["candidates"] += 1
                        stats["unfinished"] += not candidate["finished"]
                        stats["latent_tokens"] += candidate["n_tokens"]
                yield doc

    code = run_stream(input_path, output_path, produce, validate=validate_document, shard=shard, skip_bad=skip_bad, rejects=rejects, description="sample-thoughts")
    if stats["candidates"]:
        log(
            f"sample-thoughts: {stats['chunks']:,} chunks, {stats['candidates']:,} candidates, "
            f"mean {stats['latent_tokens'] / stats['candidates']:.1f} latent tokens, "
            f"{stats['unfinished']:,} hit --max-new-tokens before <EoL> (kept, as in the reference)"
        )
    return code


def run_select(
    input_path: str | None,
    output_path: str | None,
    *,
    method: str = "importance",
    seed: int = 42,
    keep_candidates: bool = False,
    k: int | None = None,
    backend_name: str | None = None,
    backend_config=None,
    score_config: SampleConfig | None = None,
    cache_path: str | None = None,
    shard: str | None = None,
    skip_bad: bool = False,
    rejects: str | None = None,
) -> int:
    """``lt select`` as a function: one latent per chunk, ELBO/ESS per document, a summary table.

    ``k``: use only the first k candidates of every chunk (see :func:`lt_cli.estep.first_candidates`).
    """
    from .errors import UsageError

    if method not in SELECT_METHODS:
        raise UsageError(f"--method must be one of {', '.join(SELECT_METHODS)}, got {method!r}")
    if k is not None and k < 1:
        raise UsageError(f"--k must be at least 1, got {k}")
    summary = SelectionSummary()

    def select_all(documents: Iterable[Record], skip: int) -> Iterator[Record]:
        for index, doc in enumerate(documents):
            if index < skip:
                continue
            doc = ensure_chunks(doc)  # accepts the reference's "suffix" name for chunk text
            needs = any(chunk_log_w(c) is None for c in doc["chunks"])
            if needs and method in ("importance", "argmax") and not all(len(c["candidates"]) == 1 for c in doc["chunks"]):
                raise LtError(
                    f"document {document_id(doc)} has candidates without log_w: pass --model (and --backend) "
                    "so select can score them, or use --method uniform|first"
                )
            out = select_document(doc, method, seed, keep_candidates=keep_candidates)
            summary.add(out)
            yield out

    def produce(records: Iterable[Record], skip: int) -> Iterator[Record]:
        documents: Iterable[Record] = records if k is None else (first_candidates(record, k) for record in records)
        if backend_config is None:
            yield from select_all(documents, skip)
            return
        with backend_session(backend_name or "transformers", backend_config, cache_path) as (backend, cache):
            scored = score_candidates(backend, documents, score_config or SampleConfig(), cache, skip=skip)
            yield from select_all(scored, 0)  # score_candidates already skipped the finished records

    def resumed(records: list[Record]) -> None:
        for record in records:
            summary.add(record)

    def validate(record: Record) -> None:
        validate_candidates_document(record)
        if k is not None:
            first_candidates(ensure_chunks(record), k)  # a copy: the count check only

    code = run_stream(
        input_path, output_path, produce, validate=validate, shard=shard, skip_bad=skip_bad,
        rejects=rejects, description="select", on_resumed=resumed,
    )
    summary.print(f"lt select --method {method}" + (f" --k {k}" if k is not None else ""))
    return code
