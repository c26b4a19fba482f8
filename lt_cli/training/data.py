"""Training data: documents -> per-epoch rendered strings -> token stream -> packed windows.

Everything here is a pure function of (seed, epoch, position), so a resumed run sees exactly the
batches an uninterrupted run would have seen, and ``torchrun`` ranks see disjoint slices of the same
global batches a single process sees (the global batch does not depend on the world size).

* Epoch order: each file contributes ``weight`` times its documents (whole copies for the integer
  part, a seeded subset for the fraction); the list is shuffled with a seed derived from
  ``(seed, epoch)`` (``shuffle=False`` keeps file order, files in ``--data`` order).
* Layouts (docs/formats.md, strings from :mod:`lt_cli.formats`): ``random`` draws the tagged prior
  or posterior form per chunk with a fair coin seeded by ``(seed, epoch, doc id, copy)``, so the
  draw is redone every epoch (chunks marked ``latent_fixed`` are always prior); ``prior`` and
  ``posterior`` are the reference's untagged ablations (``<SoL>z<EoL>x`` and ``x<SoL>z<EoL>``);
  ``prior-tagged``/``posterior-tagged`` give every chunk one of random's two forms; ``pure`` trains
  on the synthetic text only (the document's ``latent`` field, as WRAP writes it, else each chunk
  latent as its own BOS...EOS segment); ``raw`` trains on the document text; ``completion`` trains
  on ``prompt + completion`` records (fine-tuning, :mod:`.completion`).
* Documents are loaded by :mod:`.corpus`.
* Every segment is encoded as BOS + tokens + EOS and appended to one stream that runs across
  documents and epochs. Windows are ``seq_len + 1`` tokens; consecutive windows share one token
  (the last input of one window is the first of the next), so every token after the very first is
  a label exactly once. Long documents span windows; there is no cross-document attention mask.
* ``loss_on="observed"`` marks latent tokens and the special tokens (label -100); BOS, EOS and chunk
  text stay. Tokens are classified by their character offsets in the rendered string.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from .. import formats
from ..errors import UsageError
from ..seeding import derive_seed
from . import completion
from .corpus import Document, LazyCorpus, load_documents, _to_document  # noqa: F401  (re-exported)

from .loss import IGNORE_INDEX  # noqa: E402  (one definition, with the loss)
_ENCODE_BLOCK = 256  # documents tokenized per tokenizer call


# ------------------------------------------------------------------------------------ epoch order
def epoch_order(sizes: Sequence[int], weights: Sequence[float], seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """Rows ``(file index, document index, copy index)`` of one epoch, a pure function of its args."""
    rows = []
    for file_index, (size, weight) in enumerate(zip(sizes, weights)):
        whole = int(weight)
        for copy in range(whole):
            idx = np.arange(size, dtype=np.int64)
            rows.append(np.stack([np.full(size, file_index), idx, np.full(size, copy)], axis=1))
        extra = int(round((weight - whole) * size))
        if extra:
            rng = np.random.default_rng(derive_seed("train-mix", seed, epoch, file_index))
            idx = np.sort(rng.choice(size, size=extra, replace=False)).astype(np.int64)
            rows.append(np.stack([np.full(extra, file_index), idx, np.full(extra, whole)], axis=1))
    order = np.concatenate(rows) if rows else np.zeros((0, 3), dtype=np.int64)
    if shuffle and len(order):
        rng = np.random.default_rng(derive_seed("train-order", seed, epoch))
        order = order[rng.permutation(len(order))]
    return order


# ------------------------------------------------------------------------------------ rendering
#: ``--layout`` values that give every chunk the same form -> that form (formats.CHUNK_LAYOUTS)
FIXED_CHUNK_LAYOUT = {
    "prior": "prior-only",  # the reference's untagged ablations
    "posterior": "posterior-only",
    "prior-tagged": "prior",  # the two halves of random
    "posterior-tagged": "posterior",
}


def chunk_layouts(
    n_chunks: int, layout: str, seed: int, epoch: int, doc_id: str, copy: int = 0, fixed_chunks: frozenset[int] = frozenset()
) -> list[str]:
    """Per-chunk forms (:data:`lt_cli.formats.CHUNK_LAYOUTS`); ``random`` is a fair coin per chunk
    between the tagged ``prior`` and ``posterior`` forms, redrawn every epoch.

    Under ``random`` the chunks in ``fixed_chunks`` (``latent_fixed``) are always ``prior``: q is
    never asked for their latent. The coin is still drawn for them, so marking a chunk fixed never
    changes the draws of the others. The fixed layouts are applied to every chunk as asked.
    """
    if layout in FIXED_CHUNK_LAYOUT:
        return [FIXED_CHUNK_LAYOUT[layout]] * n_chunks
    if layout != "random":
        raise ValueError(f"layout {layout!r} has no per-chunk layouts")
    rng = np.random.default_rng(derive_seed("train-layout", seed, epoch, doc_id, copy))
    return ["prior" if heads or i in fixed_chunks else "posterior" for i, heads in enumerate(rng.random(n_chunks) < 0.5)]


@dataclass(frozen=True)
class Segment:
    """One BOS...EOS unit of the stream; ``observed`` spans are None when every character counts."""

    text: str
    observed: tuple[tuple[int, int], ...] | None = None


def render_document(doc: Document, layout: str, seed: int, epoch: int, copy: int = 0) -> list[Segment]:
    """The string(s) a document contributes in one epoch (see the module docstring)."""
    if layout == "raw":
        return [Segment(doc.text or "")]
    if layout == completion.LAYOUT:
        return [Segment(*completion.completion_text(doc.prompt or "", doc.text or ""))]
    if layout == "pure":
        if doc.latent is not None:
            return [Segment(doc.latent)]
        return [Segment(latent) for _, latent in (doc.chunks or ()) if latent]
    chunks = doc.chunk_dicts()
    layouts = chunk_layouts(len(chunks), layout, seed, epoch, doc.doc_id, copy, doc.fixed_chunks)
    return [Segment(formats.render_chunks(chunks, layouts), tuple(formats.observed_spans(chunks, layouts)))]


# ------------------------------------------------------------------------------------ tokenizing
class SegmentEncoder:
    """Encodes segments as BOS + ids + EOS (BOS per ``models.bos_policy``: always, when the tokenizer
    has one), plus a boolean "in the loss" mask when asked."""

    def __init__(self, tokenizer, *, with_mask: bool):
        self.tokenizer = tokenizer
        self.with_mask = with_mask
        from ..models import bos_policy

        self.bos = tokenizer.bos_token_id if bos_policy(tokenizer, training=True) else None
        self.eos = tokenizer.eos_token_id
        if self.eos is None:
            raise UsageError("the tokenizer has no EOS token; training needs one to separate documents")
        if with_mask and not getattr(tokenizer, "is_fast", False):
            raise UsageError("--loss-on observed needs a fast tokenizer (character offsets)")

    def encode(self, segments: Sequence[Segment]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        if not segments:
            return []
        texts = [s.text for s in segments]
        if self.with_mask:
            enc = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        else:
            enc = self.tokenizer(texts, add_special_tokens=False)
        head = [self.bos] if self.bos is not None else []
        out = []
        for i, segment in enumerate(segments):
            ids = np.asarray(head + list(enc["input_ids"][i]) + [self.eos], dtype=np.int64)
            mask = None
            if self.with_mask:
                inner = np.ones(len(enc["input_ids"][i]), dtype=bool)
                if segment.observed is not None:
                    inner[:] = False
                    offsets = enc["offset_mapping"][i]
                    for j, (start, end) in enumerate(offsets):
                        for span_start, span_end in segment.observed:
                            if start < span_end and end > span_start:
                                inner[j] = True
                                break
                mask = np.concatenate([np.ones(len(head), bool), inner, np.ones(1, bool)])
            out.append((ids, mask))
        return out


# ------------------------------------------------------------------------------------ packing
@dataclass(frozen=True)
class StreamPosition:
    """Where the next window starts: token ``offset`` of the ``segment``-th segment of the
    ``cursor``-th entry of epoch ``epoch``'s order. Saved in checkpoints."""

    epoch: int = 0
    cursor: int = 0
    segment: int = 0
    offset: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor, "segment": self.segment, "offset": self.offset}


