"""Teacher synthesis: every request a group of documents needs, asked once, cached, put back in order.

The reply of a ``latent`` request is stored verbatim as ``chunks[i].latent`` (chunks marked
``latent_fixed`` keep their given latent and cost no request); WRAP outputs go to the document's
``latent`` field (train them with ``--layout pure``). Every request is seeded from (seed, document
id, chunk, pass) and cached by (backend identity, messages, sampling parameters, pass, seed), so a
rerun or a resumed run costs nothing. Documents go to the backend in fixed groups, so a resumed run
re-issues exactly the requests of the interrupted group (served by the cache).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator

from ..backends.base import FINISH_LENGTH, Usage
from ..cache import backend_identity, cache_through, same_sampler
from ..chunking import ensure_chunks
from ..errors import LtError
from ..records import document_text
from .accounting import TeacherUsage
from .config import SynthesizeConfig
from .requests import request_key, requests_for

Record = dict[str, Any]
_WORD = re.compile(r"\S+")


@dataclass
class SynthesisStats:
    """Counts for the stderr report: outputs, failures, and the latent/raw size ratio."""

    records: int = 0
    requests: int = 0
    empty: int = 0
    truncated: int = 0
    latent_units: int = 0
    raw_units: int = 0
    unit: str = "words"
    #: what this run sent (cache hits and resumed records cost nothing)
    usage: TeacherUsage = field(default_factory=TeacherUsage)

    def count_usage(self, backend, samples: list) -> None:
        """After a backend call: the API backend's billed totals, or the local replies' own counts."""
        billed = getattr(backend, "usage", None)
        if isinstance(billed, Usage):
            self.usage.set_billed(billed)
        else:
            self.usage.add_samples(samples)
        http = getattr(backend, "http_stats", None)  # an HTTP backend's attempts, retries by cause, requests given up
        if http is not None:
            self.usage.http = asdict(http)

    def failures(self) -> int:
        return self.empty + self.truncated

    def line(self) -> str:
        ratio = self.latent_units / self.raw_units if self.raw_units else float("nan")
        return (
            f"synthesize: {self.records:,} records, {self.requests:,} teacher outputs, latent/raw {self.unit} "
            f"ratio {ratio:.2f}, failures {self.failures():,} ({self.empty:,} empty, {self.truncated:,} hit max tokens)"
        )


def _counter(backend) -> tuple[str, Callable[[str], int]]:
    """Token counts with the backend's tokenizer when it exposes one; word counts otherwise."""
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is not None and hasattr(tokenizer, "encode"):
        return "tokens", lambda text: len(tokenizer.encode(text, add_special_tokens=False))
    return "words", lambda text: len(_WORD.findall(text))


def _teacher_group(backend, docs: list[Record], config: SynthesizeConfig, cache, stats: SynthesisStats | None, count) -> list[Record]:
    """All output records of a group of documents (``passes`` per document, in order)."""
    params = config.sampling_params()
    identity = backend_identity(backend, sampling=True) if cache is not None else None
    requests = [request for d, doc in enumerate(docs) for request in requests_for(doc, config, d)]
    if cache is not None:
        for request in requests:
            request.key = request_key(identity, request, params)

    def ask(missing: list[int]) -> list[dict]:
        results = backend.chat([requests[n].messages for n in missing], params, seeds=[[requests[n].seed] for n in missing])
        if len(results) != len(missing):
            raise LtError(f"backend returned {len(results)} results for {len(missing)} conversations")
        if stats is not None:
            stats.count_usage(backend, [samples[0] for samples in results])
        return [{"text": samples[0].text, "finished": samples[0].finish_reason != FINISH_LENGTH} for samples in results]

    replies = cache_through(cache, "teacher", [r.key for r in requests], ask, keys_still_hold=same_sampler(backend, identity))
    records: list[Record] = []
    for d, doc in enumerate(docs):
        for p in range(config.passes):
            in_pass = [(request, reply) for request, reply in zip(requests, replies) if request.doc == d and request.pass_index == p]
            out = dict(doc)
            if config.method == "latent":
                out["chunks"] = [dict(c) for c in doc["chunks"]]
                for request, reply in in_pass:
                    out["chunks"][request.chunk]["latent"] = reply["text"]
                if config.passes > 1:
                    out["pass"] = p
            else:
                [(request, reply)] = in_pass
                out["latent"] = reply["text"]
                out["wrap_style"] = request.style
                out["pass"] = p
            records.append(out)
            if stats is not None:
                stats.records += 1
                for request, reply in in_pass:
                    stats.requests += 1
                    stats.empty += not reply["text"].strip()
                    stats.truncated += not reply["finished"]
                    stats.latent_units += count(reply["text"])
                    source = doc["chunks"][request.chunk]["text"] if request.chunk >= 0 else document_text(doc)
                    stats.raw_units += count(source)
    return records


def synthesize(
    backend, documents: Iterable[Record], config: SynthesizeConfig, cache=None, *, skip: int = 0, stats: SynthesisStats | None = None
) -> Iterator[Record]:
    """Output records in input order (``passes`` per document); the first ``skip`` are not yielded.

    Documents are handled in fixed groups of ``docs_per_call`` (one backend call per group), so a
    resumed run re-issues exactly the requests of the interrupted group (served by the cache).
    """
    counter: list = []

    def count(text: str) -> int:
        if not counter:  # asked only once a group is done, so the backend loads after reading input
            unit, fn = _counter(backend)
            counter.append(fn)
            if stats is not None:
                stats.unit = unit
        return counter[0](text)

    per_doc = config.passes
    size = config.group_size()
    block: list[Record] = []
    start = 0

    def flush(start: int, block: list[Record]) -> Iterator[Record]:
        first_output = start * per_doc
        if first_output + len(block) * per_doc <= skip:
            return
        docs = [ensure_chunks(record, config.chunking) if config.method == "latent" else dict(record) for record in block]
        for offset, record in enumerate(_teacher_group(backend, docs, config, cache, stats, count)):
            if first_output + offset >= skip:
                yield record

    for index, record in enumerate(documents):
        if not block:
            start = index
        block.append(record)
        if len(block) == size:
            yield from flush(start, block)
            block = []
    if block:
        yield from flush(start, block)
