"""OpenAI-compatible HTTP backend (extra ``api``): hosted APIs, a remote ``vllm serve``, a local server.

Why a separate backend: the teacher in the paper (gpt-4o-mini) is only reachable over HTTP, and a
big student served elsewhere (``vllm serve``) is most easily used the same way. Every request goes
through :meth:`OpenAIBackend._post`, which owns the retry policy, so no caller retries by itself.

Credentials come only from the environment: ``LT_API_BASE_URL`` (else ``OPENAI_BASE_URL``, else
``https://api.openai.com/v1``) and ``LT_API_KEY`` (else ``OPENAI_API_KEY``). Neither the key nor the
base URL is ever logged or put into an exception message or an output file: messages name only the
endpoint path (``POST /chat/completions``), and every text that came from the server is passed
through :meth:`_Secrets.redact` before it is shown.

Endpoints: :meth:`sample` uses ``/completions``, :meth:`chat` uses ``/chat/completions``,
:meth:`score` uses ``/completions`` with ``echo`` + ``logprobs`` (supported by vLLM's server and
older OpenAI models; a server that refuses it gets a clear :class:`LtError`). With
``options["batch"]`` the same request bodies go through the Batch API instead (see
:class:`BatchRunner`), which is how the reference ran its teacher.

Differences from the local backends, documented in docs/backends.md: ``Sample.token_ids`` is empty
unless the server returns ids (vLLM's ``return_tokens_as_token_ids``); ``Sample.token_logprobs`` is
filled only when ``options["logprobs"]`` is true, and is whatever the server reports (vLLM reports
the raw model's log-probs unless it runs with ``--logprobs-mode processed_logprobs``); ``seed`` is
forwarded but hosted APIs treat it as best effort.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import math
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from ..errors import LtError
from .base import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, BackendConfig, Sample, SamplingParams, Score

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524})
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


@dataclass
class APIOptions:
    """Backend-specific options (``BackendConfig.options``); each can also come from ``LT_API_<NAME>``."""

    #: requests in flight at once (``--max-concurrency``)
    max_concurrency: int = 8
    #: attempts per request = 1 + max_retries; retried on 429, 5xx, timeouts and connection errors
    max_retries: int = 6
    #: seconds before a request is abandoned and retried
    timeout_s: float = 120.0
    #: exponential backoff: min(backoff_max_s, backoff_base_s * 2**attempt), times a jitter in [0.5, 1]
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    #: a Retry-After header is honoured up to this many seconds
    retry_after_max_s: float = 300.0
    #: request log-probs of the sampled tokens (``Sample.token_logprobs``); off: they stay empty
    logprobs: bool = False
    #: forward the per-sample seed (servers that reject ``seed`` can turn this off)
    send_seed: bool = True
    #: use the Batch API (/v1/files + /v1/batches) instead of one HTTP request per sample
    batch: bool = False
    #: JSONL file recording submitted batch ids so a rerun re-attaches (required with ``batch``)
    batch_state: str | None = None
    batch_poll_interval_s: float = 30.0
    #: give up polling after this long (the batch keeps running; a rerun re-attaches)
    batch_max_wait_s: float = 26 * 3600.0
    #: requests per batch file (the OpenAI limit is 50,000; the reference used 20,000)
    batch_max_requests: int = 20000
    batch_completion_window: str = "24h"

    @classmethod
    def from_dict(cls, options: dict) -> "APIOptions":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise LtError(f"unknown api backend option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        # LT_API_<OPTION> environment variables fill options not given explicitly (retry policy
        # for commands that do not expose it as flags, e.g. LT_API_MAX_RETRIES=2)
        merged = {name: os.environ[f"LT_API_{name.upper()}"] for name in known if f"LT_API_{name.upper()}" in os.environ}
        merged.update(options)
        values = {}
        for key, value in merged.items():
            default = getattr(cls, key, None)
            try:
                if isinstance(default, bool):
                    value = value if isinstance(value, bool) else str(value).lower() in {"1", "true", "yes", "on"}
                elif isinstance(default, int):
                    value = int(value)
                elif isinstance(default, float):
                    value = float(value)
            except (TypeError, ValueError):
                raise LtError(f"api backend option {key}={value!r} is not a number") from None
            values[key] = value
        opts = cls(**values)
        if opts.max_concurrency < 1:
            raise LtError("api backend option max_concurrency must be at least 1")
        if opts.max_retries < 0:
            raise LtError("api backend option max_retries must be >= 0")
        if opts.timeout_s <= 0:
            raise LtError("api backend option timeout_s must be positive")
        if opts.batch and not opts.batch_state:
            raise LtError("the Batch API path needs a state file (option batch_state=PATH) so reruns re-attach")
        if opts.batch_max_requests < 1:
            raise LtError("api backend option batch_max_requests must be at least 1")
        return opts


class _Secrets:
    """Holds the key and base URL and scrubs them out of any text shown to the user."""

    def __init__(self, base_url: str, api_key: str | None):
        self.base_url = base_url
        self.api_key = api_key

    def redact(self, text: str) -> str:
        for secret in (self.api_key, self.base_url):
            if secret and len(secret) >= 4:
                text = text.replace(secret, "[redacted]")
        return text


def api_settings_from_env() -> tuple[str, str | None]:
    """(base_url, api_key) from LT_API_* or OPENAI_* environment variables (LT_ wins)."""
    base_url = os.environ.get("LT_API_BASE_URL") or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    api_key = os.environ.get("LT_API_KEY") or os.environ.get("OPENAI_API_KEY") or None
    return base_url.rstrip("/"), api_key


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _retry_after_seconds(value: str | None) -> float | None:
    """Parse a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class APIRequestError(LtError):
    """A request that failed for good (non-retryable status, or retries exhausted)."""


