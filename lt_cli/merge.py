"""Merge the outputs of a sharded run (``--shard I/N``) into one file, refusing anything incomplete.

Why this exists: at cluster scale a stage runs as N independent jobs (an array job, 200 GPUs),
each writing ``OUT.I.jsonl``. A job that was killed, preempted or is still running leaves a missing
or half-written shard, and concatenating whatever is there would silently give a smaller dataset.
So every shard must carry the completion marker that :class:`lt_cli.output.OutputWriter` writes after
its atomic rename (``FILE.done``: record count, sha256 of the file, and ``shard: "I/N"``), and the
merge re-checks the count and the hash while it streams the file.

Merge order (``order="interleave"``, the default): ``--shard I/N`` keeps input records
``I, I+N, I+2N, ...``, so output record ``j`` of the unsharded run is record ``j // N`` of shard
``j % N``. Taking one record from each shard in turn (round-robin, shard 0 first) therefore gives
exactly the unsharded run's record order, for every stage that writes one record per input record
(all of lt's sharded stages do). Shard counts must then look like ``[m+1, ..., m+1, m, ..., m]``;
anything else (a stage that dropped records under ``--skip-bad``, shards of different runs) is an
error, because the interleaved order would no longer be the unsharded one. ``order="concat"``
writes shard 0, then shard 1, ... (for shards that are not a round-robin split of one input).

Shard order comes from the markers' ``shard`` field when every marker has one (so a shell glob that
sorts ``10`` before ``2`` cannot scramble the result); otherwise from the order given (globs are
sorted naturally: ``x.2`` before ``x.10``).
"""

from __future__ import annotations

import glob as globlib
import gzip
import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

import orjson

from .errors import LtError, UsageError
from .files import read_json
from .io import parse_shard
from .output import open_output

ORDERS = ("interleave", "concat")


class ShardError(LtError):
    """A shard is missing, incomplete, changed after it was written, or does not fit the others:
    the input is unusable (exit 2, like every missing or malformed input)."""

    exit_code = 2


@dataclass
class ShardInfo:
    """One shard file as its completion marker describes it."""

    path: Path
    records: int
    sha256: str
    #: index and count from the marker's ``shard`` field (None when the marker has none)
    index: int | None = None
    count: int | None = None


@dataclass
class MergeResult:
    output: str | None
    order: str
    records: int
    shards: list[ShardInfo] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "output": self.output,
            "order": self.order,
            "records": self.records,
            "num_shards": len(self.shards),
            "shards": [{"path": str(s.path), "records": s.records, "shard": f"{s.index}/{s.count}" if s.index is not None else None} for s in self.shards],
        }


def marker_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".done")


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def expand_shard_paths(specs: list[str], num_shards: int | None = None) -> list[Path]:
    """Turn the command line's SHARD arguments into the list of shard files.

    * ``OUT.{i}.jsonl`` (any ``str.format`` field named ``i``, e.g. ``{i:03d}``) with ``num_shards``:
      shards 0..N-1 (``{n}`` is N);
    * a glob (``OUT.*.jsonl``): the matching files (not markers or partials), naturally sorted;
    * plain paths: as given.
    With ``num_shards`` the total must come out to N, so a missing shard is reported by number.
    """
    if not specs:
        raise UsageError("no shards given: pass the shard files, a glob, or a pattern with {i} and --num-shards")
    if num_shards is not None and num_shards < 1:
        raise UsageError("--num-shards must be >= 1")
    paths: list[Path] = []
    for spec in specs:
        if "{i" in spec:
            if num_shards is None:
                raise UsageError(f"{spec}: a pattern with {{i}} needs --num-shards N")
            try:
                paths.extend(Path(spec.format(i=i, n=num_shards)) for i in range(num_shards))
            except (KeyError, IndexError, ValueError) as exc:
                raise UsageError(f"{spec}: bad shard pattern ({exc}); use {{i}} for the shard index, {{n}} for N") from None
        elif any(ch in spec for ch in "*?["):
            matches = [m for m in globlib.glob(spec) if not m.endswith((".done", ".partial", ".partial.json", ".lock", ".tmp"))]
            if not matches:
                raise ShardError(f"{spec}: no shard matches this glob")
            paths.extend(Path(m) for m in sorted(matches, key=_natural_key))
        else:
            paths.append(Path(spec))
    if num_shards is not None and len(paths) != num_shards:
        raise ShardError(f"expected {num_shards} shards (--num-shards), found {len(paths)}: {', '.join(map(str, paths))}")
    if len(set(paths)) != len(paths):
        raise UsageError("a shard file is listed twice")
    return paths


