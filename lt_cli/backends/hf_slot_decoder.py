"""The slot engine's device side: fixed KV buffers and the decode step over them (hf_engine.py runs
the host loop and says why the engine exists).

``SlotDecoder`` holds ``S`` slots x ``C`` columns of K and V per layer (column = position), the
per-slot counters, each row's uniforms, and one decode step: the model on ``S`` tokens (each slot
writes its new key/value at its own column), sampling on the device, counters advanced. The step
is compiled (torch.compile, on CUDA by default), captured as a CUDA graph and replayed; admission
prefills waiting prompts and shifts their K/V into their slots' first columns.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from ..models import text_config
from . import hf_slot_attention as attention

#: KV columns are allocated in multiples of this (SDPA's masked kernels want aligned rows, and
#: FlexAttention's blocks tile the buffer)
COLUMN_ALIGN = attention.FLEX_BLOCK
#: padded prompt tokens per admission prefill forward
PREFILL_TOKENS = 32768


@dataclass(frozen=True)
class StepOptions:
    """How the decode step runs. ``compile``: torch.compile (inductor) fuses the step's small
    kernels before it is captured; ``graph``: capture it as a CUDA graph; ``attention``: "sdpa" or
    "flex" (hf_slot_attention.py)."""

    compile: bool = False
    graph: bool = True
    attention: str = "sdpa"


def draw_tokens(torch, logprobs, u):
    """One token per row by inverse CDF: ``u`` holds one uniform per row (float64)."""
    cdf = logprobs.exp().double().cumsum(dim=-1)
    target = (u * cdf[:, -1]).unsqueeze(-1)
    tokens = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return tokens.clamp_(max=logprobs.shape[-1] - 1)


def choose_tokens(torch, logits, logprobs, u, temperature: float):
    """The token rule of both engines: the greedy token at temperature 0, else the row's uniform
    ``u`` inverted through its CDF (:func:`draw_tokens`); returns (tokens, their log-probs)."""
    chosen = logits.argmax(dim=-1) if temperature == 0 else draw_tokens(torch, logprobs, u)
    return chosen, logprobs.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)


def row_uniforms(torch, seed: int, n: int):
    """The ``n`` uniforms a row uses, one per generated token, from its own generator."""
    return torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def kv_layout(model) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of a decoder: the shape of one token's K or V per layer."""
    config = text_config(model.config)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_hidden_layers, config.num_key_value_heads or config.num_attention_heads, head_dim


def slot_kv_bytes(model, capacity: int) -> int:
    """Bytes of one slot's K and V buffers over ``capacity`` columns, in the model's dtype."""
    layers, kv_heads, head_dim = kv_layout(model)
    return 2 * layers * kv_heads * capacity * head_dim * next(model.parameters()).element_size()


class _SlotCache:
    """What the model's attention layers see as their cache during a decode step: each slot's new
    key and value go to its own column ``write_cols[slot]``; attention gets the whole buffer (masked)."""

    is_compileable = False

    def __init__(self, keys, values, slot_index, write_cols):
        self.keys, self.values, self.slot_index, self.write_cols = keys, values, slot_index, write_cols

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys[self.slot_index, :, self.write_cols] = key_states[:, :, 0]
        values[self.slot_index, :, self.write_cols] = value_states[:, :, 0]
        return keys, values

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # positions are always given explicitly


_COMPILED_STEP = None
#: attention kinds whose step failed to compile in this process ("uncompiled": the fallback was announced)
_FAILED_COMPILES: set[str] = set()


def _compile_tries(options: StepOptions) -> list[str]:
    """The attention kinds a new decoder tries to compile the step with, in order, leaving out those
    that failed in this process (FlexAttention runs only compiled, so it is tried even when compile
    is off; its fallback is compiled SDPA only when compile is on)."""
    if not options.compile and options.attention != "flex":
        return []
    tries = [options.attention] + (["sdpa"] if options.attention == "flex" and options.compile else [])
    return [kind for kind in tries if kind not in _FAILED_COMPILES]


def step_that_runs(options: StepOptions) -> tuple[bool, str]:
    """(compiled, attention) of the step a new decoder with ``options`` runs, as far as this process
    knows: after a compile failed, what the fallback runs. The sample cache keys on it
    (``sampler_identity``), so samples are filed under the step that drew them."""
    tries = _compile_tries(options)
    return (True, tries[0]) if tries else (False, "sdpa")


def _compiled_step(torch):
    """``SlotDecoder._step_ops`` compiled once per process (dynamo keys its cache on the function, and
    guards on the decoder's tensor shapes and settings)."""
    global _COMPILED_STEP
    if _COMPILED_STEP is None:
        _COMPILED_STEP = torch.compile(SlotDecoder._step_ops, fullgraph=True, dynamic=False)
    return _COMPILED_STEP