class OpenAIBackend:
    name = "api"

    def __init__(self, config: BackendConfig):
        try:
            import httpx
        except ImportError:
            raise LtError("the api backend needs httpx: pip install 'lt-cli[api]'") from None
        self.config = config
        self.model_id = config.model
        self.options = APIOptions.from_dict(dict(config.options))
        base_url, api_key = api_settings_from_env()
        parts = urlsplit(base_url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise LtError("the API base URL (LT_API_BASE_URL / OPENAI_BASE_URL) must start with http:// or https://")
        if api_key is None and (parts.hostname or "") not in _LOOPBACK_HOSTS:
            raise LtError("no API key: set LT_API_KEY or OPENAI_API_KEY")
        self._secrets = _Secrets(base_url, api_key)
        # httpx logs every request URL at INFO level; keep the base URL out of any log handler.
        for logger_name in ("httpx", "httpcore"):
            logging.getLogger(logger_name).setLevel(logging.WARNING)
        headers = {}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        limits = httpx.Limits(max_connections=self.options.max_concurrency + 2, max_keepalive_connections=self.options.max_concurrency + 2)
        self._client = httpx.Client(base_url=base_url, headers=headers, timeout=self.options.timeout_s, limits=limits)
        self._httpx = httpx
        self._rng = random.Random()  # backoff jitter only; never affects results
        self._rng_lock = threading.Lock()
        #: (method, path, status or "timeout"/exception name) of every attempt, for tests and diagnostics
        self.attempt_log: list[tuple[str, str, str]] = []
        self._sleep: Callable[[float], None] = time.sleep

    # ------------------------------------------------------------------ HTTP with retries
    def _backoff(self, attempt: int) -> float:
        with self._rng_lock:
            jitter = self._rng.uniform(0.5, 1.0)
        return min(self.options.backoff_max_s, self.options.backoff_base_s * (2**attempt)) * jitter

    def _request(self, method: str, path: str, *, json_body: Any = None, files: Any = None, data: Any = None, parse_json: bool = True) -> Any:
        """One logical request: retried on 429/5xx/timeouts with backoff; raises APIRequestError."""
        httpx = self._httpx
        attempts = self.options.max_retries + 1
        last_problem = ""
        for attempt in range(attempts):
            wait = None
            try:
                kwargs: dict[str, Any] = {}
                if json_body is not None:
                    kwargs["content"] = json.dumps(json_body).encode("utf-8")
                    kwargs["headers"] = {"Content-Type": "application/json"}
                if files is not None:  # multipart: httpx writes the content type with its boundary
                    kwargs["files"] = files
                    kwargs["data"] = data
                response = self._client.request(method, path, **kwargs)
            except httpx.TimeoutException:
                self.attempt_log.append((method, path, "timeout"))
                last_problem = f"timed out after {self.options.timeout_s:g} s"
            except httpx.TransportError as exc:
                self.attempt_log.append((method, path, type(exc).__name__))
                last_problem = f"connection failed ({type(exc).__name__})"
            else:
                status = response.status_code
                self.attempt_log.append((method, path, str(status)))
                if status < 400:
                    if not parse_json:
                        return response.content
                    try:
                        return response.json()
                    except ValueError:
                        raise APIRequestError(f"{method} {path}: the server answered HTTP {status} with a body that is not JSON") from None
                detail = self._error_detail(response)
                last_problem = f"HTTP {status}" + (f": {detail}" if detail else "")
                if status not in _RETRY_STATUS:
                    raise APIRequestError(f"{method} {path} failed: {last_problem}")
                retry_after = _retry_after_seconds(response.headers.get("retry-after"))
                if retry_after is not None:
                    wait = min(retry_after, self.options.retry_after_max_s)
            if attempt + 1 < attempts:
                self._sleep(self._backoff(attempt) if wait is None else wait)
        raise APIRequestError(f"{method} {path} failed after {attempts} attempts: {last_problem}")

    def _error_detail(self, response) -> str:
        try:
            body = response.json()
            message = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else body.get("error") or body.get("message")
            text = str(message) if message else ""
        except (ValueError, AttributeError):
            text = response.text[:300]
        return _one_line(self._secrets.redact(text))

    def _post(self, path: str, body: dict) -> dict:
        return self._request("POST", path, json_body=body)

    # ------------------------------------------------------------------ request fan-out
    def _run_all(self, endpoint: str, bodies: list[dict]) -> list[dict]:
        """Send every body to ``endpoint`` (bounded concurrency or the Batch API); responses in order."""
        if not bodies:
            return []
        if self.options.batch:
            return BatchRunner(self, endpoint).run(bodies)
        if self.options.max_concurrency == 1 or len(bodies) == 1:
            return [self._post(endpoint, body) for body in bodies]
        pool = ThreadPoolExecutor(max_workers=min(self.options.max_concurrency, len(bodies)))
        futures = [pool.submit(self._post, endpoint, body) for body in bodies]
        try:
            return [future.result() for future in futures]
        except BaseException:
            # one request failed for good: do not start (and retry) the queued rest
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True)

    def _sampling_fields(self, params: SamplingParams) -> dict:
        body: dict[str, Any] = {
            "model": self.model_id,
            "max_tokens": params.max_new_tokens,
            "temperature": float(params.temperature),
            "top_p": float(params.top_p),
        }
        if params.stop:
            body["stop"] = list(params.stop)
        return body

    def _expand(self, n_prompts: int, params: SamplingParams, seeds) -> list[tuple[int, int | None]]:
        """(prompt index, seed) per request: one request per (prompt, sample), n=1, own seed."""
        if seeds is not None:
            if len(seeds) != n_prompts:
                raise LtError(f"got {len(seeds)} seed lists for {n_prompts} prompts")
            for row in seeds:
                if len(row) != params.n:
                    raise LtError(f"each prompt needs {params.n} seeds, got {len(row)}")
        return [(i, None if seeds is None else int(seeds[i][j])) for i in range(n_prompts) for j in range(params.n)]

    def _group(self, n_prompts: int, params: SamplingParams, samples: list[Sample]) -> list[list[Sample]]:
        return [samples[i * params.n : (i + 1) * params.n] for i in range(n_prompts)]

    # ------------------------------------------------------------------ Backend interface
    def sample(self, prompts: Sequence[str], params: SamplingParams, seeds: Sequence[Sequence[int]] | None = None) -> list[list[Sample]]:
        plan = self._expand(len(prompts), params, seeds)
        bodies = []
        for i, seed in plan:
            body = {**self._sampling_fields(params), "prompt": prompts[i], "n": 1}
            if seed is not None and self.options.send_seed:
                body["seed"] = seed
            if self.options.logprobs:
                body["logprobs"] = 0
            bodies.append(body)
        responses = self._run_all("/completions", bodies)
        return self._group(len(prompts), params, [self._completion_sample(r, params) for r in responses])

    def chat(self, conversations: Sequence[Sequence[dict]], params: SamplingParams, seeds: Sequence[Sequence[int]] | None = None) -> list[list[Sample]]:
        plan = self._expand(len(conversations), params, seeds)
        bodies = []
        for i, seed in plan:
            messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in conversations[i]]
            body = {**self._sampling_fields(params), "messages": messages, "n": 1}
            if seed is not None and self.options.send_seed:
                body["seed"] = seed
            if self.options.logprobs:
                body["logprobs"] = True
                body["top_logprobs"] = 0
            bodies.append(body)
        responses = self._run_all("/chat/completions", bodies)
        return self._group(len(conversations), params, [self._chat_sample(r, params) for r in responses])

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[Score]:
        """log p(continuation | context) from echoed prompt log-probs (``/completions``, echo=true).

        The continuation's tokens are found by character offset: every echoed token starting at or
        after ``len(context)`` belongs to it. The server tokenizes context+continuation jointly, so a
        token straddling the boundary is counted with the context (documented in docs/backends.md).
        """
        bodies = []
        for context, continuation in pairs:
            if not continuation:
                raise LtError("score() needs a non-empty continuation")
            bodies.append({"model": self.model_id, "prompt": context + continuation, "echo": True, "logprobs": 0, "max_tokens": 1, "temperature": 1.0})
        try:
            responses = self._run_all("/completions", bodies)
        except APIRequestError as exc:
            raise LtError(f"scoring needs a server that supports echo+logprobs on /completions (vLLM does; most hosted chat models do not): {exc}") from None
        return [self._score_from_echo(context, continuation, r) for (context, continuation), r in zip(pairs, responses)]

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ response parsing
    def _finish(self, choice: dict, params: SamplingParams) -> str:
        reason = choice.get("finish_reason")
        if reason == "length":
            return FINISH_LENGTH
        if "stop_reason" in choice:  # vLLM: the matched stop string, a stop token id, or None for EOS
            return FINISH_STOP if isinstance(choice["stop_reason"], str) else FINISH_EOS
        return FINISH_STOP if params.stop else FINISH_EOS

    def _first_choice(self, response: dict) -> dict:
        choices = response.get("choices") if isinstance(response, dict) else None
        if not choices:
            raise LtError("the API response has no choices")
        return choices[0]

    def _completion_sample(self, response: dict, params: SamplingParams) -> Sample:
        choice = self._first_choice(response)
        token_logprobs: list[float] = []
        token_ids: list[int] = []
        logprobs = choice.get("logprobs")
        if self.options.logprobs and logprobs:
            token_logprobs = [float(x) for x in logprobs.get("token_logprobs") or [] if x is not None]
            token_ids = _ids_from_tokens(logprobs.get("tokens") or [])
        return Sample(text=choice.get("text") or "", token_ids=token_ids, token_logprobs=token_logprobs, finish_reason=self._finish(choice, params))

    def _chat_sample(self, response: dict, params: SamplingParams) -> Sample:
        choice = self._first_choice(response)
        message = choice.get("message") or {}
        token_logprobs: list[float] = []
        token_ids: list[int] = []
        logprobs = choice.get("logprobs")
        if self.options.logprobs and logprobs and logprobs.get("content"):
            token_logprobs = [float(item["logprob"]) for item in logprobs["content"]]
            token_ids = _ids_from_tokens([item.get("token", "") for item in logprobs["content"]])
        return Sample(text=message.get("content") or "", token_ids=token_ids, token_logprobs=token_logprobs, finish_reason=self._finish(choice, params))

    def _score_from_echo(self, context: str, continuation: str, response: dict) -> Score:
        choice = self._first_choice(response)
        logprobs = choice.get("logprobs") or {}
        tokens = logprobs.get("tokens")
        values = logprobs.get("token_logprobs")
        offsets = logprobs.get("text_offset")
        if not tokens or values is None or offsets is None:
            raise LtError("the server did not return echoed prompt log-probs (echo+logprobs on /completions); this backend cannot score with it")
        full = context + continuation
        starts = _token_starts(tokens, full, offsets)
        scored: list[float] = []
        for start, value in zip(starts, values):
            if start < len(context):
                continue
            if start >= len(full):
                break  # the generated token after the echoed prompt
            if value is None:
                raise LtError("the server returned no log-prob for the first token; scoring needs a non-empty context or a BOS token")
            scored.append(float(value))
        if not scored:
            raise LtError("no continuation tokens found in the echoed prompt")
        return Score(logprob=float(math.fsum(scored)), token_logprobs=scored)


