"""The OpenAI-compatible backend against a real HTTP server process (tests/servers/openai_server.py).

Most tests use the server's deterministic text engine (each token is one character with log-prob
exactly -log 27), which starts in well under a second; the round trip through a real model uses
the tiny Llama served by lt's transformers backend and compares with that backend called directly.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lt_cli.backends.base import FINISH_LENGTH, FINISH_STOP, BackendConfig, SamplingParams, Usage
from lt_cli.errors import LtError
from servers.openai_server import run_openai_server

pytest.importorskip("httpx")

LOG27 = -math.log(27)
KEY = "sk-lt-secret-5f2c9a77e1d04b3c"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server():
    with run_openai_server(api_key=KEY) as handle:
        yield handle


@pytest.fixture
def env(server, monkeypatch):
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "LT_API_BASE_URL", "LT_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in server.client_env().items():
        monkeypatch.setenv(name, value)
    server.set_faults()
    return server


def make_backend(**options):
    from lt_cli.backends.openai import OpenAIBackend

    options.setdefault("backoff_base_s", 0.01)
    options.setdefault("backoff_max_s", 0.05)
    return OpenAIBackend(BackendConfig(model="test-model", options=options))


# ---------------------------------------------------------------------- round trips
def test_completions_round_trip_with_seeds_and_logprobs(env):
    backend = make_backend(logprobs=True)
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=9)
    out = backend.sample(["first prompt", "second"], params, seeds=[[11, 12], [13, 11]])
    assert [len(row) for row in out] == [2, 2]
    for row in out:
        for sample in row:
            assert len(sample.text) == 9 and set(sample.text) <= set("abcdefghijklmnopqrstuvwxyz ")
            assert sample.token_logprobs == pytest.approx([LOG27] * 9)
            assert sample.logprob == pytest.approx(9 * LOG27)
            assert sample.finish_reason == FINISH_LENGTH and not sample.finished
    # a sample depends only on its own seed: seed 11 gives the same text for either prompt
    assert out[0][0].text == out[1][1].text
    assert out[0][0].text != out[0][1].text
    again = backend.sample(["first prompt"], params, seeds=[[11, 12]])
    assert [s.text for s in again[0]] == [s.text for s in out[0]]
    # one request per (prompt, sample): 4 + 2 so far, each carrying the key
    sent = env.requests("/v1/completions")
    assert len(sent) >= 6
    assert all(r["headers"].get("Authorization") == f"Bearer {KEY}" for r in sent[-6:])
    backend.close()


def test_logprobs_off_by_default_and_stop_strings(env):
    backend = make_backend()
    sample = backend.sample(["x"], SamplingParams(max_new_tokens=200, stop=("e",)), seeds=[[5]])[0][0]
    assert sample.token_logprobs == [] and sample.token_ids == []
    assert sample.finish_reason == FINISH_STOP
    assert "e" not in sample.text and len(sample.text) < 200
    backend.close()


def test_chat_round_trip(env):
    backend = make_backend(logprobs=True)
    conversation = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    out = backend.chat([conversation, conversation], SamplingParams(max_new_tokens=6, temperature=0.7), seeds=[[3], [3]])
    assert out[0][0].text == out[1][0].text and len(out[0][0].text) == 6
    assert out[0][0].token_logprobs == pytest.approx([LOG27] * 6)
    assert out[0][0].finish_reason == FINISH_LENGTH
    chat_requests = env.requests("/v1/chat/completions")
    assert len(chat_requests) >= 2
    backend.close()


def test_score_via_echo(env):
    backend = make_backend()
    scores = backend.score([("the context ", "and more"), ("a", "b")])
    assert scores[0].n_tokens == len("and more")
    assert scores[0].logprob == pytest.approx(len("and more") * LOG27)
    assert scores[1].token_logprobs == pytest.approx([LOG27])
    assert scores[0].n_truncated == 0
    with pytest.raises(LtError, match="non-empty continuation"):
        backend.score([("context", "")])
    env.set_faults(no_echo=True)
    with pytest.raises(LtError, match="echo") as info:
        backend.score([("c", "d")])
    assert "\n" not in str(info.value)
    backend.close()


def test_bad_seed_shapes_and_options(env, monkeypatch):
    backend = make_backend()
    with pytest.raises(LtError, match="seed lists"):
        backend.sample(["a", "b"], SamplingParams(n=1), seeds=[[1]])
    with pytest.raises(LtError, match="needs 2 seeds"):
        backend.sample(["a"], SamplingParams(n=2), seeds=[[1]])
    backend.close()
    with pytest.raises(LtError, match="unknown api backend option"):
        make_backend(max_concurency=3)
    with pytest.raises(LtError, match="state file"):
        make_backend(batch=True)
    with pytest.raises(LtError, match="max_concurrency"):
        make_backend(max_concurrency=0)
    monkeypatch.setenv("LT_API_BASE_URL", "ftp://example.com/v1")
    with pytest.raises(LtError, match="http"):
        make_backend()
    monkeypatch.setenv("LT_API_BASE_URL", "https://api.example.com/v1")
    monkeypatch.delenv("LT_API_KEY")
    with pytest.raises(LtError, match="no API key"):
        make_backend()


def test_options_from_environment(monkeypatch):
    from lt_cli.backends.openai_client import APIOptions

    monkeypatch.setenv("LT_API_MAX_RETRIES", "2")
    monkeypatch.setenv("LT_API_LOGPROBS", "true")
    opts = APIOptions.from_dict({"max_concurrency": 3})
    assert (opts.max_retries, opts.logprobs, opts.max_concurrency) == (2, True, 3)
    assert APIOptions.from_dict({"max_retries": 5}).max_retries == 5  # explicit wins
    monkeypatch.setenv("LT_API_TIMEOUT_S", "soon")
    with pytest.raises(LtError, match="not a number"):
        APIOptions.from_dict({})


def test_env_precedence(monkeypatch):
    from lt_cli.backends.openai_client import DEFAULT_BASE_URL, api_settings_from_env

    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "LT_API_BASE_URL", "LT_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert api_settings_from_env() == (DEFAULT_BASE_URL, None)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://a.example/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", "k1")
    assert api_settings_from_env() == ("http://a.example/v1", "k1")
    monkeypatch.setenv("LT_API_BASE_URL", "http://b.example/v1")
    monkeypatch.setenv("LT_API_KEY", "k2")
    assert api_settings_from_env() == ("http://b.example/v1", "k2")


# ---------------------------------------------------------------------- faults and retries
def test_survives_429_and_500_before_success(env):
    env.set_faults(fail_first=4)
    backend = make_backend(max_retries=5)
    sample = backend.sample(["p"], SamplingParams(max_new_tokens=4), seeds=[[1]])[0][0]
    assert len(sample.text) == 4
    assert [status for _, _, status in backend.attempt_log] == ["429", "500", "429", "500", "200"]
    faults = [r["fault"] for r in env.requests("/v1/completions")[-5:]]
    assert faults == ["status:429", "status:500", "status:429", "status:500", None]
    backend.close()


def test_honours_retry_after(env):
    env.set_faults(fail_first=1, retry_after="1")
    backend = make_backend(backoff_base_s=0.001, backoff_max_s=0.001)
    start = time.monotonic()
    backend.sample(["p"], SamplingParams(max_new_tokens=2), seeds=[[1]])
    elapsed = time.monotonic() - start
    assert 1.0 <= elapsed < 5.0
    backend.close()


def test_survives_hanging_server_via_timeout(env):
    env.set_faults(hang_first=1, hang_s=4)
    backend = make_backend(timeout_s=0.5, max_retries=2)
    start = time.monotonic()
    sample = backend.sample(["p"], SamplingParams(max_new_tokens=3), seeds=[[2]])[0][0]
    assert time.monotonic() - start < 3.5
    assert len(sample.text) == 3
    assert [status for _, _, status in backend.attempt_log] == ["timeout", "200"]
    backend.close()


def test_clear_error_after_max_retries(env):
    env.set_faults(fail_always=503)
    backend = make_backend(max_retries=2)
    with pytest.raises(LtError) as info:
        backend.sample(["p"], SamplingParams(max_new_tokens=2), seeds=[[1]])
    message = str(info.value)
    assert message.startswith("POST /completions failed after 3 attempts: HTTP 503")
    assert "\n" not in message and KEY not in message and env.base_url not in message
    assert len(backend.attempt_log) == 3
    backend.close()


def test_a_failed_request_stops_the_queue(env):
    env.set_faults(fail_always=400)
    backend = make_backend(max_concurrency=2, max_retries=3)
    with pytest.raises(LtError, match="HTTP 400"):
        backend.sample([str(i) for i in range(40)], SamplingParams(max_new_tokens=2), seeds=[[i] for i in range(40)])
    assert len(backend.attempt_log) <= 4  # the two in flight (and at most one more each), not all 40
    backend.close()


def test_client_errors_are_not_retried_and_server_echoes_are_redacted(env):
    env.set_faults(leak_key_in_error=True)
    backend = make_backend(max_retries=4)
    with pytest.raises(LtError) as info:
        backend.chat([[{"role": "user", "content": "hi"}]], SamplingParams(max_new_tokens=2))
    message = str(info.value)
    assert "HTTP 400" in message and "[redacted]" in message and KEY not in message
    assert len(backend.attempt_log) == 1
    backend.close()


def test_bounded_concurrency_overlaps_requests(env):
    env.set_faults(hang_first=4, hang_s=1.0)
    backend = make_backend(max_concurrency=4, timeout_s=10)
    start = time.monotonic()
    out = backend.sample(["a", "b", "c", "d"], SamplingParams(max_new_tokens=2), seeds=[[1], [2], [3], [4]])
    elapsed = time.monotonic() - start
    assert [len(row[0].text) for row in out] == [2, 2, 2, 2]
    assert elapsed < 2.5  # four 1-second requests in parallel, not 4 s in series
    backend.close()


# ---------------------------------------------------------------------- Batch API
def test_batch_round_trip_matches_sync(env, tmp_path):
    params = SamplingParams(n=2, max_new_tokens=5)
    seeds = [[1, 2], [3, 4], [5, 6]]
    sync = make_backend(logprobs=True)
    expected = sync.sample(["a", "b", "c"], params, seeds=seeds)
    sync.close()
    started = time.time()  # requests are logged when answered: a late answer to an earlier test's hung request is older
    state = tmp_path / "batches.jsonl"
    backend = make_backend(logprobs=True, batch=True, batch_state=str(state), batch_poll_interval_s=0.05, batch_max_requests=4)
    got = backend.sample(["a", "b", "c"], params, seeds=seeds)
    assert [[s.text for s in row] for row in got] == [[s.text for s in row] for row in expected]
    assert got[2][1].token_logprobs == pytest.approx([LOG27] * 5)
    assert [r for r in env.requests("/v1/completions") if r["time"] >= started] == []  # nothing went through the sync endpoint
    records = [json.loads(line) for line in state.read_text().splitlines()]
    assert [r["n_requests"] for r in records] == [4, 2]  # 6 requests split into files of at most 4
    assert len(env.requests("/v1/batches")) >= 2
    backend.close()


def test_batch_failed_lines_are_retried_synchronously(env, tmp_path):
    env.set_faults(batch_fail_custom_ids=["request-1"])
    backend = make_backend(batch=True, batch_state=str(tmp_path / "s.jsonl"), batch_poll_interval_s=0.05)
    n_sync = len(env.requests("/v1/chat/completions"))
    out = backend.chat([[{"role": "user", "content": str(i)}] for i in range(3)], SamplingParams(max_new_tokens=3), seeds=[[1], [2], [3]])
    assert [len(row[0].text) for row in out] == [3, 3, 3]
    assert len(env.requests("/v1/chat/completions")) == n_sync + 1
    backend.close()


_CRASH_SCRIPT = """
import sys
from lt_cli.backends.base import BackendConfig, SamplingParams
from lt_cli.backends.openai import OpenAIBackend
backend = OpenAIBackend(BackendConfig(model="test-model", options={"batch": True, "batch_state": sys.argv[1], "batch_poll_interval_s": 0.05}))
print(backend.sample(["a", "b"], SamplingParams(max_new_tokens=4), seeds=[[1], [2]]))
"""


def test_batch_reattaches_after_crash(env, tmp_path):
    env.set_faults(batch_delay_s=3)
    state = tmp_path / "state.jsonl"
    def batch_posts():
        return [r for r in env.requests("/v1/batches") if r["method"] == "POST"]

    n_posts = len(batch_posts())
    process = subprocess.Popen([sys.executable, "-c", _CRASH_SCRIPT, str(state)], env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not (state.exists() and state.read_text().strip()) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert state.exists(), process.communicate(timeout=5)
    process.send_signal(signal.SIGKILL)  # the client dies while its batch is still in progress
    process.wait(timeout=10)
    record = json.loads(state.read_text().splitlines()[0])

    # a rerun with a too-short wait leaves with a clear message and still does not resubmit
    impatient = make_backend(batch=True, batch_state=str(state), batch_poll_interval_s=0.05, batch_max_wait_s=0.2)
    with pytest.raises(LtError, match="rerun with the same batch_state to re-attach"):
        impatient.sample(["a", "b"], SamplingParams(max_new_tokens=4), seeds=[[1], [2]])
    impatient.close()

    backend = make_backend(batch=True, batch_state=str(state), batch_poll_interval_s=0.05, batch_max_wait_s=30)
    out = backend.sample(["a", "b"], SamplingParams(max_new_tokens=4), seeds=[[1], [2]])
    assert len(batch_posts()) == n_posts + 1  # the crashed run's submission only
    assert len(state.read_text().splitlines()) == 1  # re-attached, nothing resubmitted
    gets = [r for r in env.requests() if r["path"] == f"/v1/batches/{record['batch_id']}"]
    assert len(gets) >= 2
    sync = make_backend()
    expected = sync.sample(["a", "b"], SamplingParams(max_new_tokens=4), seeds=[[1], [2]])
    assert [row[0].text for row in out] == [row[0].text for row in expected]
    sync.close()
    backend.close()


# ---------------------------------------------------------------------- usage accounting
def _server_delta(before: dict, after: dict) -> Usage:
    return Usage(
        requests=after["requests"] - before["requests"],
        prompt_tokens=after["prompt_tokens"] - before["prompt_tokens"],
        completion_tokens=after["completion_tokens"] - before["completion_tokens"],
    )


def test_usage_per_sample_and_totals_match_the_server(env):
    """Every reply's billed tokens land in its Sample and in backend.usage, exactly as the server billed."""
    backend = make_backend(logprobs=True, max_concurrency=3)
    before = env.usage()
    out = backend.sample(["first prompt", "second"], SamplingParams(n=2, max_new_tokens=9), seeds=[[11, 12], [13, 14]])
    assert [(s.prompt_tokens, s.completion_tokens) for row in out for s in row] == [(12, 9), (12, 9), (6, 9), (6, 9)]
    stopped = backend.sample(["x"], SamplingParams(max_new_tokens=200, stop=("e",)), seeds=[[5]])[0][0]
    assert stopped.finish_reason == FINISH_STOP
    assert (stopped.prompt_tokens, stopped.completion_tokens) == (1, len(stopped.text) + 1)  # the stop token is billed
    accented = backend.sample(["h\u00e9llo"], SamplingParams(max_new_tokens=2), seeds=[[1]])[0][0]
    assert accented.prompt_tokens == 6  # the server counts UTF-8 bytes
    chat = backend.chat([[{"role": "user", "content": "hello"}]], SamplingParams(max_new_tokens=4), seeds=[[2]])[0][0]
    assert (chat.prompt_tokens, chat.completion_tokens) == (len("user: hello\nassistant: "), 4)
    backend.score([("the context ", "and more")])  # echo: 20 prompt tokens, 1 generated
    env.set_faults(fail_first=2)
    backend.sample(["p"], SamplingParams(max_new_tokens=3), seeds=[[3]])  # two failed attempts bill nothing
    assert [status for _, _, status in backend.attempt_log[-3:]] == ["429", "500", "200"]
    want = Usage(
        requests=4 + 1 + 1 + 1 + 1 + 1,
        prompt_tokens=36 + 1 + 6 + 23 + 20 + 1,
        completion_tokens=36 + stopped.completion_tokens + 2 + 4 + 1 + 3,
    )
    assert backend.usage == want
    assert _server_delta(before, env.usage()) == want
    assert backend.usage.total_tokens == want.prompt_tokens + want.completion_tokens
    backend.close()


