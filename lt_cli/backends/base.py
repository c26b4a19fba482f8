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
  model's length, tokens are dropped from the *front of the context* first (a leading BOS stays),
  then from the *end of the continuation*; the count is reported and never silent.

The token-level parts of these conventions (the truncation rules :func:`fit_pair` and
:func:`fit_prompt`, seed expansion :func:`expand_seeds`, chat checks :func:`chat_messages`) are
plain functions here, shared by every backend that sees token ids, so that the transformers and
vLLM backends cannot drift apart: a rule changed here changes for both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

from ..errors import LtError, UsageError

FINISH_STOP = "stop"  # a stop string was produced
FINISH_EOS = "eos"  # the model's end-of-sequence token
FINISH_LENGTH = "length"  # max_new_tokens reached


@dataclass
class Sample:
    text: str
    token_ids: list[int]
    token_logprobs: list[float]
    finish_reason: str
    #: prompt tokens of this sample's request: as the server billed them (HTTP backends; None when
    #: not reported), or as the local backend read them (after fitting, BOS included)
    prompt_tokens: int | None = None
    #: generated tokens (HTTP: as billed; local backends: ``len(token_ids)``)
    completion_tokens: int | None = None

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
    #: tokens of the context the continuation was conditioned on, after truncation (BOS included;
    #: None when the backend cannot tell): with ``n_tokens`` what the pair cost to score
    n_context_tokens: int | None = None

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
    #: keep at most the last N prompt tokens (None: :func:`fit_prompt`'s rule); HTTP backends send
    #: prompts whole and leave the cut to the server
    max_prompt_tokens: int | None = None


def check_sampling_params(params: SamplingParams) -> None:
    """Refuse parameters no backend can honour, with one clear line (shared by every backend)."""
    import math

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
    if params.max_prompt_tokens is not None and params.max_prompt_tokens < 1:
        raise LtError(f"max_prompt_tokens must be at least 1, got {params.max_prompt_tokens}")


# ---------------------------------------------------------------------- seeds
def check_seed_shape(n_prompts: int, n: int, seeds: Sequence[Sequence[int]] | None) -> None:
    """``seeds`` (when given) must hold one row of ``n`` seeds per prompt."""
    if seeds is None:
        return
    want = f"seeds must be {n_prompts} lists of n={n} seeds each"
    if len(seeds) != n_prompts:
        raise LtError(f"{want}: got {len(seeds)} seed lists for {n_prompts} prompts")
    for i, row in enumerate(seeds):
        if len(row) != n:
            raise LtError(f"{want}: prompt {i} needs {n} seeds, got {len(row)}")


def expand_seeds(n_prompts: int, n: int, seeds: Sequence[Sequence[int]] | None, *, namespace: str, bits: int = 64) -> list[list[int]]:
    """One seed per (prompt, sample), as ints below ``2**bits`` (what the backend's generator takes).

    Without ``seeds`` they are derived from (``namespace``, prompt index, sample index): nothing in
    lt reads ambient randomness, so a call without seeds is still reproducible.
    """
    from ..seeding import derive_seed

    mask = (1 << bits) - 1
    if seeds is None:
        return [[derive_seed(namespace, i, j) & mask for j in range(n)] for i in range(n_prompts)]
    check_seed_shape(n_prompts, n, seeds)
    return [[int(s) & mask for s in row] for row in seeds]


# ---------------------------------------------------------------------- truncation
def resolve_max_model_len(model_limit: int | None, requested: int | None) -> int:
    """The context length a backend works with: the request, capped at the model's positions.

    Without a request it is the model's ``max_position_embeddings`` (2048 when the config has
    none), the same for every local backend so that truncation counts agree between them.
    """
    if requested is not None:
        if requested < 2:
            raise LtError(f"max_model_len must be at least 2, got {requested}")
        if model_limit and requested > model_limit:
            from ..console import warn

            warn(f"max_model_len {requested} exceeds the model's {model_limit} positions; using {model_limit}")
            return int(model_limit)
        return int(requested)
    return int(model_limit) if model_limit else 2048


