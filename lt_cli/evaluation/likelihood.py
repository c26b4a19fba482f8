"""Held-out likelihood tasks on raw documents, as the reference validates: ``nll`` here,
``elbo`` in :mod:`.elbo`.

Both first cut every document to ``context - 3`` tokens (``--max-doc-tokens``; :mod:`.doccut`
says why), as the reference does before its validation NLL and ELBO.

``nll``: negative log-likelihood per token of each (cut) document's raw text, BOS then text;
tokens beyond the model's context are not scored and are counted (``n_tokens_truncated``; only
possible with ``--max-doc-tokens 0``). Reported: the mean over documents of the per-document NLL
per token (the headline, in nats; lower is better) and the token-weighted value
(``*_weighted``). The reference computes the same mean but reports it with the opposite sign under
the name ``nll_per_token`` (a mean log-likelihood); ``--reference-quirks`` changes nothing here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

Record = dict[str, Any]


def read_documents(config, have_backend: bool = False) -> tuple[list[Record], str]:
    """The non-empty raw documents of ``--data`` (first ``--limit``), and where they came from."""
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


def cut_documents(docs: list[Record], backend, config) -> tuple[list[Record], dict]:
    """Documents cut to the token limit (``text`` replaced, ``n_text_tokens``/``n_tokens_cut``
    added) and the report of the cut."""
    from .doccut import document_cutter
    from .modelinfo import model_info

    info = model_info(backend, config.model, max_model_len=config.max_model_len)
    cutter = document_cutter(backend, config.model, config.max_doc_tokens, info.context_length)
    out = []
    for doc in docs:
        cut = cutter.cut(doc["text"])
        out.append({**doc, "text": cut.text, "n_text_tokens": cut.n_tokens, "n_tokens_cut": cut.n_tokens_cut})
    report = {
        "max_doc_tokens": cutter.limit if cutter.active else None,
        "n_documents_cut": sum(1 for d in out if d["n_tokens_cut"] > 0),
        "n_tokens_cut": sum(d["n_tokens_cut"] for d in out),
    }
    return out, report


def print_rows(title: str, rows: list[tuple[str, str]]) -> None:
    from rich.table import Table

    from ..console import err

    table = Table(title=title, show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    err.print(table)


def write_log(path: str | None, lines: list[Record]) -> None:
    """``--log-samples``: one JSONL line per document (written atomically at the end)."""
    if not path:
        return
    from ..output import open_output

    with open_output(path, flag="--log-samples") as writer:
        for line in lines:
            writer.write(line)


def backend_name(config, backend, owned: bool) -> str:
    return config.backend if owned else getattr(backend, "name", type(backend).__name__)


@dataclass
class NllTask:
    name: str = "nll"
    version: int = 2
    kind: str = "likelihood"

    def evaluate(self, config, backend=None) -> dict:
        from ..console import progress
        from .generation import open_backend

        docs, source = read_documents(config, backend is not None)
        per_doc: list[float] = []
        total_nll = 0.0
        total_tokens = 0
        truncated_tokens = 0
        truncated_docs = 0
        owned = backend is None
        if owned:
            backend = open_backend(config)
        log: list[Record] = []
        try:
            docs, cut_report = cut_documents(docs, backend, config)
            with progress("eval nll", total=len(docs), unit="docs", token_unit="scored tokens") as bar:
                step = max(1, config.batch_size)
                for start in range(0, len(docs), step):
                    batch = docs[start:start + step]
                    scores = backend.score([("", d["text"]) for d in batch])
                    for offset, (doc, score) in enumerate(zip(batch, scores)):
                        if score.n_tokens == 0:
                            continue
                        nll = -float(score.logprob)
                        per_doc.append(nll / score.n_tokens)
                        total_nll += nll
                        total_tokens += score.n_tokens
                        truncated_tokens += score.n_continuation_truncated
                        truncated_docs += score.n_continuation_truncated > 0
                        if config.log_samples:
                            log.append({"index": start + offset, **({"id": doc["id"]} if "id" in doc else {}), "text": doc["text"],
                                       "n_text_tokens": doc["n_text_tokens"], "n_tokens_cut": doc["n_tokens_cut"],
                                       "n_tokens_scored": score.n_tokens, "nll": nll, "nll_per_token": nll / score.n_tokens})
                    bar.advance(len(batch), tokens=sum(score.n_tokens for score in scores))
        finally:
            if owned:
                backend.close()
        if not per_doc:
            raise UsageError("no document produced a scored token")
        write_log(config.log_samples, log)
        nll_per_token = math.fsum(per_doc) / len(per_doc)
        metrics = {
            "task": self.name,
            "task_version": self.version,
            "model": config.model or getattr(backend, "model_id", None),
            "backend": backend_name(config, backend, owned),
            "data": source,
            "nll_per_token": nll_per_token,
            "nll_per_token_weighted": total_nll / total_tokens,
            "perplexity_weighted": math.exp(total_nll / total_tokens),
            "n_documents": len(per_doc),
            "n_tokens": total_tokens,
            "n_tokens_truncated": truncated_tokens,
            "n_documents_truncated": truncated_docs,
            **cut_report,
        }
        print_rows("nll (nats per token)", [
            ("nll per token (mean over docs)", f"{nll_per_token:.4f}"),
            ("nll per token (token-weighted)", f"{metrics['nll_per_token_weighted']:.4f}"),
            ("documents", str(len(per_doc))),
            ("tokens", f"{total_tokens:,}"),
            ("documents cut to max_doc_tokens", f"{cut_report['n_documents_cut']:,}"),
        ])
        return metrics


def _register() -> None:
    from .registry import register_task

    register_task("nll", NllTask)


_register()