def test_usage_through_the_batch_api_matches_the_server(env, tmp_path):
    """Batch result lines carry usage too; a failed line retried synchronously is billed once."""
    env.set_faults(batch_fail_custom_ids=["request-1"])
    backend = make_backend(batch=True, batch_state=str(tmp_path / "s.jsonl"), batch_poll_interval_s=0.05, batch_max_requests=2)
    before = env.usage()
    n_sync = len(env.requests("/v1/chat/completions"))
    chats = backend.chat([[{"role": "user", "content": str(i)}] for i in range(3)], SamplingParams(max_new_tokens=3), seeds=[[1], [2], [3]])
    assert len(env.requests("/v1/chat/completions")) == n_sync + 1  # request-1 went through the sync path
    assert [(row[0].prompt_tokens, row[0].completion_tokens) for row in chats] == [(19, 3)] * 3
    samples = backend.sample(["a", "bb"], SamplingParams(n=2, max_new_tokens=5), seeds=[[1, 2], [3, 4]])
    assert [s.prompt_tokens for row in samples for s in row] == [1, 1, 2, 2]
    want = Usage(requests=3 + 4, prompt_tokens=3 * 19 + 6, completion_tokens=3 * 3 + 4 * 5)
    assert backend.usage == want
    assert _server_delta(before, env.usage()) == want
    backend.close()


