"""E-step throughput on the device: ``lt sample-thoughts`` against a per-sample ``generate`` loop
and against the memory-bound limit of decoding.

* ``lt``: ``python -m lt_cli sample-thoughts --no-score --no-cache`` over ``estep_docs`` documents
  (K samples per chunk, ``estep_max_new_tokens`` each; the random-weight model almost never writes
  ``<EoL>``, so nearly every sample runs to the limit). With ``LT_PROGRESS_INTERVAL=0`` the command
  prints a progress line per finished document, and a backend call finishes ``docs_per_call`` of
  them at once; the lines' arrival times split the run into start-up plus the first call (imports,
  model load, warm-up: ``first_group_s``) and the steady calls after it. ``tokens_per_s`` is the
  latent tokens of the documents after the first call over the time they took;
  ``tokens_per_s_wall`` counts everything. Scoring is left out (``--no-score``) so both sides only
  sample; bench/engine.py measures scoring.
* ``generate_loop``: the same model through the transformers backend, one ``model.generate`` call
  per sample (bench/engine.py's naive loop) on the first posterior prompts, K samples each.
* ``hw_limit``: decoding is memory-bound, so a step can be no faster than reading every weight
  matrix once plus each row's K/V cache, at the copy bandwidth the ceilings part measured. With B
  rows per step (the backend's ``--batch-size``) and a mean context of (mean prompt tokens +
  half the new tokens), limit = B / ((weight bytes + B x KV bytes per token x context) /
  bandwidth). It ignores prefill and sampling, so it is an upper bound. The generate loop decodes
  one row at a time, so its fraction is taken against the one-row limit.
"""

from __future__ import annotations

import importlib.util
import json
import re

from . import ceilings
from .part import REPO, PartContext, significant
from .shapes import model_folder

NEEDS = ("torch", "transformers", "numpy", "tokenizers", "typer", "rich", "orjson", "punkt")
FIELDS = (
    "model", "docs", "chunks", "k", "max_new_tokens", "batch_size", "mean_prompt_tokens",
    "lt.first_group_s", "lt.wall_s", "lt.samples", "lt.latent_tokens", "lt.tokens_per_s_wall", "lt.tokens_per_s",
    "generate_loop.samples", "generate_loop.tokens", "generate_loop.tokens_per_s", "speedup_vs_generate",
    "hw_limit.rows_per_step", "hw_limit.weight_bytes", "hw_limit.kv_bytes_per_token", "hw_limit.mean_context_tokens",
    "hw_limit.bandwidth_gb_per_s", "hw_limit.tokens_per_s", "hw_limit.lt_fraction", "hw_limit.generate_loop_fraction",
)


