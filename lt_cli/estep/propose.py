"""E-step proposals: K latents per chunk sampled from q(Z | X), each scored under p(Z, X).

Why per chunk: the reference feeds every chunk to its sampler as an independent item, so the
importance weights and the resampling are per chunk (docs/method.md). For chunk ``i``:

* proposal: ``formats.posterior_prompt(prefix, text)``, ``prefix`` being the raw text of the previous
  ``prefix_chunks`` chunks; K samples at T=1, top-p 1, at most ``max_new_tokens`` latent tokens,
  stopping at ``<EoL>``; ``log_q`` = summed log-probs of the generated tokens, the stop included.
* target: ``formats.joint_scoring_pair(prefix, latent, text)``; ``log_p`` = summed log-probs of the
  continuation (``<SoL><PRIOR> latent <EoL> text``); ``log_w = log_p - log_q``.

A chunk marked ``"latent_fixed": true`` is not sampled: its given latent is each of its K
candidates with log q = 0 (:func:`fixed_candidate`), and it is scored like any other.

Sample ``j`` of a chunk is seeded by ``seeding.sample_seed(seed, doc_id, chunk_index, j)``, so it
never depends on K, batching, sharding or resumption. Documents go to the backend in fixed groups
of ``docs_per_call`` input records (one call samples every chunk of a group, one call scores it): a
resumed run recomputes the interrupted group with exactly the same batch composition, which keeps
its output byte-identical to an uninterrupted run even on backends whose floating-point results
depend on padding.

Truncation (the reference's rule): when the longest joint string of a chunk does not fit the
model, the same number of tokens is cut from every candidate: from the front of the context first
(done by the backend), then from the end of the chunk text. ``lt`` makes the end cut uniform across
the K candidates exactly (it drops the same number of trailing token log-probs from each) and
records ``num_suffix_token_truncated`` and ``num_prefix_token_truncated`` on the chunk. Documented
difference: a candidate shorter than the longest one keeps the prefix tokens that fit (the reference
would cut as many as for the longest); only the conditioning differs, never which tokens are scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

from .. import formats
from ..backends.base import Backend, Sample, Score
from ..cache import backend_identity, cache_key, cache_through, same_sampler
from ..chunking import ensure_chunks, prefix_text
from ..errors import LtError
from ..records import document_id, is_latent_fixed
from ..seeding import sample_seed
from .adaptive import round_sizes, should_stop
from .config import SampleConfig

Record = dict[str, Any]


# ------------------------------------------------------------------------------------ prompts
def chunk_prefix(chunks: Sequence[dict], index: int, config: SampleConfig) -> str:
    return prefix_text(chunks, index, config.prefix_chunks, render_fixed=True)


def chunk_prompt(chunks: Sequence[dict], index: int, config: SampleConfig) -> str:
    """The posterior prompt of chunk ``index`` (BOS is added by the backend)."""
    return formats.posterior_prompt(chunk_prefix(chunks, index, config), chunks[index]["text"], reference_quirks=config.reference_quirks)


def chunk_scoring_pair(chunks: Sequence[dict], index: int, latent: str, config: SampleConfig) -> formats.ScoringPair:
    return formats.joint_scoring_pair(chunk_prefix(chunks, index, config), latent, chunks[index]["text"], reference_quirks=config.reference_quirks)


# ------------------------------------------------------------------------------------ candidates
def candidate_from_sample(sample: Sample) -> Record:
    """A candidate from a backend sample; ``n_prompt_tokens`` (the prompt's length as the backend
    read it, None when it cannot tell) is moved to the chunk's ``sampling`` record by the caller."""
    n_tokens = len(sample.token_ids) if sample.token_ids else len(sample.token_logprobs)
    if not sample.token_logprobs:
        raise LtError("the backend returned no token log-probs for a sample; log q cannot be computed (api backend: it needs a server that returns logprobs)")
    return {
        "latent": sample.text, "log_q": sample.logprob, "log_p": None, "log_w": None, "finished": sample.finished, "n_tokens": n_tokens,
        "n_prompt_tokens": sample.prompt_tokens,
    }


