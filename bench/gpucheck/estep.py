"""E-step throughput on the device: ``lt sample-thoughts`` against transformers' own ``generate``
and against the memory-bound limit of decoding, at each of the profile's row counts; and scoring
against a bare packed forward.

* ``lt_R``: ``python -m lt_cli sample-thoughts --no-score --no-cache --batch-size R`` over
  ``estep_docs[R]`` documents (K samples per chunk, ``estep_max_new_tokens`` each; the random-weight
  model almost never writes ``<EoL>``, so nearly every sample runs to the limit). With
  ``LT_PROGRESS_INTERVAL=0`` the command prints a progress line per finished document, and a backend
  call finishes ``docs_per_call`` of them at once; the lines' arrival times split the run into
  start-up plus the first call (imports, model load, buffers and graph capture: ``first_group_s``)
  and the steady calls after it. ``tokens_per_s`` is the latent tokens of the documents after the
  first call over the time they took; ``tokens_per_s_wall`` counts everything. ``engine`` is the
  backend's own line saying which sampling engine ran and whether its step was a CUDA graph.
* ``generate_static_R``: the same posterior prompts through ``model.generate`` with
  ``cache_implementation="static"`` (transformers compiles the decode step), ``R / K`` prompts x
  ``num_return_sequences=K`` = R rows, the same number of new tokens; the first call compiles
  (``compile_s``), the second is timed. ``lt_over_static`` = lt's steady rate over it.
* ``generate_loop``: one ``model.generate`` call per sample (bench/engine.py's naive loop).
* ``hw_limit_R``: decoding is memory-bound, so a step can be no faster than reading every weight
  matrix once plus each row's K/V cache, at the copy bandwidth the ceilings part measured. With R
  rows per step and a mean context of (mean prompt tokens + half the new tokens), limit =
  R / ((weight bytes + R x KV bytes per token x context) / bandwidth). It ignores prefill and
  sampling, so it is an upper bound.
* ``scoring``: ``HFBackend.score`` (what ``lt sample-thoughts`` and ``lt select --model`` call) on
  the E-step's pattern, K sampled continuations per posterior prompt, against one bare packed
  forward over the same token ids (bench/engine.py's baseline); ``ratio`` = bare time / score time.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time

from . import ceilings
from .part import REPO, PartContext, significant, synchronize
from .shapes import model_folder

NEEDS = ("torch", "transformers", "numpy", "tokenizers", "typer", "rich", "orjson", "punkt")
LT_FIELDS = ("docs", "docs_per_call", "first_group_s", "wall_s", "samples", "latent_tokens", "tokens_per_s_wall", "tokens_per_s", "engine",
             "engine_profile")
STATIC_FIELDS = ("rows", "compile_s", "tokens", "seconds", "tokens_per_s", "lt_over_static")
LIMIT_FIELDS = ("rows_per_step", "mean_context_tokens", "tokens_per_s", "lt_fraction", "static_fraction")
SCORE_FIELDS = ("pairs", "tokens", "score_tokens_per_s", "bare_tokens_per_s", "ratio")


ROWS = (64, 256)  # the profiles' estep_rows (field names carry them)


SETUP_FIELDS = ("model", "chunks_per_doc", "k", "max_new_tokens", "mean_prompt_tokens", "weight_bytes", "kv_bytes_per_token", "bandwidth_gb_per_s")


def fields_for(rows: tuple[int, ...]) -> tuple[str, ...]:
    per_rows = []
    for r in rows:
        per_rows += [f"lt_{r}.{f}" for f in LT_FIELDS] + [f"generate_static_{r}.{f}" for f in STATIC_FIELDS]
        per_rows += [f"hw_limit_{r}.{f}" for f in LIMIT_FIELDS]
    return (*SETUP_FIELDS, *per_rows, "generate_loop.samples", "generate_loop.tokens", "generate_loop.tokens_per_s", "speedup_vs_generate_loop",
            *(f"scoring.{f}" for f in SCORE_FIELDS), "decode_profile.kernels", "decode_profile.top")


FIELDS = fields_for(ROWS)


def _bench_engine():
    spec = importlib.util.spec_from_file_location("lt_bench_engine", REPO / "bench" / "engine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_docs(path, n: int) -> list[dict]:
    """``n`` raw documents from the test fixture (cycled, fresh ids); returns them chunked."""
    from lt_cli.io import read_all
    from lt_cli.chunking import ensure_chunks

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
ENGINE = re.compile(r"transformers backend: slot engine, (\d+) rows x \d+ KV columns \([^)]*\), (.*)$")
ENGINE_PROFILE = re.compile(r"slot engine profile: \d+ rows, (\d+) steps, ([\d.]+) s: ([\d.]+) ms/step waiting for the GPU, ([\d.]+) ms/step host, "
                            r"(\d+) admissions \((\d+) prompts prefilled\) ([\d.]+) s")


def engine_profile(lines: list[tuple[float, str]]) -> str:
    """The slot engine's own timing (LT_ENGINE_PROFILE=1) summed over the backend calls after the first."""
    calls = [m for _, line in lines if (m := ENGINE_PROFILE.search(line))][1:]
    if not calls:
        return "no profile lines (dynamic loop, or a single call)"
    steps = sum(int(m.group(1)) for m in calls)
    wall = sum(float(m.group(2)) for m in calls)
    wait = sum(float(m.group(3)) * int(m.group(1)) for m in calls) / 1e3
    host = sum(float(m.group(4)) * int(m.group(1)) for m in calls) / 1e3
    admit = sum(float(m.group(7)) for m in calls)
    prompts = sum(int(m.group(6)) for m in calls)
    return (f"{len(calls)} calls, {steps} steps in {wall:.2f} s = {1e3 * wall / max(steps, 1):.2f} ms/step: waiting for the GPU "
            f"{1e3 * wait / max(steps, 1):.2f}, host {1e3 * host / max(steps, 1):.2f}, admissions {admit:.2f} s ({prompts} prompts prefilled)")


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


