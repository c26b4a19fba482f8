"""E-step throughput against the backend's rows per forward pass, measured in one process.

    python bench/estep_batch.py [--model PATH] [--docs 400] [--k 8] [--batch-sizes 16,256] [--threads N]

Runs ``lt sample-thoughts`` (the function the command calls) on the first ``--docs`` documents of
the demo corpus, once per ``--batch-sizes`` value, and prints each run's seconds and its speed-up
over the first (the baseline). The rows of one backend call (``--docs-per-call`` prompts x K) are
decoded and scored ``batch_size`` at a time: a tiny model is overhead-bound, so fewer, larger
forward passes are faster, which is why the demo sets ``--estep-batch-size 256``.

The sampled thoughts do not depend on the batch size (every row has its own seed); the bench
checks that and reports the largest log-weight difference (float rounding only).

``--model`` takes a checkpoint (a demo run's ``k8/iter1/model`` gives the demo's real thought
lengths, about 9 tokens); without it a randomly initialised demo-shaped model samples at most
``--max-new-tokens`` (default 10) tokens per thought. Logs go to stderr; the last line on stdout is
one JSON object. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint folder (default: a random demo-shaped model)")
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--batch-sizes", default="16,256", help="comma-separated; the first is the baseline")
    parser.add_argument("--docs-per-call", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: 32 with --model, 10 without")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    import torch

    from lt_cli.demo import DEMO_MODEL, DemoCorpusConfig, write_demo_corpus
    from lt_cli.estep import SampleThoughtsRun
    from lt_cli.estep.config import SampleConfig
    from lt_cli.estep.runs import run_sample_thoughts
    from lt_cli.io import read_all
    from lt_cli.session import BackendArgs
    from lt_cli.stream import StreamArgs
    from lt_cli.tiny import TinyModelConfig, save_tiny_model

    torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="lt-bench-estep-"))
    files = write_demo_corpus(tmp / "data", DemoCorpusConfig(n_train=max(args.docs, 100)))
    model = args.model or str(save_tiny_model(tmp / "model", TinyModelConfig(**DEMO_MODEL)))
    max_new_tokens = args.max_new_tokens or (32 if args.model else 10)
    log(f"{args.docs} demo documents, K={args.k}, {args.docs_per_call} documents per call, {args.threads} threads, model {model}")

    runs = []
    for batch_size in [0, *batch_sizes]:  # 0: a warm-up on 8 documents (first-call costs), not timed
        out = tmp / f"candidates-{batch_size}.jsonl"
        run = SampleThoughtsRun(
            stream=StreamArgs(input=str(files.raw), output=str(out), limit=args.docs if batch_size else 8),
            backend=BackendArgs(model=model, batch_size=batch_size or batch_sizes[0]),
            sample=SampleConfig(k=args.k, seed=1, max_new_tokens=max_new_tokens, docs_per_call=args.docs_per_call),
        )
        started = time.perf_counter()
        run_sample_thoughts(run)
        seconds = time.perf_counter() - started
        if not batch_size:
            continue
        runs.append((batch_size, seconds, list(read_all(out))))
        log(f"batch size {batch_size}: {seconds:.1f} s")

    base_s, base_docs = runs[0][1], runs[0][2]
    same_latents, max_dlogw = True, 0.0
    for _, _, docs in runs[1:]:
        for a, b in zip(base_docs, docs):
            for ca, cb in zip(a["chunks"], b["chunks"]):
                for x, y in zip(ca.get("candidates", []), cb.get("candidates", [])):
                    same_latents &= x["latent"] == y["latent"]
                    max_dlogw = max(max_dlogw, abs(x["log_w"] - y["log_w"]))
    print(json.dumps({
        "benchmark": "estep_batch",
        "docs": args.docs,
        "k": args.k,
        "threads": args.threads,
        "model": "given" if args.model else "random demo-shaped",
        "seconds": {str(b): round(s, 2) for b, s, _ in runs},
        "speedup_over_first": {str(b): round(base_s / s, 2) for b, s, _ in runs},
        "same_latents": same_latents,
        "max_abs_log_w_difference": max_dlogw,
    }))


if __name__ == "__main__":
    main()