def fit_prompt(ids: list[int], *, max_new_tokens: int, max_model_len: int, bos_id: int | None, max_prompt_tokens: int | None = None) -> list[int]:
    """Cut a prompt from the front (keeping a leading BOS) to leave room for generation.

    By default the room is ``max_new_tokens`` but at most a quarter of ``max_model_len``, so a long
    generation budget never eats the whole prompt (2,048 context, 1,024 new tokens: prompts keep up
    to 1,536 tokens and the generation gets what is left). ``max_prompt_tokens`` replaces the rule
    with a fixed prompt budget, the last N tokens (the reference's vLLM setting: 1,024, which always
    leaves 1,024 for generation). Every backend with a token-level view uses this one policy;
    callers count and report the cut (``len(result) < len(ids)``).
    """
    if max_prompt_tokens is not None:
        limit = max(1, min(max_prompt_tokens, max_model_len - 1))
    else:
        room = max(1, min(max_new_tokens, max_model_len // 4))
        limit = max_model_len - room
    if len(ids) <= limit:
        return ids
    keep_bos = 1 if (bos_id is not None and ids and ids[0] == bos_id) else 0
    return ids[:keep_bos] + ids[len(ids) - limit + keep_bos :]


def fit_prompt_warned(ids: list[int], *, max_new_tokens: int, max_model_len: int, bos_id: int | None, max_prompt_tokens: int | None = None) -> list[int]:
    """:func:`fit_prompt` with the warning every backend prints when it cuts a prompt."""
    fitted = fit_prompt(ids, max_new_tokens=max_new_tokens, max_model_len=max_model_len, bos_id=bos_id, max_prompt_tokens=max_prompt_tokens)
    if len(fitted) < len(ids):
        from ..console import warn

        warn(f"a prompt of {len(ids)} tokens was cut from the front to {len(fitted)} tokens (max_model_len {max_model_len})")
    return fitted


@dataclass(frozen=True)
class FittedPair:
    """A (context, continuation) pair of token ids cut to fit a scoring window (see :func:`fit_pair`)."""

    context: list[int]
    continuation: list[int]
    n_context_truncated: int
    n_continuation_truncated: int

    @property
    def truncated(self) -> bool:
        return bool(self.n_context_truncated or self.n_continuation_truncated)


def fit_pair(context: list[int], continuation: list[int], *, max_len: int, bos_id: int | None, empty_context_id: int | None = None) -> FittedPair:
    """The scoring truncation rule: make ``len(context) + len(continuation) <= max_len``.

    An empty context (a model scored without BOS, by ``models.bos_policy``) becomes
    ``[empty_context_id]`` when one is given: the first scored token is conditioned on the
    tokenizer's BOS or EOS, as lm-evaluation-harness does; without one it is an error.

    Tokens go from the front of the context first, because the continuation is what is scored and
    the nearest context matters most; at least one context token stays (the leading BOS when there
    is one, else the last context token), since the continuation's first token needs something to
    be conditioned on. Only then is the end of the continuation cut (those tokens are not scored).
    Both counts are returned so the caller reports them in :class:`Score`.
    """
    if not context and continuation and empty_context_id is not None:
        context = [int(empty_context_id)]
    if not context and continuation:
        raise LtError("cannot score a continuation with an empty context and no BOS token: its first token has no conditional probability")
    over = len(context) + len(continuation) - max_len
    if over <= 0:
        return FittedPair(list(context), list(continuation), 0, 0)
    head = 1 if (bos_id is not None and context[0] == bos_id) else 0
    n_context = min(over, len(context) - 1)
    context = list(context[:head]) + list(context[head + n_context :])
    n_continuation = max(0, len(context) + len(continuation) - max_len)
    continuation = list(continuation[: len(continuation) - n_continuation])
    return FittedPair(context, continuation, n_context, n_continuation)


def warn_truncated_pairs(fitted: Sequence[FittedPair], max_len: int) -> int:
    """Warn once per score() call about truncated pairs; return how many there were."""
    truncated = sum(1 for f in fitted if f.truncated)
    if truncated:
        from ..console import warn

        warn(f"{truncated} of {len(fitted)} scored pairs exceeded max_model_len {max_len} and were truncated (reported in Score)")
    return truncated


# ---------------------------------------------------------------------- chat
def chat_messages(conversation: Sequence[dict]) -> list[dict[str, str]]:
    """The conversation as plain ``{"role", "content"}`` string dicts; anything else is refused."""
    messages = []
    for message in conversation:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise LtError("a chat message must be a dict with 'role' and 'content'")
        messages.append({"role": str(message["role"]), "content": str(message["content"])})
    return messages


def render_chat(tokenizer: Any, conversation: Sequence[dict], *, chat_template: str | None, model_id: str) -> str:
    """The prompt string of a conversation under ``chat_template``, ending with the assistant turn.

    Local backends sample from this string like any prompt, so chat and sample share one path.
    """
    if not chat_template:
        raise UsageError(
            f"model {model_id} has no chat template (tokenizer_config.json has no chat_template), and chat prompts need one: "
            "lt synthesize asks its teacher as a chat, so give it an instruction-tuned model"
        )
    messages = chat_messages(conversation)
    return tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False, add_generation_prompt=True)


# ---------------------------------------------------------------------- parameters
def count_parameters(path: str) -> int | None:
    """Parameters stored in a checkpoint folder's ``*.safetensors`` files, from their headers only.

    Why: the E-step's compute estimate (2 x parameters x tokens) needs the parameter count of
    backends that do not hold the model as torch modules (vLLM). Reading the JSON headers costs a
    few kilobytes per file and loads no tensor. None when the folder has no safetensors files.
    """
    import json
    import struct
    from pathlib import Path

    folder = Path(path)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return None
    total = 0
    for file in files:
        with open(file, "rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in entry["shape"]:
                count *= int(dim)
            total += count
    return total


# ---------------------------------------------------------------------- usage
@dataclass
class Usage:
    """Tokens a server billed, summed over its replies (what teacher cost reports are built from).

    ``requests`` counts successful generation replies (sync or Batch API lines), not attempts;
    ``requests_without_usage`` counts replies that carried no ``usage`` field, whose tokens are
    therefore missing from the sums (so the sums are then a lower bound).
    """

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests_without_usage: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        self.requests += 1
        if prompt_tokens is None or completion_tokens is None:
            self.requests_without_usage += 1
            return
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens


#: ``--dtype`` and ``--device`` values of the backends
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")


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
