"""The HTTP client under the ``api`` backend: credentials, the retry policy, usage totals.

Why apart from openai.py (the Backend interface: request bodies for sample, chat and score): this
is the part every request goes through, whichever endpoint it hits, and all that the Batch runner
(openai_batch.py) needs. :meth:`APIClient.request` owns the retry policy, so no caller retries by
itself.

Credentials come only from the environment: ``LT_API_BASE_URL`` (else ``OPENAI_BASE_URL``, else
``https://api.openai.com/v1``) and ``LT_API_KEY`` (else ``OPENAI_API_KEY``). Neither the key nor the
base URL is ever logged or put into an exception message or an output file: messages name only the
endpoint path (``POST /chat/completions``), and every text that came from the server is passed
through :meth:`APIClient.redact` before it is shown.

Usage accounting: every generation reply (sync, or a Batch API result line) carries ``usage``;
its ``prompt_tokens`` / ``completion_tokens`` go into the running totals :attr:`APIClient.usage`
(a :class:`~lt_cli.backends.base.Usage`), which :func:`lt_cli.backends.pricing.cost_usd` turns
into dollars.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from ..errors import LtError
from .base import BackendConfig, Usage
from .options import options_from_dict
from .openai_parse import one_line, reply_usage

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
        opts = options_from_dict(cls, options, backend="api", env_prefix="LT_API")
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


@dataclass
class RetryStats:
    """What the HTTP layer went through, for the stats sidecar and the progress lines.

    ``attempts`` counts every HTTP request sent; ``retries`` the attempts repeated after a 429, a
    5xx, a timeout or a connection error (by cause below: a cause counts every failed attempt,
    the last one included); ``failed_requests`` the logical requests given up (a status that is
    not retried, or retries exhausted); ``retry_wait_s`` the seconds slept before retrying.
    """

    attempts: int = 0
    retries: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    timeouts: int = 0
    connection_errors: int = 0
    other_retryable: int = 0
    failed_requests: int = 0
    retry_wait_s: float = 0.0

    def cause_text(self) -> str:
        return (f"HTTP 429: {self.rate_limited:,}, HTTP 5xx: {self.server_errors:,}, timeouts: {self.timeouts:,}, "
                f"connection errors: {self.connection_errors:,}")


#: at most one retry line per this many seconds (the first one always shows); the totals follow at the end
RETRY_LOG_INTERVAL_S = 2.0


class _Secrets:
    """Holds the key and base URL and scrubs them out of any text shown to the user or stored.

    Credentials in the base URL (``https://user:password@host/v1``) are sent by httpx as HTTP Basic
    auth, so their base64 form is a secret too, as are the password and ``user:password``.
    """

    def __init__(self, base_url: str, api_key: str | None):
        import base64
        from urllib.parse import unquote

        self.base_url = base_url
        self.api_key = api_key
        secrets = {api_key, base_url}
        parts = urlsplit(base_url)
        if parts.password is not None or parts.username is not None:
            user, password = unquote(parts.username or ""), unquote(parts.password or "")
            userinfo = f"{user}:{password}"
            secrets |= {parts.password, password, userinfo, base64.b64encode(userinfo.encode()).decode()}
            secrets.add(parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl())
        #: longest first, so a URL is replaced whole before its parts are
        self.secrets = sorted((x for x in secrets if x and len(x) >= 4), key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        return text


def api_settings_from_env() -> tuple[str, str | None]:
    """(base_url, api_key) from LT_API_* or OPENAI_* environment variables (LT_ wins)."""
    base_url = os.environ.get("LT_API_BASE_URL") or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    api_key = os.environ.get("LT_API_KEY") or os.environ.get("OPENAI_API_KEY") or None
    return base_url.rstrip("/"), api_key


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


class APIClient:
    """A client for one model on an OpenAI-compatible server, with lt's retry policy (see the
    module docstring); ``config.options`` are :class:`APIOptions`.
    :class:`~lt_cli.backends.openai.OpenAIBackend` is this client plus the Backend interface."""

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
        self._usage = Usage()
        self._usage_lock = threading.Lock()
        self._retries = RetryStats()
        self._retry_logged_at: float | None = None

    # ------------------------------------------------------------------ public client methods
    def request(self, method: str, path: str, *, json_body: Any = None, files: Any = None, data: Any = None, parse_json: bool = True) -> Any:
        """One logical request to ``path`` (relative to the base URL), retried on 429/5xx/timeouts.

        Returns the parsed JSON reply (raw bytes with ``parse_json=False``); raises
        :class:`APIRequestError` (one line, secrets scrubbed) when it fails for good.
        """
        httpx = self._httpx
        attempts = self.options.max_retries + 1
        last_problem = ""
        for attempt in range(attempts):
            wait = None
            cause = None
            with self._usage_lock:
                self._retries.attempts += 1
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
                cause = "timeouts"
            except httpx.TransportError as exc:
                self.attempt_log.append((method, path, type(exc).__name__))
                last_problem = f"connection failed ({type(exc).__name__})"
                cause = "connection_errors"
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
                    with self._usage_lock:
                        self._retries.failed_requests += 1
                    raise APIRequestError(f"{method} {path} failed: {last_problem}")
                cause = "rate_limited" if status == 429 else "server_errors" if status >= 500 else "other_retryable"
                retry_after = _retry_after_seconds(response.headers.get("retry-after"))
                if retry_after is not None:
                    wait = min(retry_after, self.options.retry_after_max_s)
            retrying = attempt + 1 < attempts
            if retrying and wait is None:
                wait = self._backoff(attempt)
            self._count_failure(cause, method, path, last_problem, attempt, attempts, wait if retrying else None)
            if retrying:
                self._sleep(wait)
        raise APIRequestError(f"{method} {path} failed after {attempts} attempts: {last_problem}")

    def _count_failure(self, cause: str, method: str, path: str, problem: str, attempt: int, attempts: int, wait: float | None) -> None:
        """Count a failed attempt by cause and show it on stderr (the first at once, then at most one
        line every RETRY_LOG_INTERVAL_S seconds with the totals so far). ``wait`` None: given up."""
        from ..console import warn

        with self._usage_lock:
            stats = self._retries
            setattr(stats, cause, getattr(stats, cause) + 1)
            if wait is None:
                stats.failed_requests += 1
                return
            stats.retries += 1
            stats.retry_wait_s += wait
            now = time.monotonic()
            if self._retry_logged_at is not None and now - self._retry_logged_at < RETRY_LOG_INTERVAL_S:
                return
            self._retry_logged_at = now
            totals = f"{stats.retries:,} retries so far ({stats.cause_text()})"
        warn(f"api: {method} {path}: {problem} (attempt {attempt + 1} of {attempts}), retrying in {wait:.1f} s; {totals}")

    @property
    def http_stats(self) -> RetryStats:
        """Attempts, retries by cause and requests given up so far (a copy)."""
        with self._usage_lock:
            return RetryStats(**asdict(self._retries))

    def generate(self, endpoint: str, body: dict) -> dict:
        """One synchronous generation request (``/completions`` or ``/chat/completions``), usage recorded."""
        reply = self.request("POST", endpoint, json_body=body)
        self.record_usage(reply)
        return reply

    def record_usage(self, reply: dict) -> tuple[int | None, int | None]:
        """Add one generation reply's billed tokens to :attr:`usage`; return (prompt, completion) tokens."""
        prompt_tokens, completion_tokens = reply_usage(reply)
        with self._usage_lock:
            self._usage.add(prompt_tokens, completion_tokens)
        return prompt_tokens, completion_tokens

    @property
    def usage(self) -> Usage:
        """Running totals over every generation reply this backend received (a copy)."""
        with self._usage_lock:
            return Usage(**asdict(self._usage))

    def redact(self, text: str) -> str:
        """``text`` with the API key and base URL replaced by ``[redacted]``."""
        return self._secrets.redact(text)

    # ------------------------------------------------------------------ HTTP helpers
    def _backoff(self, attempt: int) -> float:
        with self._rng_lock:
            jitter = self._rng.uniform(0.5, 1.0)
        return min(self.options.backoff_max_s, self.options.backoff_base_s * (2**attempt)) * jitter

    def _error_detail(self, response) -> str:
        try:
            body = response.json()
            message = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else body.get("error") or body.get("message")
            text = str(message) if message else ""
        except (ValueError, AttributeError):
            text = response.text[:300]
        return one_line(self.redact(text))

    def close(self) -> None:
        self._client.close()
        stats = self.http_stats
        if stats.retries or stats.failed_requests:
            from ..console import warn

            warn(f"api: {stats.attempts:,} HTTP attempts, {stats.retries:,} retries ({stats.cause_text()}), "
                 f"{stats.retry_wait_s:.1f} s waited, {stats.failed_requests:,} requests given up")
