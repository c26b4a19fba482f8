"""Sampling for the transformers backend (hf.py): two engines behind one ``sample``.

* The slot engine (hf_engine.py, the default on CUDA for plain full-attention decoders): fixed KV
  slots, the decode step captured as a CUDA graph, rows admitted as others finish.
* The dynamic loop (below; the CPU default and the fallback for every other model): each prompt is
  prefilled once and its KV cache expanded to the K rows that sample from it; all rows of a batch
  decode together (left padding, explicit positions and mask); finished rows leave the batch and the
  cache at once.

Both draw with the same rule, so they give the same samples: row ``(i, j)`` takes its uniforms from
its own ``torch.Generator`` seeded by ``seeds[i][j]``, one per generated token in order, inverted
through the row's CDF (``hf_slot_decoder.choose_tokens``); a sample depends only on its own seed, never on
its batch or engine. Reported log-probs are those of the distribution sampled from (after
temperature and top-p); at temperature 0 those of the untempered model. ``options={"engine":
"slots"|"dynamic"|"auto"}`` (or the environment variable ``LT_HF_ENGINE``) picks the engine
(docs/backends.md).

:class:`HFSampling` is a mixin: it uses the model calls and tokens of :class:`~lt_cli.backends.hf.HFBackend`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import LtError
from .base import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, Sample, SamplingParams, check_sampling_params, expand_seeds
from .hf_engine import sample_with_slots, unsupported_reason
from .hf_slot_decoder import SlotDecoder, StepOptions, choose_tokens, row_uniforms, slot_kv_bytes, step_that_runs
from .hf_slot_attention import ATTENTIONS
from .hf_stops import StopWatch
from .options import FALSE_WORDS, TRUE_WORDS

#: engines ``options["engine"]`` accepts; "auto" is the slot engine on CUDA when the model allows it
ENGINES = ("auto", "slots", "dynamic")
#: what ``options["compile"]`` / ``LT_HF_COMPILE`` accept ("auto": compiled on CUDA)
COMPILE_VALUES = {"auto": None, **dict.fromkeys(TRUE_WORDS, True), **dict.fromkeys(FALSE_WORDS, False)}
#: share of the free GPU memory the slot engine's KV buffers may take
KV_MEMORY_SHARE = 0.5


def parse_compile(value) -> bool | None:
    """``options["compile"]`` as a flag (None: "auto")."""
    if isinstance(value, bool):
        return value
    key = str(value).strip().lower()
    if key not in COMPILE_VALUES:
        raise LtError(f"transformers backend: compile must be auto, true or false, got {value!r}")
    return COMPILE_VALUES[key]


def parse_attention(value) -> str:
    """``options["attention"]`` / ``LT_HF_ATTENTION``, checked."""
    if value not in ATTENTIONS:
        raise LtError(f"transformers backend: attention must be one of {', '.join(ATTENTIONS)}, got {value!r}")
    return value


@dataclass
class _Unit:
    """One prefill row of a sampling batch: a prompt and the sample slots that expand from it."""

    prompt_index: int
    ids: list[int]
    slots: list[int]  # sample indices j of this prompt


class HFSampling:
    """``sample`` of the transformers backend (mixed into HFBackend)."""

    def sample(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        seeds: Sequence[Sequence[int]] | None = None,
    ) -> list[list[Sample]]:
        """``params.n`` samples per prompt; see the module docstring for how batching works."""
        check_sampling_params(params)
        prompts = list(prompts)
        seed_rows = expand_seeds(len(prompts), params.n, seeds, namespace="hf-default-sample")
        encoded = [self._fit_prompt(self.encode(p), params) for p in prompts]
        if any(not ids for ids in encoded):
            raise LtError("cannot sample from an empty prompt without a BOS token (add_bos is off or the tokenizer has none)")
        return self._sample_ids(encoded, params, seed_rows)

    def _sample_ids(self, encoded: list[list[int]], params: SamplingParams, seed_rows: list[list[int]]) -> list[list[Sample]]:
        if self.sampling_engine() == "slots":
            slot_results: list[list[Sample | None]] = [[None] * params.n for _ in encoded]
            sample_with_slots(self, encoded, params, seed_rows, slot_results)
            return slot_results  # type: ignore[return-value]
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

    # ------------------------------------------------------------------ engines
    def sampling_engine(self) -> str:
        """"slots" or "dynamic": the engine ``sample`` uses for this model, device and options."""
        if getattr(self, "_engine", None) is None:
            import os

            requested = self.config.options.get("engine") or os.environ.get("LT_HF_ENGINE") or "auto"
            if requested not in ENGINES:
                raise LtError(f"LT_HF_ENGINE must be one of {', '.join(ENGINES)}, got {requested!r}")
            reason = unsupported_reason(self.model)
            if requested == "slots" and reason is not None:
                from ..console import warn

                warn(f"transformers backend: the slot engine cannot run {self.model_id} ({reason}); using the dynamic loop")
            if requested == "dynamic" or reason is not None:
                self._engine = "dynamic"
            else:
                self._engine = "slots" if requested == "slots" or self.device.type == "cuda" else "dynamic"
        return self._engine

    def _slot_decoder(self, n_slots: int, capacity: int, params: SamplingParams) -> SlotDecoder:
        """The slot engine's buffers (and CUDA graph) for these settings, reused across calls."""
        key = (n_slots, params.max_new_tokens, params.temperature, params.top_p)
        cached = getattr(self, "_decoder_cache", None)
        if cached is not None and cached[0] == key and cached[1].capacity >= capacity:
            return cached[1]
        self._decoder_cache = None
        torch = self._torch
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            fits = int(KV_MEMORY_SHARE * torch.cuda.mem_get_info(self.device)[0] // slot_kv_bytes(self.model, capacity))
            if fits < n_slots:
                from ..console import warn

                warn(f"transformers backend: {n_slots} rows x {capacity} KV columns do not fit in GPU memory; decoding {max(fits, 1)} rows at a time")
                n_slots = max(fits, 1)
        decoder = SlotDecoder(self, n_slots, capacity, params.max_new_tokens, params, self.step_options())
        self._decoder_cache = (key, decoder)
        from ..console import log

        log(f"transformers backend: slot engine, {decoder.n_slots} rows x {capacity} KV columns ({decoder.kv_bytes / 2**30:.2f} GiB), "
            f"{decoder.mode} decode step, {decoder.attention} attention")
        return decoder

    def sampler_identity(self) -> str | None:
        """The slot engine's step settings that change bf16 samples at rounding level (part of the
        sample cache's key, lt_cli/cache.py); None for the dynamic loop, the reference sampler.
        After a compile fell back in this process, the step the fallback runs."""
        if self.sampling_engine() != "slots":
            return None
        compiled, attention_kind = step_that_runs(self.step_options())
        return f"slots/{'compiled' if compiled else 'uncompiled'}/{attention_kind}"

    def step_options(self) -> StepOptions:
        """The slot engine's step settings from the backend options, else the environment
        (``LT_HF_COMPILE``, ``LT_HF_ATTENTION``): compiled on CUDA unless told otherwise."""
        import os

        options = self.config.options
        compile_ = options.get("compile", os.environ.get("LT_HF_COMPILE") or "auto")
        attention = options.get("attention", os.environ.get("LT_HF_ATTENTION") or "sdpa")
        flag = parse_compile(compile_)
        return StepOptions(compile=self.device.type == "cuda" if flag is None else flag, graph=bool(options.get("cuda_graphs", True)),
                           attention=parse_attention(attention))

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
            prompt_lengths = [len(u.ids) for u in units for _ in u.slots]
            uniforms = torch.stack([row_uniforms(torch, seed_rows[i][j], params.max_new_tokens) for i, j in row_keys])
            step = 0
            tokens_out: list[list[int]] = [[] for _ in row_keys]
            logprobs_out: list[list[float]] = [[] for _ in row_keys]
            active = list(range(len(row_keys)))  # original row index of each live batch row
            stops = StopWatch(self.decode, tuple(params.stop))  # one per batch: it caches its per-token answers
            while active:
                logprobs = self._process_logits(logits, params)
                # the row's step-th uniform (rows that finished have left ``active``)
                chosen, chosen_lp = choose_tokens(torch, logits, logprobs, uniforms[active, step].to(logprobs.device), params.temperature)
                chosen_lp = chosen_lp.tolist()
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
                        results[i][j] = self._make_sample(tokens_out[r], logprobs_out[r], finish, stops.stops, prompt_lengths[r])
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
                step += 1

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

    def _finish_reason(self, tokens: list[int], stops: StopWatch | tuple[str, ...], context_len: int, max_new_tokens: int) -> str | None:
        """Why a sample ends after its latest token (None: it goes on): EOS, then a stop string, then
        length. Both engines decide with this; pass a :class:`StopWatch` kept for the whole call
        (a tuple of stop strings makes a fresh one)."""
        if tokens[-1] in self.eos_ids:
            return FINISH_EOS
        watch = stops if isinstance(stops, StopWatch) else StopWatch(self.decode, tuple(stops))
        if watch.hit(tokens):
            return FINISH_STOP
        if len(tokens) >= max_new_tokens or context_len >= self.max_model_len:
            return FINISH_LENGTH
        return None

    def _make_sample(self, tokens: list[int], logprobs: list[float], finish: str, stops: tuple[str, ...], prompt_tokens: int | None = None) -> Sample:
        if finish == FINISH_EOS:
            text = self.decode(tokens[:-1])
        else:
            text = self.decode(tokens)
            if finish == FINISH_STOP:
                text = text[: min(text.index(s) for s in stops if s in text)]
        return Sample(
            text=text, token_ids=list(tokens), token_logprobs=[float(x) for x in logprobs], finish_reason=finish,
            prompt_tokens=prompt_tokens, completion_tokens=len(tokens),
        )
