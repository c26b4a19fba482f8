"""The thought format: special tokens, training layouts, prompts and scoring strings.

This is the only module that builds strings containing the special tokens. Every other module
asks it for a prompt, a layout or a scoring pair, so the E-step, training and eval can never drift
apart. The four token strings are the reference's (``ryoungj/BoLT``, ``lingua/tokenizer.py``) so
data released by the authors stays compatible.

Strings here never contain the tokenizer's BOS/EOS: those are token ids, added by whoever encodes
(training adds BOS+EOS per document; backends add BOS to every prompt and context).

Notation used in docstrings: ``<SoL>`` start of latent, ``<EoL>`` end of latent, ``<PRIOR>`` prior
(latent-first) tag, ``<POST>`` posterior (text-first) tag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

START_OF_LATENT = "<|START_OF_LATENT|>"
END_OF_LATENT = "<|END_OF_LATENT|>"
PRIOR_PREFIX = "<|PRIOR_PREFIX|>"
POSTERIOR_PREFIX = "<|POSTERIOR_PREFIX|>"

#: The four special tokens, in the order they are added to a tokenizer.
SPECIAL_TOKENS: tuple[str, ...] = (START_OF_LATENT, END_OF_LATENT, PRIOR_PREFIX, POSTERIOR_PREFIX)

#: Training layouts accepted by ``lt train --layout``. ``prior`` and ``posterior`` are the
#: reference's untagged ablations; ``prior-tagged`` and ``posterior-tagged`` render every chunk in
#: one of the two forms that ``random`` mixes.
LAYOUTS = ("random", "prior", "posterior", "prior-tagged", "posterior-tagged", "pure", "raw", "completion")  # completion: lt finetune-eval

#: Per-chunk layouts of :func:`render_chunks`: the two tagged halves of ``random`` and the two
#: untagged ablation forms.
CHUNK_LAYOUTS = ("prior", "posterior", "prior-only", "posterior-only")


def prior_chunk(latent: str, text: str) -> str:
    """Latent-first layout of one chunk (models p(Z, X)): ``<SoL><PRIOR> latent <EoL> text``."""
    return f"{START_OF_LATENT}{PRIOR_PREFIX}{latent}{END_OF_LATENT}{text}"


def posterior_chunk(latent: str, text: str) -> str:
    """Text-first layout of one chunk (models q(Z | X)): ``<SoL><EoL> text <SoL><POST> latent <EoL>``.

    The empty ``<SoL><EoL>`` pair marks the chunk boundary, as in the reference.
    """
    return f"{START_OF_LATENT}{END_OF_LATENT}{text}{START_OF_LATENT}{POSTERIOR_PREFIX}{latent}{END_OF_LATENT}"


def prior_only_chunk(latent: str, text: str) -> str:
    """The reference's ``prior_only`` ablation layout of one chunk: ``<SoL> latent <EoL> text`` (no tag)."""
    return f"{START_OF_LATENT}{latent}{END_OF_LATENT}{text}"


def posterior_only_chunk(latent: str, text: str) -> str:
    """The reference's ``posterior_only`` ablation layout of one chunk: ``text <SoL> latent <EoL>``
    (no tag, no empty ``<SoL><EoL>`` boundary pair)."""
    return f"{text}{START_OF_LATENT}{latent}{END_OF_LATENT}"


_CHUNK_RENDERERS = {
    "prior": prior_chunk,
    "posterior": posterior_chunk,
    "prior-only": prior_only_chunk,
    "posterior-only": posterior_only_chunk,
}


def render_chunks(chunks: Sequence[dict], layouts: Sequence[str]) -> str:
    """Concatenate chunks (dicts with ``text`` and ``latent``), one layout per chunk, no separator.

    ``layouts[i]`` is one of :data:`CHUNK_LAYOUTS`; a chunk with an empty or missing latent is
    still rendered in its layout (the reference stores a missing latent as an empty string).
    """
    if len(layouts) != len(chunks):
        raise ValueError(f"{len(chunks)} chunks but {len(layouts)} layouts")
    parts = []
    for chunk, layout in zip(chunks, layouts):
        render = _CHUNK_RENDERERS.get(layout)
        if render is None:
            raise ValueError(f"unknown chunk layout {layout!r} (expected one of {', '.join(CHUNK_LAYOUTS)})")
        parts.append(render(chunk.get("latent") or "", chunk["text"]))
    return "".join(parts)


