"""A real OpenAI-compatible HTTP server for tests, on 127.0.0.1 only, with fault injection.

Use from a test (``tests/`` is on ``sys.path`` under pytest)::

    from servers.openai_server import run_openai_server

    with run_openai_server(model_dir=tiny_model_dir, api_key="sk-test") as server:
        env = server.client_env()          # {"LT_API_BASE_URL": ..., "LT_API_KEY": ...}
        ...                                # run lt with env, or OpenAIBackend under monkeypatch.setenv
        server.set_faults(fail_first=2)    # change faults at run time (no restart)
        server.requests()                  # every request so far: method, path, headers, fault

``model_dir=None`` serves a deterministic text engine (no torch: starts in ~0.3 s): every token is
one character drawn uniformly from ``a-z`` and space, seeded by the request's ``seed``, so each
token's log-prob is exactly ``-log(27)``. With ``model_dir`` the server loads that model through
lt's transformers backend (``lt_cli.backends.load_backend("transformers", ...)``) and answers with
its samples and log-probs (models without a chat template get a plain ``role: content`` rendering).

Endpoints: ``POST /v1/completions`` (``prompt``, ``max_tokens``, ``temperature``, ``top_p``,
``stop``, ``seed``, ``logprobs``, ``echo``), ``POST /v1/chat/completions`` (``messages``,
``logprobs``/``top_logprobs``), ``POST /v1/files`` (multipart upload) and
``GET /v1/files/{id}/content``, ``POST /v1/batches`` and ``GET /v1/batches/{id}`` (the batch runs
in a background thread). Choices carry vLLM's ``stop_reason`` (the matched stop string, or null).

Every generation reply (sync, or a Batch API result line) carries ``usage`` as OpenAI bills it:
``prompt_tokens`` is the engine's count of the (rendered) prompt (UTF-8 bytes for the text
engine; the model's ids, BOS included, with ``model_dir``) and ``completion_tokens`` the tokens
generated, the one that completed a stop string included (echoed prompt tokens are prompt
tokens). The server sums them with the number of replies; ``server.usage()`` returns the totals,
so a test can check a client's accounting against what the server billed.

Faults (``faults=`` at start, or ``server.set_faults(...)`` later; counters restart on each set).
They apply to the two generation endpoints unless noted:

* ``fail_first=N``: the next N requests answer 429 (odd) / 500 (even), then requests succeed;
  ``retry_after="1"`` adds that ``Retry-After`` header to the 429s.
* ``hang_first=N``, ``hang_s=S``: the next N requests sleep S seconds (at most 30) before answering.
* ``fail_always=STATUS``: every request answers STATUS.
* ``leak_key_in_error=True``: answer 400 with the request's Authorization header in the error
  message (tests that lt redacts what a server echoes back).
* ``echo_auth=True``: every reply's text starts with the request's Authorization header (a server
  that echoes the key into completions; tests that it reaches no output file and no cache).
* ``no_echo=True``: ``echo`` on /v1/completions is refused with 400, as hosted chat models do.
* ``batch_delay_s=S``: a batch stays ``in_progress`` for S seconds before it is processed.
* ``batch_fail_custom_ids=[...]``: those batch lines land in the error file with status 500.
* ``no_usage=True``: replies carry no ``usage`` field (some servers omit it); still counted.

A request may also carry ``X-Test-Fault: 429`` (or any status) to fail just that request.
Every request (method, path, all headers, fault applied, status) is appended as one JSON line to the
request log file (``server.request_log``) so a test can prove the API key was sent.
With ``api_key`` set, requests without ``Authorization: Bearer <key>`` get 401.
"""

from __future__ import annotations

import argparse
import contextlib
import email.parser
import email.policy
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

MAX_HANG_S = 30.0
MAX_BATCH_DELAY_S = 60.0
_ALPHABET = "abcdefghijklmnopqrstuvwxyz "


