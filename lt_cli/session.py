"""A stage's model session: the backend flags, a lazily loaded backend, and its cache.

The E-step and teacher stages (``synthesize``, ``sample-thoughts``, ``select --model``) open one
:func:`backend_session` around their record stream. The backend loads on first use
(:class:`LazyBackend`), so malformed input in the first group of records is reported before a
model is loaded, and the backend and the cache are closed together whatever happens.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator


@dataclass
class BackendArgs:
    """Which model serves a stage, and how it is fed (flags shared by the model-backed commands)."""

    #: transformers (alias hf), vllm or api (OpenAI-compatible HTTP)
    backend: str = "transformers"
    #: checkpoint folder or hub id (an API model name for --backend api)
    model: str | None = None
    #: auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16
    dtype: str = "auto"
    #: sequences per forward pass inside the backend
    batch_size: int = 16
    #: context length (None: the model's)
    max_model_len: int | None = None

    def __post_init__(self) -> None:
        from .errors import UsageError

        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise UsageError(f"--max-model-len must be at least 1, got {self.max_model_len}")

    def config(self, options: dict | None = None):
        """The :class:`~lt_cli.backends.base.BackendConfig` these flags describe."""
        from .backends.base import BackendConfig
        from .errors import UsageError

        if not self.model:
            raise UsageError("--model is required")
        return BackendConfig(model=self.model, dtype=self.dtype, batch_size=self.batch_size, max_model_len=self.max_model_len, options=dict(options or {}))


@dataclass
class CacheArgs:
    """The SQLite cache of generations and scores (see :mod:`lt_cli.cache`)."""

    #: cache file (default OUTPUT.cache.sqlite with -o; none on stdout or a device such as /dev/null)
    cache: str | None = None
    #: neither read nor write a cache
    no_cache: bool = False

    def path(self, output: str | None) -> str | None:
        from .cache import default_cache_path

        if self.no_cache:
            return None
        return self.cache or default_cache_path(output)


@contextmanager
def backend_session(backend_name: str, backend_config, cache_path: str | None, *, cache_label: str | None = None) -> Iterator[tuple["LazyBackend", Any]]:
    """A lazily loaded backend and the (optional) cache, both closed on exit.

    With ``cache_label`` the cache's hit and miss counts go to stderr when it closes.
    """
    from .cache import SampleCache
    from .console import log

    backend = LazyBackend(backend_name, backend_config)
    cache = SampleCache(cache_path) if cache_path else None
    try:
        yield backend, cache
    finally:
        if cache is not None:
            if cache_label is not None:
                log(f"{cache_label} cache {cache.path}: {cache.hits:,} hits, {cache.misses:,} misses")
            cache.close()
        backend.close()


class LazyBackend:
    """Loads the backend on first use (``close`` of a never-used backend costs nothing)."""

    def __init__(self, name: str, config):
        self._name = name
        self._config = config
        self._backend = None

    def _get(self):
        if self._backend is None:
            from .backends import load_backend

            self._backend = load_backend(self._name, self._config)
        return self._backend

    def __getattr__(self, attribute: str):
        return getattr(self._get(), attribute)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
