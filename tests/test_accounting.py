"""Compute accounting: what the E-step (prompts, generated and scored tokens, samples per chunk,
FLOPs) and the API teacher (billed tokens, cost, --estimate) spend, checked against the records,
a real model's own token counts and the loopback server's billing."""

from __future__ import annotations

import math
import subprocess

import orjson
import pytest

from fakes import CharBackend, ChoiceBackend
from lt_cli.estep import ComputeStats, SampleConfig, chunk_prompt, chunk_scoring_pair, first_candidates, sample_candidates
from lt_cli.estep.stats import SampleStats

from test_estep import ENV, LT, REPO, cli, docs, small_corpus


def sampled(docs_out):
    return [c for d in docs_out for c in d["chunks"] if not c.get("latent_fixed")]


# --------------------------------------------------------------------------------- E-step
def test_compute_fields_add_up_over_the_candidates():
    backend = CharBackend()
    backend.n_parameters = 500
    out = list(sample_candidates(backend, docs(3), SampleConfig(k=3, max_new_tokens=20)))
    stats = ComputeStats()
    for doc in out:
        stats.add(doc)
    data = stats.to_json()
    chunks = sampled(out)
    generated = sum(c["n_tokens"] for ch in chunks for c in ch["candidates"])
    scored = sum(c["n_scored_tokens"] for ch in chunks for c in ch["candidates"])
    prompt_tokens = sum(len(chunk_prompt(d["chunks"], i, SampleConfig())) for d in out for i in range(len(d["chunks"])))  # 1 char = 1 token
    assert data["generated_tokens"] == generated == sum(len(c["latent"]) + c["finished"] for ch in chunks for c in ch["candidates"])
    assert data["scored_tokens"] == scored
    # each pair costs its context and its continuation (no truncation here)
    pairs = [chunk_scoring_pair(d["chunks"], i, c["latent"], SampleConfig()) for d in out for i, ch in enumerate(d["chunks"]) for c in ch["candidates"]]
    assert scored == sum(len(p.context) + len(p.continuation) for p in pairs)
    assert (data["prompts"], data["prompt_tokens"]) == (len(chunks), prompt_tokens)
    assert data["samples"] == 3 * len(chunks) and data["samples_per_chunk"] == {"mean": 3.0, "min": 3, "max": 3}
    assert data["model_parameters"] == 500
    assert data["flops"] == 2 * 500 * (prompt_tokens + generated + scored)
    assert out[0]["estep"] == {"model_parameters": 500}
    assert all(ch["sampling"] == {"rounds": [3], "prompt_tokens": ch["sampling"]["prompt_tokens"]} for ch in chunks)


def test_unknown_parameters_or_counts_give_null_flops():
    out = list(sample_candidates(CharBackend(), docs(1), SampleConfig(k=2, max_new_tokens=5)))  # CharBackend: no n_parameters
    stats = ComputeStats()
    stats.add(out[0])
    assert stats.to_json()["model_parameters"] is None and stats.to_json()["flops"] is None
    # a candidates file from before the accounting (no sampling record, no n_scored_tokens)
    old = orjson.loads(orjson.dumps(out[0]))
    for chunk in old["chunks"]:
        chunk.pop("sampling")
        for c in chunk["candidates"]:
            c.pop("n_scored_tokens")
    stats = ComputeStats()
    stats.add(old)
    data = stats.to_json()
    assert data["prompt_tokens"] is None and data["scored_tokens"] is None and data["generated_tokens"] == stats.generated_tokens > 0
    assert data["prompts"] == len(old["chunks"])


def test_select_k_counts_what_a_run_with_that_k_would_spend():
    backend = ChoiceBackend()
    k4 = list(sample_candidates(backend, [{"id": f"d{i}", "text": "One. Two."} for i in range(3)], SampleConfig(k=4)))
    k2 = list(sample_candidates(ChoiceBackend(), [{"id": f"d{i}", "text": "One. Two."} for i in range(3)], SampleConfig(k=2)))
    cut = [first_candidates(orjson.loads(orjson.dumps(d)), 2) for d in k4]
    a, b = ComputeStats(), ComputeStats()
    for x, y in zip(cut, k2):
        a.add(x)
        b.add(y)
    assert a.to_json() == b.to_json()


def test_sample_stats_line_and_sidecar_numbers():
    out = list(sample_candidates(ChoiceBackend(), [{"id": "x", "chunks": [{"text": "Q"}, {"text": " A"}]}], SampleConfig(k=1, k_max=4)))
    stats = SampleStats()
    stats.add(out[0])
    line = stats.compute.line(2.5)
    data = stats.to_json()["compute"]
    assert f"{data['prompts']:,} prompts" in line and f"{data['generated_tokens']:,} generated tokens" in line and "2.5 s" in line
    assert f"{data['flops']:.3g} FLOPs (2 x 1,000 parameters x tokens)" in line


