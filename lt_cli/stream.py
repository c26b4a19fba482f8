"""The record-stream driver: read a JSONL stream, transform it, write it atomically and resumably.

Every command that turns one JSONL stream into another (``chunk``, ``synthesize``,
``sample-thoughts``, ``select``) runs through :func:`run_stream`: reading with validation,
``--shard``, ``--limit`` and ``--skip-bad`` (:mod:`lt_cli.io`), a progress line on stderr, and an
output that appears atomically, written by one process at a time (``FILE.lock``). With ``-o FILE``
and ``resume`` the output is resumable: records already in ``FILE.partial`` from a killed run are
kept, and the producer is told how many outputs to skip, but only when the partial was written by
the same command with the same settings from the same input (``identity``, see
:mod:`lt_cli.provenance`); ``--restart`` discards it instead. :class:`StreamArgs` is the flag group
these commands share.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from .flags import flag
from .io import RejectsWriter, Record, Validator, check_input_file, parse_shard, read_records
from .paths import is_device, is_std
from .nofollow import check_plain_file
from .output import open_output


@dataclass
class StreamArgs:
    """Where a stream command reads and writes (the flags every stream command shares)."""

    #: input JSONL (.gz ok); None or '-' reads stdin
    input: str | None = field(default=None, metadata=flag(positional=True))
    #: output JSONL (.gz ok), written atomically; None writes stdout
    output: str | None = None
    #: only records I mod N of the input, as "I/N"
    shard: str | None = None
    #: only the first N input records (before sharding)
    limit: int | None = None
    #: set malformed records aside instead of stopping (exit code 3 when any)
    skip_bad: bool = False
    #: where --skip-bad writes rejected lines (default OUTPUT.rejects.jsonl or ./lt-rejects.jsonl)
    rejects: str | None = None
    #: discard a leftover OUTPUT.partial instead of resuming it (needed when it was written by a
    #: different run: other settings or another input)
    restart: bool = False

    def __post_init__(self) -> None:
        from .errors import UsageError

        if self.limit is not None and self.limit < 0:
            raise UsageError(f"--limit must be >= 0, got {self.limit}")
        parse_shard(self.shard)  # a bad --shard fails before anything else

    @property
    def to_file(self) -> bool:
        """A regular output file (sidecars, cache, resume); not stdout, ``/dev/null`` or a pipe."""
        return self.output is not None and self.output != "-" and not is_device(self.output)

    def rejects_path(self) -> str:
        if self.rejects:
            return self.rejects
        return self.output + ".rejects.jsonl" if self.to_file else "lt-rejects.jsonl"

    def sidecar(self, suffix: str) -> str | None:
        """``OUTPUT.suffix`` next to a file output (stats, cache); None on stdout."""
        return f"{self.output}.{suffix}" if self.to_file else None


Producer = Callable[[Iterable[Record], int], Iterable[Record]]


def run_stream(
    args: StreamArgs,
    produce: Producer,
    *,
    validate: Validator | None,
    description: str = "records",
    on_resumed: Callable[[list[Record]], None] | None = None,
    resume: bool = True,
    marker: bool = False,
    identity: dict[str, Any] | None = None,
    count_tokens: Callable[[Record], int] | None = None,
    token_unit: str = "tokens",
    outputs_per_input: int = 1,
) -> int:
    """Read ``args.input``, write ``produce(records, skip)`` to ``args.output``; the exit code.

    ``produce`` gets the validated record stream and the number of outputs already in the
    ``.partial`` file of an interrupted run (0 otherwise); it must not yield those again.
    ``on_resumed`` sees the resumed records (for summaries). ``marker`` writes the completion
    marker that ``lt merge`` checks (always on with ``--shard``). ``identity``
    (:func:`lt_cli.provenance.run_identity` of the command and its config) is saved with a
    resumable partial, together with the input's content hash, and a partial of another run is
    refused. The progress line counts output records against the input's record count (counted in
    a thread, so a large input costs no waiting; unknown for stdin), and ``count_tokens(record)``
    adds a tokens/s figure (``token_unit``). Returns 0, or 3 when ``--skip-bad`` set records aside.
    """
    from .console import log, progress

    if not is_std(args.input):
        check_input_file(args.input)  # before the output is touched
    if args.skip_bad and not is_device(args.rejects_path()):
        check_plain_file(args.rejects_path())  # a link planted there: refused before any work
    rejects_writer = RejectsWriter(args.rejects_path()) if args.skip_bad else None
    shard = parse_shard(args.shard)
    reader = read_records(args.input, validate=validate, shard=shard, skip_bad=args.skip_bad, rejects=rejects_writer, limit=args.limit)

    def full_identity() -> dict[str, Any]:
        from .provenance import file_identity

        return {**(identity or {}), "input": file_identity(args.input)}

    with_identity = resume and args.to_file and identity is not None
    try:
        with open_output(args.output, resume=resume, marker=marker, shard=shard, identity=full_identity if with_identity else None,
                         restart=args.restart) as writer, progress(description, unit="docs", token_unit=token_unit) as bar:
            count_total(bar, args.input, limit=args.limit, shard=shard, per_input=outputs_per_input)
            if writer.done:
                log(f"{description}: resuming after {writer.done:,} finished record(s) in {writer.partial_path}")
                bar.resume(writer.done)
                if on_resumed is not None:
                    on_resumed(writer.resumed_records)
            for record in produce(reader, writer.done):
                writer.write(record)
                bar.advance(tokens=count_tokens(record) if count_tokens is not None else None)
    finally:
        if rejects_writer is not None:
            rejects_writer.close()
    return report_bad(reader, rejects_writer)


def count_total(bar: Any, path: str | None, *, limit: int | None, shard: Any, per_input: int = 1) -> None:
    """Give ``bar`` its total once a thread has counted the input's records (files only)."""
    import threading

    from .io import count_records

    def count() -> None:
        total = count_records(path, limit=limit, shard=shard)
        if total is not None:
            bar.set_total(total * per_input)

    if is_std(path) or is_device(path):
        return
    try:
        small = os.path.getsize(path) < SYNC_COUNT_BYTES
    except OSError:
        return
    if small:
        count()
    else:
        threading.Thread(target=count, name="lt-count-input", daemon=True).start()


#: inputs smaller than this are counted before the first record (a few milliseconds)
SYNC_COUNT_BYTES = 64 << 20


def map_records(
    args: StreamArgs,
    fn: Callable[[Record], Record | Iterable[Record] | None],
    *,
    validate: Validator | None = None,
    description: str = "records",
    marker: bool = False,
) -> int:
    """:func:`run_stream` without resume: every record through ``fn`` (a record, several, or None)."""

    def produce(records: Iterable[Record], skip: int) -> Iterator[Record]:
        for record in records:
            result = fn(record)
            if result is None:
                continue
            if isinstance(result, dict):
                yield result
            else:
                yield from result

    return run_stream(args, produce, validate=validate, description=description, resume=False, marker=marker)


def report_bad(reader: Any, rejects: RejectsWriter | None) -> int:
    """After a ``--skip-bad`` run: say how many records were rejected; return the exit code (0 or 3)."""
    from .console import warn

    if reader.bad_count:
        where = f" (see {rejects.path})" if rejects is not None and rejects.count else ""
        warn(f"{reader.bad_count} malformed record(s) skipped{where}")
        return 3
    return 0
