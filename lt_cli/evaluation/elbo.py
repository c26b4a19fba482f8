"""``--task elbo``: ELBO_n per raw token of held-out documents (the reference's
``apps/main/eval.py``, ``compute_elbo``).

Each document is first cut to ``context - 3`` tokens (:mod:`.doccut`), then chunked uniformly
(``ceil(sentences / 8)`` chunks). For every chunk the E-step library draws K = max(n) latents from
the model's posterior with ALL previous raw text as the prefix, at T=1, and scores the joint
string, so ``log_w = log p(Z, X_i | X_<i) - log q(Z | X_<i, X_i)``. ELBO_n of a chunk is
``logsumexp(log_w[:n]) - log n`` (IWAE bound, increasing in n in expectation); a document's
ELBO_n is the sum over its chunks, divided by its raw-token count. Sampling and weighting are
:mod:`lt_cli.estep`'s, never re-implemented here.

Two modes, because lt's E-step fixes two reference quirks:

* default: lt's E-step prompts (every chunk's posterior prompt has the ``<SoL><EoL>`` boundary;
  log p includes the first ``<SoL>``), and the raw-token count is that of the chunks as scored
  (chunk tokens after the raw prefix, minus suffix tokens the joint strings had to cut), the same
  tokenization as the log-probabilities it divides.
* ``reference_quirks``: the reference's numbers exactly (``apps/main/eval.py``, ``compute_elbo``):
  the E-step with its quirks (first chunk prompted as ``text <SoL><POST>``, log p skips the first
  ``<SoL>``, posterior prompts cut to their last 1,024 tokens), and the count is the whole cut
  document's token count minus the cut suffix tokens.

Reported: the mean over documents of the per-document value per token (the headline, in nats;
higher is better; ``elbo_4_per_token`` is the paper's plotted figure), the token-weighted value
(``*_weighted``), and ``no_latent_log_p_per_token``, the chunked log-likelihood of the same text
with the same prefixes and no latents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from .likelihood import backend_name, cut_documents, print_rows, read_documents, write_log

Record = dict[str, Any]

#: the reference's posterior prompts are left-truncated to this many tokens (vLLM
#: ``truncate_prompt_tokens`` = 2048 - 1024). ``reference_quirks`` reproduces the cut (the E-step's
#: prompt budget, ``estep.SampleConfig.prompt_budget``), except that lt keeps BOS as the first of the
#: 1,024 tokens where vLLM drops it; the prompts that were cut are counted
#: (``n_posterior_prompts_over_1024_tokens``: with none, the numbers are exactly the reference's)
REFERENCE_POSTERIOR_PROMPT_TOKENS = 1024


def _candidate_log(candidate: dict) -> dict:
    return {k: candidate.get(k) for k in ("latent", "log_q", "log_p", "log_w", "finished", "n_tokens")}


@dataclass
class ElboTask:
    name: str = "elbo"
    version: int = 2
    kind: str = "likelihood"

    def evaluate(self, config, backend=None) -> dict:
        from .. import estep, formats
        from ..chunking import ChunkingConfig, prefix_text
        from ..console import progress
        from .generation import open_backend

        ns = sorted(set(int(n) for n in config.elbo_n))
        if not ns or ns[0] < 1:
            raise UsageError("--elbo-n values must be positive integers")
        docs, source = read_documents(config, backend is not None)
        quirks = bool(config.reference_quirks)
        sample_config = estep.SampleConfig(
            k=ns[-1],
            max_new_tokens=config.max_latent_tokens,
            temperature=1.0,
            top_p=1.0,
            prefix_chunks=None,
            seed=config.seed,
            score=True,
            reference_quirks=quirks,
            docs_per_call=max(1, min(8, config.batch_size)),
            chunking=ChunkingConfig(mode="uniform", avg_units=config.elbo_avg_units),
        )
        per_doc: dict[int, list[float]] = {n: [] for n in ns}
        per_doc_no_latent: list[float] = []
        sums = {n: 0.0 for n in ns}
        total_tokens = 0
        total_no_latent = 0.0
        n_chunks = n_unfinished = n_suffix_cut = n_long_prompts = 0
        log: list[Record] = []
        owned = backend is None
        if owned:
            backend = open_backend(config)
        try:
            docs, cut_report = cut_documents(docs, backend, config)
            count_tokens = None
            if quirks:
                from .modelinfo import model_info

                count_tokens = model_info(backend, config.model, max_model_len=config.max_model_len).count_tokens
            raw_docs = [{"id": d["id"], "text": d["text"]} if d.get("id") is not None else {"text": d["text"]} for d in docs]
            with progress("eval elbo", total=len(raw_docs), unit="docs", token_unit="latent tokens") as bar:
                for index, doc in enumerate(estep.sample_candidates(backend, raw_docs, sample_config)):
                    chunks = doc["chunks"]
                    pairs = [(prefix_text(chunks, i, None), c["text"]) for i, c in enumerate(chunks)]
                    if quirks:  # the reference divides by the whole document's token count
                        pairs.append(("", doc["text"]))
                    raw_scores = backend.score(pairs)
                    whole = raw_scores.pop() if quirks else None
                    chunk_tokens = 0
                    doc_cut = 0
                    doc_elbo = {n: 0.0 for n in ns}
                    doc_no_latent = 0.0
                    chunk_logs = []
                    for i, (chunk, raw) in enumerate(zip(chunks, raw_scores)):
                        log_w = [float(c["log_w"]) for c in chunk["candidates"]]
                        for n in ns:
                            doc_elbo[n] += estep.elbo_n(log_w, n)
                        cut = int(chunk.get("num_suffix_token_truncated", 0))
                        doc_cut += cut
                        chunk_tokens += max(0, raw.n_tokens + raw.n_continuation_truncated - cut)
                        doc_no_latent += float(raw.logprob)
                        n_unfinished += sum(1 for c in chunk["candidates"] if not c["finished"])
                        if count_tokens is not None:
                            prompt = formats.posterior_prompt(pairs[i][0], chunk["text"], reference_quirks=True)
                            n_long_prompts += count_tokens(prompt) > REFERENCE_POSTERIOR_PROMPT_TOKENS
                        if config.log_samples:
                            chunk_logs.append({"text": chunk["text"], "num_suffix_token_truncated": cut,
                                               "num_prefix_token_truncated": int(chunk.get("num_prefix_token_truncated", 0)),
                                               "candidates": [_candidate_log(c) for c in chunk["candidates"]]})
                    n_suffix_cut += doc_cut
                    n_chunks += len(chunks)
                    bar.advance(tokens=sum(int(c.get("n_tokens") or 0) for chunk in chunks for c in chunk.get("candidates") or []))
                    doc_tokens = max(0, whole.n_tokens + whole.n_continuation_truncated - doc_cut) if quirks else chunk_tokens
                    if config.log_samples:
                        line = {"index": index, **({"id": doc["id"]} if "id" in doc else {}), "text": doc["text"],
                                "n_text_tokens": docs[index]["n_text_tokens"], "n_tokens_cut": docs[index]["n_tokens_cut"],
                                "n_elbo_tokens": doc_tokens, "no_latent_log_p": doc_no_latent}
                        line.update({f"elbo_{n}": doc_elbo[n] for n in ns})
                        line.update({f"elbo_{n}_per_token": doc_elbo[n] / doc_tokens if doc_tokens else None for n in ns})
                        line["chunks"] = chunk_logs
                        log.append(line)
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
        write_log(config.log_samples, log)
        n_docs = len(per_doc_no_latent)
        metrics: dict[str, Any] = {
            "task": self.name,
            "task_version": self.version,
            "model": config.model or getattr(backend, "model_id", None),
            "backend": backend_name(config, backend, owned),
            "data": source,
            "reference_quirks": quirks,
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
                "raw_token_count": "whole document minus cut suffix tokens" if quirks else "chunk tokens as scored",
                "samples_per_chunk": ns[-1],
                "n_latents_hit_max_tokens": n_unfinished,
                "n_suffix_tokens_truncated": n_suffix_cut,
                "max_latent_tokens": config.max_latent_tokens,
                **cut_report,
                "chunking": {"mode": "uniform", "avg_units": config.elbo_avg_units, "prefix": "all previous raw text"},
            }
        )
        if quirks:
            metrics["n_posterior_prompts_over_1024_tokens"] = n_long_prompts
        rows = [(f"ELBO_{n} per token (mean over docs)", f"{metrics[f'elbo_{n}_per_token']:.4f}") for n in ns]
        rows += [
            ("log p without latents per token", f"{metrics['no_latent_log_p_per_token']:.4f}"),
            ("documents / chunks", f"{n_docs} / {n_chunks}"),
            ("raw tokens", f"{total_tokens:,}"),
            ("documents cut to max_doc_tokens", f"{cut_report['n_documents_cut']:,}"),
            ("latents that hit the token limit", f"{n_unfinished:,}"),
        ]
        print_rows("elbo (nats per raw token, higher is better)" + (", reference quirks" if quirks else ""), rows)
        return metrics


def _register() -> None:
    from .registry import register_task

    register_task("elbo", ElboTask)


_register()
