"""The record-stream drivers shared by commands that turn one JSONL stream into another.

* :func:`map_records` reads (with validation, sharding and ``--skip-bad``), applies a function to
  each record, and writes the results atomically; ``lt chunk`` uses it.
* :func:`run_stream` is the same loop for the heavier stages (``synthesize``, ``sample-thoughts``,
  ``select``), plus resume: records already in ``FILE.partial`` are kept and the producer is told
  how many outputs to skip.
* :class:`LazyBackend` defers loading a model until the first record needs it, so bad input fails
  before a model loads.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from .chunking import ChunkingConfig, chunk_record
from .io import RejectsWriter, Record, Validator, open_output, parse_shard, read_records
from .records import validate_raw_document


def map_records(
    input_path: str | None,
    output_path: str | None,
    fn: Callable[[Record], Record | Iterable[Record] | None],
    *,
    validate: Validator | None = None,
    shard: str | None = None,
    skip_bad: bool = False,
    rejects: str | None = None,
    description: str = "records",
    marker: bool = False,
) -> int:
    """Map every record through ``fn`` (a record, several, or None to drop it); no resume.

    Returns the exit code (0, or 3 when records were rejected).
    """

    def produce(records: Iterable[Record], skip: int) -> Iterator[Record]:
        for record in records:
            result = fn(record)
            if result is None:
                continue
            if isinstance(result, dict):
                yield result
            else:
                yield from result

    return run_stream(
        input_path, output_path, produce, validate=validate, shard=shard, skip_bad=skip_bad, rejects=rejects,
        description=description, resume=False, marker=marker,
    )


def run_stream(
    input_path: str | None,
    output_path: str | None,
    produce: Callable[[Iterable[Record], int], Iterable[Record]],
    *,
    validate: Validator | None,
    shard: str | None = None,
    skip_bad: bool = False,
    rejects: str | None = None,
    description: str = "records",
    on_resumed: Callable[[list[Record]], None] | None = None,
    resume: bool = True,
    marker: bool = False,
) -> int:
    """Read, transform and write a JSONL stream: the driver of synthesize, sample-thoughts and select.

    With ``-o FILE`` (and ``resume``) the output is resumable: records already in ``FILE.partial``
    from a killed run are kept and ``produce`` is told to skip that many outputs. ``marker`` writes
    the completion marker that ``lt merge`` checks (always on with ``shard``). Returns the exit
    code (0, or 3 when ``--skip-bad`` set records aside).
    """
    from .commands.common import report_bad
    from .console import log, progress

    rejects_writer = RejectsWriter(rejects) if (skip_bad and rejects) else None
    shard_spec = parse_shard(shard)
    reader = read_records(input_path, validate=validate, shard=shard_spec, skip_bad=skip_bad, rejects=rejects_writer)
    try:
        with open_output(output_path, resume=resume, marker=marker, shard=shard_spec) as writer, progress(description, unit="docs") as bar:
            if writer.done:
                log(f"{description}: resuming after {writer.done:,} finished record(s) in {writer.partial_path}")
                bar.advance(writer.done)
                if on_resumed is not None:
                    on_resumed(writer.resumed_records)
            for record in produce(reader, writer.done):
                writer.write(record)
                bar.advance()
    finally:
        if rejects_writer is not None:
            rejects_writer.close()
    return report_bad(reader, rejects_writer)


@contextmanager
def backend_session(backend_name: str, backend_config, cache_path: str | None, *, cache_label: str | None = None) -> Iterator[tuple["LazyBackend", Any]]:
    """A lazily loaded backend and the (optional) sample cache, both closed on exit.

    The producers of synthesize, sample-thoughts and select run inside one; with ``cache_label``
    the cache's hit and miss counts go to stderr when it closes.
    """
    from .console import log
    from .sample_cache import open_cache

    backend = LazyBackend(backend_name, backend_config)
    cache = open_cache(cache_path)
    try:
        yield backend, cache
    finally:
        if cache is not None:
            if cache_label is not None:
                log(f"{cache_label} cache {cache.path}: {cache.hits:,} hits, {cache.misses:,} misses")
            cache.close()
        backend.close()


class LazyBackend:
    """Loads the backend on first use, so malformed input in the first group of records is reported
    before a model is loaded (and ``close`` of a never-used backend costs nothing)."""

    def __init__(self, name: str, config):
        self._name = name
        self._config = config
        self._backend = None

    def _get(self):
        if self._backend is None:
            from .backends import load_backend

            self._backend = load_backend(self._name, self._config)
        return self._backend

    def __getattr__(self, attribute: str):
        return getattr(self._get(), attribute)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()


def chunk_documents(
    input_path: str | None,
    output_path: str | None,
    config: ChunkingConfig = ChunkingConfig(),
    *,
    shard: str | None = None,
    skip_bad: bool = False,
    rejects: str | None = None,
) -> int:
    """``lt chunk`` as a function: add ``num_chunks`` and ``chunks`` to every raw document."""
    return map_records(
        input_path,
        output_path,
        lambda record: chunk_record(record, config),
        validate=validate_raw_document,
        shard=shard,
        skip_bad=skip_bad,
        rejects=rejects,
        description="chunk",
        marker=bool(shard),
    )
