"""The OpenAI Batch API runner: request bodies in, replies out, surviving crashes and reruns.

Why a runner of its own: the reference ran its teacher (gpt-4o-mini) through the Batch API, which
is half the price but takes hours, so a run must survive being killed while a batch is in flight.
Each submission is recorded in a state file before polling starts; a rerun that builds the same
input file finds it there (by SHA-256) and re-attaches instead of paying again.

It talks to the server only through the public methods of
:class:`~lt_cli.backends.openai_client.APIClient` (any object with the same methods will do):
``request`` (one HTTP request with the retry policy), ``generate`` (one synchronous generation
request, its usage recorded), ``record_usage`` (count a reply's billed tokens), ``redact`` (scrub
secrets from server text) and ``options`` (:class:`~lt_cli.backends.openai_client.APIOptions`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from ..errors import LtError
from .openai_parse import one_line


class BatchClient(Protocol):
    options: Any

    def request(self, method: str, path: str, *, json_body: Any = None, files: Any = None, data: Any = None, parse_json: bool = True) -> Any: ...

    def generate(self, endpoint: str, body: dict) -> dict: ...

    def record_usage(self, reply: dict) -> tuple[int | None, int | None]: ...

    def redact(self, text: str) -> str: ...


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
    reports as failed are retried synchronously with the normal retry policy. The ``usage`` of every
    result line is recorded on the client as the line is read.
    """

    TERMINAL_BAD = frozenset({"failed", "expired", "cancelled", "cancelling"})

    def __init__(self, client: BatchClient, endpoint: str, *, sleep: Callable[[float], None] = time.sleep):
        self.client = client
        self.endpoint = endpoint
        self.options = client.options
        self.state_path = Path(self.options.batch_state)
        self._sleep = sleep

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
        from ..nofollow import open_no_follow  # a predictable name beside the output: never written through a link

        with os.fdopen(open_no_follow(self.state_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "a", encoding="utf-8") as handle:
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
            failed = self._collect(batch, results, start, start + len(part))
            missing = [start + k for k in range(len(part)) if results[start + k] is None]
            if missing:
                log(f"batch {batch['id']}: {len(missing)} of {len(part)} requests failed or missing ({failed} reported); retrying them one by one")
                for index in missing:
                    results[index] = self.client.generate(self.endpoint, bodies[index])
        return results  # type: ignore[return-value]

    def _attach_or_submit(self, payload: bytes, digest: str, n_requests: int) -> dict:
        from ..console import log

        for record in reversed(self._read_state()):
            if record.input_sha256 != digest or record.endpoint != self.endpoint:
                continue
            batch = self.client.request("GET", f"/batches/{record.batch_id}")
            if batch.get("status") not in self.TERMINAL_BAD:
                log(f"re-attaching to batch {record.batch_id} ({batch.get('status')})")
                return batch
            break
        uploaded = self.client.request("POST", "/files", files={"file": ("lt-batch.jsonl", payload, "application/jsonl")}, data={"purpose": "batch"})
        batch = self.client.request(
            "POST",
            "/batches",
            json_body={"input_file_id": uploaded["id"], "endpoint": "/v1" + self.endpoint, "completion_window": self.options.batch_completion_window},
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
                    detail = ": " + one_line(self.client.redact(str(errors["data"][0].get("message", ""))))
                raise LtError(f"batch {batch['id']} ended with status {status}{detail}; rerun to submit it again")
            if time.monotonic() >= deadline:
                raise LtError(
                    f"batch {batch['id']} is still {status} after {self.options.batch_max_wait_s:g} s; "
                    f"rerun with the same batch_state to re-attach"
                )
            self._sleep(min(self.options.batch_poll_interval_s, max(0.0, deadline - time.monotonic())))
            batch = self.client.request("GET", f"/batches/{batch['id']}")
        return batch

    def _collect(self, batch: dict, results: list, start: int, stop: int) -> int:
        """Fill ``results[start:stop]`` from the output file; return how many requests the batch reports failed.

        A line is used (and its usage recorded) once: a repeated custom_id or one outside this
        file's range is ignored, so a server that repeats lines cannot inflate the counts.
        """
        n_failed = 0
        for key in ("output_file_id", "error_file_id"):
            file_id = batch.get(key)
            if not file_id:
                continue
            content = self.client.request("GET", f"/files/{file_id}/content", parse_json=False)
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
                if start <= index < stop and results[index] is None:
                    results[index] = response.get("body")
                    self.client.record_usage(results[index])
        return n_failed