# ---------------------------------------------------------------------- engines
class TextEngine:
    """Deterministic stand-in model: uniform over 27 characters, one character per token."""

    name = "text"
    token_logprob = -math.log(len(_ALPHABET))

    def complete(self, prompt: str, *, max_tokens: int, temperature: float, top_p: float, stop: list[str], seed: int | None):
        rng = random.Random(0 if (seed is None or temperature == 0) else seed)
        text, tokens = "", []
        for _ in range(max(0, max_tokens)):
            char = _ALPHABET[rng.randrange(len(_ALPHABET))]
            text += char
            tokens.append(char)
            for s in stop:
                at = text.find(s)
                if at >= 0:
                    return text[:at], tokens, [self.token_logprob] * len(tokens), "stop", s
        return text, tokens, [self.token_logprob] * len(tokens), "length", None

    def echo(self, prompt: str):
        return list(prompt), [self.token_logprob] * len(prompt)

    def count_prompt_tokens(self, prompt: str) -> int:
        """Billed prompt tokens: one per UTF-8 byte (one per character for ASCII, as ``echo`` splits)."""
        return len(prompt.encode("utf-8"))

    def render_chat(self, messages: list[dict]) -> str:
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "


class ModelEngine:
    """A real (tiny) model served through lt's own transformers backend."""

    name = "model"

    def __init__(self, model_dir: str):
        import torch

        torch.set_num_threads(1)
        from transformers import AutoTokenizer

        from lt_cli.backends import load_backend
        from lt_cli.backends.base import BackendConfig

        self.backend = load_backend("transformers", BackendConfig(model=model_dir, device="cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.lock = threading.Lock()

    def complete(self, prompt: str, *, max_tokens: int, temperature: float, top_p: float, stop: list[str], seed: int | None):
        from lt_cli.backends.base import FINISH_LENGTH, FINISH_STOP, SamplingParams

        params = SamplingParams(n=1, temperature=temperature, top_p=top_p, max_new_tokens=max_tokens, stop=tuple(stop))
        with self.lock:
            sample = self.backend.sample([prompt], params, seeds=None if seed is None else [[seed]])[0][0]
        tokens = [self.tokenizer.decode([t]) for t in sample.token_ids]
        if sample.finish_reason == FINISH_LENGTH:
            finish, stop_reason = "length", None
        elif sample.finish_reason == FINISH_STOP:
            finish, stop_reason = "stop", next((s for s in stop if s), None)
        else:
            finish, stop_reason = "stop", None
        return sample.text, tokens, list(sample.token_logprobs), finish, stop_reason

    def echo(self, prompt: str):
        ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        with self.lock:
            score = self.backend.score([("", prompt)])[0]
        if len(score.token_logprobs) != len(ids):
            raise RuntimeError(f"tokenizer gave {len(ids)} tokens but the backend scored {len(score.token_logprobs)}")
        return [self.tokenizer.decode([t]) for t in ids], list(score.token_logprobs)

    def count_prompt_tokens(self, prompt: str) -> int:
        """Billed prompt tokens: the prompt's ids as the model reads them (BOS included)."""
        return len(self.backend.encode(prompt))

    def render_chat(self, messages: list[dict]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return TextEngine.render_chat(self, messages)


# ---------------------------------------------------------------------- server state
class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class State:
    def __init__(self, engine, api_key: str | None, request_log: Path, faults: dict):
        self.engine = engine
        self.api_key = api_key
        self.request_log = request_log
        self.lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        #: generation replies produced (sync and Batch API lines) and the usage they reported
        self.usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self.set_faults(faults)

    def bill(self, prompt_tokens: int, completion_tokens: int) -> dict:
        """Count one generation reply; return its ``usage`` field."""
        with self.lock:
            self.usage["requests"] += 1
            self.usage["prompt_tokens"] += prompt_tokens
            self.usage["completion_tokens"] += completion_tokens
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}

    def set_faults(self, faults: dict) -> None:
        with self.lock:
            self.faults = dict(faults)
            self.fail_left = int(self.faults.get("fail_first", 0))
            self.fail_count = 0
            self.hang_left = int(self.faults.get("hang_first", 0))

    def next_fault(self) -> tuple[str | None, Any]:
        """Consume one scheduled fault for a generation request."""
        with self.lock:
            if self.faults.get("fail_always"):
                return "status", int(self.faults["fail_always"])
            if self.faults.get("leak_key_in_error"):
                return "leak", None
            if self.fail_left > 0:
                self.fail_left -= 1
                self.fail_count += 1
                return "status", 429 if self.fail_count % 2 == 1 else 500
            if self.hang_left > 0:
                self.hang_left -= 1
                return "hang", min(float(self.faults.get("hang_s", 5.0)), MAX_HANG_S)
        return None, None

    def log_request(self, entry: dict) -> None:
        with self.lock, open(self.request_log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")


# ---------------------------------------------------------------------- OpenAI protocol
def _echo_auth(reply: dict, authorization: str) -> None:
    """Fault ``echo_auth``: put the request's Authorization header at the start of every reply text."""
    for choice in reply.get("choices", []):
        if "text" in choice:
            choice["text"] = f"{authorization} {choice['text']}"
        elif isinstance(choice.get("message"), dict):
            choice["message"]["content"] = f"{authorization} {choice['message']['content']}"


def completion_response(state: State, body: dict) -> dict:
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise HTTPError(400, "this test server takes one prompt per request")
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise HTTPError(400, "prompt must be a string")
    n = int(body.get("n", 1))
    if n != 1:
        raise HTTPError(400, "this test server supports n=1 only")
    echo = bool(body.get("echo", False))
    if echo and state.faults.get("no_echo"):
        raise HTTPError(400, "echo is not supported with this model")
    want_logprobs = body.get("logprobs") is not None
    text, tokens, logprobs, finish, stop_reason = state.engine.complete(
        prompt,
        max_tokens=int(body.get("max_tokens", 16)),
        temperature=float(body.get("temperature", 1.0)),
        top_p=float(body.get("top_p", 1.0)),
        stop=_stop_list(body.get("stop")),
        seed=body.get("seed"),
    )
    choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": finish, "stop_reason": stop_reason, "logprobs": None}
    n_generated = len(tokens)
    if echo:
        echo_tokens, echo_logprobs = state.engine.echo(prompt)
        choice["text"] = prompt + text
        tokens, logprobs = echo_tokens + tokens, echo_logprobs + logprobs
    if want_logprobs:
        offsets, position = [], 0
        for token in tokens:
            offsets.append(position)
            position += len(token)
        choice["logprobs"] = {"tokens": tokens, "token_logprobs": logprobs, "text_offset": offsets, "top_logprobs": None}
    reply = {
        "id": f"cmpl-{uuid.uuid4().hex[:12]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model", "test"),
        "choices": [choice],
    }
    # billed like OpenAI: echoed prompt tokens are prompt tokens; generated ones (stop token included) completion
    usage = state.bill(state.engine.count_prompt_tokens(prompt), n_generated)
    if not state.faults.get("no_usage"):
        reply["usage"] = usage
    return reply


def chat_response(state: State, body: dict) -> dict:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise HTTPError(400, "messages must be a non-empty list of {role, content}")
    if int(body.get("n", 1)) != 1:
        raise HTTPError(400, "this test server supports n=1 only")
    prompt = state.engine.render_chat(messages)
    text, tokens, logprobs, finish, stop_reason = state.engine.complete(
        prompt,
        max_tokens=int(body.get("max_tokens", body.get("max_completion_tokens", 16))),
        temperature=float(body.get("temperature", 1.0)),
        top_p=float(body.get("top_p", 1.0)),
        stop=_stop_list(body.get("stop")),
        seed=body.get("seed"),
    )
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": finish,
        "stop_reason": stop_reason,
        "logprobs": None,
    }
    if body.get("logprobs"):
        choice["logprobs"] = {"content": [{"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []} for t, lp in zip(tokens, logprobs)]}
    reply = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "test"),
        "choices": [choice],
    }
    usage = state.bill(state.engine.count_prompt_tokens(prompt), len(tokens))
    if not state.faults.get("no_usage"):
        reply["usage"] = usage
    return reply


def _stop_list(stop) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    return [str(s) for s in stop]


def run_batch(state: State, batch_id: str) -> None:
    """Background worker: wait out the configured delay, then answer every line of the input file."""
    batch = state.batches[batch_id]
    batch["status"] = "in_progress"
    batch["in_progress_at"] = int(time.time())
    time.sleep(min(float(state.faults.get("batch_delay_s", 0.0)), MAX_BATCH_DELAY_S))
    failing = set(state.faults.get("batch_fail_custom_ids", []))
    outputs, errors = [], []
    for line in state.files[batch["input_file_id"]].decode("utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        custom_id = item["custom_id"]
        entry: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex[:12]}", "custom_id": custom_id}
        try:
            if custom_id in failing:
                raise HTTPError(500, "injected batch line failure")
            url = item.get("url")
            if url == "/v1/chat/completions":
                result = chat_response(state, item["body"])
            elif url == "/v1/completions":
                result = completion_response(state, item["body"])
            else:
                raise HTTPError(400, f"unsupported batch url {url}")
            entry["response"] = {"status_code": 200, "request_id": uuid.uuid4().hex[:12], "body": result}
            entry["error"] = None
            outputs.append(entry)
        except HTTPError as exc:
            entry["response"] = {"status_code": exc.status, "request_id": uuid.uuid4().hex[:12], "body": {"error": {"message": exc.message}}}
            entry["error"] = None
            errors.append(entry)
    batch["request_counts"] = {"total": len(outputs) + len(errors), "completed": len(outputs), "failed": len(errors)}
    if outputs:
        file_id = f"file-{uuid.uuid4().hex[:12]}"
        state.files[file_id] = ("\n".join(json.dumps(e) for e in outputs) + "\n").encode()
        batch["output_file_id"] = file_id
    if errors:
        file_id = f"file-{uuid.uuid4().hex[:12]}"
        state.files[file_id] = ("\n".join(json.dumps(e) for e in errors) + "\n").encode()
        batch["error_file_id"] = file_id
    batch["completed_at"] = int(time.time())
    batch["status"] = "completed"


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """name -> (filename, bytes) for a multipart/form-data body (stdlib email parser)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise HTTPError(400, "expected multipart/form-data")
    parts = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        parts[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return parts


class Handler(BaseHTTPRequestHandler):
    server_version = "lt-test-openai/1"
    protocol_version = "HTTP/1.1"

    @property
    def state(self) -> State:
        return self.server.state  # type: ignore[attr-defined]

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr access log
        pass

    def _send(self, status: int, payload: Any, headers: dict | None = None, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode("utf-8")
        entry = getattr(self, "_entry", None)
        if entry is not None:  # logged before answering, so a client that got its answer sees the entry
            entry["status"] = status
            self.state.log_request(entry)
            self._entry = None
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(data)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        entry = {"time": time.time(), "method": method, "path": path, "headers": dict(self.headers.items()), "fault": None}
        self._entry = entry
        try:
            self._authorize()
            if path.startswith("/_test/"):
                self._send(200, self._test_control(path, body))
                return
            if method == "POST" and path in ("/v1/completions", "/v1/chat/completions"):
                header_fault = self.headers.get("X-Test-Fault")
                kind, value = ("status", int(header_fault)) if header_fault else self.state.next_fault()
                entry["fault"] = None if kind is None else f"{kind}:{value}"
                if kind == "status":
                    headers = {}
                    if value == 429 and self.state.faults.get("retry_after") is not None:
                        headers["Retry-After"] = str(self.state.faults["retry_after"])
                    raise HTTPError(value, f"injected fault {value}", headers)
                if kind == "leak":
                    raise HTTPError(400, f"invalid credentials: {self.headers.get('Authorization')}")
                if kind == "hang":
                    time.sleep(value)
                request = json.loads(body or b"{}")
                handler = completion_response if path == "/v1/completions" else chat_response
                reply = handler(self.state, request)
                if self.state.faults.get("echo_auth"):
                    _echo_auth(reply, self.headers.get("Authorization") or "")
                self._send(200, reply)
                return
            if method == "POST" and path == "/v1/files":
                self._send(200, self._upload(body))
                return
            if method == "GET" and path.startswith("/v1/files/") and path.endswith("/content"):
                file_id = path[len("/v1/files/") : -len("/content")]
                if file_id not in self.state.files:
                    raise HTTPError(404, f"no file {file_id}")
                self._send(200, None, raw=self.state.files[file_id])
                return
            if method == "POST" and path == "/v1/batches":
                self._send(200, self._create_batch(json.loads(body or b"{}")))
                return
            if method == "GET" and path.startswith("/v1/batches/"):
                batch_id = path[len("/v1/batches/") :]
                if batch_id not in self.state.batches:
                    raise HTTPError(404, f"no batch {batch_id}")
                self._send(200, self.state.batches[batch_id])
                return
            raise HTTPError(404, f"no route {method} {path}")
        except HTTPError as exc:
            self._send(exc.status, {"error": {"message": exc.message, "type": "test_error", "code": exc.status}}, exc.headers)
        except (ValueError, KeyError, TypeError) as exc:
            self._send(400, {"error": {"message": f"bad request: {exc}", "type": "invalid_request_error"}})

    def _authorize(self) -> None:
        if self.state.api_key is None:
            return
        if self.headers.get("Authorization") != f"Bearer {self.state.api_key}":
            raise HTTPError(401, "missing or wrong API key")

    def _test_control(self, path: str, body: bytes) -> dict:
        if path == "/_test/faults":
            self.state.set_faults(json.loads(body or b"{}"))
            return {"faults": self.state.faults}
        if path == "/_test/health":
            return {"engine": self.state.engine.name}
        if path == "/_test/usage":
            with self.state.lock:
                return dict(self.state.usage)
        raise HTTPError(404, f"no test route {path}")

    def _upload(self, body: bytes) -> dict:
        parts = parse_multipart(self.headers.get("Content-Type", ""), body)
        if "file" not in parts:
            raise HTTPError(400, "multipart field 'file' is missing")
        if parts.get("purpose", (None, b""))[1].decode() != "batch":
            raise HTTPError(400, "purpose must be 'batch'")
        file_id = f"file-{uuid.uuid4().hex[:12]}"
        filename, content = parts["file"]
        self.state.files[file_id] = content
        return {"id": file_id, "object": "file", "bytes": len(content), "filename": filename, "purpose": "batch", "created_at": int(time.time())}

    def _create_batch(self, request: dict) -> dict:
        input_file_id = request.get("input_file_id")
        if input_file_id not in self.state.files:
            raise HTTPError(400, f"unknown input_file_id {input_file_id}")
        if request.get("endpoint") not in ("/v1/completions", "/v1/chat/completions"):
            raise HTTPError(400, "endpoint must be /v1/completions or /v1/chat/completions")
        batch_id = f"batch_{uuid.uuid4().hex[:12]}"
        batch = {
            "id": batch_id,
            "object": "batch",
            "endpoint": request["endpoint"],
            "input_file_id": input_file_id,
            "completion_window": request.get("completion_window", "24h"),
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(time.time()),
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "errors": None,
        }
        self.state.batches[batch_id] = batch
        threading.Thread(target=run_batch, args=(self.state, batch_id), daemon=True).start()
        return dict(batch)


# ---------------------------------------------------------------------- process entry point
def serve(model_dir: str | None, api_key: str | None, request_log: Path, faults: dict) -> None:
    engine = ModelEngine(model_dir) if model_dir else TextEngine()
    state = State(engine, api_key, request_log, faults)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.state = state  # type: ignore[attr-defined]
    print(f"LISTENING {server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible test server (loopback only)")
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--request-log", required=True)
    parser.add_argument("--faults", default="{}", help="JSON object of faults")
    args = parser.parse_args(argv)
    serve(args.model_dir, os.environ.get("LT_TEST_SERVER_KEY") or None, Path(args.request_log), json.loads(args.faults))


class ServerHandle:
    """What :func:`run_openai_server` yields."""

    def __init__(self, base_url: str, request_log: Path, api_key: str | None, process: subprocess.Popen):
        self.base_url = base_url
        self.request_log = request_log
        self.api_key = api_key
        self.process = process

    def client_env(self) -> dict[str, str]:
        """Environment for an lt process (or monkeypatch.setenv) pointing at this server."""
        env = {"LT_API_BASE_URL": self.base_url}
        if self.api_key:
            env["LT_API_KEY"] = self.api_key
        return env

    def _control(self, path: str, payload: dict) -> dict:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        response = httpx.post(self.base_url.rsplit("/v1", 1)[0] + path, json=payload, headers=headers, timeout=10)
        response.raise_for_status()
        return response.json()

    def set_faults(self, **faults) -> None:
        """Replace the fault schedule (counters restart)."""
        self._control("/_test/faults", faults)

    def usage(self) -> dict[str, int]:
        """Generation replies produced so far (sync and Batch API lines) and the usage they reported:
        ``{"requests", "prompt_tokens", "completion_tokens"}`` (replies under ``no_usage`` included)."""
        return self._control("/_test/usage", {})

    def requests(self, path: str | None = None) -> list[dict]:
        """Logged requests (optionally only those to ``path``), oldest first; excludes /_test/ calls."""
        if not self.request_log.exists():
            return []
        entries = [json.loads(line) for line in self.request_log.read_text(encoding="utf-8").splitlines() if line.strip()]
        entries = [e for e in entries if not e["path"].startswith("/_test/")]
        return [e for e in entries if path is None or e["path"] == path]


@contextlib.contextmanager
def run_openai_server(
    model_dir: str | os.PathLike | None = None,
    *,
    faults: dict | None = None,
    api_key: str | None = "sk-lt-test-0123456789abcdef",
    log_dir: str | os.PathLike | None = None,
    startup_timeout_s: float = 120.0,
) -> Iterator[ServerHandle]:
    """Start the server in a subprocess on a free loopback port; yield a :class:`ServerHandle`.

    ``base_url`` ends in ``/v1`` (what OPENAI_BASE_URL holds). The process is terminated on exit.
    """
    import tempfile

    owned_dir = None
    if log_dir is None:
        owned_dir = tempfile.TemporaryDirectory(prefix="lt-openai-server-")
        log_dir = owned_dir.name
    request_log = Path(log_dir) / "requests.jsonl"
    stderr_path = Path(log_dir) / "server.stderr"
    env = dict(os.environ)
    env.pop("LT_TEST_SERVER_KEY", None)
    if api_key:
        env["LT_TEST_SERVER_KEY"] = api_key  # through the environment: never on a command line
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    command = [sys.executable, str(Path(__file__).resolve()), "--request-log", str(request_log), "--faults", json.dumps(faults or {})]
    if model_dir is not None:
        command += ["--model-dir", str(model_dir)]
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, env=env)
    try:
        port = _wait_for_port(process, startup_timeout_s, stderr_path)
        yield ServerHandle(f"http://127.0.0.1:{port}/v1", request_log, api_key, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()
        if owned_dir is not None:
            owned_dir.cleanup()


def _wait_for_port(process: subprocess.Popen, timeout_s: float, stderr_path: Path) -> int:
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=min(1.0, max(0.0, deadline - time.monotonic()))):
                if process.poll() is not None:
                    break
                continue
            line = process.stdout.readline().decode("utf-8", "replace").strip()
            if line.startswith("LISTENING "):
                return int(line.split()[1])
            if not line and process.poll() is not None:
                break
    finally:
        selector.close()
    process.kill()
    process.wait(timeout=10)
    tail = stderr_path.read_text(errors="replace")[-2000:] if stderr_path.exists() else ""
    raise RuntimeError(f"test OpenAI server did not start within {timeout_s:g} s:\n{tail}")


if __name__ == "__main__":
    main()
