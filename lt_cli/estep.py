"""The BoLT E-step as a library: sample K latents per chunk from q, score them under p, resample one.

Why per chunk: the reference feeds every chunk to the sampler as an independent item, so the
importance resampling is per chunk (docs/bolt-spec.md section 4). For chunk ``i`` of a document:

* proposal: ``formats.posterior_prompt(prefix, text)`` with ``prefix`` the raw text of the previous
  ``prefix_chunks`` chunks; K samples at T=1, top-p 1, at most ``max_new_tokens`` latent tokens,
  stopping at ``<EoL>``; ``log_q`` = summed log-probs of the generated tokens incl. the stop token.
* target: ``formats.joint_scoring_pair(prefix, latent, text)``; ``log_p`` = summed log-probs of the
  continuation (``<SoL><PRIOR> latent <EoL> text``); ``log_w = log_p - log_q``.
* selection: one categorical draw from ``softmax(log_w)`` (self-normalised importance resampling),
  seeded by ``derive_seed(seed, doc_id, chunk_index)``; diagnostics ``elbo_n`` (IWAE bound with the
  first n samples, summed over chunks) and the effective sample size (not in the reference).

A chunk marked ``"latent_fixed": true`` is not sampled: its given latent is each of its K
candidates with log q = 0 (:func:`fixed_candidate`), and it is scored like any other.

Sample ``j`` of a chunk is seeded by ``seeding.sample_seed(seed, doc_id, chunk_index, j)``, so it
never depends on K, batching, sharding or resumption. Documents are processed in fixed groups of
``docs_per_call`` input records (one backend call samples every chunk of a group, one call scores
it): a resumed run recomputes the interrupted group with exactly the same batch composition, which
keeps the output byte-identical to an uninterrupted run even on backends whose floating-point
results depend on padding.

Truncation (reference rule): when the longest joint string of a chunk does not fit the model, the
same number of tokens is cut from every candidate: from the front of the context first (done by the
backend), then from the end of the chunk text. ``lt`` makes the end cut uniform across the K
candidates exactly (it drops the same number of trailing token log-probs from each) and records
``num_suffix_token_truncated`` and ``num_prefix_token_truncated`` on the chunk. Documented
deviation: a candidate shorter than the longest one keeps the prefix tokens that fit (the reference
would cut as many as for the longest); only the conditioning differs, never which tokens are scored.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

from . import formats
from .backends.base import Backend, Sample, SamplingParams, Score
from .chunking import ChunkingConfig, prefix_text
from .errors import LtError
from .records import document_id, ensure_chunks, is_latent_fixed
from .seeding import derive_seed, sample_seed

Record = dict[str, Any]

SELECT_METHODS = ("importance", "uniform", "argmax", "first")


@dataclass
class SampleConfig:
    """How ``lt sample-thoughts`` draws and scores candidates (defaults: the reference's E-step)."""

    #: samples per chunk (reference: 4)
    k: int = 4
    #: latent tokens per sample, the stop token included (reference: 1024)
    max_new_tokens: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    #: raw chunks before the current one given as context (reference E-step: 3); None: all of them
    prefix_chunks: int | None = 3
    seed: int = 42
    #: compute log_p and log_w now (False: leave it to ``lt select --model``)
    score: bool = True
    #: reproduce the reference's first-chunk prompt and the skipped first <SoL> in log_p
    reference_quirks: bool = False
    #: the model's context length used when scoring (part of the score cache key)
    max_model_len: int | None = None
    #: input documents per backend call (fixed groups keep resumed runs byte-identical)
    docs_per_call: int = 8
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise LtError(f"--k must be at least 1, got {self.k}")
        if self.max_new_tokens < 1:
            raise LtError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.prefix_chunks is not None and self.prefix_chunks < 0:
            raise LtError(f"--prefix-chunks must be >= 0, got {self.prefix_chunks}")
        if self.docs_per_call < 1:
            raise LtError(f"docs_per_call must be at least 1, got {self.docs_per_call}")

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(
            n=1,
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            stop=(formats.END_OF_LATENT,),
        )

    def to_json(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------ prompts
def chunk_prefix(chunks: Sequence[dict], index: int, config: SampleConfig) -> str:
    return prefix_text(chunks, index, config.prefix_chunks)


def chunk_prompt(chunks: Sequence[dict], index: int, config: SampleConfig) -> str:
    """The posterior prompt of chunk ``index`` (BOS is added by the backend)."""
    return formats.posterior_prompt(chunk_prefix(chunks, index, config), chunks[index]["text"], reference_quirks=config.reference_quirks)


def chunk_scoring_pair(chunks: Sequence[dict], index: int, latent: str, config: SampleConfig) -> formats.ScoringPair:
    return formats.joint_scoring_pair(chunk_prefix(chunks, index, config), latent, chunks[index]["text"], reference_quirks=config.reference_quirks)


# ------------------------------------------------------------------------------------ helpers
def _identity(backend: Backend) -> dict:
    from .sample_cache import model_fingerprint

    return {"backend": getattr(backend, "name", type(backend).__name__), "model": model_fingerprint(str(getattr(backend, "model_id", "")))}


def _groups(documents: Iterable[Record], size: int) -> Iterator[tuple[int, list[Record]]]:
    """(index of the group's first record, records) in fixed blocks of ``size``."""
    block: list[Record] = []
    start = 0
    for index, record in enumerate(documents):
        if not block:
            start = index
        block.append(record)
        if len(block) == size:
            yield start, block
            block = []
    if block:
        yield start, block


def candidate_from_sample(sample: Sample) -> Record:
    n_tokens = len(sample.token_ids) if sample.token_ids else len(sample.token_logprobs)
    if not sample.token_logprobs:
        raise LtError("the backend returned no token log-probs for a sample; log q cannot be computed (api backend: it needs a server that returns logprobs)")
    return {
        "latent": sample.text,
        "log_q": sample.logprob,
        "log_p": None,
        "log_w": None,
        "finished": sample.finished,
        "n_tokens": n_tokens,
    }


def fixed_candidate(latent: str) -> Record:
    """The candidate of a ``latent_fixed`` chunk: its given latent, drawn with probability 1.

    q is a point mass, so log q = 0 and log w = log p; the K copies get equal weights, and the
    chunk's ELBO term is exactly its log p (records.LATENT_FIXED says why such chunks exist).
    """
    return {"latent": latent, "log_q": 0.0, "log_p": None, "log_w": None, "finished": True, "n_tokens": 0}


# ------------------------------------------------------------------------------------ sampling
def _sample_group(backend: Backend, docs: list[Record], config: SampleConfig, cache=None) -> None:
    """Fill ``chunks[].candidates`` (K each) for every document of the group, in place."""
    from .sample_cache import cache_key

    params = config.sampling_params()
    identity = _identity(backend) if cache is not None else None
    wanted: list[tuple[int, int, int, str, int, str | None]] = []  # doc, chunk, j, prompt, seed, key
    for d, doc in enumerate(docs):
        doc_id = document_id(doc)
        for i, chunk in enumerate(doc["chunks"]):
            if is_latent_fixed(chunk):
                chunk["candidates"] = [fixed_candidate(chunk["latent"]) for _ in range(config.k)]
                continue
            prompt = chunk_prompt(doc["chunks"], i, config)
            chunk["candidates"] = [None] * config.k
            for j in range(config.k):
                seed = sample_seed(config.seed, doc_id, i, j)
                key = None
                if cache is not None:
                    key = cache_key(
                        "posterior_sample", **identity, prompt=prompt, temperature=params.temperature, top_p=params.top_p,
                        max_new_tokens=params.max_new_tokens, stop=list(params.stop), sample_index=j, seed=seed,
                    )
                wanted.append((d, i, j, prompt, seed, key))
    cached = cache.get_many(w[5] for w in wanted) if cache is not None else {}
    missing = [w for w in wanted if w[5] not in cached]
    fresh: dict[str, Record] = {}
    if missing:
        results = backend.sample([w[3] for w in missing], params, seeds=[[w[4]] for w in missing])
        if len(results) != len(missing):
            raise LtError(f"backend returned {len(results)} results for {len(missing)} prompts")
        for w, samples in zip(missing, results):
            candidate = candidate_from_sample(samples[0])
            docs[w[0]]["chunks"][w[1]]["candidates"][w[2]] = candidate
            if w[5] is not None:
                fresh[w[5]] = candidate
        if cache is not None:
            cache.put_many("posterior_sample", fresh)
    for d, i, j, _prompt, _seed, key in wanted:
        if key in cached:
            docs[d]["chunks"][i]["candidates"][j] = dict(cached[key])


def _needs_score(chunk: dict) -> bool:
    return any(c.get("log_p") is None for c in chunk["candidates"])


def _score_group(backend: Backend, docs: list[Record], config: SampleConfig, cache=None, *, force: bool = False) -> None:
    """Set log_p and log_w of every candidate of the chunks that lack them (all when ``force``).

    The cache holds one entry per chunk (its K final log p values and cuts), because the truncation
    rule couples the K candidates of a chunk; it stores no per-token values, so it stays small.
    """
    from .sample_cache import cache_key

    identity = _identity(backend) if cache is not None else None
    chunks: list[tuple[int, int, list[tuple[str, str]], str | None]] = []  # doc, chunk, pairs, key
    for d, doc in enumerate(docs):
        for i, chunk in enumerate(doc["chunks"]):
            if not chunk["candidates"] or not (force or _needs_score(chunk)):
                continue
            pairs = []
            for candidate in chunk["candidates"]:
                pair = chunk_scoring_pair(doc["chunks"], i, candidate["latent"], config)
                pairs.append((pair.context, pair.continuation))
            key = None
            if cache is not None:
                key = cache_key(
                    "joint_scores", **identity, context=pairs[0][0], continuations=[p[1] for p in pairs],
                    max_model_len=config.max_model_len,
                )
            chunks.append((d, i, pairs, key))
    if not chunks:
        return
    cached = cache.get_many(c[3] for c in chunks) if cache is not None else {}
    missing = [c for c in chunks if c[3] not in cached]
    results: dict[tuple[int, int], dict] = {}
    if missing:
        flat = [pair for c in missing for pair in c[2]]
        scores = backend.score(flat)
        if len(scores) != len(flat):
            raise LtError(f"backend returned {len(scores)} scores for {len(flat)} pairs")
        fresh = {}
        position = 0
        for d, i, pairs, key in missing:
            value = chunk_log_p(scores[position:position + len(pairs)])
            position += len(pairs)
            results[(d, i)] = value
            if key is not None:
                fresh[key] = value
        if cache is not None:
            cache.put_many("joint_scores", fresh)
    for d, i, _pairs, key in chunks:
        if key in cached:
            results[(d, i)] = cached[key]
    for (d, i), value in results.items():
        chunk = docs[d]["chunks"][i]
        for candidate, log_p in zip(chunk["candidates"], value["log_p"]):
            candidate["log_p"] = log_p
            candidate["log_w"] = log_p - float(candidate["log_q"])
        chunk["num_prefix_token_truncated"] = value["num_prefix_token_truncated"]
        chunk["num_suffix_token_truncated"] = value["num_suffix_token_truncated"]


def chunk_log_p(scores: Sequence[Score]) -> dict:
    """The K log p values of one chunk under the reference's uniform truncation rule.

    Every candidate loses as many trailing scored tokens as the candidate that lost the most (the
    cut at the end of the chunk text is the same for all K); front cuts are the backend's.
    """
    suffix_cut = max(s.n_continuation_truncated for s in scores)
    prefix_cut = max(s.n_context_truncated for s in scores)
    log_p = []
    for score in scores:
        extra = suffix_cut - score.n_continuation_truncated
        if extra > 0:
            log_p.append(math.fsum(score.token_logprobs[: max(0, len(score.token_logprobs) - extra)]))
        else:
            log_p.append(float(score.logprob))
    return {"log_p": log_p, "num_prefix_token_truncated": prefix_cut, "num_suffix_token_truncated": suffix_cut}


def apply_scores(chunk: dict, scores: Sequence[Score]) -> None:
    """Write log_p/log_w into the chunk's candidates with the reference's uniform truncation rule."""
    candidates = chunk["candidates"]
    if len(scores) != len(candidates):
        raise LtError(f"{len(scores)} scores for {len(candidates)} candidates")
    value = chunk_log_p(scores)
    for candidate, log_p in zip(candidates, value["log_p"]):
        candidate["log_p"] = log_p
        candidate["log_w"] = log_p - float(candidate["log_q"])
    chunk["num_prefix_token_truncated"] = value["num_prefix_token_truncated"]
    chunk["num_suffix_token_truncated"] = value["num_suffix_token_truncated"]


def sample_candidates(
    backend: Backend,
    documents: Iterable[Record],
    config: SampleConfig,
    cache=None,
    *,
    skip: int = 0,
    on_group: Callable[[list[Record]], None] | None = None,
) -> Iterator[Record]:
    """Chunked documents with ``chunks[].candidates`` (K each), in input order.

    ``documents`` may be raw (chunked on the fly like ``lt chunk``) or chunked. The first ``skip``
    documents are not yielded (a resumed run); the group that contains document ``skip`` is
    recomputed whole so that batch composition never changes. ``on_group`` sees every finished
    group (progress counting).
    """
    for start, block in _groups(documents, config.docs_per_call):
        if start + len(block) <= skip:
            continue
        docs = [ensure_chunks(record, config.chunking) for record in block]
        _sample_group(backend, docs, config, cache)
        if config.score:
            _score_group(backend, docs, config, cache, force=True)
        if on_group is not None:
            on_group(docs[max(0, skip - start):])
        for offset, doc in enumerate(docs):
            if start + offset >= skip:
                yield doc


def score_candidates(
    backend: Backend,
    documents: Iterable[Record],
    config: SampleConfig,
    cache=None,
    *,
    skip: int = 0,
    force: bool = False,
) -> Iterator[Record]:
    """Documents whose candidates lacking ``log_p`` get ``log_p``/``log_w`` (all of them with ``force``)."""
    for start, block in _groups(documents, config.docs_per_call):
        if start + len(block) <= skip:
            continue
        docs = [ensure_chunks(record, config.chunking) for record in block]
        _score_group(backend, docs, config, cache, force=force)
        for offset, doc in enumerate(docs):
            if start + offset >= skip:
                yield doc


# ------------------------------------------------------------------------------------ selection
def logsumexp(values: Sequence[float]) -> float:
    peak = max(values)
    if peak == -math.inf:
        return -math.inf
    return peak + math.log(math.fsum(math.exp(v - peak) for v in values))


def softmax(log_w: Sequence[float]) -> list[float]:
    """Self-normalised importance weights (max-subtracted, as in the reference)."""
    peak = max(log_w)
    if not math.isfinite(peak):
        raise ValueError("no candidate has a finite log_w")
    exps = [math.exp(v - peak) for v in log_w]
    total = math.fsum(exps)
    return [e / total for e in exps]


def elbo_n(log_w: Sequence[float], n: int) -> float:
    """IWAE bound with the first n samples: ``logsumexp(log_w[:n]) - log n`` (nats)."""
    if not 1 <= n <= len(log_w):
        raise ValueError(f"elbo_n needs 1 <= n <= {len(log_w)}, got {n}")
    return logsumexp(list(log_w[:n])) - math.log(n)


def effective_sample_size(log_w: Sequence[float]) -> float:
    """``1 / sum p_j^2`` for ``p = softmax(log_w)``: 1 (one sample dominates) to K (uniform).

    Not computed by the reference; a diagnostic of how degenerate the resampling is.
    """
    p = softmax(log_w)
    return 1.0 / math.fsum(x * x for x in p)


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


def first_candidates(document: Record, k: int) -> Record:
    """The document with only the first ``k`` candidates of every chunk (in place; returned).

    Samples are seeded by their index, so the first k of K samples are exactly what a run with
    ``--k k`` would have drawn: one sampling run serves a whole K sweep. A chunk with fewer than
    ``k`` candidates is an error (ValueError), never a silent smaller K.
    """
    for i, chunk in enumerate(document.get("chunks") or []):
        candidates = chunk.get("candidates") or []
        if len(candidates) < k:
            raise ValueError(f"chunks[{i}] has {len(candidates)} candidate(s), fewer than --k {k}")
        chunk["candidates"] = candidates[:k]
    return document


def select_document(document: Record, method: str = "importance", seed: int = 42, *, keep_candidates: bool = False) -> Record:
    """The augmented document: every chunk gets ``latent`` = its selected candidate's latent.

    Adds per document ``elbo`` (``{"1": ..., "2": ..., ..., "K": ...}``, nats, summed over chunks),
    ``ess`` (mean over chunks of 1/sum p^2) and ``mean_log_w`` (mean over all candidates); these
    are null when some candidate has no ``log_w``. Each chunk records ``selected`` (the index).
    """
    if method not in SELECT_METHODS:
        raise ValueError(f"unknown selection method {method!r} (one of {', '.join(SELECT_METHODS)})")
    doc_id = document_id(document)
    out = dict(document)
    chunks = []
    all_log_w: list[list[float]] = []
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
        if log_w is not None:
            all_log_w.append(log_w)
    out["chunks"] = chunks
    out["num_chunks"] = len(chunks)
    if chunks and len(all_log_w) == len(chunks):
        k_min = min(len(w) for w in all_log_w)
        out["elbo"] = {str(n): math.fsum(elbo_n(w, n) for w in all_log_w) for n in elbo_sample_counts(k_min)}
        out["ess"] = math.fsum(effective_sample_size(w) for w in all_log_w) / len(all_log_w)
        flat = [v for w in all_log_w for v in w]
        out["mean_log_w"] = math.fsum(flat) / len(flat)
    else:
        out["elbo"] = None
        out["ess"] = None
        out["mean_log_w"] = None
    return out


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
            if candidate.get("log_p") is not None and candidate.get("log_q") is None:
                raise ValueError(f"chunks[{i}].candidates[{j}] has log_p but no log_q")