def _ids_from_tokens(tokens: list[str]) -> list[int]:
    """vLLM with ``return_tokens_as_token_ids`` names tokens ``token_id:123``; otherwise no ids."""
    ids = []
    for token in tokens:
        if not isinstance(token, str) or not token.startswith("token_id:"):
            return []
        try:
            ids.append(int(token[len("token_id:") :]))
        except ValueError:
            return []
    return ids


def _token_starts(tokens: list[str], full: str, offsets: list[int]) -> list[int]:
    """Character start of each echoed token within ``full``.

    Servers differ on whether a BOS token is echoed (and its text length shifts ``text_offset``),
    so offsets are recomputed from the token texts when their concatenation contains the prompt;
    otherwise (byte tokens, ids) the server's ``text_offset`` is used.
    """
    joined = "".join(t if isinstance(t, str) else "" for t in tokens)
    shift = joined.find(full) if full else -1
    if shift < 0:
        return [int(o) for o in offsets]
    starts, position = [], 0
    for token in tokens:
        starts.append(position - shift)
        position += len(token) if isinstance(token, str) else 0
    return starts


# ---------------------------------------------------------------------- Batch API
@dataclass
class BatchRecord:
    """One line of the state file: which batch holds which requests."""

    batch_id: str
    input_sha256: str
    endpoint: str
    n_requests: int
    input_file_id: str
    submitted_at: float


