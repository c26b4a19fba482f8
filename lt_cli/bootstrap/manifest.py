"""The run folder's manifest: which stages exist, which finished, and what each produced.

``manifest.json`` is rewritten atomically (``files.write_json``: temporary file + rename) after every
status change, so a ``kill -9`` at any moment leaves either the previous or the next version, never
a torn file. A stage is ``pending`` until it starts, ``running`` while it runs (a ``running`` stage
found by a later invocation was interrupted and is redone), ``done`` with its ``result`` (the
numbers the report needs) once its outputs are complete, or ``failed`` with the error.

A stage's outputs are written so that "done" in the manifest implies complete outputs: files via
atomic renames, checkpoints into a folder that is wiped before a (re)start. Resuming therefore only
has to skip the ``done`` stages and rerun the first unfinished one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import read_json, write_json

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
MANIFEST_VERSION = 1


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class StageRecord:
    key: str
    status: str = PENDING
    started_at: str | None = None
    finished_at: str | None = None
    seconds: float | None = None
    attempts: int = 0
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "seconds": self.seconds,
            "attempts": self.attempts,
            "result": self.result,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "StageRecord":
        return cls(
            key=data["key"],
            status=data.get("status", PENDING),
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
            seconds=data.get("seconds"),
            attempts=int(data.get("attempts", 0)),
            result=dict(data.get("result") or {}),
            error=data.get("error"),
        )


class Manifest:
    """Stage records in plan order, persisted to ``path`` on every change."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.stages: dict[str, StageRecord] = {}
        if self.path.exists():
            data = read_json(self.path)
            if data.get("version") != MANIFEST_VERSION:
                from ..errors import LtError

                raise LtError(f"{self.path}: unsupported manifest version {data.get('version')!r}")
            for item in data.get("stages", []):
                record = StageRecord.from_json(item)
                self.stages[record.key] = record

    def save(self) -> None:
        write_json(self.path, {"version": MANIFEST_VERSION, "updated_at": _now(), "stages": [s.to_json() for s in self.stages.values()]})

    def plan(self, keys: list[str]) -> None:
        """Register the planned stages (keeping the records of known ones), in this order."""
        ordered: dict[str, StageRecord] = {}
        for key in keys:
            ordered[key] = self.stages.get(key) or StageRecord(key)
        for key, record in self.stages.items():  # stages of an earlier, larger plan stay listed
            ordered.setdefault(key, record)
        self.stages = ordered
        self.save()

    def is_done(self, key: str) -> bool:
        record = self.stages.get(key)
        return record is not None and record.status == DONE

    def start(self, key: str) -> StageRecord:
        record = self.stages.setdefault(key, StageRecord(key))
        record.status = RUNNING
        record.started_at = _now()
        record.finished_at = None
        record.seconds = None
        record.error = None
        record.attempts += 1
        self.save()
        return record

    def finish(self, key: str, result: dict[str, Any], seconds: float) -> None:
        record = self.stages[key]
        record.status = DONE
        record.finished_at = _now()
        record.seconds = round(seconds, 3)
        record.result = result
        self.save()

    def fail(self, key: str, error: str) -> None:
        record = self.stages[key]
        record.status = FAILED
        record.finished_at = _now()
        record.error = error
        self.save()
