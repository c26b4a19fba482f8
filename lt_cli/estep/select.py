"""E-step selection: importance weights, the ELBO_n bound, effective sample size, one draw per chunk.

Self-normalised importance resampling, as in the reference: the selected latent of a chunk is one
categorical draw from ``softmax(log_w)`` over its K candidates, seeded by ``derive_seed(seed,
doc_id, chunk_index)``. ``elbo_n`` is the IWAE bound with the first n samples (summed over a
document's chunks) and the effective sample size ``1 / sum p^2`` is a diagnostic the reference
does not compute. :mod:`lt_cli.estep.stats` aggregates them over a file.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from ..records import document_id
from ..seeding import derive_seed
from .config import SELECT_METHODS
from .weights import effective_sample_size, elbo_n, softmax

Record = dict[str, Any]

#: no log-probability of real text comes near this many nats; larger values (1e308) would
#: overflow the sums behind ELBO_n and the means, so such records are refused as malformed
MAX_ABS_LOG = 1e100


def elbo_sample_counts(k: int) -> list[int]:
    """The n reported for ELBO_n: 1, 2, 4, ... below K, and K itself."""
    counts, n = [], 1
    while n < k:
        counts.append(n)
        n *= 2
    counts.append(k)
    return counts


def choose_index(log_w: Sequence[float] | None, method: str, rng_seed: int, k: int) -> int:
    """Index of the selected candidate among ``k``; K=1 always gives 0."""
    if k == 1 or method == "first":
        return 0
    import numpy as np

    if method == "uniform":
        return int(np.random.default_rng(rng_seed).integers(k))
    if log_w is None:
        raise ValueError(f"--method {method} needs log_w for every candidate (score them with --model)")
    if method == "argmax":
        return max(range(k), key=lambda j: (log_w[j], -j))
    if method == "importance":
        p = np.asarray(softmax(log_w), dtype=np.float64)
        return int(np.random.default_rng(rng_seed).choice(k, p=p))
    raise ValueError(f"unknown selection method {method!r} (one of {', '.join(SELECT_METHODS)})")


def chunk_log_w(chunk: dict) -> list[float] | None:
    values = [c.get("log_w") for c in chunk["candidates"]]
    if any(v is None for v in values):
        return None
    return [float(v) for v in values]


def is_adaptive(document: Record) -> bool:
    """True for a document sampled adaptively (``lt sample-thoughts --k-max``): its chunks may
    have different numbers of candidates."""
    return (document.get("estep") or {}).get("k_max") is not None


def first_candidates(document: Record, k: int) -> Record:
    """The document with only the first ``k`` candidates of every chunk (in place; returned).

    Samples are seeded by their index, so the first k of K samples are exactly what a run with
    ``--k k`` would have drawn: one sampling run serves a whole K sweep. A chunk with fewer than
    ``k`` candidates is an error (ValueError), never a silent smaller K, unless the document was
    sampled adaptively: its chunks then keep what they have, which is what an adaptive run with
    ``--k-max k`` would have kept when k is one of its round sizes. Each chunk's ``sampling``
    record is cut to the rounds the first k samples needed, so compute is counted for them only.
    """
    from .adaptive import rounds_for, should_stop

    adaptive = is_adaptive(document)
    for i, chunk in enumerate(document.get("chunks") or []):
        candidates = chunk.get("candidates") or []
        if len(candidates) < k and not adaptive:
            raise ValueError(f"chunks[{i}] has {len(candidates)} candidate(s), fewer than --k {k}")
        if len(candidates) > k:
            chunk["candidates"] = candidates[:k]
            sampling = chunk.get("sampling")
            if sampling and sampling.get("rounds"):
                chunk["sampling"] = {**sampling, "rounds": rounds_for(sampling["rounds"], k)}
                if "stopped" in sampling:  # what an adaptive run with --k-max k would have recorded
                    record = document["estep"]
                    scored = all(c.get("log_w") is not None for c in chunk["candidates"])
                    holds = scored and should_stop(
                        chunk["candidates"], record["stop_rule"], record["stop_threshold"], truncated=bool(chunk.get("num_suffix_token_truncated"))
                    )
                    chunk["sampling"]["stopped"] = "rule" if holds else "k_max"
    if adaptive:
        document["estep"] = {**document["estep"], "k_max": min(int(document["estep"]["k_max"]), k)}
    return document


def select_document(document: Record, method: str = "importance", seed: int = 42, *, keep_candidates: bool = False) -> Record:
    """The augmented document: every chunk gets ``latent`` = its selected candidate's latent.

    Adds per document ``elbo`` (``{"1": ..., "2": ..., ..., "K": ...}``, nats, summed over chunks;
    for an adaptively sampled document only n up to its first round, see :mod:`.adaptive`),
    ``ess`` (mean over chunks of 1/sum p^2) and ``mean_log_w`` (mean over all candidates); these
    are null when some candidate has no ``log_w``. Each chunk records ``selected`` (the index).
    """
    if method not in SELECT_METHODS:
        raise ValueError(f"unknown selection method {method!r} (one of {', '.join(SELECT_METHODS)})")
    doc_id = document_id(document)
    out = dict(document)
    chunks = []
    for i, chunk in enumerate(document["chunks"]):
        candidates = chunk.get("candidates")
        if not candidates:
            raise ValueError(f"chunks[{i}] has no candidates")
        log_w = chunk_log_w(chunk)
        index = choose_index(log_w, method, derive_seed(seed, doc_id, i), len(candidates))
        new_chunk = {key: value for key, value in chunk.items() if key != "candidates"}
        new_chunk["latent"] = candidates[index]["latent"]
        new_chunk["selected"] = index
        if keep_candidates:
            new_chunk["candidates"] = candidates
        chunks.append(new_chunk)
    out["chunks"] = chunks
    out["num_chunks"] = len(chunks)
    out.update(document_diagnostics(document["chunks"]))
    return out


def document_diagnostics(chunks: Sequence[dict]) -> dict[str, Any]:
    """``{"elbo", "ess", "mean_log_w"}`` of a document's candidate chunks (what :func:`select_document`
    adds; all null unless every chunk has candidates with ``log_w``)."""
    all_log_w = [chunk_log_w(chunk) for chunk in chunks if chunk.get("candidates")]
    if not chunks or len(all_log_w) != len(chunks) or any(w is None for w in all_log_w):
        return {"elbo": None, "ess": None, "mean_log_w": None}
    from .adaptive import unbiased_counts

    k_min = unbiased_counts(chunks)  # adaptive: the first round only (the unbiased bounds)
    flat = [v for w in all_log_w for v in w]
    return {
        "elbo": {str(n): math.fsum(elbo_n(w, n) for w in all_log_w) for n in elbo_sample_counts(k_min)},
        "ess": math.fsum(effective_sample_size(w) for w in all_log_w) / len(all_log_w),
        "mean_log_w": math.fsum(flat) / len(flat),
    }


def validate_candidates_document(record: Record) -> None:
    """Raise ValueError unless every chunk has a non-empty list of well-formed candidates."""
    chunks = record.get("chunks")
    if not isinstance(chunks, list):
        raise ValueError("expected a document with a 'chunks' list (run lt sample-thoughts first)")
    for i, chunk in enumerate(chunks):
        if not isinstance(chunk, dict):
            raise ValueError(f"chunks[{i}] must be an object")
        if not isinstance(chunk.get("text", chunk.get("suffix")), str):
            raise ValueError(f"chunks[{i}] has no string 'text'")
        candidates = chunk.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            raise ValueError(f"chunks[{i}] has no 'candidates' (run lt sample-thoughts first)")
        for j, candidate in enumerate(candidates):
            if not isinstance(candidate, dict) or not isinstance(candidate.get("latent"), str):
                raise ValueError(f"chunks[{i}].candidates[{j}] needs a string 'latent'")
            for name in ("log_q", "log_p", "log_w"):
                value = candidate.get(name)
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)):
                    raise ValueError(f"chunks[{i}].candidates[{j}].{name} must be a number or null")
                if value is not None and not abs(value) <= MAX_ABS_LOG:
                    raise ValueError(f"chunks[{i}].candidates[{j}].{name} = {value:g} is not a log-probability in nats (|value| <= {MAX_ABS_LOG:g})")
            if candidate.get("log_p") is not None and candidate.get("log_q") is None:
                raise ValueError(f"chunks[{i}].candidates[{j}] has log_p but no log_q")
