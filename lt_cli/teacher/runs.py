"""The runner of ``lt synthesize``: teacher synthesis wired to files, backend, cache and stderr.

Besides the records it reports what the run sent to the teacher (requests, prompt and completion
tokens, their cost at the given or tabled prices; :mod:`.accounting`) on stderr and, with
``-o FILE``, in ``FILE.stats.json``. ``--estimate`` counts the same requests offline, prints what
they would cost and sends nothing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Any, Iterable, Iterator

from .. import __version__
from ..errors import UsageError
from ..provenance import run_identity
from ..session import backend_session
from ..stream import run_stream
from .accounting import estimate, estimate_lines, prices_for, usage_line
from .config import SynthesizeRun
from .synthesize import SynthesisStats, synthesize

Record = dict[str, Any]
STATS_SUFFIX = "stats.json"


def run_synthesize(run: SynthesizeRun) -> int:
    """``lt synthesize`` (resumable with ``-o``); reports the latent/raw ratio, failures and usage on stderr."""
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
    prices = prices_for(backend_config.model, run.cost.input_price, run.cost.output_price, batch=run.api.batch)
    if run.cost.estimate:
        return _estimate(run, config, backend_name, backend_config, prices)
    stats = SynthesisStats()
    parameters: list[int | None] = []

    def produce(records: Iterable[Record], skip: int) -> Iterator[Record]:
        with backend_session(backend_name, backend_config, run.cache.path(run.stream.output), cache_label="teacher") as (backend, cache):
            yield from synthesize(backend, records, config, cache, skip=skip, stats=stats)
            if stats.records and backend_name != "api":  # the backend is loaded by then (the cache identity needs it)
                parameters.append(getattr(backend, "n_parameters", None))

    started = time.monotonic()
    sent = [0]

    def completion_tokens(record: Record) -> int:
        """The teacher's completion tokens since the last record (the progress line's tokens/s)."""
        total = stats.usage.usage.completion_tokens
        delta, sent[0] = total - sent[0], total
        return delta

    code = run_stream(
        run.stream, produce, validate=validate_document, description="synthesize", identity=run_identity("synthesize", run), outputs_per_input=config.passes,
        count_tokens=completion_tokens, token_unit="teacher tokens",
    )
    seconds = time.monotonic() - started
    usage = stats.usage.to_json(prices, parameters[0] if parameters else None)
    if stats.records:
        log(stats.line())
        if stats.failures():
            warn(f"{stats.failures():,} teacher output(s) were empty or cut at --max-new-tokens; they are stored as returned")
    log(usage_line(usage))
    path = run.stream.sidecar(STATS_SUFFIX)
    if path is not None:
        from ..files import write_json

        summary = {"records": stats.records, "outputs": stats.requests, "empty": stats.empty, "truncated": stats.truncated, "usage": usage}
        write_json(path, {"command": "synthesize", "stats": summary, "seconds": round(seconds, 3), "config": asdict(run), "lt_version": __version__})
    return code


def _estimate(run: SynthesizeRun, config, backend_name: str, backend_config, prices) -> int:
    """``--estimate``: count the requests offline (the cache's answers excluded), print, send nothing.

    The estimate goes to stderr as lines and to stdout as one JSON object (it is the command's data).
    """
    import orjson

    from ..console import err
    from ..files import write_stdout_bytes
    from ..io import read_records
    from ..records import validate_document
    from ..stream import report_bad

    cached_keys = _cache_lookup(run, config, backend_name, backend_config)
    reader = read_records(run.stream.input, validate=validate_document, shard=_shard(run), skip_bad=run.stream.skip_bad, limit=run.stream.limit)
    try:
        result = estimate(reader, config, run.cost.output_ratio, cached_keys=cached_keys)
    finally:
        if cached_keys is not None:
            cached_keys.close()
    data = result.to_json(
        prices, run.cost.output_ratio if run.cost.output_ratio is not None else _default_ratio(config), config.sampling_params().max_new_tokens
    )
    for line in estimate_lines(data):
        err.print(line, markup=False, highlight=False)
    write_stdout_bytes(orjson.dumps(data) + b"\n")  # a failed write names stdout
    return report_bad(reader, None)


def _default_ratio(config) -> float:
    from .accounting import DEFAULT_OUTPUT_RATIO

    return DEFAULT_OUTPUT_RATIO[config.method]


def _shard(run: SynthesizeRun):
    from ..io import parse_shard

    return parse_shard(run.stream.shard)


class _CachedKeys:
    """Which teacher requests an existing cache already answers (API backends only: the cache key
    holds the backend's identity, which for a local model needs the model loaded)."""

    def __init__(self, cache, identity: dict, params):
        self.cache = cache
        self.identity = identity
        self.params = params

    def __call__(self, requests) -> set[int]:
        from .requests import request_key

        keys = [request_key(self.identity, request, self.params) for request in requests]
        found = self.cache.get_many(keys)
        return {n for n, key in enumerate(keys) if key in found}

    def close(self) -> None:
        self.cache.close()


def _cache_lookup(run: SynthesizeRun, config, backend_name: str, backend_config) -> _CachedKeys | None:
    from pathlib import Path
    from types import SimpleNamespace

    from ..cache import SampleCache, backend_identity

    path = run.cache.path(run.stream.output)
    if backend_name != "api" or path is None or not Path(path).exists():
        return None
    # the identity an OpenAIBackend has, without building one (that needs an API key)
    identity = backend_identity(SimpleNamespace(name="api", model_id=backend_config.model, config=backend_config), sampling=True)
    return _CachedKeys(SampleCache(path), identity, config.sampling_params())
