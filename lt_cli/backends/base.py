"""The one small interface every inference backend implements (transformers, vLLM, HTTP).

Stages (teacher synthesis, E-step, eval) only ever talk to a :class:`Backend`, so each stage runs on
every backend. Conventions shared by all backends:

* Prompts and contexts are plain strings built by :mod:`lt_cli.formats`; the backend encodes them
  and prepends the tokenizer's BOS id when ``add_bos`` (default: ``models.bos_policy``). Special-token strings
  inside the text are encoded as their single special-token ids.
* Log-probabilities are natural logs. ``Sample.token_logprobs`` are those of the distribution
  actually sampled from (after temperature and top-p), so ``sum(token_logprobs)`` is log q of the
  sample; they include the token that triggered a stop (``<EoL>`` in the E-step), which is not part
  of ``Sample.text``.
* ``seeds[i][j]`` seeds sample ``j`` of prompt ``i``: a sample depends on its own seed only, never on
  batch composition, so a rerun, a resume or a larger K reproduces it (same hardware and backend).
* Truncation policy for scoring (``Score.n_truncated``): when context + continuation exceed the
  model's length, tokens are dropped from the *front of the context* first, then from the *end of
  the continuation*; the count is reported and never silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

FINISH_STOP = "stop"  # a stop string was produced
FINISH_EOS = "eos"  # the model's end-of-sequence token
FINISH_LENGTH = "length"  # max_new_tokens reached


@dataclass
class Sample:
    text: str
    token_ids: list[int]
    token_logprobs: list[float]
    finish_reason: str

    @property
    def logprob(self) -> float:
        return float(sum(self.token_logprobs))

    @property
    def finished(self) -> bool:
        return self.finish_reason != FINISH_LENGTH


@dataclass
class Score:
    logprob: float
    token_logprobs: list[float]
    #: tokens dropped from the front of the context (policy above)
    n_context_truncated: int = 0
    #: tokens dropped from the end of the continuation (not scored)
    n_continuation_truncated: int = 0

    @property
    def n_tokens(self) -> int:
        return len(self.token_logprobs)

    @property
    def n_truncated(self) -> int:
        return self.n_context_truncated + self.n_continuation_truncated


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    stop: tuple[str, ...] = ()


def check_sampling_params(params: SamplingParams) -> None:
    """Refuse parameters no backend can honour, with one clear line (shared by every backend)."""
    import math

    from ..errors import LtError

    if params.n < 1:
        raise LtError(f"n must be at least 1, got {params.n}")
    if params.temperature < 0 or not math.isfinite(params.temperature):
        raise LtError(f"temperature must be >= 0, got {params.temperature}")
    if not (0.0 < params.top_p <= 1.0):
        raise LtError(f"top_p must be in (0, 1], got {params.top_p}")
    if params.max_new_tokens < 1:
        raise LtError(f"max_new_tokens must be at least 1, got {params.max_new_tokens}")
    if any(not s for s in params.stop):
        raise LtError("stop strings must be non-empty")


def fit_prompt(ids: list[int], *, max_new_tokens: int, max_model_len: int, bos_id: int | None) -> list[int]:
    """Cut a prompt from the front (keeping a leading BOS) to leave room for generation.

    The room is ``max_new_tokens`` but at most a quarter of ``max_model_len``, so a long generation
    budget never eats the whole prompt. Every backend with a token-level view uses this one policy;
    callers count and report the cut (``len(result) < len(ids)``).
    """
    room = max(1, min(max_new_tokens, max_model_len // 4))
    limit = max_model_len - room
    if len(ids) <= limit:
        return ids
    keep_bos = 1 if (bos_id is not None and ids and ids[0] == bos_id) else 0
    return ids[:keep_bos] + ids[len(ids) - limit + keep_bos :]


@dataclass
class BackendConfig:
    """What every backend constructor takes (extra backend-specific options live in ``options``)."""

    model: str
    dtype: str = "auto"  # auto: fp32 on CPU, bf16 on GPU
    device: str = "auto"
    max_model_len: int | None = None
    batch_size: int = 16
    add_bos: bool | None = None  # None: models.bos_policy (lt-trained: yes; others: what their tokenizer does)
    options: dict = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    name: str
    model_id: str

    def sample(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        seeds: Sequence[Sequence[int]] | None = None,
    ) -> list[list[Sample]]:
        """``params.n`` samples per prompt (plain completion)."""

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[Score]:
        """log p(continuation | context) for each (context, continuation) pair."""

    def chat(
        self,
        conversations: Sequence[Sequence[dict]],
        params: SamplingParams,
        seeds: Sequence[Sequence[int]] | None = None,
    ) -> list[list[Sample]]:
        """Samples for chat conversations ([{"role", "content"}, ...]) via the chat template/endpoint."""

    def close(self) -> None:
        ...
