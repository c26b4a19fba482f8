"""What the reliability guards cost on the common path, measured against a baseline in one process.

    python bench/reliability_io.py [--records 2000] [--repeat 3]

* ``parse_ratio``: :func:`lt_cli.jsoncodec.loads` (exact big integers: one ``bytes.translate`` and a
  substring search before orjson) over plain ``orjson.loads``, on E-step candidate lines (~16 KB,
  K=4, 5 chunks: the largest records lt reads).
* ``dump_ratio``: :func:`lt_cli.jsoncodec.dumps` over ``orjson.dumps`` (only a try block on the
  common path).
* ``select_ratio``: ``lt select`` end to end (read, resample, write) with the codec over the same
  run with orjson patched in.
* ``hash_vs_read_ratio``: the input's content hash (sha256, taken once per resumable run for its
  identity) over reading the same file's records once; ``hash_mb_per_s`` its speed.

Logs go to stderr; stdout gets one JSON line. Run it alone on the machine (timings, 1 thread).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORDS = ("the of and a to in is you that it he was for on are as with his they at be this have from or one had by word but not what "
         "all were we when your can said there use an each which she do how their if will up other about out many then them these").split()


def candidate_record(rng: random.Random, index: int) -> dict:
    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    return {
        "id": f"doc-{index:06d}", "text": text(300),
        "chunks": [
            {"text": text(60), "candidates": [
                {"latent": text(120), "log_q": rng.uniform(-300, -10), "log_p": rng.uniform(-300, -10), "log_w": rng.uniform(-30, 30),
                 "finished": True, "n_tokens": 170}
                for _ in range(4)
            ]}
            for _ in range(5)
        ],
    }


def best_of(repeat: int, fn) -> float:
    return paired(repeat, fn, lambda: None)[0]


def paired(repeat: int, first, second) -> tuple[float, float]:
    """The best time of each of two functions, measured alternately (a machine shared with other
    jobs drifts; alternating keeps the drift out of the ratio)."""
    best = [float("inf"), float("inf")]
    for _ in range(repeat):
        for i, fn in enumerate((first, second)):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import orjson

    from lt_cli import io as lt_io, jsoncodec
    from lt_cli.estep import SelectConfig, SelectRun, run_select
    from lt_cli.provenance import file_identity
    from lt_cli.stream import StreamArgs

    rng = random.Random(0)
    records = [candidate_record(rng, i) for i in range(args.records)]
    lines = [orjson.dumps(r) for r in records]
    folder = Path(tempfile.mkdtemp(prefix="lt-bench-"))
    source = folder / "cand.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    size_mb = source.stat().st_size / 1e6
    print(f"{args.records} records, {size_mb:.1f} MB, {size_mb * 1e6 / args.records / 1e3:.1f} KB per line", file=sys.stderr)

    parse_codec, parse_orjson = paired(args.repeat, lambda: [jsoncodec.loads(x) for x in lines], lambda: [orjson.loads(x) for x in lines])
    dump_codec, dump_orjson = paired(args.repeat, lambda: [jsoncodec.dumps(r) for r in records],
                                     lambda: [orjson.dumps(r, option=jsoncodec.LINE_OPTIONS) for r in records])

    def select(tag: str) -> None:
        out = folder / f"sel-{tag}.jsonl"
        run_select(SelectRun(stream=StreamArgs(input=str(source), output=str(out), restart=True), select=SelectConfig(seed=1)))

    os.environ["LT_NO_PROGRESS"] = "1"
    real_loads = jsoncodec.loads

    def select_orjson_only() -> None:
        jsoncodec.loads = orjson.loads  # the baseline: orjson alone (io reads through jsoncodec.loads)
        try:
            select("orjson")
        finally:
            jsoncodec.loads = real_loads

    select_codec, select_orjson = paired(args.repeat, lambda: select("codec"), select_orjson_only)
    assert (folder / "sel-codec.jsonl").read_bytes() == (folder / "sel-orjson.jsonl").read_bytes()

    hashing, read = paired(args.repeat, lambda: file_identity(source), lambda: lt_io.read_all(source))
    result = {
        "records": args.records, "file_mb": round(size_mb, 1),
        "parse_ratio": round(parse_codec / parse_orjson, 3), "dump_ratio": round(dump_codec / dump_orjson, 3),
        "select_ratio": round(select_codec / select_orjson, 3),
        "hash_vs_read_ratio": round(hashing / read, 3), "hash_mb_per_s": round(size_mb / hashing, 1),
        "parse_orjson_mb_per_s": round(size_mb / parse_orjson, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