def test_replies_without_usage_are_counted_as_such(env):
    env.set_faults(no_usage=True)
    backend = make_backend()
    before = env.usage()
    out = backend.sample(["ab", "c"], SamplingParams(max_new_tokens=2), seeds=[[1], [2]])
    assert [(row[0].prompt_tokens, row[0].completion_tokens) for row in out] == [(None, None), (None, None)]
    assert backend.usage == Usage(requests=2, prompt_tokens=0, completion_tokens=0, requests_without_usage=2)
    assert _server_delta(before, env.usage()) == Usage(requests=2, prompt_tokens=3, completion_tokens=4)  # billed all the same
    backend.close()


# ---------------------------------------------------------------------- secrets
def test_key_never_in_outputs_logs_or_errors(env, tmp_path):
    """Run `lt synthesize --backend api` as a real process; the key reaches the server only."""
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"text": "Two plus two is four. " * 3}) + "\n")
    out = tmp_path / "teacher.jsonl"
    run_env = {k: v for k, v in os.environ.items() if k not in {"OPENAI_API_KEY", "OPENAI_BASE_URL"}}
    run_env.update(env.client_env())
    run_env["LT_PROGRESS_INTERVAL"] = "0"
    command = [sys.executable, "-m", "lt_cli", "synthesize", "--backend", "api", "--model", "test-model", "--max-new-tokens", "8", str(docs), "-o", str(out)]
    n_requests = len(env.requests())
    ok = subprocess.run(command, env=run_env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    sent = env.requests()[n_requests:]
    assert sent and all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in sent)

    env.set_faults(fail_always=500)
    run_env.update(LT_API_MAX_RETRIES="2", LT_API_BACKOFF_BASE_S="0.01")  # options from the environment
    n_requests = len(env.requests())
    failed = subprocess.run(
        command[:-3] + [str(docs), "-o", str(tmp_path / "failed.jsonl"), "--no-cache"], env=run_env, capture_output=True, text=True, timeout=120
    )
    assert failed.returncode == 1
    error_lines = [line for line in failed.stderr.splitlines() if line.startswith("lt: error:")]
    assert len(error_lines) == 1 and "failed after 3 attempts: HTTP 500" in error_lines[0], failed.stderr
    assert "Traceback" not in failed.stderr
    assert len(env.requests("/v1/chat/completions")) - len([r for r in env.requests()[:n_requests] if r["path"] == "/v1/chat/completions"]) == 3

    texts = [ok.stdout, ok.stderr, failed.stdout, failed.stderr]
    texts += [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    for text in texts:
        assert KEY not in text
        assert env.base_url not in text


# ---------------------------------------------------------------------- a real model behind the server
@pytest.mark.slow
def test_round_trip_through_tiny_model_matches_local_backend(tiny_model_dir, monkeypatch):
    backends = pytest.importorskip("lt_cli.backends")
    if not hasattr(backends, "load_backend"):
        pytest.skip("lt_cli.backends.load_backend is not available")
    local = backends.load_backend("transformers", BackendConfig(model=str(tiny_model_dir), device="cpu"))
    params = SamplingParams(n=1, temperature=1.0, max_new_tokens=12, stop=("<|END_OF_LATENT|>",))
    prompt = "Two plus two<|START_OF_LATENT|><|POSTERIOR_PREFIX|>"
    expected = local.sample([prompt], params, seeds=[[7]])[0][0]
    expected_score = local.score([("Two plus two", " is four")])[0]
    local.close()
    with run_openai_server(model_dir=tiny_model_dir, api_key=KEY) as server:
        for name, value in server.client_env().items():
            monkeypatch.setenv(name, value)
        backend = make_backend(logprobs=True)
        got = backend.sample([prompt], params, seeds=[[7]])[0][0]
        score = backend.score([("Two plus two", " is four")])[0]
        backend.close()
    assert got.text == expected.text
    assert got.token_logprobs == pytest.approx(expected.token_logprobs, abs=1e-5)
    assert got.finish_reason == expected.finish_reason
    assert score.n_tokens == expected_score.n_tokens == len(" is four")
    assert score.logprob == pytest.approx(expected_score.logprob, abs=1e-4)
