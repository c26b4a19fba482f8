"""What is sent to the teacher: one request per chunk (``latent``) or per document and pass (WRAP),
each with its seed and its cache key.

Why its own module: synthesis sends these requests and ``lt synthesize --estimate`` counts and
prices the same ones (teacher/accounting.py) without sending anything; both build them here, so
the estimate checks exactly the keys a run would ask for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..cache import cache_key
from ..chunking import prefix_text
from ..records import document_id, document_text, is_latent_fixed
from ..seeding import derive_seed
from .config import SynthesizeConfig
from .prompts import latent_messages, wrap_cot_messages, wrap_messages, wrap_style

Record = dict[str, Any]


@dataclass
class TeacherRequest:
    """One conversation sent to the teacher: which document, pass and chunk (-1: whole document)."""

    doc: int
    pass_index: int
    chunk: int
    messages: list[dict]
    style: str | None
    seed: int = 0
    key: str | None = None


def requests_for(doc: Record, config: SynthesizeConfig, doc_index: int = 0) -> list[TeacherRequest]:
    """Every request one document needs, in output order (pass, then chunk)."""
    doc_id = document_id(doc)
    requests = []
    for p in range(config.passes):
        if config.method == "latent":
            for i, chunk in enumerate(doc["chunks"]):
                if is_latent_fixed(chunk):
                    continue  # its latent is given (records.LATENT_FIXED)
                prefix = prefix_text(doc["chunks"], i, config.prefix_chunks)
                requests.append(TeacherRequest(doc_index, p, i, latent_messages(prefix, chunk["text"]), None))
        elif config.method == "wrap":
            style = wrap_style(config.seed, doc_id, p)
            requests.append(TeacherRequest(doc_index, p, -1, wrap_messages(document_text(doc), style), style))
        else:
            requests.append(TeacherRequest(doc_index, p, -1, wrap_cot_messages(document_text(doc)), "cot"))
    for request in requests:
        request.seed = derive_seed("teacher", config.method, config.seed, doc_id, request.chunk, request.pass_index)
    return requests


def request_key(identity: dict, request: TeacherRequest, params) -> str:
    """The cache key of a teacher request (``lt synthesize --estimate`` checks the same keys)."""
    return cache_key(
        "teacher", **identity, messages=request.messages, temperature=params.temperature, top_p=params.top_p,
        max_new_tokens=params.max_new_tokens, sample_index=request.pass_index, seed=request.seed,
    )
