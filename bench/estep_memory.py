"""Peak memory of the in-process E-step against corpus size: it must stay flat.

``lt bootstrap`` runs ``lt sample-thoughts`` in its own process through ``lt_cli.runners.run`` (the
function the command calls), which streams the corpus: records are read, sampled, scored and written
a group at a time, statistics are counters, the cache lives on disk. This benchmark runs that E-step
on a small and a ten times larger corpus of real-looking one-chunk documents, each in a fresh child
process (peak RSS only grows within a process), and prints one JSON line with both peaks and their
ratio (goal: at most 1.2).

    python bench/estep_memory.py                 # 2,000 vs 20,000 documents
    python bench/estep_memory.py --small 200 --factor 10 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[4]))
from lt_cli.estep import SampleConfig, SampleThoughtsRun
from lt_cli.runners import run
from lt_cli.session import BackendArgs
from lt_cli.stream import StreamArgs
config = SampleThoughtsRun(
    stream=StreamArgs(input=sys.argv[1], output=sys.argv[2]),
    backend=BackendArgs(model=sys.argv[3], dtype="float32"),
    sample=SampleConfig(k=2, max_new_tokens=4, docs_per_call=64),
)
started = time.perf_counter()
code = run("sample-thoughts", config)
print(json.dumps({"code": code, "seconds": time.perf_counter() - started, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_corpus(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"d{i}", "text": f"Problem {i}: a box holds {i % 97} pens and {i % 13} pencils, {i % 7} of them red."}) + "\n")


def measure(corpus: Path, model: Path, threads: int, work: Path) -> dict:
    out = work / (corpus.stem + ".candidates.jsonl")
    env = {**os.environ, "LT_PROGRESS_INTERVAL": "3600", "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(corpus), str(out), str(model), str(threads)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"child failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=2000, help="documents in the small corpus")
    parser.add_argument("--factor", type=int, default=10, help="the large corpus is this many times larger")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    from lt_cli.tiny import TinyModelConfig, save_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = save_tiny_model(work / "model", TinyModelConfig(hidden_size=32, num_layers=1, num_heads=1, num_kv_heads=1, intermediate_size=64))
        small, large = work / "small.jsonl", work / "large.jsonl"
        write_corpus(small, args.small)
        write_corpus(large, args.small * args.factor)
        started = time.perf_counter()
        a = measure(small, model, args.threads, work)
        b = measure(large, model, args.threads, work)
    print(json.dumps({
        "bench": "estep_memory", "threads": args.threads, "small_docs": args.small, "large_docs": args.small * args.factor,
        "small_peak_rss_mib": round(a["peak_rss_mib"], 1), "large_peak_rss_mib": round(b["peak_rss_mib"], 1),
        "peak_rss_ratio": round(b["peak_rss_mib"] / a["peak_rss_mib"], 3), "goal": 1.2,
        "small_seconds": round(a["seconds"], 1), "large_seconds": round(b["seconds"], 1), "wall_s": round(time.perf_counter() - started, 1),
    }))


if __name__ == "__main__":
    main()
