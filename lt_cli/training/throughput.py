"""Training throughput accounting: tokens/s per device, model FLOPs per token, MFU and ETA.

Model FLOPs utilisation (MFU) says how close a run is to the hardware: the FLOP/s the model
*needs* for the tokens it trained on, divided by what the device can do. It counts the model's
arithmetic only (recomputation under ``--gradient-checkpointing`` is not credited), so two runs of
the same model compare directly, and a bare loop on the same batch sets the bar (bench/train.py,
bench/gpu_check.py).

FLOPs per trained token (forward + backward = 3 x forward, a multiply-add = 2 FLOPs):

* ``6 x N``, N = parameters that take part in a matrix multiply: every weight matrix of the layers
  and the LM head. The input embedding table is a lookup, not a product, so it is left out unless
  it is tied to the LM head (then it is counted once, as the head). Norm weights are vectors and
  are left out.
* plus attention scores and the weighted sum of values: ``6 x layers x d_attn x seq_len``, with
  ``d_attn`` = query heads x head dim. This is PaLM's ``12 x L x H x Q x T`` halved, because a
  causal mask leaves each token on average about half of the window to attend to (flash/SDPA
  kernels skip the masked blocks). Using PaLM's full count would add the same amount again.

The peak is the dense (no sparsity) tensor-core rate per device for the training dtype, from
NVIDIA's datasheets; ``--peak-tflops`` overrides it. A device not in the table, and every CPU, has
no peak unless one is given: MFU is then null rather than a guess.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..console import format_duration

#: Dense peak TFLOP/s per device: (pattern on torch.cuda.get_device_name(), bf16, fp32).
#: Sources: NVIDIA datasheets (A100 2020, A10 2021, H100 2022/2023, L4 and L40S 2023, H200 2024);
#: bf16 is half the "with sparsity" tensor figure, fp32 the plain (non-tensor) rate, which is what
#: torch uses for fp32 matmuls unless TF32 is switched on. Parts that share a name with a faster
#: sibling (H100/H200 NVL, A10G) have no entry: pass --peak-tflops for them.
PEAK_TFLOPS: tuple[tuple[str, float, float], ...] = (
    (r"\bH100\b.*\bPCIe\b", 756.0, 51.2),
    (r"\bH[12]00\b.*\bNVL\b", math.nan, math.nan),
    (r"\bH100\b", 989.4, 66.9),  # SXM
    (r"\bH200\b", 989.4, 66.9),  # SXM: the H100's arithmetic, more and faster memory
    (r"\bA100\b", 312.0, 19.5),
    (r"\bL40S\b", 362.0, 91.6),
    (r"\bL4\b", 121.0, 30.3),
    (r"\bA10\b", 125.0, 31.2),
)


def peak_tflops_for(device_name: str, dtype: str) -> float | None:
    """The datasheet peak for ``device_name`` in ``dtype`` ('bfloat16' or 'float32'), or None."""
    for pattern, bf16, fp32 in PEAK_TFLOPS:
        if re.search(pattern, device_name):
            value = bf16 if dtype == "bfloat16" else fp32 if dtype == "float32" else math.nan
            return None if math.isnan(value) else value
    return None


def resolve_peak(explicit: float | None, device, dtype: str) -> tuple[float | None, str]:
    """``(peak TFLOP/s per device or None, where it came from)`` for the log line."""
    if explicit is not None:
        return explicit, "--peak-tflops"
    if getattr(device, "type", str(device)) != "cuda":
        return None, "no peak for a CPU; pass --peak-tflops for an MFU figure"
    import torch

    name = torch.cuda.get_device_name(device)
    peak = peak_tflops_for(name, dtype)
    if peak is None:
        return None, f"{name} is not in lt's peak table; pass --peak-tflops for an MFU figure"
    return peak, f"{name}, {dtype} dense, datasheet"


# ------------------------------------------------------------------------------------ FLOPs
@dataclass(frozen=True)
class ModelFlops:
    """The arithmetic of one trained token (see the module docstring)."""

    matmul_params: int
    layers: int
    attention_dim: int
    seq_len: int

    @property
    def per_token(self) -> int:
        return 6 * self.matmul_params + 6 * self.layers * self.attention_dim * self.seq_len


def model_flops(model, seq_len: int) -> ModelFlops:
    """Count from the (unwrapped) model: its weight matrices and its attention shape."""
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embedding
    matrices = sum(p.numel() for p in model.parameters() if p.dim() >= 2)
    matmul_params = matrices if tied else matrices - embedding.numel()
    config = model.config
    layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    head_dim = getattr(config, "head_dim", None) or (config.hidden_size // heads if heads else 0)
    return ModelFlops(matmul_params, layers, heads * int(head_dim), seq_len)


def mfu(flops_per_token: int, tokens_per_s_per_device: float, peak_tflops: float | None) -> float | None:
    """Model FLOP/s achieved per device over the peak, or None without a peak."""
    if peak_tflops is None:
        return None
    return flops_per_token * tokens_per_s_per_device / (peak_tflops * 1e12)


def _significant(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else float(f"{value:.{digits}g}")


class ThroughputMeter:
    """Per-step fields for metrics.jsonl and the progress line; run totals for TrainResult."""

    def __init__(self, flops: ModelFlops, peak_tflops: float | None, world_size: int, total_steps: int, start_step: int):
        self.flops_per_token = flops.per_token
        self.peak_tflops = peak_tflops
        self.world_size = world_size
        self.total_steps = total_steps
        self.step_count = start_step
        self.steps_here = 0
        self.seconds = 0.0
        self.tokens = 0
        self.last: dict[str, float | None] = {}

    def step(self, tokens: int, seconds: float) -> dict[str, float | None]:
        """Record one optimizer step of ``tokens`` (global) that took ``seconds``."""
        self.step_count += 1
        self.steps_here += 1
        self.seconds += seconds
        self.tokens += tokens
        per_device = tokens / seconds / self.world_size
        self.last = {
            "tokens_per_s_per_device": round(per_device, 1),
            "mfu": _significant(mfu(self.flops_per_token, per_device, self.peak_tflops)),
        }
        return self.last

    def eta_s(self) -> float:
        """Seconds left at the mean step time of the steps this process has trained."""
        if not self.steps_here:
            return 0.0
        return self.seconds / self.steps_here * (self.total_steps - self.step_count)

    def describe(self, eta: bool = True) -> str:
        """``12,345 tok/s/device, MFU 41.2%, ETA 3m05s`` (MFU left out when there is no peak;
        ``eta=False``: without the ETA, which the progress line gives)."""
        parts = [f"{self.last.get('tokens_per_s_per_device') or 0:,.0f} tok/s/device"]
        if self.last.get("mfu") is not None:
            parts.append(f"MFU {100 * self.last['mfu']:.1f}%")
        if eta:
            parts.append(f"ETA {format_duration(self.eta_s())}")
        return ", ".join(parts)

    def totals(self) -> tuple[float | None, float | None]:
        """(mean tokens/s per device, mean MFU) over the steps this process trained."""
        if self.seconds <= 0:
            return None, None
        per_device = self.tokens / self.seconds / self.world_size
        return round(per_device, 1), _significant(mfu(self.flops_per_token, per_device, self.peak_tflops))
