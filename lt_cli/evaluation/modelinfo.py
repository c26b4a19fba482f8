"""What eval needs to know about a model besides the Backend interface: token counts, context
length and whether its tokenizer has the four latent special tokens.

Backends expose ``encode(text, bos=...)``/``tokenizer``/``max_model_len`` when they have them; for
the rest (an HTTP API, say) the Hugging Face tokenizer and config of ``--model`` are read when the
folder or cache has them. When nothing can count tokens, prompts cannot be checked against the
context and eval says so (``prompt_check: false`` in the metrics) instead of pretending.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .. import formats


@dataclass
class ModelInfo:
    count_tokens: Callable[[str], int] | None
    context_length: int | None
    has_latent_tokens: bool | None


def _load_hf_tokenizer(model: str | None) -> Any:
    if not model:
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model)
    except Exception:
        return None


def _hf_context_length(model: str | None) -> int | None:
    if not model:
        return None
    try:
        from transformers import AutoConfig

        hf_config = AutoConfig.from_pretrained(model)
    except Exception:
        return None
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(hf_config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def tokenizer_has_latent_tokens(tokenizer: Any) -> bool:
    """True when all four special-token strings are single tokens of the tokenizer's vocabulary."""
    try:
        vocab = tokenizer.get_vocab()
    except Exception:
        return False
    return all(token in vocab for token in formats.SPECIAL_TOKENS)


def _bos_keyword(encode: Callable) -> str | None:
    """The name of the BOS flag of a backend's ``encode`` (``add_bos`` or ``bos``), if any."""
    import inspect

    try:
        parameters = inspect.signature(encode).parameters
    except (TypeError, ValueError):
        return None
    for name in ("add_bos", "bos"):
        if name in parameters:
            return name
    return None


def model_info(backend: Any, model: str | None, *, add_bos: bool = True, max_model_len: int | None = None) -> ModelInfo:
    tokenizer = getattr(backend, "tokenizer", None) if backend is not None else None
    if tokenizer is None:
        tokenizer = _load_hf_tokenizer(model)

    count: Callable[[str], int] | None = None
    encode = getattr(backend, "encode", None) if backend is not None else None
    bos_keyword = _bos_keyword(encode) if callable(encode) else None
    if bos_keyword is not None:
        def count(text: str) -> int:
            return len(encode(text, **{bos_keyword: add_bos}))
    elif tokenizer is not None:
        bos = 1 if add_bos and getattr(tokenizer, "bos_token_id", None) is not None else 0

        def count(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + bos

    context = max_model_len or (getattr(backend, "max_model_len", None) if backend is not None else None)
    if not context:
        context = _hf_context_length(model)
    has_latent = tokenizer_has_latent_tokens(tokenizer) if tokenizer is not None else None
    return ModelInfo(count_tokens=count, context_length=context, has_latent_tokens=has_latent)
