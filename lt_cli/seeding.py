"""Derived randomness: every random choice in lt is seeded from what it is about.

A seed is a 63-bit integer hashed from its parts (for example the user seed, a document id, a
chunk index and a sample index), so reruns, resumed runs, shards and larger K reproduce the same
draws. Nothing reads ambient randomness.
"""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any printable parts: ``derive_seed(seed, doc_id, chunk, sample)``."""
    digest = hashlib.blake2b(repr(tuple(str(p) for p in parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def sample_seed(user_seed: int, document_id: str, chunk_index: int, sample_index: int) -> int:
    """The seed of one posterior sample; independent of K, batch and shard."""
    return derive_seed("sample", user_seed, document_id, chunk_index, sample_index)
