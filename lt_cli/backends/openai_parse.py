"""Reading OpenAI-compatible replies into :class:`Sample` / :class:`Score` (the HTTP backend's parsers).

Kept apart from openai.py (the HTTP client and request building) because this is the part that
must cope with differences between servers: vLLM's ``stop_reason``, token ids named
``token_id:<n>``, whether a BOS is echoed, and replies with or without ``usage``. Every function is
plain (reply dict in, value out) so it is the same for sync replies and Batch API result lines.
"""

from __future__ import annotations

import math

from ..errors import LtError
from .base import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, Sample, SamplingParams, Score


def one_line(text: str, limit: int = 300) -> str:
    """Server text squeezed onto one line (error messages stay one line)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def reply_usage(reply: dict) -> tuple[int | None, int | None]:
    """(prompt_tokens, completion_tokens) of a reply's ``usage``; (None, None) when it has none."""
    usage = reply.get("usage") if isinstance(reply, dict) else None
    if not isinstance(usage, dict):
        return None, None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int) or isinstance(prompt, bool) or isinstance(completion, bool):
        return None, None
    return prompt, completion


def finish_reason(choice: dict, params: SamplingParams) -> str:
    reason = choice.get("finish_reason")
    if reason == "length":
        return FINISH_LENGTH
    if "stop_reason" in choice:  # vLLM: the matched stop string, a stop token id, or None for EOS
        return FINISH_STOP if isinstance(choice["stop_reason"], str) else FINISH_EOS
    return FINISH_STOP if params.stop else FINISH_EOS


def first_choice(reply: dict) -> dict:
    choices = reply.get("choices") if isinstance(reply, dict) else None
    if not choices:
        raise LtError("the API response has no choices")
    return choices[0]


def completion_sample(reply: dict, params: SamplingParams, *, want_logprobs: bool) -> Sample:
    """A ``/completions`` reply as a Sample (log-probs and ids only when asked for and returned)."""
    choice = first_choice(reply)
    token_logprobs: list[float] = []
    token_ids: list[int] = []
    logprobs = choice.get("logprobs")
    if want_logprobs and logprobs:
        token_logprobs = [float(x) for x in logprobs.get("token_logprobs") or [] if x is not None]
        token_ids = ids_from_tokens(logprobs.get("tokens") or [])
    prompt_tokens, completion_tokens = reply_usage(reply)
    return Sample(
        text=choice.get("text") or "",
        token_ids=token_ids,
        token_logprobs=token_logprobs,
        finish_reason=finish_reason(choice, params),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )


def chat_sample(reply: dict, params: SamplingParams, *, want_logprobs: bool) -> Sample:
    """A ``/chat/completions`` reply as a Sample."""
    choice = first_choice(reply)
    message = choice.get("message") or {}
    token_logprobs: list[float] = []
    token_ids: list[int] = []
    logprobs = choice.get("logprobs")
    if want_logprobs and logprobs and logprobs.get("content"):
        token_logprobs = [float(item["logprob"]) for item in logprobs["content"]]
        token_ids = ids_from_tokens([item.get("token", "") for item in logprobs["content"]])
    prompt_tokens, completion_tokens = reply_usage(reply)
    return Sample(
        text=message.get("content") or "",
        token_ids=token_ids,
        token_logprobs=token_logprobs,
        finish_reason=finish_reason(choice, params),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )


def score_from_echo(context: str, continuation: str, reply: dict) -> Score:
    """log p(continuation | context) from a ``/completions`` reply with ``echo`` + ``logprobs``.

    The continuation's tokens are found by character offset: every echoed token starting at or
    after ``len(context)`` belongs to it. The server tokenizes context+continuation jointly, so a
    token straddling the boundary is counted with the context (documented in docs/backends.md).
    """
    choice = first_choice(reply)
    logprobs = choice.get("logprobs") or {}
    tokens = logprobs.get("tokens")
    values = logprobs.get("token_logprobs")
    offsets = logprobs.get("text_offset")
    if not tokens or values is None or offsets is None:
        raise LtError("the server did not return echoed prompt log-probs (echo+logprobs on /completions); this backend cannot score with it")
    full = context + continuation
    starts = token_starts(tokens, full, offsets)
    scored: list[float] = []
    n_context = 0
    for start, value in zip(starts, values):
        if start < len(context):
            n_context += 1
            continue
        if start >= len(full):
            break  # the generated token after the echoed prompt
        if value is None:
            raise LtError("the server returned no log-prob for the first token; scoring needs a non-empty context or a BOS token")
        scored.append(float(value))
    if not scored:
        raise LtError("no continuation tokens found in the echoed prompt")
    return Score(logprob=float(math.fsum(scored)), token_logprobs=scored, n_context_tokens=n_context)


def ids_from_tokens(tokens: list[str]) -> list[int]:
    """vLLM with ``return_tokens_as_token_ids`` names tokens ``token_id:123``; otherwise no ids."""
    ids = []
    for token in tokens:
        if not isinstance(token, str) or not token.startswith("token_id:"):
            return []
        try:
            ids.append(int(token[len("token_id:") :]))
        except ValueError:
            return []
    return ids


def token_starts(tokens: list[str], full: str, offsets: list[int]) -> list[int]:
    """Character start of each echoed token within ``full``.

    Servers differ on whether a BOS token is echoed (and its text length shifts ``text_offset``),
    so offsets are recomputed from the token texts when their concatenation contains the prompt;
    otherwise (byte tokens, ids) the server's ``text_offset`` is used.
    """
    joined = "".join(t if isinstance(t, str) else "" for t in tokens)
    shift = joined.find(full) if full else -1
    if shift < 0:
        return [int(o) for o in offsets]
    starts, position = [], 0
    for token in tokens:
        starts.append(position - shift)
        position += len(token) if isinstance(token, str) else 0
    return starts