class BatchRunner:
    """Runs request bodies through the Batch API, re-attaching to batches already submitted.

    Requests are split into files of ``batch_max_requests`` lines with ``custom_id=request-<index>``.
    Each file's SHA-256 identifies it: before submitting, the state file is searched for a batch with
    the same hash, and a live or completed one is re-attached (polled and downloaded) instead of
    resubmitted, so a crashed or interrupted run costs nothing when rerun. Requests that the batch
    reports as failed are retried synchronously with the normal retry policy.
    """

    TERMINAL_BAD = frozenset({"failed", "expired", "cancelled", "cancelling"})

    def __init__(self, backend: OpenAIBackend, endpoint: str):
        self.backend = backend
        self.endpoint = endpoint
        self.options = backend.options
        self.state_path = Path(self.options.batch_state)

    def _read_state(self) -> list[BatchRecord]:
        if not self.state_path.exists():
            return []
        records = []
        for line_no, line in enumerate(self.state_path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(BatchRecord(**json.loads(line)))
            except (ValueError, TypeError):
                raise LtError(f"{self.state_path}:{line_no}: not a batch state record") from None
        return records

    def _append_state(self, record: BatchRecord) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.state_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(record)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def run(self, bodies: list[dict]) -> list[dict]:
        from ..console import log

        results: list[dict | None] = [None] * len(bodies)
        size = self.options.batch_max_requests
        for start in range(0, len(bodies), size):
            part = bodies[start : start + size]
            lines = [
                json.dumps({"custom_id": f"request-{start + k}", "method": "POST", "url": "/v1" + self.endpoint, "body": body}, sort_keys=True)
                for k, body in enumerate(part)
            ]
            payload = ("\n".join(lines) + "\n").encode("utf-8")
            digest = hashlib.sha256(payload).hexdigest()
            batch = self._attach_or_submit(payload, digest, len(part))
            batch = self._wait(batch)
            failed = self._collect(batch, results)
            missing = [start + k for k in range(len(part)) if results[start + k] is None]
            if missing:
                log(f"batch {batch['id']}: {len(missing)} of {len(part)} requests failed or missing ({failed} reported); retrying them one by one")
                for index in missing:
                    results[index] = self.backend._post(self.endpoint, bodies[index])
        return results  # type: ignore[return-value]

    def _attach_or_submit(self, payload: bytes, digest: str, n_requests: int) -> dict:
        from ..console import log

        for record in reversed(self._read_state()):
            if record.input_sha256 != digest or record.endpoint != self.endpoint:
                continue
            batch = self.backend._request("GET", f"/batches/{record.batch_id}")
            if batch.get("status") not in self.TERMINAL_BAD:
                log(f"re-attaching to batch {record.batch_id} ({batch.get('status')})")
                return batch
            break
        uploaded = self.backend._request(
            "POST", "/files", files={"file": ("lt-batch.jsonl", payload, "application/jsonl")}, data={"purpose": "batch"}
        )
        batch = self.backend._post(
            "/batches", {"input_file_id": uploaded["id"], "endpoint": "/v1" + self.endpoint, "completion_window": self.options.batch_completion_window}
        )
        self._append_state(BatchRecord(batch["id"], digest, self.endpoint, n_requests, uploaded["id"], time.time()))
        log(f"submitted batch {batch['id']} ({n_requests} requests)")
        return batch

    def _wait(self, batch: dict) -> dict:
        deadline = time.monotonic() + self.options.batch_max_wait_s
        while batch.get("status") != "completed":
            status = batch.get("status")
            if status in self.TERMINAL_BAD:
                errors = batch.get("errors") or {}
                detail = ""
                if isinstance(errors, dict) and errors.get("data"):
                    detail = ": " + _one_line(self.backend._secrets.redact(str(errors["data"][0].get("message", ""))))
                raise LtError(f"batch {batch['id']} ended with status {status}{detail}; rerun to submit it again")
            if time.monotonic() >= deadline:
                raise LtError(
                    f"batch {batch['id']} is still {status} after {self.options.batch_max_wait_s:g} s; "
                    f"rerun with the same batch_state to re-attach"
                )
            self.backend._sleep(min(self.options.batch_poll_interval_s, max(0.0, deadline - time.monotonic())))
            batch = self.backend._request("GET", f"/batches/{batch['id']}")
        return batch

    def _collect(self, batch: dict, results: list) -> int:
        """Fill ``results`` from the output file; return how many requests the batch reports failed."""
        n_failed = 0
        for key in ("output_file_id", "error_file_id"):
            file_id = batch.get(key)
            if not file_id:
                continue
            content = self.backend._request("GET", f"/files/{file_id}/content", parse_json=False)
            for line in content.decode("utf-8").splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                custom_id = str(item.get("custom_id", ""))
                if not custom_id.startswith("request-"):
                    continue
                index = int(custom_id[len("request-") :])
                response = item.get("response") or {}
                if item.get("error") or int(response.get("status_code", 0)) != 200:
                    n_failed += 1
                    continue
                if 0 <= index < len(results):
                    results[index] = response.get("body")
        return n_failed
