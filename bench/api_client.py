"""API client benchmark: lt's hand-written HTTP client against the official ``openai`` SDK, in one process.

    python bench/api_client.py [--requests N] [--concurrency C]

Both send the same ``/chat/completions`` bodies to the loopback test server (tests/servers/,
its text engine: no model), C requests in flight, and both retry the same injected faults (the
server answers 429 / 500 to a share of the requests). Reported: wall seconds and requests per
second of each (``sdk_over_lt`` > 1: the SDK is slower), the retries each one made and whether it
can count them, the import time of each client, and the lines of lt's client. The SDK path is
what lt would run if ``OpenAIBackend`` were rebuilt on ``openai.OpenAI`` (one client, a thread
pool, ``max_retries`` the same, backoff shortened on both sides to keep the run short).

Needs ``pip install openai`` (not an lt dependency). Logs go to stderr; the last line on stdout is
one JSON object with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout)


def bodies(n: int) -> list[dict]:
    return [{"model": "teacher-x", "messages": [{"role": "user", "content": f"Explain step {i} of the proof."}], "max_tokens": 32,
             "temperature": 0.7, "top_p": 1.0, "n": 1, "seed": i} for i in range(n)]


def run_lt(env: dict, requests: list[dict], concurrency: int) -> dict:
    from lt_cli.backends.base import BackendConfig
    from lt_cli.backends.openai import OpenAIBackend

    os.environ.update(env)
    backend = OpenAIBackend(BackendConfig(model="teacher-x", options={"max_concurrency": concurrency, "backoff_base_s": 0.01, "backoff_max_s": 0.01}))
    start = time.perf_counter()
    replies = backend._run_all("/chat/completions", requests)
    seconds = time.perf_counter() - start
    stats = backend.http_stats
    backend.close()
    assert len(replies) == len(requests)
    return {"seconds": seconds, "retries": stats.retries, "retries_counted": True, "prompt_tokens": backend.usage.prompt_tokens}


def run_sdk(env: dict, requests: list[dict], concurrency: int) -> dict:
    import httpx
    import openai

    attempts = []

    def count(response):  # the SDK exposes no retry count: an httpx hook sees every attempt
        attempts.append(response.status_code)

    http_client = httpx.Client(event_hooks={"response": [count]}, limits=httpx.Limits(max_connections=concurrency + 2))
    client = openai.OpenAI(base_url=env["LT_API_BASE_URL"], api_key=env.get("LT_API_KEY") or "unused", max_retries=6, http_client=http_client)
    # the SDK's backoff starts at 0.5 s; shorten it as lt's is shortened above (a private knob: no public setting)
    openai._constants.INITIAL_RETRY_DELAY = 0.01
    openai._constants.MAX_RETRY_DELAY = 0.01
    import openai._base_client as base_client

    base_client.INITIAL_RETRY_DELAY = 0.01
    base_client.MAX_RETRY_DELAY = 0.01

    def one(body: dict):
        return client.chat.completions.create(**body).usage.prompt_tokens

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        prompt_tokens = sum(pool.map(one, requests))
    seconds = time.perf_counter() - start
    client.close()
    return {"seconds": seconds, "retries": len(attempts) - len(requests), "retries_counted": False, "prompt_tokens": prompt_tokens}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--fail-first", type=int, default=16, help="requests the server answers 429/500 before succeeding")
    args = parser.parse_args()
    from servers.openai_server import run_openai_server

    requests = bodies(args.requests)
    results = {}
    for name, runner in (("lt", run_lt), ("sdk", run_sdk), ("lt_again", run_lt), ("sdk_again", run_sdk)):
        with run_openai_server(api_key="sk-bench", faults={"fail_first": args.fail_first}) as server:
            results[name] = runner(server.client_env(), requests, args.concurrency)
            log(f"{name}: {results[name]}")
    lt_s = min(results["lt"]["seconds"], results["lt_again"]["seconds"])
    sdk_s = min(results["sdk"]["seconds"], results["sdk_again"]["seconds"])
    files = ["lt_cli/backends/openai.py", "lt_cli/backends/openai_client.py", "lt_cli/backends/openai_batch.py", "lt_cli/backends/openai_parse.py"]
    summary = {
        "requests": args.requests, "concurrency": args.concurrency, "injected_failures": args.fail_first,
        "lt_requests_per_s": round(args.requests / lt_s, 1), "sdk_requests_per_s": round(args.requests / sdk_s, 1),
        "sdk_over_lt_seconds": round(sdk_s / lt_s, 3),
        "lt_retries": results["lt"]["retries"], "sdk_retries_seen_by_httpx_hook": results["sdk"]["retries"],
        "same_prompt_tokens": results["lt"]["prompt_tokens"] == results["sdk"]["prompt_tokens"],
        "import_s_lt_client": round(import_seconds("lt_cli.backends.openai"), 3), "import_s_openai": round(import_seconds("openai"), 3),
        "lt_client_lines": {f: sum(1 for _ in open(REPO / f)) for f in files},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
