"""Record schemas shared by every stage (documented in docs/formats.md).

* raw document: ``{"id"?, "text", ...}``
* chunked document: ``{..., "num_chunks", "chunks": [{"text", "latent"?, "latent_fixed"?}]}``
* candidates: each chunk gains ``candidates: [{latent, log_q, log_p, log_w, finished, n_tokens}]``
* augmented document (what ``lt train`` reads): every chunk has ``latent``; ``select`` adds
  ``elbo`` (``{"1": x, "2": y, ...}``), ``ess`` and ``mean_log_w``.

Chunks written by the reference use ``suffix`` for the chunk text; it is accepted on input.
"""

from __future__ import annotations

import hashlib
from typing import Any

Record = dict[str, Any]


def document_text(record: Record) -> str:
    if isinstance(record.get("text"), str):
        return record["text"]
    return "".join(chunk["text"] for chunk in record["chunks"])


def document_id(record: Record) -> str:
    """The record's ``id`` as a string, or a stable hash of its text when it has none."""
    if record.get("id") is not None:
        return str(record["id"])
    return "md5:" + hashlib.md5(document_text(record).encode("utf-8")).hexdigest()[:16]


#: Chunk key: ``"latent_fixed": true`` marks a chunk whose ``latent`` is given, not hidden (for
#: example a problem statement, where nothing is left unsaid, with ``"latent": ""``). The E-step
#: keeps that latent as its only candidate (log q = 0) instead of sampling one, and ``--layout
#: random`` always renders the chunk in the prior layout: q(Z | X) is never asked about it, so a
#: posterior rendering would only teach q a case it never meets and shift the positions of every
#: later chunk. docs/formats.md has the details.
LATENT_FIXED = "latent_fixed"


def normalise_chunks(record: Record) -> None:
    """Accept the reference's ``suffix`` as the name of a chunk's text (in place)."""
    for chunk in record["chunks"]:
        if "text" not in chunk and isinstance(chunk.get("suffix"), str):
            chunk["text"] = chunk.pop("suffix")


def validate_chunks(chunks: Any) -> None:
    """Raise ValueError unless ``chunks`` is a list of objects with a string text and, if any, a string latent."""
    if not isinstance(chunks, list):
        raise ValueError("field 'chunks' must be a list")
    for i, chunk in enumerate(chunks):
        if not isinstance(chunk, dict):
            raise ValueError(f"chunks[{i}] must be an object")
        text = chunk.get("text", chunk.get("suffix"))
        if not isinstance(text, str):
            raise ValueError(f"chunks[{i}] has no string 'text'")
        latent = chunk.get("latent")
        if latent is not None and not isinstance(latent, str):
            raise ValueError(f"chunks[{i}].latent must be a string")
        fixed = chunk.get(LATENT_FIXED, False)
        if not isinstance(fixed, bool):
            raise ValueError(f"chunks[{i}].{LATENT_FIXED} must be true or false")
        if fixed and not isinstance(latent, str):
            raise ValueError(f"chunks[{i}] has {LATENT_FIXED}: true but no string 'latent'")


def is_latent_fixed(chunk: dict) -> bool:
    """True when the chunk's latent is given and must not be inferred (see :data:`LATENT_FIXED`)."""
    return chunk.get(LATENT_FIXED) is True


def validate_document(record: Record) -> None:
    """Raise ValueError unless the record is a raw document or a chunked document."""
    chunks = record.get("chunks")
    if chunks is not None:
        validate_chunks(chunks)
        return
    validate_raw_document(record)


def validate_raw_document(record: Record) -> None:
    if "text" not in record:
        raise ValueError("missing field 'text'")
    if not isinstance(record["text"], str):
        raise ValueError(f"field 'text' must be a string, got {type(record['text']).__name__}")
