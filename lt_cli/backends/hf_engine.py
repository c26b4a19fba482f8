"""The slot engine: continuous-batching sampling for the transformers backend, built for the GPU.

Why: the E-step is BoLT's dominant cost (K samples for every chunk of the corpus, every iteration),
and decoding is memory-bound: a step should cost one read of the weights plus each row's K/V. The
dynamic loop (hf_sample.py) instead pays Python and kernel launches per layer per step, copies the
whole KV cache whenever a row finishes, and repeats each K/V head for every query head it serves.
This engine keeps a fixed set of buffers so the decode step can be captured once as a CUDA graph
and replayed, and keeps the batch full by admitting waiting rows as others finish.

Layout (``SlotDecoder``):

* ``S`` slots (the backend's ``batch_size``). Per layer one K and one V buffer
  ``[S, kv heads, C columns, head dim]``, ``C`` = the longest prompt plus ``max_new_tokens``. A
  slot's row occupies columns ``[0, length)``: column = position, so RoPE positions, the write
  index and the attention mask (columns up to the position) all follow from one per-slot counter,
  and rows of any length and age share one step.
* A decode step runs the model on ``S`` tokens (each slot writes its new key/value at its own
  column), samples ``S`` tokens and advances the counters; attention uses each K/V head once for its
  group of query heads (no repeated K/V), through SDPA.
* A finished row frees its slot. Waiting rows are admitted in groups: their prompts are prefilled in
  one left-padded forward (the dynamic path's prefill) and shifted into columns ``[0, prompt
  length)`` of their slots; a prompt's K/V is computed once and copied to each of its rows.

Randomness: at admission each row draws every uniform it can need, ``torch.rand(max_new_tokens)``
from its own ``torch.Generator`` seeded by its seed. That is the same sequence, in the same order, as
one ``torch.rand(1)`` per step (tests/test_backend_hf.py checks it), so a sample depends only on its
own seed and equals the dynamic path's; the step reads ``u[slot, token index]`` on the device.

Host work per step: one device-to-host copy of the ``S`` sampled tokens and their log-probs (the
step after it is already running, so that copy overlaps the GPU), and per row an EOS, stop-string
and length check (``HFBackend._finish_reason``, the dynamic loop's rule; stop strings are checked
incrementally, hf_stops.py). Admissions add one
sync each. ``LT_ENGINE_PROFILE=1`` logs, per call, the time spent waiting for the GPU, on the host
and in admissions (bench/gpucheck/estep.py reads it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ..models import text_config
from .hf_slot_decoder import COLUMN_ALIGN
from .hf_stops import StopWatch

#: model types whose every layer is plain causal full attention through transformers' attention
#: interface (others, e.g. sliding-window or soft-capped attention, use the dynamic loop)
SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2", "granite", "smollm3"})


def unsupported_reason(model) -> str | None:
    """Why the slot engine cannot run ``model`` (None: it can)."""
    config = text_config(model.config)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"model type {model_type!r} is not one the slot engine knows to be plain full attention"
    if getattr(config, "use_sliding_window", False) or (model_type == "mistral" and getattr(config, "sliding_window", None)):
        return "sliding-window attention"
    if any(t != "full_attention" for t in getattr(config, "layer_types", None) or ()):
        return "layers other than full attention"
    try:
        from transformers import AttentionInterface  # noqa: F401
    except ImportError:
        return "this transformers has no AttentionInterface"
    return None


@dataclass
class _Row:
    """One sample being generated: prompt ``prompt_index``, sample slot ``j``."""

    prompt_index: int
    j: int
    prompt_len: int
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    done: bool = False


def _align(n: int) -> int:
    return -(-n // COLUMN_ALIGN) * COLUMN_ALIGN


def sample_with_slots(backend, encoded: list[list[int]], params, seed_rows: list[list[int]], results) -> None:
    """Fill ``results[i][j]`` with sample ``j`` of prompt ``i`` (the engine's host loop)."""
    with backend._torch.inference_mode():  # the buffers and the graph live in inference mode
        _sample_with_slots(backend, encoded, params, seed_rows, results)


def _sample_with_slots(backend, encoded: list[list[int]], params, seed_rows: list[list[int]], results) -> None:
    import os
    import time

    torch = backend._torch
    clock = time.perf_counter
    profile = {"steps": 0, "wait_s": 0.0, "host_s": 0.0, "admit_s": 0.0, "admissions": 0, "prefill_prompts": 0, "start": clock()}
    n_slots = max(1, backend.config.batch_size)
    max_new = params.max_new_tokens
    decoder = backend._slot_decoder(n_slots, _align(max(len(ids) for ids in encoded) + max_new), params)
    n_slots = decoder.n_slots
    stops = StopWatch(backend.decode, tuple(params.stop))
    queue = deque(_Row(i, j, len(encoded[i])) for i in range(len(encoded)) for j in range(params.n))
    first_index: dict[tuple[int, ...], int] = {}
    same_as = [first_index.setdefault(tuple(ids), i) for i, ids in enumerate(encoded)]  # prompt -> its first equal prompt
    slot_row: list[_Row | None] = [None] * n_slots
    decoder.reset()
    pinned = decoder.backend.device.type == "cuda"
    host = [(torch.empty(n_slots, dtype=torch.long, pin_memory=pinned), torch.empty(n_slots, dtype=torch.float32, pin_memory=pinned))
            for _ in range(2)]
    admit_min = max(1, n_slots // 8)
    active = 0
    step_no = 0
    in_flight = None  # (step number, snapshot of slot rows, event)

    def finish(row: _Row, reason: str) -> None:
        row.done = True
        results[row.prompt_index][row.j] = backend._make_sample(row.tokens, row.logprobs, reason, stops.stops, row.prompt_len)

    def record(row: _Row, token: int, logprob: float) -> bool:
        row.tokens.append(token)
        row.logprobs.append(logprob)
        reason = backend._finish_reason(row.tokens, stops, row.prompt_len + len(row.tokens), max_new)
        if reason is not None:
            finish(row, reason)
        return row.done

    def process(flight) -> None:
        nonlocal active
        number, snapshot, event = flight
        waited = clock()
        if event is not None:
            event.synchronize()
        started = clock()
        profile["wait_s"] += started - waited
        tokens, logprobs = host[number % 2]
        tokens, logprobs = tokens.tolist(), logprobs.tolist()
        for b, row in enumerate(snapshot):
            if row is not None and not row.done and record(row, tokens[b], logprobs[b]):
                slot_row[b] = None
                active -= 1
        profile["host_s"] += clock() - started

    def admit() -> None:
        nonlocal active
        started = clock()
        free = [b for b in range(n_slots) if slot_row[b] is None]
        while free and queue:
            rows = [queue.popleft() for _ in range(min(len(free), len(queue)))]
            slots = free[: len(rows)]
            free = free[len(rows) :]
            # one prefill per distinct prompt (the E-step sends a chunk's K samples as K equal prompts),
            # sorted by length so each prefill forward carries little padding
            prompt_ids = sorted({same_as[r.prompt_index] for r in rows}, key=lambda p: (len(encoded[p]), p))
            local = {p: k for k, p in enumerate(prompt_ids)}
            shadow = [_Row(local[same_as[r.prompt_index]], r.j, r.prompt_len) for r in rows]
            seeds = [seed_rows[r.prompt_index][r.j] for r in rows]
            tokens, logprobs = decoder.admit(slots, shadow, [encoded[p] for p in prompt_ids], seeds)
            profile["admissions"] += 1
            profile["prefill_prompts"] += len(prompt_ids)
            for b, row, token, logprob in zip(slots, rows, tokens, logprobs):
                if record(row, token, logprob):
                    free.append(b)
                else:
                    slot_row[b] = row
                    active += 1
        profile["admit_s"] += clock() - started

    admit()
    while active or in_flight is not None:
        flight = None
        if active:
            decoder.step()
            profile["steps"] += 1
            tokens, logprobs = host[step_no % 2]
            tokens.copy_(decoder.out_tokens, non_blocking=pinned)
            logprobs.copy_(decoder.out_logprobs, non_blocking=pinned)
            event = None
            if pinned:
                event = torch.cuda.Event()
                event.record()
            flight = (step_no, list(slot_row), event)
            step_no += 1
        if in_flight is not None:
            process(in_flight)
        in_flight = flight
        if queue and (len([r for r in slot_row if r is None]) >= admit_min or not active):
            if in_flight is not None:  # admission writes the slots the in-flight step used
                process(in_flight)
                in_flight = None
            admit()
    if os.environ.get("LT_ENGINE_PROFILE"):
        from ..console import log

        wall = clock() - profile["start"]
        steps = max(profile["steps"], 1)
        log(f"slot engine profile: {len(encoded) * params.n} rows, {profile['steps']} steps, {wall:.3f} s: "
            f"{1e3 * profile['wait_s'] / steps:.3f} ms/step waiting for the GPU, {1e3 * profile['host_s'] / steps:.3f} ms/step host, "
            f"{profile['admissions']} admissions ({profile['prefill_prompts']} prompts prefilled) {profile['admit_s']:.3f} s")


__all__ = ["sample_with_slots", "unsupported_reason"]
