"""The document cut before NLL and ELBO: at most ``context - 3`` tokens of each document, as the
reference scores them.

Why: the reference's validation (``apps/main/eval.py``, ``eval_on_val``) keeps the first
``max_tokens - 1 - 2`` text tokens of every document (the context minus BOS minus 2 tokens of
slack: 2,045 for a 2,048-token model) by encoding the text, cutting the ids and decoding them back
to text; NLL and ELBO are then computed on that text. Without the cut a long document's ELBO sums
over more chunks than the paper's, and the per-token numbers are not comparable.

``--max-doc-tokens N`` keeps N tokens instead; 0 keeps whole documents (lt's earlier behaviour:
NLL then scores only the first ``context`` tokens, the ELBO chunks the whole text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import UsageError

#: BOS plus the reference's two tokens of slack
REFERENCE_RESERVED_TOKENS = 3


def doc_token_limit(max_doc_tokens: int | None, context_length: int | None) -> int | None:
    """Tokens kept per document: ``max_doc_tokens`` when given (0: no cut), else context - 3."""
    if max_doc_tokens is not None:
        if max_doc_tokens < 0:
            raise UsageError(f"--max-doc-tokens must be >= 0 (0 keeps whole documents), got {max_doc_tokens}")
        return max_doc_tokens or None
    if context_length is None:
        return None
    if context_length <= REFERENCE_RESERVED_TOKENS:
        raise UsageError(f"a {context_length}-token context leaves no room for a document")
    return context_length - REFERENCE_RESERVED_TOKENS


@dataclass
class CutText:
    text: str
    #: text tokens before the cut (no BOS)
    n_tokens: int
    #: tokens removed from the end
    n_tokens_cut: int


class DocumentCutter:
    """Cuts texts to ``limit`` tokens with the model's own tokenizer (encode, keep, decode)."""

    def __init__(self, encode: Callable[[str], list[int]] | None, decode: Callable[[list[int]], str] | None, limit: int | None):
        self.encode = encode
        self.decode = decode
        self.limit = limit

    @property
    def active(self) -> bool:
        return self.limit is not None and self.encode is not None and self.decode is not None

    def cut(self, text: str) -> CutText:
        if not self.active:
            return CutText(text, -1, 0)
        ids = self.encode(text)
        if len(ids) <= self.limit:
            return CutText(text, len(ids), 0)
        return CutText(self.decode(ids[: self.limit]), len(ids), len(ids) - self.limit)


def _tokenizer_functions(backend: Any, model: str | None):
    """(encode without BOS, decode keeping special tokens) from the backend, else from ``model``."""
    from .modelinfo import _bos_keyword, _load_hf_tokenizer

    encode = getattr(backend, "encode", None)
    decode = getattr(backend, "decode", None)
    keyword = _bos_keyword(encode) if callable(encode) else None
    if keyword is not None and callable(decode):
        return (lambda text: list(encode(text, **{keyword: False}))), (lambda ids: decode(list(ids)))
    tokenizer = getattr(backend, "tokenizer", None) or _load_hf_tokenizer(model)
    if tokenizer is None:
        return None, None

    def hf_encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def hf_decode(ids: list[int]) -> str:
        return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    return hf_encode, hf_decode


def document_cutter(backend: Any, model: str | None, max_doc_tokens: int | None, context_length: int | None) -> DocumentCutter:
    limit = doc_token_limit(max_doc_tokens, context_length)
    if limit is None:
        return DocumentCutter(None, None, None)
    encode, decode = _tokenizer_functions(backend, model)
    if encode is None:
        from ..console import warn

        warn("no tokenizer to cut documents with: documents are scored whole (the reference cuts them to context - 3 tokens)")
    return DocumentCutter(encode, decode, limit)