def fixed_candidate(latent: str) -> Record:
    """The candidate of a ``latent_fixed`` chunk: its given latent, drawn with probability 1.

    q is a point mass, so log q = 0 and log w = log p; the K copies get equal weights, and the
    chunk's ELBO term is exactly its log p (records.LATENT_FIXED says why such chunks exist).
    """
    return {"latent": latent, "log_q": 0.0, "log_p": None, "log_w": None, "finished": True, "n_tokens": 0}


def chunk_log_p(scores: Sequence[Score]) -> dict:
    """The K log p values of one chunk under the reference's uniform truncation rule.

    Every candidate loses as many trailing scored tokens as the candidate that lost the most (the
    cut at the end of the chunk text is the same for all K); front cuts are the backend's.
    ``n_scored_tokens`` is what each pair cost the backend: context + continuation tokens as it
    read them (None when the backend does not report its context length).
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
    scored = [None if s.n_context_tokens is None else s.n_context_tokens + s.n_tokens for s in scores]
    return {"log_p": log_p, "num_prefix_token_truncated": prefix_cut, "num_suffix_token_truncated": suffix_cut, "n_scored_tokens": scored}


# ------------------------------------------------------------------------------------ groups
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


@dataclass
class _SampleRequest:
    doc: int
    chunk: int
    sample: int
    prompt: str
    seed: int
    key: str | None


def _sample_chunks(backend: Backend, docs: list[Record], config: SampleConfig, cache, targets: Sequence[tuple[int, int, int]]) -> None:
    """One sampling round: chunk ``i`` of document ``d`` gets samples ``len(candidates) .. stop-1``
    for every ``(d, i, stop)`` in ``targets``, all in ONE backend call (cache misses only).

    The round is recorded in the chunk's ``sampling`` record: ``rounds`` gets ``stop`` appended and
    ``prompt_tokens`` is the posterior prompt's length as the backend read it.
    """
    params = config.sampling_params()
    identity = backend_identity(backend, sampling=True) if cache is not None else None
    requests: list[_SampleRequest] = []
    for d, i, stop in targets:
        doc = docs[d]
        doc_id = document_id(doc)
        chunk = doc["chunks"][i]
        prompt = chunk_prompt(doc["chunks"], i, config)
        candidates = chunk.setdefault("candidates", [])
        for j in range(len(candidates), stop):
            candidates.append(None)
            seed = sample_seed(config.seed, doc_id, i, j)
            key = None
            if cache is not None:
                key = cache_key(
                    "posterior_sample", **identity, prompt=prompt, temperature=params.temperature, top_p=params.top_p,
                    max_new_tokens=params.max_new_tokens, max_prompt_tokens=params.max_prompt_tokens, stop=list(params.stop), sample_index=j, seed=seed,
                )
            requests.append(_SampleRequest(d, i, j, prompt, seed, key))

    def draw(missing: list[int]) -> list[Record]:
        results = backend.sample([requests[n].prompt for n in missing], params, seeds=[[requests[n].seed] for n in missing])
        if len(results) != len(missing):
            raise LtError(f"backend returned {len(results)} results for {len(missing)} prompts")
        return [candidate_from_sample(samples[0]) for samples in results]

    prompt_tokens: dict[tuple[int, int], int | None] = {}
    candidates = cache_through(cache, "posterior_sample", [r.key for r in requests], draw, keys_still_hold=same_sampler(backend, identity))
    for request, candidate in zip(requests, candidates):
        candidate = dict(candidate)
        prompt_tokens.setdefault((request.doc, request.chunk), candidate.pop("n_prompt_tokens", None))
        docs[request.doc]["chunks"][request.chunk]["candidates"][request.sample] = candidate
    for d, i, stop in targets:
        chunk = docs[d]["chunks"][i]
        record = chunk.setdefault("sampling", {"rounds": [], "prompt_tokens": None})
        record["rounds"].append(stop)
        if record["prompt_tokens"] is None:
            record["prompt_tokens"] = prompt_tokens.get((d, i))


def _fill_fixed(docs: list[Record], k: int) -> list[tuple[int, int]]:
    """Give every ``latent_fixed`` chunk its k fixed candidates; return the (doc, chunk) to sample."""
    to_sample = []
    for d, doc in enumerate(docs):
        for i, chunk in enumerate(doc["chunks"]):
            chunk.pop("sampling", None)  # a record from an earlier run describes other candidates
            if is_latent_fixed(chunk):
                chunk["candidates"] = [fixed_candidate(chunk["latent"]) for _ in range(k)]
            else:
                chunk["candidates"] = []
                to_sample.append((d, i))
    return to_sample


def _sample_group(backend: Backend, docs: list[Record], config: SampleConfig, cache=None) -> None:
    """Fill ``chunks[].candidates`` (K each) for every document of the group, in place."""
    to_sample = _fill_fixed(docs, config.k)
    _sample_chunks(backend, docs, config, cache, [(d, i, config.k) for d, i in to_sample])


def _sample_adaptive_group(backend: Backend, docs: list[Record], config: SampleConfig, cache=None) -> None:
    """Sample and score the group in rounds (:mod:`lt_cli.estep.adaptive`): every open chunk gets
    the next round in one sampling call and one scoring call, then the stopping rule closes chunks.

    The open chunks after each round depend only on the group's samples and scores, so a resumed
    run recomputes the interrupted group with exactly the same calls.
    """
    sizes = round_sizes(config.k, config.k_max, config.k_step)
    open_chunks = _fill_fixed(docs, sizes[0])
    fixed = [(d, i, 0) for d, doc in enumerate(docs) for i, chunk in enumerate(doc["chunks"]) if is_latent_fixed(chunk)]
    for number, size in enumerate(sizes):
        if not open_chunks and number > 0:
            break
        have = {(d, i): len(docs[d]["chunks"][i]["candidates"]) for d, i in open_chunks}
        _sample_chunks(backend, docs, config, cache, [(d, i, size) for d, i in open_chunks])
        _score_chunks(backend, docs, config, cache, [(d, i, have[(d, i)]) for d, i in open_chunks] + (fixed if number == 0 else []))
        still_open = []
        for d, i in open_chunks:
            chunk = docs[d]["chunks"][i]
            candidates = chunk["candidates"]
            if should_stop(candidates, config.rule, config.stop_threshold, truncated=bool(chunk.get("num_suffix_token_truncated"))):
                chunk["sampling"]["stopped"] = "rule"
            elif size == sizes[-1]:
                chunk["sampling"]["stopped"] = "k_max"  # k_max samples, the rule still not satisfied
            else:
                still_open.append((d, i))
        open_chunks = still_open


@dataclass
class _ScoreRequest:
    doc: int
    chunk: int
    #: first candidate index scored by this request (the rest of the chunk's candidates follow)
    start: int
    pairs: list[tuple[str, str]]
    key: str | None


def _needs_score(chunk: dict) -> bool:
    return any(c.get("log_p") is None for c in chunk["candidates"])


def _score_chunks(backend: Backend, docs: list[Record], config: SampleConfig, cache, targets: Sequence[tuple[int, int, int]]) -> None:
    """Set log_p and log_w of candidates ``start..`` of each ``(d, i, start)`` in ONE backend call.

    The cache holds one entry per request (a chunk's context and the continuations scored
    together, with their final log p values, cuts and token counts), because the truncation rule
    couples the candidates scored together; it stores no per-token values, so it stays small. When
    a chunk's candidates were scored in several rounds and the rounds' cuts at the end of the
    chunk differ, the chunk is scored again as a whole, so the rule holds across all of them.
    """
    identity = backend_identity(backend) if cache is not None else None
    requests: list[_ScoreRequest] = []
    for d, i, start in targets:
        doc = docs[d]
        candidates = doc["chunks"][i]["candidates"][start:]
        if not candidates:
            continue
        pairs = []
        for candidate in candidates:
            pair = chunk_scoring_pair(doc["chunks"], i, candidate["latent"], config)
            pairs.append((pair.context, pair.continuation))
        key = None
        if cache is not None:
            key = cache_key("chunk_scores", **identity, context=pairs[0][0], continuations=[p[1] for p in pairs])
        requests.append(_ScoreRequest(d, i, start, pairs, key))
    if not requests:
        return

    def score(missing: list[int]) -> list[dict]:
        flat = [pair for n in missing for pair in requests[n].pairs]
        scores = backend.score(flat)
        if len(scores) != len(flat):
            raise LtError(f"backend returned {len(scores)} scores for {len(flat)} pairs")
        values, position = [], 0
        for n in missing:
            size = len(requests[n].pairs)
            values.append(chunk_log_p(scores[position:position + size]))
            position += size
        return values

    rescore = []
    for request, value in zip(requests, cache_through(cache, "chunk_scores", [r.key for r in requests], score)):
        chunk = docs[request.doc]["chunks"][request.chunk]
        scored = chunk["candidates"][request.start:]
        for candidate, log_p, n_scored in zip(scored, value["log_p"], value["n_scored_tokens"]):
            candidate["log_p"] = log_p
            candidate["log_w"] = log_p - float(candidate["log_q"])
            candidate["n_scored_tokens"] = n_scored
        if request.start > 0 and chunk.get("num_suffix_token_truncated") != value["num_suffix_token_truncated"]:
            rescore.append((request.doc, request.chunk, 0))
        prefix_cut = value["num_prefix_token_truncated"]
        chunk["num_prefix_token_truncated"] = max(prefix_cut, chunk.get("num_prefix_token_truncated") or 0) if request.start else prefix_cut
        chunk["num_suffix_token_truncated"] = value["num_suffix_token_truncated"]
    if rescore:
        _score_chunks(backend, docs, config, cache, rescore)


def _score_group(backend: Backend, docs: list[Record], config: SampleConfig, cache=None, *, force: bool = False) -> None:
    """Set log_p and log_w of every candidate of the chunks that lack them (all chunks when ``force``)."""
    targets = [(d, i, 0) for d, doc in enumerate(docs) for i, chunk in enumerate(doc["chunks"]) if chunk["candidates"] and (force or _needs_score(chunk))]
    _score_chunks(backend, docs, config, cache, targets)


# ------------------------------------------------------------------------------------ streams
def sample_candidates(backend: Backend, documents: Iterable[Record], config: SampleConfig, cache=None, *, skip: int = 0) -> Iterator[Record]:
    """Chunked documents with ``chunks[].candidates`` (K each, or 1..k_max with ``config.k_max``), in input order.

    ``documents`` may be raw (chunked on the fly like ``lt chunk``) or chunked. The first ``skip``
    documents are not yielded (a resumed run); the group that contains document ``skip`` is
    recomputed whole so that batch composition never changes. Each document records the sampling
    settings that decide its compute (``estep``), each sampled chunk its rounds (``sampling``).
    """
    config.check_runnable()
    parameters = None
    for start, block in _groups(documents, config.group_size()):
        if start + len(block) <= skip:
            continue
        docs = [ensure_chunks(record, config.chunking) for record in block]
        if config.k_max is not None:
            _sample_adaptive_group(backend, docs, config, cache)
        else:
            _sample_group(backend, docs, config, cache)
            if config.score:
                _score_group(backend, docs, config, cache, force=True)
        if parameters is None:
            parameters = _parameters(backend)
        for offset, doc in enumerate(docs):
            doc["estep"] = config.estep_record(parameters)
            if start + offset >= skip:
                yield doc


def _parameters(backend) -> int | None:
    """The backend model's parameter count (None for API models and backends that cannot tell)."""
    value = getattr(backend, "n_parameters", None)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def score_candidates(
    backend: Backend, documents: Iterable[Record], config: SampleConfig, cache=None, *, skip: int = 0, force: bool = False
) -> Iterator[Record]:
    """Documents whose candidates lacking ``log_p`` get ``log_p``/``log_w`` (all of them with ``force``)."""
    for start, block in _groups(documents, config.group_size()):
        if start + len(block) <= skip:
            continue
        docs = [ensure_chunks(record, config.chunking) for record in block]
        _score_group(backend, docs, config, cache, force=force)
        for offset, doc in enumerate(docs):
            if start + offset >= skip:
                yield doc