def observed_spans(chunks: Sequence[dict], layouts: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of each chunk's observed text inside
    ``render_chunks(chunks, layouts)``; everything outside them is latent or a special token.

    Used by ``lt train --loss-on observed`` to mask latent tokens.
    """
    if len(layouts) != len(chunks):
        raise ValueError(f"{len(chunks)} chunks but {len(layouts)} layouts")
    spans = []
    position = 0
    for chunk, layout in zip(chunks, layouts):
        latent = chunk.get("latent") or ""
        text = chunk["text"]
        if layout not in _CHUNK_RENDERERS:
            raise ValueError(f"unknown chunk layout {layout!r} (expected one of {', '.join(CHUNK_LAYOUTS)})")
        # every layout renders the text exactly once; what comes before it is known from the layout
        rendered = _CHUNK_RENDERERS[layout](latent, text)
        before = {
            "prior": len(START_OF_LATENT) + len(PRIOR_PREFIX) + len(latent) + len(END_OF_LATENT),
            "posterior": len(START_OF_LATENT) + len(END_OF_LATENT),
            "prior-only": len(START_OF_LATENT) + len(latent) + len(END_OF_LATENT),
            "posterior-only": 0,
        }[layout]
        start = position + before
        spans.append((start, start + len(text)))
        position += len(rendered)
    return spans


def posterior_prompt(prefix: str, text: str, *, reference_quirks: bool = False) -> str:
    """The prompt from which q(Z | X) is sampled for one chunk; generation stops at ``<EoL>``.

    ``prefix`` is the raw text of the previous P chunks (no latents), empty for the first chunk.
    Default (fixed): ``prefix <SoL><EoL> text <SoL><POST>`` for every chunk, which matches the
    posterior training layout. With ``reference_quirks`` the first chunk gets the reference's
    ``text <SoL><POST>`` (no ``<SoL><EoL>`` boundary marker).
    """
    if reference_quirks and not prefix:
        return f"{text}{START_OF_LATENT}{POSTERIOR_PREFIX}"
    return f"{prefix}{START_OF_LATENT}{END_OF_LATENT}{text}{START_OF_LATENT}{POSTERIOR_PREFIX}"


@dataclass(frozen=True)
class ScoringPair:
    """A (context, continuation) pair: log p is summed over the continuation's tokens only."""

    context: str
    continuation: str


def joint_scoring_pair(prefix: str, latent: str, text: str, *, reference_quirks: bool = False) -> ScoringPair:
    """The joint string ``prefix <SoL><PRIOR> latent <EoL> text`` split for scoring log p(Z, X | prefix).

    Default (fixed): every token after the prefix is scored, ``<SoL>`` included. With
    ``reference_quirks`` the first ``<SoL>`` moves into the context, reproducing the reference's
    off-by-one (it is the same for all K candidates, so importance weights are unchanged, but
    ``log_p`` and the ELBO shift by log p(<SoL> | prefix)).
    """
    body = f"{PRIOR_PREFIX}{latent}{END_OF_LATENT}{text}"
    if reference_quirks:
        return ScoringPair(prefix + START_OF_LATENT, body)
    return ScoringPair(prefix, START_OF_LATENT + body)


def latent_eval_suffix() -> str:
    """Appended to an eval question in the ``latent`` variant so the model thinks in a prior latent."""
    return f"{START_OF_LATENT}{PRIOR_PREFIX}"


def latent_answer_separator() -> str:
    """Closes the thinking in latent-variant exemplars; what follows is the stated answer."""
    return END_OF_LATENT


def finetune_prompt_suffix(latent: bool) -> str:
    """Ends a fine-tuning prompt (``lt finetune-eval``, as the reference's ``finetune.py``): latent
    models think in a prior latent (``<SoL><PRIOR>``); raw models get a bare ``<SoL>`` as the
    prompt/completion delimiter."""
    return latent_eval_suffix() if latent else START_OF_LATENT


def finetune_completion(thought: str, answer_text: str, latent: bool) -> str:
    """A fine-tuning target: ``thought <EoL> answer_text`` (latent), ``thought answer_text`` (raw:
    the reference deletes ``<EoL>`` from raw models' completions)."""
    return thought + (END_OF_LATENT if latent else "") + answer_text


def reading_order(latent: str | None, text: str) -> list[tuple[str, str]]:
    """One chunk as a person reads it (``lt view``): ``[("thought", latent), ("text", text)]``, the
    thought first as in the prior layout (``<SoL><PRIOR> latent <EoL> text``: the thought is what
    the writer had in mind before the text it explains); a chunk without a latent is its text.
    Both are shown as they are (a special token inside a sampled thought is worth seeing)."""
    parts = [("thought", latent)] if latent else []
    return parts + [("text", text)]


def strip_special_tokens(text: str) -> str:
    """Remove the four special-token strings (for display and for graders of raw variants)."""
    for token in SPECIAL_TOKENS:
        text = text.replace(token, "")
    return text


def contains_special_token(text: str) -> bool:
    return any(token in text for token in SPECIAL_TOKENS)