def static_generate(backend, prompts: list[str], k: int, max_new_tokens: int, seed: int) -> tuple[int, float]:
    """transformers ``generate`` with the static cache: ``len(prompts)`` x ``k`` rows, sampled."""
    import torch

    encoded = [backend.encode(p) for p in prompts]
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), backend.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(encoded):
        ids[i, width - len(e):] = torch.tensor(e)
        mask[i, width - len(e):] = 1
    ids, mask = ids.to(backend.device), mask.to(backend.device)
    torch.manual_seed(seed)
    synchronize(str(backend.device))
    start = time.perf_counter()
    with torch.inference_mode():
        out = backend.model.generate(
            ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens,
            num_return_sequences=k, cache_implementation="static", pad_token_id=backend.pad_id,
            eos_token_id=sorted(backend.eos_ids) or None,
        )
    synchronize(str(backend.device))
    seconds = time.perf_counter() - start
    new = out[:, width:]
    eos = torch.tensor(sorted(backend.eos_ids) or [-1], device=new.device)
    finished = torch.isin(new, eos).int().cumsum(dim=1)
    tokens = int(((finished == 0) | ((finished == 1) & torch.isin(new, eos))).sum())  # up to and including the first EOS
    return tokens, seconds


def run(ctx: PartContext) -> None:
    p = ctx.profile
    if p.estep_rows != ROWS:
        raise ValueError(f"the profile's E-step rows {p.estep_rows} are not the declared {ROWS}")
    state: dict = {}
    setup(ctx, state)

    for rows in p.estep_rows:
        run_lt(ctx, state, rows)

    backend_holder: dict = {}
    for rows in p.estep_rows:
        with ctx.step(f"generate_static_{rows}", [f"generate_static_{rows}.{f}" for f in STATIC_FIELDS]):
            ctx.need(40)
            ctx.require("model")
            backend = _backend(ctx, state, backend_holder)
            n_prompts = max(1, rows // p.estep_k)
            batch = state["prompts"][:n_prompts]
            start = time.perf_counter()
            static_generate(backend, batch, p.estep_k, p.estep_max_new_tokens, seed=0)  # compiles
            compile_s = time.perf_counter() - start
            tokens, seconds = static_generate(backend, batch, p.estep_k, p.estep_max_new_tokens, seed=1)
            key = f"generate_static_{rows}"
            ctx.set(f"{key}.rows", n_prompts * p.estep_k)
            ctx.set(f"{key}.compile_s", round(compile_s, 1))
            ctx.set(f"{key}.tokens", tokens)
            ctx.set(f"{key}.seconds", round(seconds, 3))
            ctx.set(f"{key}.tokens_per_s", round(tokens / seconds, 1))
            lt_rate = ctx.get(f"lt_{rows}.tokens_per_s")
            if lt_rate is not None:
                ctx.set(f"{key}.lt_over_static", round(lt_rate / (tokens / seconds), 3))
            else:
                ctx.null(f"{key}.lt_over_static", f"lt sample-thoughts at {rows} rows did not run")

    for rows in p.estep_rows:
        limit_fields = [f"hw_limit_{rows}.{f}" for f in LIMIT_FIELDS]
        with ctx.step(f"hw_limit_{rows}", limit_fields):
            ctx.require("mean_prompt_tokens", "bandwidth_gb_per_s")
            step_rows, context, limit = memory_bound_limit(ctx, rows, ctx.get(f"lt_{rows}.samples") or rows)
            ctx.set(f"hw_limit_{rows}.rows_per_step", step_rows)
            ctx.set(f"hw_limit_{rows}.mean_context_tokens", round(context, 1))
            ctx.set(f"hw_limit_{rows}.tokens_per_s", round(limit, 1))
            for name, source in (("lt_fraction", f"lt_{rows}.tokens_per_s"), ("static_fraction", f"generate_static_{rows}.tokens_per_s")):
                if ctx.get(source) is not None:
                    ctx.set(f"hw_limit_{rows}.{name}", round(ctx.get(source) / limit, 4))
                else:
                    ctx.null(f"hw_limit_{rows}.{name}", f"{source} was not measured")

    gen_fields = ("generate_loop.samples", "generate_loop.tokens", "generate_loop.tokens_per_s", "speedup_vs_generate_loop")
    with ctx.step("generate_loop", gen_fields):
        ctx.need(15)
        ctx.require("model")
        backend = _backend(ctx, state, backend_holder)
        engine = _bench_engine()
        engine.naive_sampling(backend, state["prompts"][:1], 1, 2)  # warm-up
        n_prompts = p.generate_prompts
        tokens, seconds = engine.naive_sampling(backend, state["prompts"][:n_prompts], p.estep_k, p.estep_max_new_tokens)
        ctx.set("generate_loop.samples", n_prompts * p.estep_k)
        ctx.set("generate_loop.tokens", tokens)
        ctx.set("generate_loop.tokens_per_s", round(tokens / seconds, 2))
        best = max((ctx.get(f"lt_{r}.tokens_per_s") or 0) for r in p.estep_rows)
        if best:
            ctx.set("speedup_vs_generate_loop", round(best / (tokens / seconds), 2))
        else:
            ctx.null("speedup_vs_generate_loop", "lt sample-thoughts did not run")

    with ctx.step("scoring", [f"scoring.{f}" for f in SCORE_FIELDS]):
        ctx.need(20)
        ctx.require("model")
        measure_scoring(ctx, state, _backend(ctx, state, backend_holder))

    with ctx.step("decode_profile", ("decode_profile.kernels", "decode_profile.top")):
        ctx.need(60)  # the step compiles first
        ctx.require("model")
        profile_decode(ctx, state, _backend(ctx, state, backend_holder))


def memory_bound_limit(ctx: PartContext, rows: int, samples: int) -> tuple[int, float, float]:
    """(rows per step, mean context tokens, tokens/s): the decode rate at which each step reads every
    weight once and each row's K/V, at the measured copy bandwidth (the setup step's fields)."""
    step_rows = min(rows, samples)
    context = ctx.get("mean_prompt_tokens") + (ctx.profile.estep_max_new_tokens + 1) / 2
    per_step_bytes = ctx.get("weight_bytes") + step_rows * ctx.get("kv_bytes_per_token") * context
    return step_rows, context, step_rows / (per_step_bytes / (ctx.get("bandwidth_gb_per_s") * 1e9))


def setup(ctx: PartContext, state: dict) -> None:
    """The model folder, the documents and the limit's inputs (fields of the setup step)."""
    p = ctx.profile
    with ctx.step("setup", SETUP_FIELDS):
        from lt_cli.models import load_tokenizer

        state["folder"] = model_folder(p.train_shape, ctx.work / "models", p.device, dtype="bfloat16")
        n_docs = max(p.estep_docs.values())
        docs_path = ctx.work / "estep-docs.jsonl"
        chunked = write_docs(docs_path, n_docs)
        prompts = posterior_prompts(chunked)
        tokenizer = load_tokenizer(str(state["folder"]))
        lengths = [1 + len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in prompts]  # + BOS
        state.update(chunked=chunked, prompts=prompts)
        shape = p.train_shape
        ctx.set("model", shape.name)
        ctx.set("chunks_per_doc", round(len(prompts) / n_docs, 3))
        ctx.set("k", p.estep_k)
        ctx.set("max_new_tokens", p.estep_max_new_tokens)
        ctx.set("mean_prompt_tokens", round(sum(lengths) / len(lengths), 1))
        ctx.set("weight_bytes", shape.decode_weight_bytes(2))
        ctx.set("kv_bytes_per_token", shape.kv_bytes_per_token(2))
        ctx.set("bandwidth_gb_per_s", significant(ceilings.load(ctx)["copy_gb_per_s"]))


def profile_decode(ctx: PartContext, state: dict, backend) -> None:
    """torch.profiler over one sampling call at the largest row count: the kernels a decode step
    spends its time in (logs/decode-profile.txt holds the table), for whoever tunes the engine next.
    The step is compiled as in lt sample-thoughts but not captured, so each kernel shows."""
    from torch.profiler import ProfilerActivity, profile

    from lt_cli.backends.base import SamplingParams

    p = ctx.profile
    rows = max(p.estep_rows)
    prompts = [q for q in state["prompts"][: max(1, rows // p.estep_k)] for _ in range(p.estep_k)]
    params = SamplingParams(n=1, temperature=1.0, max_new_tokens=min(16, p.estep_max_new_tokens))
    backend.sample(prompts[:8], params)  # buffers and graph for these settings
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if p.device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        backend.sample(prompts, params)
        synchronize(p.device)
    sort_key = "cuda_time_total" if p.device.startswith("cuda") else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort_key, row_limit=30)
    (ctx.logs / "decode-profile.txt").write_text(f"{len(prompts)} rows x {params.max_new_tokens} new tokens, {backend.sampling_engine()} engine\n{table}\n")
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, "device_time_total", 0) or getattr(e, "cpu_time_total", 0), reverse=True)
    ctx.set("decode_profile.kernels", len(events))
    ctx.set("decode_profile.top", "; ".join(e.key[:60] for e in events[:5]))


def run_lt(ctx: PartContext, state: dict, rows: int, key: str | None = None, env: dict[str, str] | None = None) -> None:
    """``lt sample-thoughts`` at ``rows`` rows per step into the fields ``KEY.*`` (default
    ``lt_ROWS``), with ``env`` added to its environment (the engines part's step settings)."""
    p = ctx.profile
    key = key or f"lt_{rows}"
    with ctx.step(key, [f"{key}.{f}" for f in LT_FIELDS]):
        ctx.need(25)
        ctx.require("model")
        n_docs, per_call = p.estep_docs[rows], p.estep_docs_per_call[rows]
        docs = ctx.work / f"estep-docs-{rows}.jsonl"
        docs.write_text("".join(line + "\n" for line in (ctx.work / "estep-docs.jsonl").read_text().splitlines()[:n_docs]))
        name = str(rows) if key == f"lt_{rows}" else key  # the estep part's own files keep their names
        out = ctx.work / f"estep-cand-{name}.jsonl"
        for stale in (out, out.with_name(out.name + ".partial")):  # a killed earlier run would be resumed
            stale.unlink(missing_ok=True)
        args = ["sample-thoughts", "--model", str(state["folder"]), "--k", str(p.estep_k), "--max-new-tokens", str(p.estep_max_new_tokens),
                "--batch-size", str(rows), "--docs-per-call", str(per_call), "--no-score", "--no-cache", str(docs), "-o", str(out)]
        lines: list = []
        log_name = f"estep-lt-{rows}" if key == f"lt_{rows}" else f"estep-{key}"
        wall = ctx.lt(args, log_name, env={"LT_PROGRESS_INTERVAL": "0", "LT_ENGINE_PROFILE": "1", **(env or {})}, line_times=lines)
        doc_tokens = _tokens_per_document(out)
        tokens = sum(t for _, t in doc_tokens)
        first_group_s, end_s = group_times(lines, len(doc_tokens), per_call)
        steady_tokens = sum(t for _, t in doc_tokens[per_call:])
        engines = sorted({f"slot engine, {m.group(1)} rows, {m.group(2)}" for _, line in lines if (m := ENGINE.search(line))})
        ctx.set(f"{key}.docs", n_docs)
        ctx.set(f"{key}.docs_per_call", per_call)
        ctx.set(f"{key}.wall_s", round(wall, 2))
        ctx.set(f"{key}.first_group_s", round(first_group_s, 2))
        ctx.set(f"{key}.samples", sum(n for n, _ in doc_tokens))
        ctx.set(f"{key}.latent_tokens", tokens)
        ctx.set(f"{key}.tokens_per_s_wall", round(tokens / wall, 1))
        ctx.set(f"{key}.tokens_per_s", round(steady_tokens / (end_s - first_group_s), 1))
        ctx.set(f"{key}.engine", "; ".join(engines) if engines else "dynamic loop")
        ctx.set(f"{key}.engine_profile", engine_profile(lines))


def _backend(ctx: PartContext, state: dict, holder: dict):
    if "backend" not in holder:
        from lt_cli.backends import load_backend
        from lt_cli.backends.base import BackendConfig

        # no CUDA graph, so the decode profile sees the step's kernels one by one (the step is still
        # compiled, as lt sample-thoughts runs it); generate and scoring do not use the slot engine
        holder["backend"] = load_backend("transformers", BackendConfig(model=str(state["folder"]), device=ctx.profile.device,
                                                                       batch_size=max(ctx.profile.estep_rows), options={"cuda_graphs": False}))
    return holder["backend"]


def measure_scoring(ctx: PartContext, state: dict, backend) -> None:
    """HFBackend.score on K continuations per posterior prompt against a bare packed forward."""
    p = ctx.profile
    engine = _bench_engine()
    out = ctx.work / f"estep-cand-{min(p.estep_rows)}.jsonl"
    if out.exists():
        chunks = [c for line in out.read_text().splitlines() for c in json.loads(line)["chunks"]]
        texts = [[cand["latent"] for cand in c.get("candidates", [])] for c in chunks]
    else:  # the lt run failed: score the prompts' own text instead
        texts = [[prompt[-200:]] * p.estep_k for prompt in state["prompts"]]
    pairs = [(prompt, text) for prompt, cands in zip(state["prompts"], texts) for text in cands if text][: p.score_pairs]
    encoded = [backend.encode(c) + backend.encode(x, add_bos=False) for c, x in pairs]
    n_tokens = sum(len(e) for e in encoded)
    backend.score(pairs[:8])  # warm-up
    score_s = engine.best_of(2, lambda: _timed(ctx, lambda: backend.score(pairs)))
    row_len = min(2048, backend.max_model_len)
    rows_per_call = max(1, p.score_bare_tokens // row_len)
    engine.bare_packed_forward(backend, encoded[:4], row_len, rows_per_call)  # warm-up
    bare_s = engine.best_of(2, lambda: engine.bare_packed_forward(backend, encoded, row_len, rows_per_call))
    ctx.set("scoring.pairs", len(pairs))
    ctx.set("scoring.tokens", n_tokens)
    ctx.set("scoring.score_tokens_per_s", round(n_tokens / score_s, 1))
    ctx.set("scoring.bare_tokens_per_s", round(n_tokens / bare_s, 1))
    ctx.set("scoring.ratio", round(bare_s / score_s, 3))


def _timed(ctx: PartContext, fn) -> float:
    synchronize(ctx.profile.device)
    start = time.perf_counter()
    fn()
    synchronize(ctx.profile.device)
    return time.perf_counter() - start
