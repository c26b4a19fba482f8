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

Every error SQLite can raise (disk full, read-only, locked by another process, a damaged or
foreign file) becomes one line naming the cache file (:func:`cache_error`); the stage's finished
records stay in its ``.partial``, so a rerun after the cause is fixed resumes. The cache's path and
SQLite's files beside it (``-wal``, ``-shm``, ``-journal``) must not be symbolic links: SQLite would
write through them (:func:`lt_cli.nofollow.check_plain_file`). There is no default cache beside an
output that is not a regular file (``/dev/null``, a FIFO).
"""

from __future__ import annotations

import contextlib
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


def backend_identity(backend, *, sampling: bool = False) -> dict[str, Any]:
    """What, besides the request, decides a backend's outputs: its kind, the model's files, the
    precision it computes in and its context length (which decides how prompts are cut). With
    ``sampling``, also the sampler's numerics where the backend reports them (the transformers
    backend's slot engine: compiled or not, which attention; its bf16 samples differ at rounding
    level from the dynamic loop's), so a cache never mixes samples of two samplers. The dynamic
    loop reports none, so keys written before the slot engine existed stay valid."""
    config = getattr(backend, "config", None)
    dtype = getattr(config, "dtype", None)
    model = getattr(backend, "model", None)
    if model is not None and hasattr(model, "parameters"):
        dtype = str(next(model.parameters()).dtype)  # "auto" resolved: fp32 on CPU, bf16 on GPU
    identity = {
        "backend": getattr(backend, "name", type(backend).__name__),
        "model": model_fingerprint(str(getattr(backend, "model_id", ""))),
        "dtype": dtype,
        "max_model_len": getattr(backend, "max_model_len", None),
    }
    sampler = _sampler(backend) if sampling else None
    if sampler is not None:
        identity["sampler"] = sampler
    return identity


def _sampler(backend) -> str | None:
    """The sampler's numerics as the backend reports them (``sampler_identity``), or None."""
    report = getattr(backend, "sampler_identity", None)
    return report() if callable(report) else None


def same_sampler(backend, identity: dict[str, Any] | None) -> Callable[[], bool]:
    """For :func:`cache_through`'s ``keys_still_hold``: whether ``backend`` still samples with the
    sampler that ``identity`` (``backend_identity(backend, sampling=True)``) named when the keys were
    made. Only the sampler can change during a call (a compile that falls back)."""
    return lambda: identity is None or _sampler(backend) == identity.get("sampler")


def cache_through(cache: "SampleCache | None", kind: str, keys: Sequence[str | None], compute: Callable[[list[int]], Sequence[Any]],
                  *, keys_still_hold: Callable[[], bool] | None = None) -> list[Any]:
    """The value of every request: cached ones read, all misses computed by ONE ``compute`` call.

    ``keys[i]`` is request i's cache key (None without a cache). ``compute(indices)`` gets the
    positions of the misses, in order, and returns their values in the same order; they are stored
    in one transaction, so a kill keeps all of a call's results or none.

    ``keys_still_hold`` is asked after ``compute``: False when what the keys name changed during the
    call (the transformers sampler fell back from a step that would not compile), and then this
    call's values are returned but not stored: the cache never files samples under a sampler that
    did not draw them. The next call's keys name the fallback.
    """
    cached = cache.get_many(k for k in keys if k is not None) if cache is not None else {}
    missing = [i for i, key in enumerate(keys) if key is None or key not in cached]
    values: list[Any] = [None] * len(keys)
    if missing:
        computed = list(compute(missing))
        if len(computed) != len(missing):
            from .errors import LtError

            raise LtError(f"backend returned {len(computed)} results for {len(missing)} requests")
        if cache is not None and keys_still_hold is not None and not keys_still_hold():
            from .console import warn

            warn(f"the sampler changed during this call; its {len(missing)} results are not cached")
            cache = None
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


