"""`lt sample-thoughts`: K posterior samples per chunk from the model itself, scored under its prior."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import InputArg, OutputOpt, RejectsOpt, ShardOpt, SkipBadOpt, check_stdin, rejects_path, run_command

HELP = "E-step proposal: K latent thoughts per chunk from q(Z|X), with log q, log p(Z,X) and log w."
EXAMPLES = """\
lt sample-thoughts --model M --k 8 docs.jsonl | lt select > augmented.jsonl
lt sample-thoughts --model ckpt/ --k 4 docs.jsonl -o cand.jsonl   # resumable; cache cand.jsonl.cache.sqlite
lt sample-thoughts --model ckpt/ --backend vllm --shard 3/16 docs.jsonl -o cand.03.jsonl
lt sample-thoughts --model M --k 4 --no-score docs.jsonl | lt select --model M
"""
DETAILS = """\
Input: raw documents (chunked on the fly exactly like lt chunk) or chunked documents. Output: the
same documents with chunks[].candidates[] = {latent, log_q, log_p, log_w, finished, n_tokens}
(natural-log sums; n_tokens counts the <EoL> stop token). Sample j of chunk i is seeded from
(--seed, document id, i, j), so a rerun with a larger --k reuses the cached samples.

Prompts: lt fixes two quirks of the reference by default (the first chunk also gets the <SoL><EoL>
boundary marker in the posterior prompt; log p includes the first <SoL> of the joint string).
--reference-quirks reproduces the reference exactly. See docs/estep.md.
"""

BackendOpt = Annotated[str, typer.Option("--backend", help="transformers (alias hf), vllm or api (OpenAI-compatible HTTP).")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Sequences per forward pass inside the backend.")]
MaxModelLenOpt = Annotated[Optional[int], typer.Option("--max-model-len", help="Context length (default: the model's).", show_default=False)]
CacheOpt = Annotated[Optional[str], typer.Option("--cache", help="SQLite sample cache (default OUTPUT.cache.sqlite with -o; none on stdout).", show_default=False)]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not read or write a sample cache.")]


def backend_config(model: str, dtype: str, batch_size: int, max_model_len: int | None, options: dict | None = None):
    from ..backends.base import BackendConfig

    return BackendConfig(model=model, dtype=dtype, batch_size=batch_size, max_model_len=max_model_len, options=dict(options or {}))


def resolve_cache(output: str | None, cache: str | None, no_cache: bool) -> str | None:
    from ..sample_cache import default_cache_path

    if no_cache:
        return None
    return cache or default_cache_path(output)


@run_command
def command(
    input: InputArg = None,
    output: OutputOpt = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Checkpoint (folder or hub id) that plays both q and p.")] = ...,
    k: Annotated[int, typer.Option("--k", help="Samples per chunk (reference: 4).")] = 4,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Latent tokens per sample, <EoL> included.")] = 1024,
    prefix_chunks: Annotated[int, typer.Option("--prefix-chunks", help="Previous raw chunks given as context (reference: 3).")] = 3,
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature (1 = the model's own posterior).")] = 1.0,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass (1 = off).")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="User seed; each sample's seed derives from it, the document and the chunk.")] = 42,
    no_score: Annotated[bool, typer.Option("--no-score", help="Skip log p / log w (lt select --model scores later).")] = False,
    reference_quirks: Annotated[bool, typer.Option("--reference-quirks", help="Reproduce the reference's first-chunk prompt and its log p off-by-one.")] = False,
    docs_per_call: Annotated[Optional[int], typer.Option("--docs-per-call", help="Documents whose chunks go to the backend in one call (default 8; 128 with vllm).", show_default=False)] = None,
    backend: BackendOpt = "transformers",
    dtype: DtypeOpt = "auto",
    batch_size: BatchSizeOpt = 16,
    max_model_len: MaxModelLenOpt = None,
    cache: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    shard: ShardOpt = None,
    skip_bad: SkipBadOpt = False,
    rejects: RejectsOpt = None,
) -> int:
    from ..estep import SampleConfig
    from ..estep_runs import run_sample_thoughts

    check_stdin(input)
    if docs_per_call is None:
        docs_per_call = 128 if backend == "vllm" else 8
    config = SampleConfig(
        k=k, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, prefix_chunks=prefix_chunks, seed=seed,
        score=not no_score, reference_quirks=reference_quirks, max_model_len=max_model_len, docs_per_call=docs_per_call,
    )
    options = {"logprobs": True} if backend == "api" else {}
    return run_sample_thoughts(
        input, output, backend, backend_config(model, dtype, batch_size, max_model_len, options), config,
        cache_path=resolve_cache(output, cache, no_cache), shard=shard, skip_bad=skip_bad,
        rejects=rejects_path(output, rejects) if skip_bad else None,
    )
