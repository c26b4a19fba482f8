"""transformers backend: the default, runs anywhere torch runs (fp32 on CPU, bf16 on GPU).

Why it is written by hand instead of calling ``model.generate`` per sample: the E-step draws K
samples per chunk and scores each of them, so the work is dominated by many short generations that
share a prompt. This backend

* prefills each prompt ONCE and expands its KV cache to the K rows that sample from it;
* decodes all rows of a batch together (left padding, explicit position ids and attention mask) and
  drops rows from the batch and the cache as soon as they finish, so finished rows cost nothing;
* samples each row with its own ``torch.Generator`` seeded by ``seeds[i][j]``: one uniform number
  per row and step, inverted through the row's CDF, so a sample depends only on its own seed and
  never on which other rows share its batch;
* reports the log-probs of the distribution actually sampled from (after temperature and top-p).
  At temperature 0 (greedy) the reported log-probs are those of the untempered model, as vLLM does;
* scores (context, continuation) pairs grouped by context: the context's KV cache is computed once
  and expanded to its K continuations, pairs are bucketed by length, and logits are materialised
  only at continuation positions, a chunk at a time (a full [tokens x vocab] tensor is a memory trap).

Scoring truncation follows base.py (front of the context first, keeping BOS, then the end of the
continuation); it is reported in ``Score`` and counted in :attr:`HFBackend.n_truncated_pairs` with a
warning. Sampling prompts that leave too little room for ``max_new_tokens`` are cut from the front
(BOS kept) with a warning, counted in :attr:`HFBackend.n_truncated_prompts`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

from ..console import warn
from ..errors import LtError
from ..seeding import derive_seed
from .base import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, BackendConfig, Sample, SamplingParams, Score, check_sampling_params, fit_prompt

#: rows of [positions x vocab] logits materialised at once when scoring
SCORE_LOGIT_CHUNK = 512
#: padded tokens (context + continuation) per scoring forward pass, unless options override it
DEFAULT_SCORE_BATCH_TOKENS = 16384
#: a scoring batch closes when padded positions would exceed this multiple of the real tokens
MAX_PADDING_FACTOR = 1.2
#: ... unless the batch computes fewer positions than this (small passes are weight-read-bound)
MIN_SCORE_BATCH_POSITIONS = 1024


@dataclass
class _Unit:
    """One prefill row of a sampling batch: a prompt and the sample slots that expand from it."""

    prompt_index: int
    ids: list[int]
    slots: list[int]  # sample indices j of this prompt


@dataclass
class _Encoded:
    context: list[int]
    continuation: list[int]
    n_context_truncated: int
    n_continuation_truncated: int


class HFBackend:
    """The transformers implementation of :class:`lt_cli.backends.base.Backend`."""

    name = "transformers"

    def __init__(self, config: BackendConfig, *, loaded: tuple[Any, Any] | None = None):
        """``loaded``: an already loaded ``(model, tokenizer)`` to use instead of loading
        ``config.model`` (lt train's validation scores the model it is training)."""
        import torch

        from ..models import bos_policy, empty_context_token_id, load_model_and_tokenizer, missing_latent_tokens, resolve_model

        self.config = config
        self.model_id = config.model
        unknown = sorted(set(config.options) - {"score_batch_tokens"})
        if unknown:
            raise LtError(f"unknown transformers backend option(s): {', '.join(unknown)} (known: score_batch_tokens)")
        self.score_batch_tokens = int(config.options.get("score_batch_tokens", DEFAULT_SCORE_BATCH_TOKENS))
        if config.batch_size < 1:
            raise LtError(f"batch_size must be at least 1, got {config.batch_size}")
        if loaded is not None:
            self.model, self.tokenizer = loaded
        else:
            self.model, self.tokenizer = load_model_and_tokenizer(config.model, dtype=config.dtype, device=config.device)
        self.device = next(self.model.parameters()).device
        self._torch = torch
        missing = missing_latent_tokens(self.tokenizer)
        if missing:
            warn(
                f"the tokenizer of {config.model} lacks the latent special tokens {', '.join(missing)}: "
                "those strings will be split into ordinary tokens. Train the model with `lt train` first "
                "(it adds them) to sample or score latent thoughts properly."
            )
        add_bos = config.add_bos if config.add_bos is not None else bos_policy(self.tokenizer, resolve_model(config.model))
        self.bos_id = self.tokenizer.bos_token_id if add_bos else None
        # an explicit add_bos=False means no BOS anywhere: an empty context then stays an error
        self.empty_context_id = empty_context_token_id(self.tokenizer) if config.add_bos is None else None
        self.eos_ids = self._eos_ids()
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (min(self.eos_ids) if self.eos_ids else 0)
        self.max_model_len = self._max_model_len(config.max_model_len)
        self.n_truncated_pairs = 0
        self.n_truncated_prompts = 0
        # transformers 5 renamed ``past_key_values`` to ``cache``; accept both generations.
        self._cache_kwarg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        decoder = self.model.get_decoder() if hasattr(self.model, "get_decoder") else None
        self._decoder = decoder if decoder is not None and decoder is not self.model else None
        if self._decoder is not None:
            params = inspect.signature(self._decoder.forward).parameters
            self._decoder_cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._head = self.model.get_output_embeddings()
        self._softcap = getattr(self.model.config.get_text_config(), "final_logit_softcapping", None)

    # ------------------------------------------------------------------ setup helpers
    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        generation = getattr(self.model, "generation_config", None)
        extra = getattr(generation, "eos_token_id", None) if generation is not None else None
        if isinstance(extra, int):
            ids.add(extra)
        elif isinstance(extra, (list, tuple)):
            ids.update(int(x) for x in extra)
        return ids

    def _max_model_len(self, requested: int | None) -> int:
        limit = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        if requested is not None:
            if requested < 2:
                raise LtError(f"max_model_len must be at least 2, got {requested}")
            if limit and requested > limit:
                warn(f"max_model_len {requested} exceeds the model's {limit} positions; using {limit}")
                return int(limit)
            return int(requested)
        return int(limit) if limit else 2048

    # ------------------------------------------------------------------ tokens
    def encode(self, text: str, *, add_bos: bool = True) -> list[int]:
        """Token ids of ``text`` (special-token strings -> their ids), BOS first when configured.

        BOS is not doubled when the text itself already starts with it (chat templates often do).
        """
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if add_bos and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids.insert(0, self.bos_id)
        return ids

    def count_tokens(self, text: str) -> int:
        """Number of tokens of ``text`` alone (no BOS): what it occupies inside a longer prompt."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    # ------------------------------------------------------------------ model calls
    def _call_model(self, input_ids, attention_mask, position_ids, cache, logits_to_keep: int = 1):
        kwargs = {self._cache_kwarg: cache}
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
        return out.logits

    def _hidden_states(self, input_ids, attention_mask, position_ids, cache):
        """Last hidden states without the LM head (scoring applies the head only where needed)."""
        if self._decoder is None:
            return None
        kwargs = {self._decoder_cache_kwarg: cache}
        out = self._decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True, **kwargs)
        return out.last_hidden_state

    def _logits_from_hidden(self, hidden):
        logits = self._head(hidden).float()
        if self._softcap:
            logits = self._torch.tanh(logits / self._softcap) * self._softcap
        return logits

    def _new_cache(self):
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.model.config)
        except TypeError:  # older transformers
            return DynamicCache()

    def _left_pad(self, rows: list[list[int]]):
        torch = self._torch
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), positions.to(self.device)

    # ------------------------------------------------------------------ sampling
    def _seeds(self, n_prompts: int, params: SamplingParams, seeds) -> list[list[int]]:
        if seeds is None:
            # deterministic defaults: nothing in lt reads ambient randomness
            return [[derive_seed("hf-default-sample", i, j) for j in range(params.n)] for i in range(n_prompts)]
        seeds = [list(row) for row in seeds]
        if len(seeds) != n_prompts or any(len(row) != params.n for row in seeds):
            raise LtError(f"seeds must be {n_prompts} lists of n={params.n} seeds each")
        return [[int(s) & ((1 << 64) - 1) for s in row] for row in seeds]

    def _fit_prompt(self, ids: list[int], max_new_tokens: int) -> list[int]:
        fitted = fit_prompt(ids, max_new_tokens=max_new_tokens, max_model_len=self.max_model_len, bos_id=self.bos_id)
        if len(fitted) < len(ids):
            self.n_truncated_prompts += 1
            warn(f"a prompt of {len(ids)} tokens was cut from the front to {len(fitted)} tokens (max_model_len {self.max_model_len})")
        return fitted

    def sample(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        seeds: Sequence[Sequence[int]] | None = None,
    ) -> list[list[Sample]]:
        """``params.n`` samples per prompt; see the module docstring for how batching works."""
        check_sampling_params(params)
        prompts = list(prompts)
        seed_rows = self._seeds(len(prompts), params, seeds)
        encoded = [self._fit_prompt(self.encode(p), params.max_new_tokens) for p in prompts]
        if any(not ids for ids in encoded):
            raise LtError("cannot sample from an empty prompt without a BOS token (add_bos is off or the tokenizer has none)")
        return self._sample_ids(encoded, params, seed_rows)

    def _sample_ids(self, encoded: list[list[int]], params: SamplingParams, seed_rows: list[list[int]]) -> list[list[Sample]]:
        rows_per_batch = max(1, self.config.batch_size)
        units: list[_Unit] = []
        for i in sorted(range(len(encoded)), key=lambda k: len(encoded[k])):
            for start in range(0, params.n, rows_per_batch):
                units.append(_Unit(i, encoded[i], list(range(start, min(params.n, start + rows_per_batch)))))
        results: list[list[Sample | None]] = [[None] * params.n for _ in encoded]
        batch: list[_Unit] = []
        rows = 0
        for unit in units:
            if batch and rows + len(unit.slots) > rows_per_batch:
                self._run_sample_batch(batch, params, seed_rows, results)
                batch, rows = [], 0
            batch.append(unit)
            rows += len(unit.slots)
        if batch:
            self._run_sample_batch(batch, params, seed_rows, results)
        return [[s for s in row if s is not None] for row in results]

    def _process_logits(self, logits, params: SamplingParams):
        """Log-probs of the distribution sampled from: temperature, then top-p (nucleus), renormalised."""
        torch = self._torch
        if params.temperature == 0:
            return torch.log_softmax(logits, dim=-1)
        logprobs = torch.log_softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_lp, order = logprobs.sort(dim=-1, descending=True)
            probs = sorted_lp.exp()
            mass_before = probs.cumsum(dim=-1) - probs
            drop = mass_before >= params.top_p
            drop[:, 0] = False
            sorted_lp = sorted_lp.masked_fill(drop, float("-inf"))
            logprobs = torch.full_like(logprobs, float("-inf")).scatter(-1, order, sorted_lp)
            logprobs = torch.log_softmax(logprobs, dim=-1)
        return logprobs

    def _draw(self, logprobs, generators):
        """One token per row: inverse CDF with one uniform draw from the row's own generator."""
        torch = self._torch
        u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators]).to(logprobs.device)
        cdf = logprobs.exp().double().cumsum(dim=-1)
        target = (u * cdf[:, -1]).unsqueeze(-1)
        tokens = torch.searchsorted(cdf, target, right=True).squeeze(-1)
        return tokens.clamp_(max=logprobs.shape[-1] - 1)

    def _run_sample_batch(self, units: list[_Unit], params, seed_rows, results) -> None:
        torch = self._torch
        with torch.inference_mode():
            ids, mask, positions = self._left_pad([u.ids for u in units])
            cache = self._new_cache()
            logits = self._call_model(ids, mask, positions, cache)[:, -1].float()
            counts = torch.tensor([len(u.slots) for u in units], device=self.device)
            expand = torch.repeat_interleave(torch.arange(len(units), device=self.device), counts)
            if len(expand) != len(units) or bool((counts != 1).any()):
                cache.batch_select_indices(expand)
                logits, mask = logits[expand], mask[expand]
            next_pos = torch.tensor([len(u.ids) for u in units], device=self.device)[expand]
            row_keys = [(u.prompt_index, j) for u in units for j in u.slots]
            generators = [torch.Generator().manual_seed(seed_rows[i][j]) for i, j in row_keys]
            tokens_out: list[list[int]] = [[] for _ in row_keys]
            logprobs_out: list[list[float]] = [[] for _ in row_keys]
            active = list(range(len(row_keys)))  # original row index of each live batch row
            stops = tuple(params.stop)
            while active:
                logprobs = self._process_logits(logits, params)
                if params.temperature == 0:
                    chosen = logits.argmax(dim=-1)
                else:
                    chosen = self._draw(logprobs, [generators[r] for r in active])
                chosen_lp = logprobs.gather(-1, chosen.unsqueeze(-1)).squeeze(-1).tolist()
                chosen_list = chosen.tolist()
                keep: list[int] = []
                positions_now = next_pos.tolist()  # one device sync per step, not one per row
                for b, r in enumerate(active):
                    token = chosen_list[b]
                    tokens_out[r].append(token)
                    logprobs_out[r].append(chosen_lp[b])
                    finish = self._finish_reason(tokens_out[r], stops, positions_now[b] + 1, params.max_new_tokens)
                    if finish is None:
                        keep.append(b)
                    else:
                        i, j = row_keys[r]
                        results[i][j] = self._make_sample(tokens_out[r], logprobs_out[r], finish, stops)
                if not keep:
                    break
                if len(keep) != len(active):
                    index = torch.tensor(keep, device=self.device)
                    cache.batch_select_indices(index)
                    mask, next_pos, chosen = mask[index], next_pos[index], chosen[index]
                    active = [active[b] for b in keep]
                    mask = self._trim_left_padding(cache, mask)
                mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
                logits = self._call_model(chosen.unsqueeze(-1), mask, next_pos.unsqueeze(-1), cache)[:, -1].float()
                next_pos = next_pos + 1

    def _trim_left_padding(self, cache, mask):
        """Drop KV columns that are padding for every remaining row (plain dynamic caches only)."""
        from transformers.cache_utils import DynamicLayer

        live = mask.any(dim=0).nonzero()
        first = int(live[0]) if len(live) else 0
        if first == 0 or not all(type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None])):
            return mask
        for layer in cache.layers:
            layer.keys = layer.keys[:, :, first:, :]
            layer.values = layer.values[:, :, first:, :]
        return mask[:, first:]

    def _finish_reason(self, tokens: list[int], stops: tuple[str, ...], context_len: int, max_new_tokens: int) -> str | None:
        if tokens[-1] in self.eos_ids:
            return FINISH_EOS
        if stops:
            text = self.decode(tokens)
            if any(s in text for s in stops):
                return FINISH_STOP
        if len(tokens) >= max_new_tokens or context_len >= self.max_model_len:
            return FINISH_LENGTH
        return None

    def _make_sample(self, tokens: list[int], logprobs: list[float], finish: str, stops: tuple[str, ...]) -> Sample:
        if finish == FINISH_EOS:
            text = self.decode(tokens[:-1])
        else:
            text = self.decode(tokens)
            if finish == FINISH_STOP:
                text = text[: min(text.index(s) for s in stops if s in text)]
        return Sample(text=text, token_ids=list(tokens), token_logprobs=[float(x) for x in logprobs], finish_reason=finish)

    # ------------------------------------------------------------------ chat
    def render_chat(self, conversation: Sequence[dict]) -> str:
        """The prompt string of a conversation under the tokenizer's chat template."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise LtError(f"the tokenizer of {self.model_id} has no chat template; use plain prompts (sample) instead")
        for message in conversation:
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                raise LtError("a chat message must be a dict with 'role' and 'content'")
        return self.tokenizer.apply_chat_template(list(conversation), tokenize=False, add_generation_prompt=True)

    def chat(
        self,
        conversations: Sequence[Sequence[dict]],
        params: SamplingParams,
        seeds: Sequence[Sequence[int]] | None = None,
    ) -> list[list[Sample]]:
        return self.sample([self.render_chat(c) for c in conversations], params, seeds)

    # ------------------------------------------------------------------ scoring
    def _encode_pair(self, context: str, continuation: str) -> _Encoded:
        ctx = self.encode(context)
        cont = list(self.tokenizer(continuation, add_special_tokens=False)["input_ids"]) if continuation else []
        if not ctx and cont and self.empty_context_id is not None:
            ctx = [self.empty_context_id]  # no BOS by policy: condition the first token on BOS/EOS, as lm-eval
        if not ctx and cont:
            raise LtError("cannot score a continuation with an empty context and no BOS token: its first token has no conditional probability")
        over = len(ctx) + len(cont) - self.max_model_len
        n_ctx = n_cont = 0
        if over > 0:
            keep_bos = self.bos_id is not None and ctx and ctx[0] == self.bos_id
            droppable = len(ctx) - 1  # at least one context token (BOS when present) stays
            n_ctx = min(over, droppable)
            if n_ctx:
                ctx = [ctx[0]] + ctx[1 + n_ctx :] if keep_bos else ctx[n_ctx:]
            n_cont = max(0, len(ctx) + len(cont) - self.max_model_len)
            if n_cont:
                cont = cont[: len(cont) - n_cont]
        return _Encoded(ctx, cont, n_ctx, n_cont)

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[Score]:
        """log p(continuation | context) per pair, contexts shared between pairs computed once."""
        encoded = [self._encode_pair(c, x) for c, x in pairs]
        truncated = sum(1 for e in encoded if e.n_context_truncated or e.n_continuation_truncated)
        if truncated:
            self.n_truncated_pairs += truncated
            warn(f"{truncated} of {len(encoded)} scored pairs exceeded max_model_len {self.max_model_len} and were truncated (reported in Score)")
        results: list[Score | None] = [None] * len(encoded)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, e in enumerate(encoded):
            if not e.continuation:
                results[index] = Score(0.0, [], e.n_context_truncated, e.n_continuation_truncated)
                continue
            groups.setdefault(tuple(e.context), []).append(index)
        # work units: (context, member indices); a group bigger than a batch is split
        rows_per_batch = max(1, self.config.batch_size)
        units: list[tuple[list[int], list[int]]] = []
        for context, members in groups.items():
            members.sort(key=lambda k: len(encoded[k].continuation))
            for start in range(0, len(members), rows_per_batch):
                units.append((list(context), members[start : start + rows_per_batch]))
        units.sort(key=lambda u: (len(u[0]), max(len(encoded[k].continuation) for k in u[1])))
        batch: list[tuple[list[int], list[int]]] = []
        for unit in units:
            candidate = batch + [unit]
            if batch and not self._fits(candidate, encoded, rows_per_batch):
                self._run_score_batch(batch, encoded, results)
                candidate = [unit]
            batch = candidate
        if batch:
            self._run_score_batch(batch, encoded, results)
        missing = sum(r is None for r in results)
        if missing:
            raise RuntimeError(f"internal error: {missing} pairs were not scored")
        return results  # type: ignore[return-value]

    def _fits(self, units, encoded, rows_per_batch: int) -> bool:
        """Row and memory limits; padding above ~20% of the computed positions only in small batches.

        Small batches are worth some padding: every forward pass streams all weights from memory, so
        a pass over a few dozen positions is memory-bound and costs nearly as much as a bigger one.
        """
        rows = sum(len(m) for _, m in units)
        ctx_width = max(len(c) for c, _ in units)
        cont_width = max(len(encoded[k].continuation) for _, m in units for k in m)
        memory_tokens = len(units) * ctx_width + rows * (ctx_width + cont_width)
        computed = len(units) * ctx_width + rows * cont_width
        real = sum(len(c) for c, _ in units) + sum(len(encoded[k].continuation) for _, m in units for k in m)
        wasteful = computed > MAX_PADDING_FACTOR * real and computed > MIN_SCORE_BATCH_POSITIONS
        return rows <= rows_per_batch and memory_tokens <= self.score_batch_tokens and not wasteful

    def _run_score_batch(self, units, encoded, results) -> None:
        torch = self._torch
        with torch.inference_mode():
            ids, ctx_mask, positions = self._left_pad([c for c, _ in units])
            cache = self._new_cache()
            first_logits = self._call_model(ids, ctx_mask, positions, cache)[:, -1].float()
            first_lp = torch.log_softmax(first_logits, dim=-1)
            counts = torch.tensor([len(m) for _, m in units], device=self.device)
            expand = torch.repeat_interleave(torch.arange(len(units), device=self.device), counts)
            members = [k for _, m in units for k in m]
            conts = [encoded[k].continuation for k in members]
            first_targets = torch.tensor([c[0] for c in conts], device=self.device)
            first = first_lp[expand].gather(-1, first_targets.unsqueeze(-1)).squeeze(-1).tolist()
            per_token: list[list[float]] = [[first[r]] for r in range(len(members))]
            width = max(len(c) for c in conts) - 1  # inputs: every continuation token but the last
            if width > 0:
                if len(expand) != len(units) or bool((counts != 1).any()):
                    cache.batch_select_indices(expand)
                inputs = torch.full((len(conts), width), self.pad_id, dtype=torch.long)
                cont_mask = torch.zeros((len(conts), width), dtype=torch.long)
                for r, c in enumerate(conts):
                    inputs[r, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
                    cont_mask[r, : len(c) - 1] = 1
                inputs, cont_mask = inputs.to(self.device), cont_mask.to(self.device)
                ctx_lens = ctx_mask.sum(-1)[expand]
                cont_positions = ctx_lens.unsqueeze(-1) + torch.arange(width, device=self.device).unsqueeze(0)
                mask = torch.cat([ctx_mask[expand], cont_mask], dim=-1)
                hidden = self._hidden_states(inputs, mask, cont_positions, cache)
                targets = torch.full((len(conts), width), 0, dtype=torch.long)
                for r, c in enumerate(conts):
                    targets[r, : len(c) - 1] = torch.tensor(c[1:], dtype=torch.long)
                targets = targets.to(self.device)
                valid = cont_mask.bool()
                if hidden is None:  # no separate decoder: full forward (logits for every position)
                    logits = self._call_model(inputs, mask, cont_positions, cache, logits_to_keep=0).float()
                    token_lp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)[valid]
                else:
                    selected = hidden[valid]
                    flat_targets = targets[valid]
                    parts = []
                    for start in range(0, selected.shape[0], SCORE_LOGIT_CHUNK):
                        logits = self._logits_from_hidden(selected[start : start + SCORE_LOGIT_CHUNK])
                        lp = torch.log_softmax(logits, dim=-1)
                        parts.append(lp.gather(-1, flat_targets[start : start + SCORE_LOGIT_CHUNK].unsqueeze(-1)).squeeze(-1))
                    token_lp = torch.cat(parts)
                values = token_lp.tolist()
                offset = 0
                for r, c in enumerate(conts):
                    n = len(c) - 1
                    per_token[r].extend(values[offset : offset + n])
                    offset += n
        for r, k in enumerate(members):
            e = encoded[k]
            results[k] = Score(float(sum(per_token[r])), per_token[r], e.n_context_truncated, e.n_continuation_truncated)

    def close(self) -> None:
        """Release the model (the object is unusable afterwards)."""
        self.model = None
        self._decoder = None
        self._head = None