#: SQLite's primary result codes -> (cause in words, exit code); docs/reliability.md
_SQLITE_CAUSES = {
    sqlite3.SQLITE_FULL: ("no space left on device", 1),
    sqlite3.SQLITE_READONLY: ("cannot be written (a read-only file, folder or file system)", 1),
    sqlite3.SQLITE_BUSY: ("locked by another process (another run using the same --cache?)", 1),
    sqlite3.SQLITE_LOCKED: ("locked by another process (another run using the same --cache?)", 1),
    sqlite3.SQLITE_CORRUPT: ("is damaged", 2),
    sqlite3.SQLITE_NOTADB: ("is not a SQLite database", 2),
    sqlite3.SQLITE_CANTOPEN: ("cannot be opened (a missing or unwritable folder?)", 1),
    sqlite3.SQLITE_IOERR: ("input/output error", 1),
    sqlite3.SQLITE_PERM: ("permission denied", 1),
    sqlite3.SQLITE_NOMEM: ("out of memory", 1),
}
#: files SQLite keeps beside the cache (WAL mode; a rollback journal for older files)
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def cache_error(path: str | os.PathLike, exc: BaseException):
    """One ``FileError`` line for an error of the cache at ``path``: the file, the cause, and
    what to do (nothing is lost: finished records are in the output's ``.partial``)."""
    from .errors import FileError

    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if isinstance(exc, ValueError):  # a stored value that is not JSON
        code = sqlite3.SQLITE_CORRUPT
    cause, exit_code = _SQLITE_CAUSES.get(code, (str(exc) or type(exc).__name__, 1))
    if exit_code == 2:
        advice = "delete it (only cached samples are lost) or pass --no-cache or another --cache"
    else:
        advice = "finished records are kept in the output's .partial: fix this and rerun to resume, or pass --no-cache or another --cache"
    return FileError(f"{path}: {cause} (the sample cache; {advice})", exit_code=exit_code)


class SampleCache:
    """``get_many``/``put_many`` over one SQLite file; safe to share between sequential runs.

    ``timeout``: seconds to wait for another process's write lock before failing.
    """

    def __init__(self, path: str | os.PathLike, *, timeout: float = 60):
        from .nofollow import check_plain_file

        self.path = Path(path)
        self._db = None
        for suffix in ("", *SQLITE_SIDE_FILES):  # SQLite would write through a link at any of them
            check_plain_file(f"{self.path}{suffix}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            from .errors import FileError

            raise FileError.from_os(exc, self.path.parent) from None
        with self._errors():
            self._db = sqlite3.connect(str(self.path), timeout=timeout)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
            self._db.commit()
        self.hits = 0
        self.misses = 0

    @contextlib.contextmanager
    def _errors(self):
        """Every SQLite error (and a stored value that is not JSON) as one line naming the file."""
        try:
            yield
        except (sqlite3.Error, orjson.JSONDecodeError) as exc:
            if self._db is not None and not isinstance(exc, orjson.JSONDecodeError):
                with contextlib.suppress(sqlite3.Error):
                    self._db.rollback()
            raise cache_error(self.path, exc) from None

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(keys)
        found: dict[str, Any] = {}
        with self._errors():
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
        rows = [(key, kind, orjson.dumps(value)) for key, value in items.items()]
        with self._errors(), self._db:
            self._db.executemany("INSERT OR REPLACE INTO entries (key, kind, value) VALUES (?, ?, ?)", rows)

    def count(self, kind: str | None = None) -> int:
        with self._errors():
            if kind is None:
                return self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM entries WHERE kind = ?", (kind,)).fetchone()[0]

    def close(self) -> None:
        """Close; an error here (a checkpoint of the WAL on a full disk) loses nothing: every
        transaction is already committed and the WAL is replayed on the next open."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def __enter__(self) -> "SampleCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def default_cache_path(output: str | None) -> str | None:
    """``FILE.cache.sqlite`` next to ``-o FILE``; no cache for stdout, nor for an output that is
    not a regular file (``/dev/null``: a cache beside a device is never right), unless ``--cache``
    is given."""
    from .paths import is_device

    if output is None or output == "-" or is_device(output):
        return None
    return output + ".cache.sqlite"