class TokenStream:
    """The packed training stream over all epochs; ``next_window`` returns (input_ids, labels)."""

    def __init__(
        self,
        corpora: Sequence[Sequence[Document]],
        weights: Sequence[float],
        tokenizer,
        *,
        layout: str,
        seq_len: int,
        seed: int,
        shuffle: bool = True,
        loss_on: str = "all",
        position: StreamPosition = StreamPosition(),
        shard_index: int = 0,
        shard_count: int = 1,
    ):
        if loss_on == "observed" and layout == "pure":
            raise UsageError("--loss-on observed needs text in the documents; layout pure has only latents")
        self.corpora = corpora
        self.sizes = [len(c) for c in corpora]
        self.weights = list(weights)
        self.layout = layout
        self.seq_len = seq_len
        self.seed = seed
        self.shuffle = shuffle
        # Per-rank document sharding (--data-sharding rank): this stream reads only the epoch-order
        # entries with cursor % shard_count == shard_index; positions keep global cursors.
        self.shard_index = shard_index
        self.shard_count = shard_count
        self.encoder = SegmentEncoder(tokenizer, with_mask=(loss_on == "observed"))
        self._order_epoch = -1
        self._order = np.zeros((0, 3), np.int64)
        # pieces: [position of first token, ids, mask]; the buffer is their concatenation
        self._pieces: deque[tuple[StreamPosition, np.ndarray, np.ndarray | None]] = deque()
        self._buffered = 0
        self._next_doc = (position.epoch, position.cursor)
        self._pending: deque[tuple[StreamPosition, np.ndarray, np.ndarray | None]] = deque()
        self._resume = position if (position.segment or position.offset) else None
        self._empty_entries = 0

    def order(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            self._order = epoch_order(self.sizes, self.weights, self.seed, epoch, self.shuffle)
            self._order_epoch = epoch
            if len(self._order) == 0:
                raise UsageError("the data mix is empty (weights too small for the file sizes)")
        return self._order

    def _encode_block(self) -> None:
        """Render and tokenize the next block of documents (one tokenizer call)."""
        epoch, cursor = self._next_doc
        order = self.order(epoch)
        end = min(cursor + _ENCODE_BLOCK * self.shard_count, len(order))
        segments, owners = [], []
        for c in range(cursor, end):
            if c % self.shard_count != self.shard_index:
                continue
            file_index, doc_index, copy = (int(v) for v in order[c])
            doc = self.corpora[file_index][doc_index]
            for s, segment in enumerate(render_document(doc, self.layout, self.seed, epoch, copy)):
                segments.append(segment)
                owners.append(StreamPosition(epoch, c, s, 0))
        resume = self._resume
        for owner, (ids, mask) in zip(owners, self.encoder.encode(segments)):
            if resume is not None and (owner.epoch, owner.cursor) == (resume.epoch, resume.cursor):
                if owner.segment < resume.segment:
                    continue
                if owner.segment == resume.segment and resume.offset:
                    ids = ids[resume.offset :]
                    mask = None if mask is None else mask[resume.offset :]
                    owner = resume
            self._pending.append((owner, ids, mask))
        self._resume = None
        self._next_doc = (epoch, end) if end < len(order) else (epoch + 1, 0)
        # A mix whose documents all render empty (pure layout, empty latents) would loop forever.
        self._empty_entries = 0 if segments else self._empty_entries + (end - cursor)
        if self._empty_entries > len(order):
            raise UsageError(f"no training tokens: every document renders empty under --layout {self.layout}")

    def _fill(self, need: int) -> None:
        while self._buffered < need:
            if not self._pending:
                self._encode_block()
                continue
            piece = self._pending.popleft()
            if len(piece[1]) == 0:
                continue
            self._pieces.append(piece)
            self._buffered += len(piece[1])

    def next_window(self) -> tuple[np.ndarray, np.ndarray]:
        """``seq_len + 1`` tokens as (input_ids[seq_len], labels[seq_len]); advances by seq_len."""
        width = self.seq_len + 1
        self._fill(width)
        ids_parts, mask_parts, taken = [], [], 0
        for _, ids, mask in self._pieces:
            take = min(len(ids), width - taken)
            ids_parts.append(ids[:take])
            if mask is not None:
                mask_parts.append(mask[:take])
            taken += take
            if taken == width:
                break
        window = np.concatenate(ids_parts)
        labels = window[1:].copy()
        if mask_parts:
            labels[~np.concatenate(mask_parts)[1:]] = IGNORE_INDEX
        self._drop(self.seq_len)
        return window[:-1], labels

    def _drop(self, n: int) -> None:
        while n > 0:
            position, ids, mask = self._pieces[0]
            if len(ids) <= n:
                self._pieces.popleft()
                self._buffered -= len(ids)
                n -= len(ids)
            else:
                moved = StreamPosition(position.epoch, position.cursor, position.segment, position.offset + n)
                self._pieces[0] = (moved, ids[n:], None if mask is None else mask[n:])
                self._buffered -= n
                n = 0

    def position(self) -> StreamPosition:
        """Where the next window starts (what a checkpoint stores)."""
        if self._pieces:
            return self._pieces[0][0]
        if self._pending:
            return self._pending[0][0]
        return StreamPosition(self._next_doc[0], self._next_doc[1], 0, 0)

    def count_epoch_tokens(self, epoch: int = 0) -> int:
        """Tokens one epoch contributes to this stream (a pre-pass; used by ``--epochs``)."""
        order = self.order(epoch)
        total = 0
        for start in range(0, len(order), _ENCODE_BLOCK):
            segments = []
            for offset, (file_index, doc_index, copy) in enumerate(order[start : start + _ENCODE_BLOCK]):
                if (start + offset) % self.shard_count != self.shard_index:
                    continue
                segments.extend(render_document(self.corpora[int(file_index)][int(doc_index)], self.layout, self.seed, epoch, int(copy)))
            total += sum(len(ids) for ids, _ in self.encoder.encode(segments))
        return total


def batches(stream: TokenStream, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Global batches ``(input_ids[B, L], labels[B, L])`` forever."""
    while True:
        windows = [stream.next_window() for _ in range(batch_size)]
        yield np.stack([w[0] for w in windows]), np.stack([w[1] for w in windows])
