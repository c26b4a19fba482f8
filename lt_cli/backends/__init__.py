"""Inference backends behind one interface (see base.py). Import a backend with :func:`load_backend`.

Backend modules are imported lazily so that ``import lt_cli.backends`` (and the CLI) never pulls in
torch, vLLM or httpx; only the backend actually chosen pays its import cost.
"""

from __future__ import annotations

import importlib

from ..errors import LtError
from .base import Backend, BackendConfig

#: backend name -> (module, class); aliases map onto the same entry
BACKENDS: dict[str, tuple[str, str]] = {
    "transformers": ("lt_cli.backends.hf", "HFBackend"),
    "vllm": ("lt_cli.backends.vllm", "VLLMBackend"),
    "api": ("lt_cli.backends.openai", "OpenAIBackend"),
}
ALIASES: dict[str, str] = {"hf": "transformers", "openai": "api"}
DEFAULT_BACKEND = "transformers"


def backend_names() -> list[str]:
    """Every accepted ``--backend`` value (canonical names first, then aliases)."""
    return list(BACKENDS) + list(ALIASES)


def canonical_backend_name(name: str) -> str:
    key = (name or DEFAULT_BACKEND).strip().lower()
    key = ALIASES.get(key, key)
    if key not in BACKENDS:
        raise LtError(f"unknown backend {name!r}; choose one of: {', '.join(backend_names())}")
    return key


def load_backend(name: str, config: BackendConfig) -> Backend:
    """Build backend ``name`` ('transformers' (alias 'hf', the default), 'vllm' or 'api') for ``config``."""
    key = canonical_backend_name(name)
    module_name, class_name = BACKENDS[key]
    module = importlib.import_module(module_name)
    return getattr(module, class_name)(config)


__all__ = ["BACKENDS", "ALIASES", "DEFAULT_BACKEND", "backend_names", "canonical_backend_name", "load_backend"]
