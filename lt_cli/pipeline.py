"""The record-mapping driver shared by commands that turn one JSONL stream into another.

``map_records`` reads (with validation, sharding and ``--skip-bad``), applies a function to each
record, and writes the results atomically. Heavier stages (sample-thoughts, select, synthesize)
use the same reader/writer with resume and batching; ``lt chunk`` is the simplest user.
"""

from __future__ import annotations

from typing import Callable, Iterable

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
    """Map every record through ``fn``; returns the exit code (0, or 3 when records were rejected)."""
    from .commands.common import report_bad
    from .console import progress

    rejects_writer = RejectsWriter(rejects) if (skip_bad and rejects) else None
    reader = read_records(input_path, validate=validate, shard=parse_shard(shard), skip_bad=skip_bad, rejects=rejects_writer)
    try:
        with open_output(output_path, marker=marker, shard=shard) as writer, progress(description, unit="docs") as bar:
            for record in reader:
                result = fn(record)
                if result is None:
                    continue
                if isinstance(result, dict):
                    writer.write(result)
                else:
                    for item in result:
                        writer.write(item)
                bar.advance()
    finally:
        if rejects_writer is not None:
            rejects_writer.close()
    return report_bad(reader, rejects_writer)


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
