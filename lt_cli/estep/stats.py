"""E-step statistics, computed once: the stderr tables, the ``OUTPUT.stats.json`` sidecars and the
``lt bootstrap`` report all read these numbers.

Every name says what it averages over:

* ``elbo_n_per_document[n]``: mean over documents of the document's ELBO_n (the IWAE bound with the
  first n samples, summed over its chunks), nats;
* ``log_w_per_candidate``: mean log importance weight over all candidates, nats;
* ``ess_per_chunk``: mean over chunks of the effective sample size 1 / sum p^2 (not in the reference);
* ``latent_tokens_per_candidate``: mean sampled latent length, the stop token included.

Sums run in document, chunk, candidate order with plain float additions, so the same file always
gives the same bits, whichever command reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .select import effective_sample_size, elbo_n, elbo_sample_counts

Record = dict[str, Any]


@dataclass
class SelectionStats:
    """Importance-sampling diagnostics of a candidates stream, document by document."""

    documents: int = 0
    #: documents whose every candidate has a log_w (the weight statistics cover these)
    scored_documents: int = 0
    chunks: int = 0
    candidates: int = 0
    #: candidates per chunk (the same for every chunk of a stream)
    k: int | None = None
    _elbo_sums: dict[int, float] = field(default_factory=dict)
    _log_w_sum: float = 0.0
    _ess_sum: float = 0.0
    _latent_tokens: int = 0

    def add(self, document: Record) -> None:
        """Count one document with ``chunks[].candidates`` (raises ValueError on a mixed K)."""
        self.documents += 1
        weighted = []
        for chunk in document.get("chunks") or []:
            candidates = chunk.get("candidates") or []
            if not candidates:
                continue
            if self.k is None:
                self.k = len(candidates)
                self._elbo_sums = {n: 0.0 for n in elbo_sample_counts(self.k)}
            elif len(candidates) != self.k:
                raise ValueError(f"chunks have {self.k} and {len(candidates)} candidates: select one K (lt select --k)")
            self.chunks += 1
            self.candidates += len(candidates)
            self._latent_tokens += sum(int(c.get("n_tokens") or 0) for c in candidates)
            log_w = [c.get("log_w") for c in candidates]
            weighted.append(None if any(v is None for v in log_w) else [float(v) for v in log_w])
        if any(w is None for w in weighted):
            return
        self.scored_documents += 1
        doc_elbo = {n: 0.0 for n in self._elbo_sums}
        for log_w in weighted:
            for n in doc_elbo:
                doc_elbo[n] += elbo_n(log_w, n)
            self._log_w_sum += sum(log_w)
            self._ess_sum += effective_sample_size(log_w)
        for n, value in doc_elbo.items():
            self._elbo_sums[n] += value

    def to_json(self) -> dict[str, Any]:
        scored = self.scored_documents == self.documents and self.documents > 0
        return {
            "documents": self.documents,
            "scored_documents": self.scored_documents,
            "chunks": self.chunks,
            "candidates": self.candidates,
            "k": self.k,
            "elbo_n_per_document": {str(n): s / self.documents for n, s in self._elbo_sums.items()} if scored else None,
            "log_w_per_candidate": self._log_w_sum / self.candidates if scored and self.candidates else None,
            "ess_per_chunk": self._ess_sum / self.chunks if scored and self.chunks else None,
            "latent_tokens_per_candidate": self._latent_tokens / self.candidates if self.candidates else None,
        }

    def rows(self) -> list[tuple[str, str]]:
        data = self.to_json()
        rows = [("documents", f"{self.documents:,}"), ("chunks", f"{self.chunks:,}"), ("candidates per chunk (K)", str(self.k) if self.k else "-")]
        for n, value in (data["elbo_n_per_document"] or {}).items():
            rows.append((f"ELBO_{n} per document (nats)", f"{value:.4f}"))
        if data["log_w_per_candidate"] is not None:
            rows.append(("log w per candidate (nats)", f"{data['log_w_per_candidate']:.4f}"))
        if data["ess_per_chunk"] is not None:
            rows.append(("ESS per chunk (not in the reference)", f"{data['ess_per_chunk']:.4f}"))
        if self.documents and not data["elbo_n_per_document"]:
            rows.append(("weights", f"missing in {self.documents - self.scored_documents:,} document(s)"))
        return rows


@dataclass
class SampleStats:
    """What ``lt sample-thoughts`` produced: documents, chunks, candidates and their lengths."""

    documents: int = 0
    chunks: int = 0
    #: chunks whose latent is given (records.LATENT_FIXED): not sampled
    fixed_chunks: int = 0
    candidates: int = 0
    #: sampled tokens, the stop token included (fixed chunks sample none)
    latent_tokens: int = 0
    #: samples that hit --max-new-tokens before <EoL> (kept, as in the reference)
    unfinished: int = 0

    def add(self, document: Record) -> None:
        from ..records import is_latent_fixed

        self.documents += 1
        for chunk in document.get("chunks") or []:
            self.chunks += 1
            self.fixed_chunks += is_latent_fixed(chunk)
            for candidate in chunk.get("candidates") or []:
                self.candidates += 1
                self.unfinished += not candidate.get("finished", True)
                self.latent_tokens += int(candidate.get("n_tokens") or 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "chunks": self.chunks,
            "fixed_chunks": self.fixed_chunks,
            "candidates": self.candidates,
            "latent_tokens": self.latent_tokens,
            "latent_tokens_per_candidate": self.latent_tokens / self.candidates if self.candidates else None,
            "unfinished": self.unfinished,
        }

    def line(self) -> str:
        mean = self.latent_tokens / self.candidates if self.candidates else 0.0
        return (
            f"sample-thoughts: {self.documents:,} documents, {self.chunks:,} chunks, {self.candidates:,} candidates, "
            f"mean {mean:.1f} latent tokens, {self.unfinished:,} hit --max-new-tokens before <EoL> (kept, as in the reference)"
        )
