"""A SQLite cache of generations and scores, so reruns, resumed runs and larger K cost nothing.

Why: the E-step and teacher synthesis are the expensive stages of BoLT. Every sample is keyed by
what determines it -- backend, model (plus a fingerprint of a local checkpoint's files), the
precision and context length it ran with (:func:`backend_identity`), the prompt or conversation,
the sampling parameters, the sample index and its seed -- but *not* by K, so raising ``--k`` on a
rerun draws only the new sample indices (as in the reference's ``LatentCache``). Scores are kept
per chunk (the truncation rule couples its K candidates), keyed by the same identity, the context
and the K continuations, without per-token values. :func:`cache_through` is the one place that
reads what is cached, computes the misses in one backend call and stores them.

Values are JSON; floats round-trip exactly (orjson writes the shortest repr of a double), so a
cached value reproduces the uncached output byte for byte. Writes happen in one transaction per
backend call: a kill leaves either all of a call's results or none of them.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    value BLOB NOT NULL
)
"""


def cache_key(kind: str, **parts: Any) -> str:
    """A stable hex key from sorted JSON of ``parts`` (strings, numbers, lists, dicts)."""
    payload = orjson.dumps({"kind": kind, **parts}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(payload).hexdigest()


def model_fingerprint(model: str) -> str:
    """Names, sizes and mtimes of a local checkpoint's files, hashed; the name itself otherwise.

    A retrained checkpoint written to the same folder therefore never hits a stale cache.
    """
    path = Path(model)
    if not path.is_dir():
        return model
    digest = hashlib.sha256(str(path.resolve()).encode("utf-8"))
    for child in sorted(path.iterdir()):
        if child.is_file():
            stat = child.stat()
            digest.update(f"{child.name}:{stat.st_size}:{stat.st_mtime_ns}".encode("utf-8"))
    return "dir:" + digest.hexdigest()[:24]


def backend_identity(backend) -> dict[str, Any]:
    """What, besides the request, decides a backend's outputs: its kind, the model's files, the
    precision it computes in and its context length (which decides how prompts are cut)."""
    config = getattr(backend, "config", None)
    dtype = getattr(config, "dtype", None)
    model = getattr(backend, "model", None)
    if model is not None and hasattr(model, "parameters"):
        dtype = str(next(model.parameters()).dtype)  # "auto" resolved: fp32 on CPU, bf16 on GPU
    return {
        "backend": getattr(backend, "name", type(backend).__name__),
        "model": model_fingerprint(str(getattr(backend, "model_id", ""))),
        "dtype": dtype,
        "max_model_len": getattr(backend, "max_model_len", None),
    }


def cache_through(cache: "SampleCache | None", kind: str, keys: Sequence[str | None], compute: Callable[[list[int]], Sequence[Any]]) -> list[Any]:
    """The value of every request: cached ones read, all misses computed by ONE ``compute`` call.

    ``keys[i]`` is request i's cache key (None without a cache). ``compute(indices)`` gets the
    positions of the misses, in order, and returns their values in the same order; they are stored
    in one transaction, so a kill keeps all of a call's results or none.
    """
    cached = cache.get_many(k for k in keys if k is not None) if cache is not None else {}
    missing = [i for i, key in enumerate(keys) if key is None or key not in cached]
    values: list[Any] = [None] * len(keys)
    if missing:
        computed = list(compute(missing))
        if len(computed) != len(missing):
            from .errors import LtError

            raise LtError(f"backend returned {len(computed)} results for {len(missing)} requests")
        fresh = {}
        for i, value in zip(missing, computed):
            values[i] = value
            if keys[i] is not None:
                fresh[keys[i]] = value
        if cache is not None:
            cache.put_many(kind, fresh)
    for i, key in enumerate(keys):
        if key is not None and key in cached:
            values[i] = cached[key]
    return values


class SampleCache:
    """``get_many``/``put_many`` over one SQLite file; safe to share between sequential runs."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._db.commit()
        self.hits = 0
        self.misses = 0

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(keys)
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 500):
            block = keys[start:start + 500]
            marks = ",".join("?" * len(block))
            for key, value in self._db.execute(f"SELECT key, value FROM entries WHERE key IN ({marks})", block):
                found[key] = orjson.loads(value)
        self.hits += len(found)
        self.misses += len(set(keys)) - len(found)
        return found

    def put_many(self, kind: str, items: dict[str, Any]) -> None:
        """Store all ``items`` in one transaction (all or nothing on a kill)."""
        if not items:
            return
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO entries (key, kind, value) VALUES (?, ?, ?)",
                [(key, kind, orjson.dumps(value)) for key, value in items.items()],
            )

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM entries WHERE kind = ?", (kind,)).fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "SampleCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def default_cache_path(output: str | None) -> str | None:
    """``FILE.cache.sqlite`` next to ``-o FILE``; no cache for stdout unless ``--cache`` is given."""
    if output is None or output == "-":
        return None
    return output + ".cache.sqlite"