def test_real_model_counts_its_own_tokens(tmp_path, tiny_model_dir):
    """Prompt, generated and scored token counts are the transformers backend's own; FLOPs use its
    parameter count; `lt select` reports the same compute for the file it selects from."""
    from lt_cli.backends import load_backend
    from lt_cli.backends.base import BackendConfig

    corpus = small_corpus(tmp_path / "docs.jsonl", 2)
    out = tmp_path / "cand.jsonl"
    code, _, err = cli(["sample-thoughts", "--model", tiny_model_dir, "--k", "3", "--max-new-tokens", "6", "--dtype", "float32", corpus, "-o", out])
    assert code == 0, err
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    backend = load_backend("transformers", BackendConfig(model=str(tiny_model_dir), dtype="float32", device="cpu"))
    try:
        n_parameters = sum(p.numel() for p in backend.model.parameters())
        config = SampleConfig()
        prompt_tokens = scored_tokens = generated = prompts = 0
        for doc in records:
            assert doc["estep"] == {"model_parameters": n_parameters}
            for i, chunk in enumerate(doc["chunks"]):
                assert chunk["sampling"]["prompt_tokens"] == len(backend.encode(chunk_prompt(doc["chunks"], i, config)))
                prompts += 1
                prompt_tokens += chunk["sampling"]["prompt_tokens"]
                for c in chunk["candidates"]:
                    pair = chunk_scoring_pair(doc["chunks"], i, c["latent"], config)
                    assert c["n_scored_tokens"] == len(backend.encode(pair.context)) + len(backend.encode(pair.continuation, add_bos=False))
                    scored_tokens += c["n_scored_tokens"]
                    generated += c["n_tokens"]
    finally:
        backend.close()
    sidecar = orjson.loads((tmp_path / "cand.jsonl.stats.json").read_bytes())
    compute = sidecar["stats"]["compute"]
    assert (compute["prompts"], compute["prompt_tokens"], compute["generated_tokens"], compute["scored_tokens"]) == (
        prompts, prompt_tokens, generated, scored_tokens
    )
    assert compute["flops"] == 2 * n_parameters * (prompt_tokens + generated + scored_tokens)
    assert sidecar["seconds"] > 0 and f"{compute['generated_tokens']:,} generated tokens" in err
    code, _, err = cli(["select", out, "-o", tmp_path / "aug.jsonl"])
    assert code == 0, err
    assert orjson.loads((tmp_path / "aug.jsonl.stats.json").read_bytes())["stats"]["compute"] == compute
    assert "E-step generated tokens" in err and f"{compute['flops']:.4g}" in err


def test_parameter_count_from_safetensors_headers_matches_the_loaded_model(tiny_model_dir, tmp_path):
    """What the vLLM backend reports (it holds no torch modules to count) equals the transformers count."""
    from lt_cli.backends import load_backend
    from lt_cli.backends.base import BackendConfig, count_parameters

    backend = load_backend("transformers", BackendConfig(model=str(tiny_model_dir), dtype="float32", device="cpu"))
    try:
        assert count_parameters(str(tiny_model_dir)) == backend.n_parameters == sum(p.numel() for p in backend.model.parameters())
    finally:
        backend.close()
    assert count_parameters(str(tmp_path)) is None  # no safetensors files


# --------------------------------------------------------------------------------- teacher (API)
def run_lt(args, env):
    return subprocess.run(LT + [str(a) for a in args], capture_output=True, env={**ENV, **env}, cwd=REPO)


def teacher_docs(path, n=3):
    from test_synthesize import docs as math_docs, write_docs

    write_docs(path, math_docs(n))
    return path


def test_estimate_sends_nothing_and_counts_offline(tmp_path):
    from servers.openai_server import run_openai_server

    from lt_cli.chunking import ensure_chunks
    from lt_cli.teacher import SynthesizeConfig, requests_for

    source = teacher_docs(tmp_path / "docs.jsonl")
    with run_openai_server() as server:
        result = run_lt(
            ["synthesize", source, "-o", tmp_path / "t.jsonl", "--model", "teacher-x", "--estimate", "--input-price", "1", "--output-price", "4"],
            server.client_env(),
        )
        assert result.returncode == 0, result.stderr.decode()
        assert server.requests() == [] and server.usage()["requests"] == 0, "--estimate sent a request"
    assert not (tmp_path / "t.jsonl").exists() and not (tmp_path / "t.jsonl.cache.sqlite").exists()
    data = orjson.loads(result.stdout)
    config = SynthesizeConfig()
    records = [ensure_chunks(orjson.loads(line)) for line in source.read_bytes().splitlines()]
    requests = [r for doc in records for r in requests_for(doc, config)]
    prompt = sum(3 * len(r.messages) + sum(math.ceil(len(m["content"]) / 4) for m in r.messages) + 3 for r in requests)
    completion = sum(min(6000, math.ceil(2.3 * math.ceil(len(doc["chunks"][r.chunk]["text"]) / 4))) for doc in records for r in requests_for(doc, config))
    assert data["requests"] == data["requests_to_send"] == len(requests) == sum(len(d["chunks"]) for d in records)
    assert data["estimated_prompt_tokens"] == prompt and data["estimated_completion_tokens"] == completion
    assert data["worst_case_completion_tokens"] == 6000 * len(requests)
    assert data["estimated_cost_usd"] == pytest.approx((prompt * 1 + completion * 4) / 1e6)
    assert data["worst_case_cost_usd"] == pytest.approx((prompt * 1 + 6000 * len(requests) * 4) / 1e6)
    assert "nothing sent" in result.stderr.decode()


