"""The runner of ``lt synthesize``: teacher synthesis wired to files, backend, cache and stderr."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable, Iterator

from ..errors import UsageError
from ..provenance import run_identity
from ..session import backend_session
from ..stream import run_stream
from .config import SynthesizeRun
from .synthesize import SynthesisStats, synthesize

Record = dict[str, Any]


def run_synthesize(run: SynthesizeRun) -> int:
    """``lt synthesize`` (resumable with ``-o``); reports the latent/raw ratio and failures on stderr."""
    from ..backends import canonical_backend_name
    from ..console import log, warn
    from ..records import validate_document

    backend_name = canonical_backend_name(run.backend.backend)
    options: dict[str, Any] = {}
    if backend_name == "api":
        options["max_concurrency"] = run.api.max_concurrency
    if run.api.batch:
        if backend_name != "api":
            raise UsageError("--batch needs --backend api")
        if not run.stream.to_file:
            raise UsageError("--batch needs -o FILE (the batch ids are kept in FILE.batches.jsonl so a rerun re-attaches)")
        options.update(batch=True, batch_state=run.stream.output + ".batches.jsonl", batch_poll_interval_s=run.api.batch_poll_interval)
    config = run.synth
    if config.docs_per_call is None and run.api.batch:
        config = replace(config, docs_per_call=1_000_000)  # one Batch API job for the whole input
    backend_config = run.backend.config(options)
    stats = SynthesisStats()

    def produce(records: Iterable[Record], skip: int) -> Iterator[Record]:
        with backend_session(backend_name, backend_config, run.cache.path(run.stream.output), cache_label="teacher") as (backend, cache):
            yield from synthesize(backend, records, config, cache, skip=skip, stats=stats)

    code = run_stream(run.stream, produce, validate=validate_document, description="synthesize", identity=run_identity("synthesize", run))
    if stats.records:
        log(stats.line())
        if stats.failures():
            warn(f"{stats.failures():,} teacher output(s) were empty or cut at --max-new-tokens; they are stored as returned")
    return code