def _bench_engine():
    spec = importlib.util.spec_from_file_location("lt_bench_engine", REPO / "bench" / "engine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_docs(path, n: int) -> list[dict]:
    """``n`` raw documents from the test fixture (cycled, fresh ids); returns them chunked."""
    from lt_cli.io import read_all
    from lt_cli.records import ensure_chunks

    source = read_all(REPO / "tests" / "fixtures" / "math_docs.jsonl")
    docs = [{"id": f"estep-{i}", "text": source[i % len(source)]["text"]} for i in range(n)]
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return [ensure_chunks(dict(d)) for d in docs]


def posterior_prompts(chunked: list[dict]) -> list[str]:
    from lt_cli.estep import SampleConfig, chunk_prompt

    config = SampleConfig()
    return [chunk_prompt(doc["chunks"], i, config) for doc in chunked for i in range(len(doc["chunks"]))]


def _tokens_per_document(path) -> list[tuple[int, int]]:
    """(samples, latent tokens) of each output document, in order."""
    out = []
    for line in path.read_text().splitlines():
        candidates = [c for chunk in json.loads(line)["chunks"] for c in chunk.get("candidates", [])]
        out.append((len(candidates), sum(c["n_tokens"] for c in candidates)))
    return out


PROGRESS = re.compile(r"^sample-thoughts: ([\d,]+)(?:/[\d,]+)? docs")


def group_times(lines: list[tuple[float, str]], n_docs: int, docs_per_call: int) -> tuple[float, float]:
    """Seconds from the command's start to the end of its first backend call and to its last
    document, from its progress lines (``LT_PROGRESS_INTERVAL=0``: one line per finished document,
    and a backend call finishes ``docs_per_call`` documents at once)."""
    done = [(t, int(m.group(1).replace(",", ""))) for t, line in lines if (m := PROGRESS.match(line))]
    first = next((t for t, n in done if n >= docs_per_call), None)
    last = next((t for t, n in done if n >= n_docs), None)
    if first is None or last is None or n_docs <= docs_per_call:
        raise RuntimeError(f"cannot time the backend calls: {len(done)} progress lines for {n_docs} documents in calls of {docs_per_call}")
    if last <= first:
        raise RuntimeError("the last document finished with the first backend call")
    return first, last


def run(ctx: PartContext) -> None:
    p = ctx.profile
    state: dict = {}
    setup_fields = ("model", "docs", "chunks", "k", "max_new_tokens", "batch_size", "mean_prompt_tokens")
    with ctx.step("setup", setup_fields):
        from lt_cli.models import load_tokenizer

        state["folder"] = model_folder(p.train_shape, ctx.work / "models", p.device, dtype="bfloat16")
        docs_path = ctx.work / "estep-docs.jsonl"
        chunked = write_docs(docs_path, p.estep_docs)
        prompts = posterior_prompts(chunked)
        tokenizer = load_tokenizer(str(state["folder"]))
        lengths = [1 + len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in prompts]  # + BOS
        state.update(docs=docs_path, prompts=prompts)
        ctx.set("model", p.train_shape.name)
        ctx.set("docs", p.estep_docs)
        ctx.set("chunks", len(prompts))
        ctx.set("k", p.estep_k)
        ctx.set("max_new_tokens", p.estep_max_new_tokens)
        ctx.set("batch_size", p.estep_batch_size)
        ctx.set("mean_prompt_tokens", round(sum(lengths) / len(lengths), 1))

    def sample_args(docs, out, max_new_tokens):
        return ["sample-thoughts", "--model", str(state["folder"]), "--k", str(p.estep_k), "--max-new-tokens", str(max_new_tokens),
                "--batch-size", str(p.estep_batch_size), "--docs-per-call", str(p.estep_docs_per_call), "--no-score", "--no-cache",
                str(docs), "-o", str(out)]

    lt_fields = [f for f in FIELDS if f.startswith("lt.")]
    with ctx.step("lt", lt_fields):
        ctx.need(20)
        ctx.require("model")
        out = ctx.work / "estep-cand.jsonl"
        for stale in (out, out.with_name(out.name + ".partial")):  # a killed earlier run would be resumed
            stale.unlink(missing_ok=True)
        lines: list = []
        wall = ctx.lt(sample_args(state["docs"], out, p.estep_max_new_tokens), "estep-lt", env={"LT_PROGRESS_INTERVAL": "0"}, line_times=lines)
        doc_tokens = _tokens_per_document(out)
        samples = sum(n for n, _ in doc_tokens)
        tokens = sum(t for _, t in doc_tokens)
        first_group_s, end_s = group_times(lines, len(doc_tokens), p.estep_docs_per_call)
        steady_tokens = sum(t for _, t in doc_tokens[p.estep_docs_per_call:])
        ctx.set("lt.wall_s", round(wall, 2))
        ctx.set("lt.first_group_s", round(first_group_s, 2))
        ctx.set("lt.samples", samples)
        ctx.set("lt.latent_tokens", tokens)
        ctx.set("lt.tokens_per_s_wall", round(tokens / wall, 1))
        ctx.set("lt.tokens_per_s", round(steady_tokens / (end_s - first_group_s), 1))

    gen_fields = ("generate_loop.samples", "generate_loop.tokens", "generate_loop.tokens_per_s", "speedup_vs_generate")
    with ctx.step("generate_loop", gen_fields):
        ctx.need(15)
        ctx.require("model")
        from lt_cli.backends import load_backend
        from lt_cli.backends.base import BackendConfig

        backend = load_backend("transformers", BackendConfig(model=str(state["folder"]), device=p.device))
        engine = _bench_engine()
        engine.naive_sampling(backend, state["prompts"][:1], 1, 2)  # warm-up
        n_prompts = p.generate_prompts
        tokens, seconds = engine.naive_sampling(backend, state["prompts"][:n_prompts], p.estep_k, p.estep_max_new_tokens)
        state["bytes_per_value"] = next(backend.model.parameters()).element_size()
        ctx.set("generate_loop.samples", n_prompts * p.estep_k)
        ctx.set("generate_loop.tokens", tokens)
        ctx.set("generate_loop.tokens_per_s", round(tokens / seconds, 2))
        if ctx.get("lt.tokens_per_s") is not None:
            ctx.set("speedup_vs_generate", round(ctx.get("lt.tokens_per_s") / (tokens / seconds), 2))
        else:
            ctx.null("speedup_vs_generate", "lt sample-thoughts did not run")

    hw_fields = [f for f in FIELDS if f.startswith("hw_limit.")]
    with ctx.step("hw_limit", hw_fields):
        ctx.require("mean_prompt_tokens")
        shape = p.train_shape
        bytes_per_value = state.get("bytes_per_value") or (2 if p.device.startswith("cuda") else 4)
        bandwidth = ceilings.load(ctx)["copy_gb_per_s"] * 1e9
        samples = ctx.get("lt.samples") or ctx.get("chunks") * p.estep_k
        rows = min(p.estep_batch_size, samples)
        weight_bytes = shape.decode_weight_bytes(bytes_per_value)
        kv = shape.kv_bytes_per_token(bytes_per_value)
        context = ctx.get("mean_prompt_tokens") + (p.estep_max_new_tokens + 1) / 2
        limit = rows / ((weight_bytes + rows * kv * context) / bandwidth)
        single = 1 / ((weight_bytes + kv * context) / bandwidth)
        ctx.set("hw_limit.rows_per_step", rows)
        ctx.set("hw_limit.weight_bytes", weight_bytes)
        ctx.set("hw_limit.kv_bytes_per_token", kv)
        ctx.set("hw_limit.mean_context_tokens", round(context, 1))
        ctx.set("hw_limit.bandwidth_gb_per_s", significant(bandwidth / 1e9))
        ctx.set("hw_limit.tokens_per_s", round(limit, 1))
        if ctx.get("lt.tokens_per_s") is not None:
            ctx.set("hw_limit.lt_fraction", round(ctx.get("lt.tokens_per_s") / limit, 4))
        else:
            ctx.null("hw_limit.lt_fraction", "lt sample-thoughts did not run")
        if ctx.get("generate_loop.tokens_per_s") is not None:
            ctx.set("hw_limit.generate_loop_fraction", round(ctx.get("generate_loop.tokens_per_s") / single, 4))
        else:
            ctx.null("hw_limit.generate_loop_fraction", "the generate loop did not run")