def read_marker(path: str | Path) -> ShardInfo:
    """Check that a shard exists and has a well-formed completion marker (the hash is checked later)."""
    path = Path(path)
    marker = marker_path(path)
    if not path.exists():
        hint = ""
        if path.with_name(path.name + ".partial").exists():
            hint = f" ({path.name}.partial exists: that job was interrupted; rerun it and it resumes)"
        raise ShardError(f"{path}: shard missing{hint}")
    if not marker.exists():
        raise ShardError(
            f"{path}: no completion marker ({marker.name}): the shard is incomplete, still being written, "
            "or was not written by a --shard run; rerun that shard"
        )
    try:
        data = read_json(marker)
        records = int(data["records"])
        sha256 = str(data["sha256"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ShardError(f"{marker}: unreadable completion marker; rerun that shard") from None
    index = count = None
    if data.get("shard"):
        shard = parse_shard(str(data["shard"]))
        index, count = (shard.index, shard.count) if shard is not None else (0, 1)
    return ShardInfo(path, records, sha256, index, count)


def order_shards(shards: list[ShardInfo]) -> list[ShardInfo]:
    """Sort by the markers' shard index when all have one; check they form one complete I/N set."""
    with_index = [s for s in shards if s.index is not None]
    if not with_index:
        return shards
    if len(with_index) != len(shards):
        plain = next(s for s in shards if s.index is None)
        raise ShardError(f"{plain.path}: its marker names no shard while others do; are these outputs of one --shard run?")
    counts = {s.count for s in shards}
    if len(counts) != 1:
        raise ShardError("shards come from runs with different N: " + ", ".join(f"{s.path} is {s.index}/{s.count}" for s in shards))
    n = counts.pop()
    by_index: dict[int, ShardInfo] = {}
    for s in shards:
        if s.index in by_index:
            raise ShardError(f"{by_index[s.index].path} and {s.path} are both shard {s.index}/{n}")
        by_index[s.index] = s
    missing = [i for i in range(n) if i not in by_index]
    if missing:
        raise ShardError(f"shard(s) {', '.join(f'{i}/{n}' for i in missing)} missing: got {len(shards)} of {n}")
    return [by_index[i] for i in range(n)]


def check_interleave_counts(shards: list[ShardInfo]) -> None:
    """Round-robin shards of one input hold ``ceil((total - I) / N)`` records: non-increasing in I,
    spread at most 1. Anything else cannot be interleaved back into the unsharded order."""
    counts = [s.records for s in shards]
    if all(a >= b for a, b in zip(counts, counts[1:])) and counts[0] - counts[-1] <= 1:
        return
    detail = ", ".join(f"{s.path.name}: {s.records}" for s in shards)
    raise ShardError(
        f"shard record counts ({detail}) cannot come from one --shard I/N run in which every input record "
        "gave one output record (were records skipped with --skip-bad, or are shards from different runs?); "
        "use --order concat if the order does not matter"
    )


class _HashingReader(io.RawIOBase):
    """Pass bytes through while feeding them to a hash, so a shard is read once, not twice."""

    def __init__(self, raw: BinaryIO, digest):
        self.raw = raw
        self.digest = digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        if n:
            self.digest.update(memoryview(buffer)[:n])
        return n or 0

    def drain(self) -> None:
        while block := self.raw.read(1 << 20):
            self.digest.update(block)


def _iter_shard_lines(shard: ShardInfo) -> Iterator[bytes]:
    """The shard's non-blank lines; at the end, check count and sha256 against the marker."""
    digest = hashlib.sha256()
    with open(shard.path, "rb") as raw:
        hashing = _HashingReader(raw, digest)
        buffered = io.BufferedReader(hashing, buffer_size=1 << 20)
        stream: BinaryIO = gzip.GzipFile(fileobj=buffered, mode="rb") if shard.path.suffix == ".gz" else buffered  # type: ignore[assignment]
        count = 0
        try:
            for line in stream:
                if line.strip():
                    count += 1
                    yield line
        except (EOFError, gzip.BadGzipFile, OSError) as exc:
            raise ShardError(f"{shard.path}: unreadable ({exc}); rerun that shard") from None
        hashing.drain()
    if count != shard.records:
        raise ShardError(f"{shard.path}: has {count} records but its marker says {shard.records}; rerun that shard")
    if digest.hexdigest() != shard.sha256:
        raise ShardError(f"{shard.path}: contents differ from its completion marker (sha256 mismatch): the file changed after it was written; rerun that shard")


def check_shards(specs: list[str], *, num_shards: int | None = None, order: str = "interleave") -> list[ShardInfo]:
    """Find, order and pre-check the shards from their markers (cheap: no shard is read)."""
    if order not in ORDERS:
        raise UsageError(f"--order must be one of {', '.join(ORDERS)}, got {order!r}")
    shards = order_shards([read_marker(p) for p in expand_shard_paths(specs, num_shards)])
    if order == "interleave":
        check_interleave_counts(shards)
    return shards


def merge_shards(
    specs: list[str],
    output: str | None,
    *,
    num_shards: int | None = None,
    order: str = "interleave",
    verify_only: bool = False,
) -> MergeResult:
    """Merge (or with ``verify_only`` just verify) the shards into ``output`` (None/'-': stdout).

    The output is written atomically and gets its own completion marker, so a failed check part-way
    (a hash mismatch found at a shard's end) leaves no output file behind.
    """
    if output not in (None, "-") and not verify_only:
        target = Path(output).resolve()
        if any(p.resolve() == target for p in expand_shard_paths(specs, num_shards)):
            raise UsageError(f"-o {output} is also one of the shards (does a glob match the output?)")
    shards = check_shards(specs, num_shards=num_shards, order=order)
    result = MergeResult(output=None if verify_only else output, order=order, records=0, shards=shards)
    if verify_only:
        for shard in shards:
            for _ in _iter_shard_lines(shard):
                result.records += 1
        return result
    from .console import progress

    with open_output(output, marker=True) as writer, progress("merge", total=sum(s.records for s in shards), unit="records") as bar:
        # Lines are copied byte for byte (no parse/dump round trip): each shard's sha256 is checked
        # against its marker when the shard is exhausted, and a mismatch discards the whole output.
        if order == "concat":
            for shard in shards:
                for line in _iter_shard_lines(shard):
                    writer.write_raw(line)
                    bar.advance()
        else:
            iterators = [_iter_shard_lines(s) for s in shards]
            while iterators:
                alive = []
                for it in iterators:
                    line = next(it, None)
                    if line is None:
                        continue
                    writer.write_raw(line)
                    bar.advance()
                    alive.append(it)
                # A shard that ran out must stay out: once one is exhausted, the later ones hold at
                # most this round (guaranteed by check_interleave_counts; the per-shard count check
                # runs when each iterator finishes).
                iterators = alive
        result.records = writer.count
    return result
