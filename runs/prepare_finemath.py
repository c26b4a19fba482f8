#!/usr/bin/env python
"""Split FineMath-4+ into the paper's validation, warm-start and bootstrap sets (docs/method.md §1;
the reference's ``bin/prepare_data.sh`` and ``apps/main/prepare_data.py`` in ``ryoungj/BoLT``).

The reference shuffles the whole corpus once into a single file, then splits it by LINE INDEX:

* validation:  line i with ``i % 1000 == 0``                       ->     6,700 docs
* train:       every other line, renumbered j = 0, 1, 2, ...       -> 6,692,793 docs
* warm start:  train line j with ``j % 20 == 0``                   ->   334,640 docs (~480M tokens)
* bootstrap:   train line j with ``13 <= j % 20 < 17``             -> 1,338,556 docs (~1.92B tokens)

(The counts imply 6,699,493 documents in the shuffled file.) Warm start and bootstrap are disjoint;
the E-step of every BoLT iteration runs on the same bootstrap split.

Input: FineMath's parquet files (``finemath-4plus/*.parquet``, as downloaded from the hub) or JSONL
files with a ``text`` field, read in the order given (directories: their files sorted by name).
The reference shuffled with terashuf (seed 42, not reproducible elsewhere); ``--shuffle-seed S``
instead applies numpy's ``default_rng(S).permutation`` to the line order, which needs one random
read per document; ``--no-shuffle`` splits in input order (sequential, fastest). Either way the
split sizes are exactly the reference's, since they depend only on the number of documents.

Outputs (atomic, each with a ``.done`` completion marker): ``OUT/val.jsonl``, ``OUT/warmstart.jsonl``,
``OUT/bootstrap.jsonl`` (and ``OUT/train.jsonl`` with ``--write-train``, the Raw-Fresh baseline's
data), plus ``OUT/splits.json`` with the counts. Every record gets ``id`` = ``finemath-<line>`` (its
index in the shuffled order) unless it has one, so ids are stable across shards and iterations.

    python runs/prepare_finemath.py --input finemath-4plus/ --out data/finemath --shuffle-seed 42
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator

import orjson

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lt_cli.files import write_json  # noqa: E402
from lt_cli.output import open_output  # noqa: E402

VAL_EVERY = 1000
TRAIN_PERIOD = 20
WARM_RESIDUES = range(0, 1)  # j % 20 == 0
BOOTSTRAP_RESIDUES = range(13, 17)  # 13 <= j % 20 < 17


def split_of(position: int) -> tuple[str, ...]:
    """The splits that the document at ``position`` (0-based, in the shuffled order) belongs to."""
    if position % VAL_EVERY == 0:
        return ("val",)
    train_index = position - (position // VAL_EVERY + 1)
    residue = train_index % TRAIN_PERIOD
    if residue in WARM_RESIDUES:
        return ("train", "warmstart")
    if residue in BOOTSTRAP_RESIDUES:
        return ("train", "bootstrap")
    return ("train",)


def split_sizes(total: int) -> dict[str, int]:
    """Closed-form split sizes for ``total`` documents (what split_of gives, without the loop)."""
    val = -(-total // VAL_EVERY)
    train = total - val
    full, rest = divmod(train, TRAIN_PERIOD)

    def count(residues: range) -> int:
        return full * len(residues) + sum(1 for r in residues if r < rest)

    return {"total": total, "val": val, "train": train, "warmstart": count(WARM_RESIDUES), "bootstrap": count(BOOTSTRAP_RESIDUES)}


def _input_files(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for spec in inputs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix == ".parquet" or p.name.endswith((".jsonl", ".jsonl.gz")))
            if not found:
                raise SystemExit(f"prepare_finemath: {path}: no .parquet or .jsonl files")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise SystemExit(f"prepare_finemath: {path}: no such file")
    return files


def iter_lines(files: list[Path]) -> Iterator[bytes]:
    """Every document as one JSON line (bytes, no newline), in input order."""
    import gzip

    for path in files:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
                for row in batch.to_pylist():
                    if not isinstance(row.get("text"), str):
                        raise SystemExit(f"prepare_finemath: {path}: a row without a text column")
                    yield orjson.dumps(row, default=str)
        else:
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rb") as f:
                for line in f:
                    line = line.strip()
                    if line:
                        yield line


def prepare(inputs: list[str], out_dir: str, *, shuffle_seed: int | None = 42, write_train: bool = False) -> dict[str, int]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = _input_files(inputs)
    names = ["val", "warmstart", "bootstrap"] + (["train"] if write_train else [])
    if shuffle_seed is None:
        documents: Iterator[bytes] = iter_lines(files)
        total = None
    else:
        # One sequential pass to a single file with the byte offset of each line, then random reads
        # in permuted order (memory: 8 bytes per document, 54 MB for FineMath-4+).
        import numpy as np

        staging = out / "all.unshuffled.jsonl"
        offsets = []
        with open(staging, "wb") as f:
            for line in iter_lines(files):
                offsets.append(f.tell())
                f.write(line + b"\n")
        total = len(offsets)
        order = np.random.default_rng(shuffle_seed).permutation(total)

        def permuted() -> Iterator[bytes]:
            with open(staging, "rb") as f:
                for index in order:
                    f.seek(offsets[index])
                    yield f.readline().rstrip(b"\n")

        documents = permuted()
    writers = {name: open_output(out / f"{name}.jsonl", marker=True) for name in names}
    counts = dict.fromkeys(names, 0)
    for writer in writers.values():
        writer.__enter__()
    try:
        position = -1
        for position, line in enumerate(documents):
            record = orjson.loads(line)
            if "id" not in record:
                record = {"id": f"finemath-{position}", **record}
            for name in split_of(position):
                if name in writers:
                    writers[name].write(record)
                    counts[name] += 1
        total = position + 1
    except BaseException as exc:
        for writer in writers.values():
            writer.__exit__(type(exc), exc, None)
        raise
    for writer in writers.values():
        writer.__exit__(None, None, None)
    if shuffle_seed is not None:
        (out / "all.unshuffled.jsonl").unlink()
    summary = {**counts, "total": total, "shuffle_seed": shuffle_seed, "expected": split_sizes(total)}
    write_json(out / "splits.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", nargs="+", help="FineMath parquet/JSONL files or folders, in order")
    parser.add_argument("--out", help="output folder")
    parser.add_argument("--shuffle-seed", type=int, default=42, help="permute the document order first (default 42)")
    parser.add_argument("--no-shuffle", action="store_true", help="split in input order")
    parser.add_argument("--write-train", action="store_true", help="also write the whole train split (Raw-Fresh baseline)")
    parser.add_argument("--expected-sizes", type=int, metavar="N", help="only print the split sizes for N documents")
    args = parser.parse_args(argv)
    if args.expected_sizes is not None:
        sys.stdout.write(orjson.dumps(split_sizes(args.expected_sizes)).decode() + "\n")
        return 0
    if not args.input or not args.out:
        parser.error("--input and --out are required")
    summary = prepare(args.input, args.out, shuffle_seed=None if args.no_shuffle else args.shuffle_seed, write_train=args.write_train)
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
