"""transformers backend: the default, runs anywhere torch runs (fp32 on CPU, bf16 on GPU).

Why it is written by hand instead of calling ``model.generate`` per sample: the E-step draws K
samples per chunk and scores each of them, so the work is dominated by many short generations that
share a prompt. This backend (sampling in hf_sample.py, scoring in hf_score.py, both mixed into
:class:`HFBackend`; this module holds the model, its tokens and the shared model calls)

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

Scoring truncation follows :func:`lt_cli.backends.base.fit_pair` (front of the context first,
keeping BOS, then the end of the continuation); it is reported in ``Score`` and counted in
:attr:`HFBackend.n_truncated_pairs` with a warning. Sampling prompts that leave too little room for
``max_new_tokens`` are cut from the front (BOS kept, :func:`lt_cli.backends.base.fit_prompt`) with
a warning, counted in :attr:`HFBackend.n_truncated_prompts`.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

from ..console import warn
from ..errors import LtError
from ..models import text_config
from .base import BackendConfig, Sample, SamplingParams, fit_prompt_warned, render_chat, resolve_max_model_len
from .hf_sample import ENGINES, HFSampling, parse_attention, parse_compile
from .hf_score import DEFAULT_SCORE_BATCH_TOKENS, HFScoring

#: the ``BackendConfig.options`` this backend knows (docs/backends.md)
OPTIONS = ("score_batch_tokens", "engine", "cuda_graphs", "compile", "attention")


class HFBackend(HFSampling, HFScoring):
    """The transformers implementation of :class:`lt_cli.backends.base.Backend`."""

    name = "transformers"

    def __init__(self, config: BackendConfig, *, loaded: tuple[Any, Any] | None = None):
        """``loaded``: an already loaded ``(model, tokenizer)`` to use instead of loading
        ``config.model`` (lt train's validation scores the model it is training)."""
        import torch

        from ..models import bos_policy, empty_context_token_id, load_model_and_tokenizer, missing_latent_tokens, resolve_model

        self.config = config
        self.model_id = config.model
        unknown = sorted(set(config.options) - set(OPTIONS))
        if unknown:
            raise LtError(f"unknown transformers backend option(s): {', '.join(unknown)} (known: {', '.join(OPTIONS)})")
        if config.options.get("engine", "auto") not in ENGINES:
            raise LtError(f"transformers backend option engine must be one of {', '.join(ENGINES)}, got {config.options['engine']!r}")
        parse_compile(config.options.get("compile", "auto"))
        parse_attention(config.options.get("attention", "sdpa"))
        self.score_batch_tokens = int(config.options.get("score_batch_tokens", DEFAULT_SCORE_BATCH_TOKENS))
        if config.batch_size < 1:
            raise LtError(f"batch_size must be at least 1, got {config.batch_size}")
        if loaded is not None:
            self.model, self.tokenizer = loaded
        else:
            self.model, self.tokenizer = load_model_and_tokenizer(config.model, dtype=config.dtype, device=config.device)
        self.device = next(self.model.parameters()).device
        #: parameters of the model (shared tensors counted once): the E-step's FLOP estimate uses it
        self.n_parameters = sum(p.numel() for p in self.model.parameters())
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
        self._softcap = getattr(text_config(self.model.config), "final_logit_softcapping", None)

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
        limit = getattr(text_config(self.model.config), "max_position_embeddings", None)
        return resolve_max_model_len(int(limit) if limit else None, requested)

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

    # ------------------------------------------------------------------ prompt fitting (hf_sample.py)
    def _fit_prompt(self, ids: list[int], params: SamplingParams) -> list[int]:
        fitted = fit_prompt_warned(
            ids, max_new_tokens=params.max_new_tokens, max_model_len=self.max_model_len, bos_id=self.bos_id, max_prompt_tokens=params.max_prompt_tokens
        )
        self.n_truncated_prompts += int(len(fitted) < len(ids))
        return fitted

    # ------------------------------------------------------------------ chat
    def render_chat(self, conversation: Sequence[dict]) -> str:
        """The prompt string of a conversation under the tokenizer's chat template."""
        return render_chat(self.tokenizer, conversation, chat_template=getattr(self.tokenizer, "chat_template", None), model_id=self.model_id)

    def chat(
        self,
        conversations: Sequence[Sequence[dict]],
        params: SamplingParams,
        seeds: Sequence[Sequence[int]] | None = None,
    ) -> list[list[Sample]]:
        return self.sample([self.render_chat(c) for c in conversations], params, seeds)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Release the model (the object is unusable afterwards)."""
        self._decoder_cache = None
        self.model = None
        self._decoder = None
        self._head = None