def _layer_kv(cache, layer: int):
    """(keys, values) of one layer of a transformers DynamicCache, across cache API generations."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return layers[layer].keys, layers[layer].values
    return cache.key_cache[layer], cache.value_cache[layer]


class SlotDecoder:
    """The fixed buffers of ``n_slots`` slots x ``capacity`` columns and the decode step over them.

    ``options`` (:class:`StepOptions`) say whether the step is compiled and captured as a CUDA graph
    (CUDA only) and which attention it uses. A step that cannot be compiled runs uncompiled with SDPA,
    one that cannot be captured runs eagerly, each with a warning; ``mode`` says what runs.
    """

    def __init__(self, backend, n_slots: int, capacity: int, max_new_tokens: int, params, options: StepOptions):
        torch = backend._torch
        attention.register()
        self.backend, self.torch, self.params = backend, torch, params
        self.n_slots, self.capacity, self.max_new_tokens = n_slots, capacity, max_new_tokens
        model = backend.model
        layers, kv_heads, head_dim = kv_layout(model)
        dtype = next(model.parameters()).dtype
        device = backend.device
        shape = (n_slots, kv_heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.columns = torch.arange(capacity, device=device)
        self.slot_index = torch.arange(n_slots, device=device)
        self.input_ids = torch.full((n_slots, 1), backend.pad_id, dtype=torch.long, device=device)
        self.positions = torch.zeros((n_slots, 1), dtype=torch.long, device=device)  # = the column written next
        self.write_cols = torch.zeros(n_slots, dtype=torch.long, device=device)
        self.token_index = torch.zeros(n_slots, dtype=torch.long, device=device)
        self.uniforms = torch.zeros((n_slots, max_new_tokens), dtype=torch.float64, device=device)
        self.out_tokens = torch.zeros(n_slots, dtype=torch.long, device=device)
        self.out_logprobs = torch.zeros(n_slots, dtype=torch.float32, device=device)
        self.cache = _SlotCache(self.keys, self.values, self.slot_index, self.write_cols)
        self._configs = [m.config for m in model.modules() if hasattr(getattr(m, "config", None), "_attn_implementation_internal")]
        self.kv_bytes = n_slots * slot_kv_bytes(model, capacity)
        self.attention = options.attention
        self._step_fn = SlotDecoder._step_ops
        self.graph = None
        self.compile_s = None
        if options.compile or self.attention == "flex":  # FlexAttention runs only compiled
            self._compile(options)
        if options.graph and device.type == "cuda":
            self._capture()
        self.mode = ("compiled " if self._step_fn is not SlotDecoder._step_ops else "") + ("cuda-graph" if self.graph else "eager")

    # ------------------------------------------------------------------ the step
    @contextlib.contextmanager
    def _slot_attention(self):
        saved = [c._attn_implementation_internal for c in self._configs]
        for c in self._configs:
            c._attn_implementation_internal = attention.ATTENTION_NAME
        try:
            yield
        finally:
            for c, value in zip(self._configs, saved):
                c._attn_implementation_internal = value

    def _step_ops(self) -> None:
        """One decode step on every slot: forward, sampling and counters, all on the device (what
        the CUDA graph holds). Sizes come from tensors, not Python ints, so one compiled step
        serves every capacity."""
        torch, params = self.torch, self.params
        # a free slot keeps stepping on junk: its column is clamped inside the buffer
        torch.minimum(self.positions[:, 0], self.columns[-1], out=self.write_cols)
        if self.attention == "flex":
            mask = attention.block_mask(torch, self.columns, self.write_cols)
        else:
            mask = attention.boolean_mask(self.columns, self.write_cols)
        logits = self.backend._call_model(self.input_ids, mask, self.positions, self.cache)[:, -1].float()
        logprobs = self.backend._process_logits(logits, params)
        index = self.token_index.clamp(max=self.uniforms.shape[1] - 1).unsqueeze(1)
        chosen, chosen_lp = choose_tokens(torch, logits, logprobs, self.uniforms.gather(1, index).squeeze(1), params.temperature)
        self.out_logprobs.copy_(chosen_lp)
        self.out_tokens.copy_(chosen)
        self.input_ids.copy_(chosen.unsqueeze(1))
        self.positions.add_(1)
        self.token_index.add_(1)

    def step(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            with self._slot_attention():
                self._step_fn(self)

    def _compile(self, options: StepOptions) -> None:
        """Compile the step (one compiled function per process, shared by every decoder: the columns
        and the uniforms per row are marked dynamic, so a new capacity or ``max_new_tokens`` needs no
        new compile; rows, dtype and sampling settings do) and run it once. Flex
        attention that fails to compile falls back to SDPA, compiled when ``options.compile``, and a
        step that cannot be compiled at all runs uncompiled with SDPA (:func:`step_that_runs`)."""
        import time

        from ..console import log, warn

        torch = self.torch
        for buffer in (*self.keys, *self.values):
            torch._dynamo.mark_dynamic(buffer, 2)
        torch._dynamo.mark_dynamic(self.columns, 0)
        torch._dynamo.mark_dynamic(self.uniforms, 1)  # max_new_tokens
        for attention_kind in _compile_tries(options):  # kinds that failed before were warned of once
            self.attention = attention_kind
            started = time.perf_counter()
            try:
                with self._slot_attention():
                    _compiled_step(torch)(self)
                self._synchronize()
            except Exception as exc:  # an op inductor cannot compile
                self._synchronize()
                message = str(exc).splitlines()[0][:200] if str(exc) else ""
                warn(f"transformers backend: the decode step with {attention_kind} attention could not be compiled ({type(exc).__name__}: {message})")
                _FAILED_COMPILES.add(attention_kind)
                continue
            self._step_fn, self.compile_s = _compiled_step(torch), time.perf_counter() - started
            if self.compile_s > 1.0:  # else the step compiled for an earlier decoder served
                log(f"transformers backend: decode step compiled in {self.compile_s:.1f} s ({attention_kind} attention)")
            break
        else:
            if "uncompiled" not in _FAILED_COMPILES:
                warn("transformers backend: the decode step runs uncompiled, with SDPA attention")
                _FAILED_COMPILES.add("uncompiled")
            self._step_fn, self.attention = SlotDecoder._step_ops, "sdpa"
        self.reset()

    def _synchronize(self) -> None:
        if self.backend.device.type == "cuda":
            self.torch.cuda.synchronize()

    def _capture(self) -> None:
        torch = self.torch
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), self._slot_attention():
                for _ in range(2):  # warm-up: cuBLAS handles, allocator pools
                    self._step_fn(self)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), self._slot_attention():
                self._step_fn(self)
            self.graph = graph
        except Exception as exc:  # an op the graph cannot hold: run the same step eagerly
            from ..console import warn

            torch.cuda.synchronize()
            warn(f"transformers backend: the decode step could not be captured as a CUDA graph ({type(exc).__name__}: {exc}); decoding eagerly")
            self.graph = None
        self.reset()

    def reset(self) -> None:
        """Every slot free (the state a new call starts from)."""
        self.token_index.zero_()
        self.positions.zero_()

    # ------------------------------------------------------------------ admission
    def admit(self, slots: list[int], rows: list, prompts: list[list[int]], seeds: list[int]) -> tuple[list[int], list[float]]:
        """Prefill ``prompts`` (``rows[k]``, with ``prompt_index`` and ``prompt_len``, samples from ``prompts[rows[k].prompt_index]``) into
        columns ``[0, prompt length)`` of ``slots`` and draw each row's first token. Returns the
        first tokens and their log-probs (one host sync)."""
        torch, backend, params = self.torch, self.backend, self.params
        device = backend.device
        slot_index = torch.tensor(slots, device=device)
        uniforms = torch.stack([row_uniforms(torch, s, self.max_new_tokens) for s in seeds]).to(device)
        self.uniforms.index_copy_(0, slot_index, uniforms)
        lengths = torch.tensor([r.prompt_len for r in rows], device=device)
        first_logits = []
        for start, end in self._prefill_groups(prompts):
            ids, mask, positions = backend._left_pad(prompts[start:end])
            cache = backend._new_cache()
            first_logits.append(backend._call_model(ids, mask, positions, cache)[:, -1].float())
            width = ids.shape[1]
            members = torch.tensor([k for k, r in enumerate(rows) if start <= r.prompt_index < end], device=device)
            source = torch.tensor([r.prompt_index - start for r in rows if start <= r.prompt_index < end], device=device)
            # prompt p sits in the last len(p) of ``width`` left-padded columns: shift it to column 0
            shift = (self.columns[:width].unsqueeze(0) + (width - lengths[members]).unsqueeze(1)).clamp(max=width - 1)
            for layer in range(len(self.keys)):
                for buffer, states in zip((self.keys[layer], self.values[layer]), _layer_kv(cache, layer)):
                    picked = states.index_select(0, source)
                    index = shift.view(len(members), 1, width, 1).expand(-1, picked.shape[1], -1, picked.shape[3])
                    buffer[:, :, :width].index_copy_(0, slot_index[members], torch.gather(picked, 2, index))
            del cache
        logits = torch.cat(first_logits)[torch.tensor([r.prompt_index for r in rows], device=device)]
        logprobs = backend._process_logits(logits, params)
        chosen, chosen_lp = choose_tokens(torch, logits, logprobs, uniforms[:, 0], params.temperature)
        self.input_ids[slot_index] = chosen.unsqueeze(1)
        self.positions[slot_index] = lengths.unsqueeze(1)
        self.token_index[slot_index] = 1
        return chosen.tolist(), chosen_lp.tolist()

    def _prefill_groups(self, prompts: list[list[int]]):
        """Consecutive groups of ``prompts`` within the token budget (the caller sorts them by length,
        so a group's left padding stays small)."""
        start = 0
        while start < len(prompts):
            end, width = start, 0
            while end < len(prompts) and (end == start or max(width, len(prompts[end])) * (end + 1 - start) <= PREFILL_TOKENS):
                width = max(width, len(prompts[end]))
                end += 1
            yield start, end
            start = end


__all__ = ["COLUMN_ALIGN", "SlotDecoder", "StepOptions", "choose_tokens", "draw_tokens", "kv_layout", "row_uniforms", "slot_kv_bytes"]
