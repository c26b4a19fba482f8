"""Training documents: the records ``lt train`` reads, validated for the layout, kept small.

Files up to ``LAZY_OVER_BYTES`` (and every ``.gz`` file) are parsed into :class:`Document` tuples in
memory; larger uncompressed files become a :class:`LazyCorpus` that keeps only byte offsets and
re-reads a line on demand, so a corpus of the reference's size does not have to fit in RAM. A bad
record stops the run with ``FILE:LINE: reason`` before torch is even imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import UsageError
from ..io import read_records
from ..records import document_id, document_text, is_latent_fixed, validate_chunks
from . import completion
from .config import DataSource

#: layouts whose strings hold each chunk's latent (they need ``chunks[].latent``)
LATENT_LAYOUTS = ("random", "prior", "posterior", "prior-tagged", "posterior-tagged")


@dataclass(frozen=True)
class Document:
    """The parts of one input record that training needs (kept small: large corpora live in RAM)."""

    doc_id: str
    text: str | None
    latent: str | None  # whole-document synthetic text (WRAP), used by layout "pure"
    chunks: tuple[tuple[str, str], ...] | None  # (text, latent) per chunk
    #: indices of the chunks marked ``latent_fixed`` (records.LATENT_FIXED)
    fixed_chunks: frozenset[int] = frozenset()
    #: layout ``completion`` (fine-tuning): the prompt; ``text`` is then the completion
    prompt: str | None = None

    def chunk_dicts(self) -> list[dict[str, str]]:
        return [{"text": text, "latent": latent} for text, latent in (self.chunks or ())]


def _validator(layout: str):
    def validate(record: dict[str, Any]) -> None:
        chunks = record.get("chunks")
        if chunks is not None:
            validate_chunks(chunks)
        if layout in LATENT_LAYOUTS:
            if not chunks:
                raise ValueError(
                    f"--layout {layout} needs augmented documents (chunks[].latent from lt select or lt synthesize); "
                    "use --layout raw for plain text"
                )
            if not any(isinstance(c.get("latent"), str) for c in chunks):
                raise ValueError(f"--layout {layout}: no chunk has a 'latent'")
        elif layout == "pure":
            if not isinstance(record.get("latent"), str) and not (chunks and any(isinstance(c.get("latent"), str) for c in chunks)):
                raise ValueError("--layout pure needs a string 'latent' field or chunks[].latent")
        elif layout == completion.LAYOUT:
            completion.validate_completion_record(record)
        else:  # raw
            if chunks is None and not isinstance(record.get("text"), str):
                raise ValueError("missing string field 'text'")

    return validate


def _to_document(record: dict[str, Any]) -> Document:
    if isinstance(record.get("prompt"), str) and isinstance(record.get("completion"), str):
        doc_id = document_id({"id": record.get("id"), "text": record["prompt"] + record["completion"]})
        return Document(doc_id, record["completion"], None, None, prompt=record["prompt"])
    chunks = None
    fixed: frozenset[int] = frozenset()
    if record.get("chunks") is not None:
        chunks = tuple((c.get("text", c.get("suffix")), c.get("latent") or "") for c in record["chunks"])
        fixed = frozenset(i for i, c in enumerate(record["chunks"]) if is_latent_fixed(c))
    text = record["text"] if isinstance(record.get("text"), str) else None
    if text is None and chunks is not None:
        text = document_text({"chunks": [{"text": t} for t, _ in chunks]})
    latent = record["latent"] if isinstance(record.get("latent"), str) else None
    return Document(document_id(record), text, latent, chunks, fixed)


class LazyCorpus:
    """A large uncompressed JSONL file as a sequence of Documents read on demand.

    Only byte offsets are kept in memory (16 bytes per document); each access re-reads and parses
    one line with ``os.pread``. Shuffled access relies on the page cache or fast local disks.
    """

    def __init__(self, path: str, layout: str):
        from ..io import index_records

        offsets, lengths = [], []
        for offset, length, _ in index_records(path, validate=_validator(layout)):
            offsets.append(offset)
            lengths.append(length)
        self.path = path
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int) -> Document:
        from ..io import read_record_at

        return _to_document(read_record_at(self._fd, int(self.offsets[index]), int(self.lengths[index])))

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


#: Files larger than this (uncompressed) are read on demand instead of held in memory.
LAZY_OVER_BYTES = 1 << 30


def load_documents(sources: Sequence[DataSource], layout: str, *, lazy_over_bytes: int = LAZY_OVER_BYTES) -> list[Sequence[Document]]:
    """Read every ``--data`` file (validated for the layout; a bad line is ``FILE:LINE: reason``).

    Small or gzipped files are held in memory; uncompressed files over ``lazy_over_bytes`` become a
    :class:`LazyCorpus`.
    """
    corpora: list[Sequence[Document]] = []
    for source in sources:
        path = source.path
        if not path.endswith(".gz") and os.path.exists(path) and os.path.getsize(path) > lazy_over_bytes:
            docs: Sequence[Document] = LazyCorpus(path, layout)
        else:
            docs = [_to_document(r) for r in read_records(path, validate=_validator(layout))]
        if not len(docs):
            raise UsageError(f"--data {path}: no documents")
        corpora.append(docs)
    return corpora
