"""Held-out likelihood tasks on raw documents (bolt-spec section 6.2).

``nll``: negative log-likelihood per token of each document's raw text (no latents), BOS then
text; tokens beyond the model's context are not scored and are counted (``n_tokens_truncated``).

``elbo``: ELBO_n per raw token for n in ``elbo_n`` (default 1, 2, 4). Each document is chunked
uniformly (``ceil(sentences / 8)`` chunks); for every chunk the E-step library draws K = max(n)
latents from the model's posterior with ALL previous raw text as the prefix, at T=1, and scores
the joint string, so ``log_w = log p(Z, X_i | X_<i) - log q(Z | X_<i, X_i)``. ELBO_n of a chunk is
``logsumexp(log_w[:n]) - log n`` (IWAE bound, increasing in n in expectation); a document's
ELBO_n is the sum over its chunks, divided by its raw-token count (chunk tokens scored after the
raw prefix, minus suffix tokens the joint strings had to cut). Sampling and weighting are
:mod:`lt_cli.estep`'s, never re-implemented here.

Both report the mean over documents of the per-document value per token (the headline, in nats;
higher ELBO and lower NLL are better) and the token-weighted value (``*_weighted``). The elbo
task also reports ``no_latent_log_p_per_token``: the chunked raw log-likelihood of the same
documents with the same prefixes, without latents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

Record = dict[str, Any]


def _documents(config, have_backend: bool = False) -> tuple[list[Record], str]:
    from ..records import validate_raw_document
    from .data import read_jsonl, resolve_data_path

    if not config.data:
        raise UsageError(f"--task {config.task} needs --data DOCS.jsonl (raw documents with a 'text' field)")
    if config.grade:
        raise UsageError(f"--grade only applies to generation tasks, not {config.task}")
    path = resolve_data_path(config.data, config.split)
    docs = read_jsonl(path, config.limit, validate_raw_document)
    docs = [d for d in docs if d["text"]]
    if not docs:
        raise UsageError(f"{path}: no non-empty documents")
    if not config.model and not have_backend:
        raise UsageError("--model is required")
    return docs, str(path)


def _print_rows(title: str, rows: list[tuple[str, str]]) -> None:
    from rich.table import Table

    from ..console import err

    table = Table(title=title, show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    err.print(table)


@dataclass
class NllTask:
    name: str = "nll"
    version: int = 1
    kind: str = "likelihood"

    def evaluate(self, config, backend=None) -> dict:
        from ..console import progress
        from .generation import open_backend

        docs, source = _documents(config, backend is not None)
        per_doc: list[float] = []
        total_nll = 0.0
        total_tokens = 0
        truncated_tokens = 0
        truncated_docs = 0
        owned = backend is None
        if owned:
            backend = open_backend(config)
        try:
            with progress("eval nll", total=len(docs), unit="docs") as bar:
                step = max(1, config.batch_size)
                for start in range(0, len(docs), step):
                    batch = docs[start:start + step]
                    scores = backend.score([("", d["text"]) for d in batch])
                    for score in scores:
                        if score.n_tokens == 0:
                            continue
                        nll = -float(score.logprob)
                        per_doc.append(nll / score.n_tokens)
                        total_nll += nll
                        total_tokens += score.n_tokens
                        truncated_tokens += score.n_continuation_truncated
                        truncated_docs += score.n_continuation_truncated > 0
                    bar.advance(len(batch))
        finally:
            if owned:
                backend.close()
        if not per_doc:
            raise UsageError("no document produced a scored token")
        nll_per_token = math.fsum(per_doc) / len(per_doc)
        metrics = {
            "task": self.name,
            "task_version": self.version,
            "model": config.model or getattr(backend, "model_id", None),
            "backend": config.backend if owned else getattr(backend, "name", type(backend).__name__),
            "data": source,
            "nll_per_token": nll_per_token,
            "nll_per_token_weighted": total_nll / total_tokens,
            "perplexity_weighted": math.exp(total_nll / total_tokens),
            "n_documents": len(per_doc),
            "n_tokens": total_tokens,
            "n_tokens_truncated": truncated_tokens,
            "n_documents_truncated": truncated_docs,
        }
        _print_rows("nll (nats per token)", [
            ("nll per token (mean over docs)", f"{nll_per_token:.4f}"),
            ("nll per token (token-weighted)", f"{metrics['nll_per_token_weighted']:.4f}"),
            ("documents", str(len(per_doc))),
            ("tokens", f"{total_tokens:,}"),
            ("tokens truncated", f"{truncated_tokens:,}"),
        ])
        return metrics


@dataclass
class ElboTask:
    name: str = "elbo"
    version: int = 1
    kind: str = "likelihood"

    def evaluate(self, config, backend=None) -> dict:
        from .. import estep
        from ..chunking import ChunkingConfig, prefix_text
        from ..console import progress
        from .generation import open_backend

        ns = sorted(set(int(n) for n in config.elbo_n))
        if not ns or ns[0] < 1:
            raise UsageError("--elbo-n values must be positive integers")
        docs, source = _documents(config, backend is not None)
        k = ns[-1]
        sample_config = estep.SampleConfig(
            k=k,
            max_new_tokens=config.max_latent_tokens,
            temperature=1.0,
            top_p=1.0,
            prefix_chunks=None,
            seed=config.seed,
            score=True,
            docs_per_call=max(1, min(8, config.batch_size)),
            chunking=ChunkingConfig(mode="uniform", avg_units=config.elbo_avg_units),
        )
        raw_docs = [{"id": d.get("id"), "text": d["text"]} if d.get("id") is not None else {"text": d["text"]} for d in docs]
        per_doc: dict[int, list[float]] = {n: [] for n in ns}
        per_doc_no_latent: list[float] = []
        sums = {n: 0.0 for n in ns}
        total_tokens = 0
        total_no_latent = 0.0
        n_chunks = 0
        n_unfinished = 0
        n_suffix_cut = 0
        owned = backend is None
        if owned:
            backend = open_backend(config)
        try:
            with progress("eval elbo", total=len(raw_docs), unit="docs") as bar:
                for doc in estep.sample_candidates(backend, raw_docs, sample_config):
                    chunks = doc["chunks"]
                    pairs = [(prefix_text(chunks, i, None), c["text"]) for i, c in enumerate(chunks)]
                    raw_scores = backend.score(pairs)
                    doc_tokens = 0
                    doc_elbo = {n: 0.0 for n in ns}
                    doc_no_latent = 0.0
                    for chunk, raw in zip(chunks, raw_scores):
                        log_w = [float(c["log_w"]) for c in chunk["candidates"]]
                        for n in ns:
                            doc_elbo[n] += estep.elbo_n(log_w, n)
                        cut = int(chunk.get("num_suffix_token_truncated", 0))
                        n_suffix_cut += cut
                        doc_tokens += max(0, raw.n_tokens + raw.n_continuation_truncated - cut)
                        doc_no_latent += float(raw.logprob)
                        n_unfinished += sum(1 for c in chunk["candidates"] if not c["finished"])
                    n_chunks += len(chunks)
                    bar.advance()
                    if doc_tokens == 0:
                        continue
                    total_tokens += doc_tokens
                    total_no_latent += doc_no_latent
                    per_doc_no_latent.append(doc_no_latent / doc_tokens)
                    for n in ns:
                        sums[n] += doc_elbo[n]
                        per_doc[n].append(doc_elbo[n] / doc_tokens)
        finally:
            if owned:
                backend.close()
        if not total_tokens:
            raise UsageError("no document produced a scored raw token")
        n_docs = len(per_doc_no_latent)
        metrics: dict[str, Any] = {
            "task": self.name,
            "task_version": self.version,
            "model": config.model or getattr(backend, "model_id", None),
            "backend": config.backend if owned else getattr(backend, "name", type(backend).__name__),
            "data": source,
        }
        for n in ns:
            metrics[f"elbo_{n}_per_token"] = math.fsum(per_doc[n]) / n_docs
        for n in ns:
            metrics[f"elbo_{n}_per_token_weighted"] = sums[n] / total_tokens
        metrics.update(
            {
                "no_latent_log_p_per_token": math.fsum(per_doc_no_latent) / n_docs,
                "no_latent_log_p_per_token_weighted": total_no_latent / total_tokens,
                "n_documents": n_docs,
                "n_chunks": n_chunks,
                "n_raw_tokens": total_tokens,
                "samples_per_chunk": k,
                "n_latents_hit_max_tokens": n_unfinished,
                "n_suffix_tokens_truncated": n_suffix_cut,
                "max_latent_tokens": config.max_latent_tokens,
                "chunking": {"mode": "uniform", "avg_units": config.elbo_avg_units, "prefix": "all previous raw text"},
            }
        )
        rows = [(f"ELBO_{n} per token (mean over docs)", f"{metrics[f'elbo_{n}_per_token']:.4f}") for n in ns]
        rows += [
            ("log p without latents per token", f"{metrics['no_latent_log_p_per_token']:.4f}"),
            ("documents / chunks", f"{n_docs} / {n_chunks}"),
            ("raw tokens", f"{total_tokens:,}"),
            ("latents that hit the token limit", f"{n_unfinished:,}"),
        ]
        _print_rows("elbo (nats per raw token, higher is better)", rows)
        return metrics


def _register() -> None:
    from .registry import register_task

    register_task("nll", NllTask)
    register_task("elbo", ElboTask)


_register()
