"""E-step statistics, computed once: the stderr tables, the ``OUTPUT.stats.json`` sidecars and the
``lt bootstrap`` report all read these numbers.

Every name says what it averages over:

* ``elbo_n_per_document[n]``: mean over documents of the document's ELBO_n (the IWAE bound with the
  first n samples, summed over its chunks), nats;
* ``log_w_per_candidate``: mean log importance weight over all candidates, nats;
* ``ess_per_chunk``: mean over chunks of the effective sample size 1 / sum p^2 (not in the reference);
* ``latent_tokens_per_candidate``: mean sampled latent length, the stop token included;
* ``compute`` (:class:`ComputeStats`): what producing the candidates cost -- prompts, generated and
  scored tokens, samples per sampled chunk (mean, min, max) and ``2 x parameters x tokens`` FLOPs.

Sums run in document, chunk, candidate order with plain float additions, so the same file always
gives the same bits, whichever command reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .adaptive import unbiased_counts
from .select import elbo_sample_counts, is_adaptive
from .weights import effective_sample_size, elbo_n

Record = dict[str, Any]


@dataclass
class ComputeStats:
    """What a stream of candidate documents cost to produce, counted from the records themselves.

    Counted from the records (not measured while running), so a resumed run, a run served by the
    cache and an uninterrupted run report the same numbers, and ``lt select --k k`` reports what a
    run with K=k would have spent (the first k samples, one prompt per round they needed):

    * ``prompts``: posterior prompts read by the backend, one per sampling round of a sampled chunk
      (its K samples share the prompt's prefill); ``prompt_tokens``: their tokens;
    * ``samples``: sampled candidates; ``samples_per_chunk``: their mean, min and max over the
      sampled chunks (``latent_fixed`` chunks are not sampled);
    * ``generated_tokens``: sampled tokens, stop tokens included (the sum of ``n_tokens``);
    * ``scored_pairs`` / ``scored_tokens``: joint strings scored for log p, and their context +
      continuation tokens as the backend read them (the copies of fixed chunks included);
    * ``flops``: ``2 x model_parameters x (prompt_tokens + generated_tokens + scored_tokens)``, the
      forward-pass estimate; null when the parameter count (API models) or a token count is unknown;
    * ``stopped_by_rule``: adaptive sampling only, chunks the stopping rule closed before k_max.
    """

    sampled_chunks: int = 0
    prompts: int = 0
    prompt_tokens: int = 0
    samples: int = 0
    generated_tokens: int = 0
    scored_pairs: int = 0
    scored_tokens: int = 0
    stopped_by_rule: int = 0
    samples_min: int | None = None
    samples_max: int | None = None
    _unknown_prompt_tokens: int = 0
    _unknown_scored_tokens: int = 0
    _parameters: set = field(default_factory=set)

    def add(self, document: Record) -> None:
        from ..records import is_latent_fixed

        self._parameters.add((document.get("estep") or {}).get("model_parameters"))
        for chunk in document.get("chunks") or []:
            candidates = chunk.get("candidates") or []
            for candidate in candidates:
                if candidate.get("log_p") is None:
                    continue
                self.scored_pairs += 1
                n_scored = candidate.get("n_scored_tokens")
                if n_scored is None:
                    self._unknown_scored_tokens += 1
                else:
                    self.scored_tokens += int(n_scored)
            if is_latent_fixed(chunk) or not candidates:
                continue
            n = len(candidates)
            self.sampled_chunks += 1
            self.samples += n
            self.generated_tokens += sum(int(c.get("n_tokens") or 0) for c in candidates)
            self.samples_min = n if self.samples_min is None else min(self.samples_min, n)
            self.samples_max = n if self.samples_max is None else max(self.samples_max, n)
            sampling = chunk.get("sampling") or {}
            rounds = len(sampling.get("rounds") or [None])
            self.prompts += rounds
            if sampling.get("prompt_tokens") is None:
                self._unknown_prompt_tokens += 1
            else:
                self.prompt_tokens += rounds * int(sampling["prompt_tokens"])
            self.stopped_by_rule += sampling.get("stopped") == "rule"

    @property
    def model_parameters(self) -> int | None:
        """The parameter count every document records, or None (unknown, or documents disagree)."""
        known = self._parameters - {None}
        return next(iter(known)) if len(known) == 1 and None not in self._parameters else None

    def to_json(self) -> dict[str, Any]:
        prompt_tokens = None if self._unknown_prompt_tokens else self.prompt_tokens
        scored_tokens = None if self._unknown_scored_tokens else self.scored_tokens
        parameters = self.model_parameters
        flops = None
        if parameters is not None and prompt_tokens is not None and scored_tokens is not None:
            flops = 2 * parameters * (prompt_tokens + self.generated_tokens + scored_tokens)
        return {
            "sampled_chunks": self.sampled_chunks,
            "prompts": self.prompts,
            "prompt_tokens": prompt_tokens,
            "samples": self.samples,
            "samples_per_chunk": {
                "mean": self.samples / self.sampled_chunks if self.sampled_chunks else None, "min": self.samples_min, "max": self.samples_max,
            },
            "generated_tokens": self.generated_tokens,
            "scored_pairs": self.scored_pairs,
            "scored_tokens": scored_tokens,
            "stopped_by_rule": self.stopped_by_rule,
            "model_parameters": parameters,
            "flops": flops,
        }

    def line(self, seconds: float | None = None) -> str:
        data = self.to_json()
        per_chunk = data["samples_per_chunk"]
        shape = f"mean {per_chunk['mean']:.2f}, min {per_chunk['min']}, max {per_chunk['max']}" if per_chunk["mean"] is not None else "none sampled"
        tokens = lambda value: "unknown" if value is None else f"{value:,}"  # noqa: E731
        flops = "FLOPs unknown" if data["flops"] is None else f"{data['flops']:.3g} FLOPs (2 x {data['model_parameters']:,} parameters x tokens)"
        stopped = f", {self.stopped_by_rule:,} chunks stopped by the rule" if self.stopped_by_rule else ""
        timing = f", {seconds:.1f} s" if seconds is not None else ""
        return (
            f"compute: {self.prompts:,} prompts ({tokens(data['prompt_tokens'])} tokens), {self.samples:,} samples ({shape} per sampled chunk){stopped}, "
            f"{self.generated_tokens:,} generated tokens, {tokens(data['scored_tokens'])} scored tokens in {self.scored_pairs:,} pairs, {flops}{timing}"
        )


@dataclass
class SelectionStats:
    """Importance-sampling diagnostics of a candidates stream, document by document, and its compute.

    With adaptive sampling (documents whose ``estep`` record has ``k_max``) chunks have different
    numbers of candidates; ``elbo_n_per_document`` then covers only n up to the first round, the
    samples every chunk got whatever its weights (:func:`lt_cli.estep.adaptive.unbiased_counts`).
    """

    documents: int = 0
    #: documents whose every candidate has a log_w (the weight statistics cover these)
    scored_documents: int = 0
    chunks: int = 0
    candidates: int = 0
    #: candidates per chunk when it is the same for every chunk of the stream (None: adaptive, mixed)
    k: int | None = None
    compute: ComputeStats = field(default_factory=ComputeStats)
    _counts_seen: set = field(default_factory=set)
    _elbo_sums: dict[int, float] | None = None
    _log_w_sum: float = 0.0
    _ess_sum: float = 0.0
    _latent_tokens: int = 0

    def add(self, document: Record) -> None:
        """Count one document with ``chunks[].candidates`` (raises ValueError on a mixed K, unless
        the document was sampled adaptively)."""
        self.documents += 1
        self.compute.add(document)
        adaptive = is_adaptive(document)
        weighted = []
        for chunk in document.get("chunks") or []:
            candidates = chunk.get("candidates") or []
            if not candidates:
                continue
            if not adaptive and self._counts_seen and len(candidates) not in self._counts_seen:
                raise ValueError(f"chunks have {min(self._counts_seen)} and {len(candidates)} candidates: select one K (lt select --k)")
            self._counts_seen.add(len(candidates))
            self.chunks += 1
            self.candidates += len(candidates)
            self._latent_tokens += sum(int(c.get("n_tokens") or 0) for c in candidates)
            log_w = [c.get("log_w") for c in candidates]
            weighted.append(None if any(v is None for v in log_w) else [float(v) for v in log_w])
        self.k = next(iter(self._counts_seen)) if len(self._counts_seen) == 1 else None
        if any(w is None for w in weighted):
            return
        self.scored_documents += 1
        limit = unbiased_counts(document.get("chunks") or [])
        counts = elbo_sample_counts(limit) if limit else []
        if self._elbo_sums is None:
            self._elbo_sums = {n: 0.0 for n in counts}
        else:  # only the n every document has (adaptive documents can differ in their first round)
            self._elbo_sums = {n: v for n, v in self._elbo_sums.items() if n in counts}
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
            "elbo_n_per_document": {str(n): s / self.documents for n, s in (self._elbo_sums or {}).items()} if scored else None,
            "log_w_per_candidate": self._log_w_sum / self.candidates if scored and self.candidates else None,
            "ess_per_chunk": self._ess_sum / self.chunks if scored and self.chunks else None,
            "latent_tokens_per_candidate": self._latent_tokens / self.candidates if self.candidates else None,
            "compute": self.compute.to_json(),
        }

    def rows(self) -> list[tuple[str, str]]:
        data = self.to_json()
        per_chunk = data["compute"]["samples_per_chunk"]
        if self.k:
            k_text = str(self.k)
        elif per_chunk["mean"] is not None:
            k_text = f"{per_chunk['min']}-{per_chunk['max']} (adaptive)"
        else:
            k_text = "-"
        rows = [("documents", f"{self.documents:,}"), ("chunks", f"{self.chunks:,}"), ("candidates per chunk (K)", k_text)]
        for n, value in (data["elbo_n_per_document"] or {}).items():
            rows.append((f"ELBO_{n} per document (nats)", f"{value:.4f}"))
        if data["log_w_per_candidate"] is not None:
            rows.append(("log w per candidate (nats)", f"{data['log_w_per_candidate']:.4f}"))
        if data["ess_per_chunk"] is not None:
            rows.append(("ESS per chunk (not in the reference)", f"{data['ess_per_chunk']:.4f}"))
        if self.documents and not data["elbo_n_per_document"]:
            rows.append(("weights", f"missing in {self.documents - self.scored_documents:,} document(s)"))
        rows += compute_rows(data["compute"])
        return rows


def compute_rows(compute: dict[str, Any]) -> list[tuple[str, str]]:
    """The compute part of ``lt select``'s table (what the selected-from candidates cost)."""
    def count(value):
        return "unknown" if value is None else f"{value:,}"

    per_chunk = compute["samples_per_chunk"]
    rows = []
    if per_chunk["mean"] is not None:
        rows.append(("samples per sampled chunk (mean, min, max)", f"{per_chunk['mean']:.2f}, {per_chunk['min']}, {per_chunk['max']}"))
    if compute["stopped_by_rule"]:
        rows.append(("chunks stopped by the adaptive rule", f"{compute['stopped_by_rule']:,}"))
    rows += [
        ("E-step prompts (tokens)", f"{compute['prompts']:,} ({count(compute['prompt_tokens'])})"),
        ("E-step generated tokens", f"{compute['generated_tokens']:,}"),
        ("E-step scored tokens", count(compute["scored_tokens"])),
        ("E-step FLOPs (2 x parameters x tokens)", "unknown" if compute["flops"] is None else f"{compute['flops']:.4g}"),
    ]
    return rows


@dataclass
class SampleStats:
    """What ``lt sample-thoughts`` produced: documents, chunks, candidates, their lengths, their compute."""

    documents: int = 0
    chunks: int = 0
    #: chunks whose latent is given (records.LATENT_FIXED): not sampled
    fixed_chunks: int = 0
    candidates: int = 0
    #: sampled tokens, the stop token included (fixed chunks sample none)
    latent_tokens: int = 0
    #: samples that hit --max-new-tokens before <EoL> (kept, as in the reference)
    unfinished: int = 0
    compute: ComputeStats = field(default_factory=ComputeStats)

    def add(self, document: Record) -> None:
        from ..records import is_latent_fixed

        self.documents += 1
        self.compute.add(document)
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
            "compute": self.compute.to_json(),
        }

    def line(self) -> str:
        mean = self.latent_tokens / self.candidates if self.candidates else 0.0
        return (
            f"sample-thoughts: {self.documents:,} documents, {self.chunks:,} chunks, {self.candidates:,} candidates, "
            f"mean {mean:.1f} latent tokens, {self.unfinished:,} hit --max-new-tokens before <EoL> (kept, as in the reference)"
        )