def test_real_run_reports_the_servers_usage_exactly_then_estimate_sees_the_cache(tmp_path):
    from servers.openai_server import run_openai_server

    source = teacher_docs(tmp_path / "docs.jsonl")
    out = tmp_path / "t.jsonl"
    with run_openai_server() as server:
        env = server.client_env()
        result = run_lt(["synthesize", source, "-o", out, "--model", "gpt-4o-mini", "--max-new-tokens", "11"], env)
        assert result.returncode == 0, result.stderr.decode()
        billed = server.usage()
        usage = orjson.loads((tmp_path / "t.jsonl.stats.json").read_bytes())["stats"]["usage"]
        assert (usage["requests_sent"], usage["prompt_tokens"], usage["completion_tokens"]) == (
            billed["requests"], billed["prompt_tokens"], billed["completion_tokens"]
        )
        assert usage["source"] == "server usage" and usage["requests_without_usage"] == 0
        # gpt-4o-mini is in the price table: $0.15 / $0.60 per 1M tokens
        assert usage["cost_usd"] == pytest.approx((billed["prompt_tokens"] * 0.15 + billed["completion_tokens"] * 0.60) / 1e6)
        assert usage["prices"]["input_per_1m"] == 0.15 and "price table" in usage["prices"]["source"]
        stderr = result.stderr.decode()
        assert f"{billed['prompt_tokens']:,} prompt + {billed['completion_tokens']:,} completion tokens" in stderr and "cost $" in stderr
        # every request is now cached: the estimate says nothing is left to send
        estimate = run_lt(["synthesize", source, "-o", out, "--model", "gpt-4o-mini", "--max-new-tokens", "11", "--estimate"], env)
        assert estimate.returncode == 0, estimate.stderr.decode()
        data = orjson.loads(estimate.stdout)
        assert data["requests"] == billed["requests"] and data["requests_cached"] == billed["requests"] and data["requests_to_send"] == 0
        assert data["estimated_prompt_tokens"] == 0 and data["estimated_cost_usd"] == 0
        # a rerun is served by the cache: nothing sent, nothing billed
        again = run_lt(
            ["synthesize", source, "-o", tmp_path / "again.jsonl", "--model", "gpt-4o-mini", "--max-new-tokens", "11", "--cache", str(out) + ".cache.sqlite"],
            env,
        )
        assert again.returncode == 0 and server.usage() == billed
        assert orjson.loads((tmp_path / "again.jsonl.stats.json").read_bytes())["stats"]["usage"]["requests_sent"] == 0


def test_batch_api_usage_and_price_flags(tmp_path):
    from servers.openai_server import run_openai_server

    source = teacher_docs(tmp_path / "docs.jsonl", 2)
    out = tmp_path / "t.jsonl"
    with run_openai_server() as server:
        args = ["synthesize", "--batch", source, "-o", out, "--model", "teacher-x", "--max-new-tokens", "7", "--batch-poll-interval", "0.2",
                "--input-price", "2", "--output-price", "8"]
        result = run_lt(args, server.client_env())
        assert result.returncode == 0, result.stderr.decode()
        billed = server.usage()
    usage = orjson.loads((tmp_path / "t.jsonl.stats.json").read_bytes())["stats"]["usage"]
    assert billed["requests"] > 0 and (usage["prompt_tokens"], usage["completion_tokens"]) == (billed["prompt_tokens"], billed["completion_tokens"])
    assert usage["cost_usd"] == pytest.approx((billed["prompt_tokens"] * 2 + billed["completion_tokens"] * 8) / 1e6)
    assert usage["prices"]["source"] == "--input-price and --output-price"


def test_unknown_model_without_prices_has_no_cost_and_bad_prices_are_refused(tmp_path):
    source = teacher_docs(tmp_path / "docs.jsonl", 1)
    result = run_lt(["synthesize", source, "--model", "teacher-x", "--estimate"], {})
    assert result.returncode == 0, result.stderr.decode()
    data = orjson.loads(result.stdout)
    assert data["estimated_cost_usd"] is None and "pass --input-price" in result.stderr.decode()
    result = run_lt(["synthesize", source, "--estimate", "--input-price", "-1"], {})
    assert result.returncode == 2 and "--input-price must be a non-negative number" in result.stderr.decode()
