"""``lt train`` on the device: tokens/s and MFU, against a bare PyTorch loop, plain and under FSDP2.

Three runs on the same model (the profile's training shape, built from its config and saved in
bf16) and the same batch shape (``batch_size`` x ``seq_len``, one micro-batch):

* ``bare``: bench/train.py's bare loop in this process (fixed token tensors on the device, forward,
  summed cross-entropy over the full logits, backward, clip, fused AdamW), the least a training step
  can do, with the same compile setting as lt (``train_compile``: each layer compiled);
* ``lt``: ``python -m lt_cli train [--compile]`` as a user runs it (data rendered, tokenized and
  packed on a prefetch thread; the chunked loss, lt's default on a GPU), rates read from its
  metrics.jsonl;
* ``fsdp``: the same command under ``torchrun --nproc_per_node 1 ... --strategy fsdp``: FSDP2 over a
  one-rank process group (NCCL on a GPU, gloo on a CPU), so the sharded code path runs and is
  timed on one device.

Steady state leaves out the first ``skip_steps`` steps (allocator warm-up, kernel selection).
``ratio_to_bare`` = lt tokens/s over bare tokens/s (goal 0.95). MFU is lt's own figure (datasheet
peak, or ``--peak-tflops`` set to the matmul rate measured by the ceilings part when lt has no
datasheet entry for the device); ``mfu_vs_measured_matmul`` divides by the measured rate instead.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import resource
from pathlib import Path

from . import ceilings
from .part import REPO, PartContext
from .shapes import model_folder

NEEDS = ("torch", "transformers", "numpy", "tokenizers", "typer", "rich", "orjson", "safetensors", "punkt")
RUN_FIELDS = ("tokens_per_s", "tokens_per_s_per_device", "mfu", "mfu_vs_measured_matmul", "peak_tflops", "peak_source",
              "achieved_tflops", "ratio_to_bare", "first_loss", "strategy", "dtype", "loss", "compiled", "wall_s")
FIELDS = (
    "model", "params", "model_flops_per_token", "seq_len", "batch_size", "steps", "steady_steps", "compile",
    "bare.tokens_per_s", "bare.mfu_vs_measured_matmul", "bare.achieved_tflops", "bare.peak_memory_gib", "bare.first_loss", "bare.dtype",
    *(f"lt.{f}" for f in RUN_FIELDS), *(f"fsdp.{f}" for f in RUN_FIELDS), "fsdp.first_loss_abs_diff_vs_lt",
)


def _bench_train():
    spec = importlib.util.spec_from_file_location("lt_bench_train", REPO / "bench" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def steady(metrics_path: Path, skip: int, tokens_per_step: int) -> dict:
    """Steady-state rates from metrics.jsonl: total tokens over total step time after ``skip``."""
    lines = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    kept = lines[skip:]
    seconds = sum(tokens_per_step / m["tokens_per_s"] for m in kept)
    per_device_seconds = sum(tokens_per_step / m["tokens_per_s_per_device"] for m in kept)
    return {
        "tokens_per_s": tokens_per_step * len(kept) / seconds,
        "tokens_per_s_per_device": tokens_per_step * len(kept) / per_device_seconds,
        "first_loss": lines[0]["loss"],
        "mfu_logged": [m["mfu"] for m in kept],
    }


def run(ctx: PartContext) -> None:
    import torch

    p = ctx.profile
    tokens_per_step = p.batch_size * p.seq_len
    state: dict = {}
    with ctx.step("setup", ("model", "params", "seq_len", "batch_size", "steps", "steady_steps")):
        state["folder"] = model_folder(p.train_shape, ctx.work / "models", p.device, dtype="bfloat16")
        state["corpus"] = ctx.work / "train-corpus.jsonl"
        if not state["corpus"].exists():
            _bench_train().make_corpus(state["corpus"])
        state["ceilings"] = ceilings.load(ctx)
        ctx.set("model", p.train_shape.name)
        ctx.set("seq_len", p.seq_len)
        ctx.set("batch_size", p.batch_size)
        ctx.set("steps", p.train_steps)
        ctx.set("steady_steps", p.train_steps - p.skip_steps)
        ctx.set("compile", p.train_compile)
    measured_peak = (state.get("ceilings") or {}).get("matmul_bf16_tflops" if p.train_dtype == "bfloat16" else "matmul_fp32_tflops")

    bare_fields = [f for f in FIELDS if f.startswith("bare.")] + ["params", "model_flops_per_token"]
    with ctx.step("bare", bare_fields):
        ctx.need(20)
        ctx.require("model")
        stats = _bench_train().bare_loop_stats({"model": str(state["folder"])}, p.seq_len, p.batch_size, p.train_steps, p.skip_steps, p.train_dtype,
                                               compile=p.train_compile)
        flops = stats["model_flops_per_token"]
        ctx.set("params", stats["params"])
        ctx.set("model_flops_per_token", flops)
        ctx.set("bare.tokens_per_s", round(stats["tokens_per_s"], 1))
        ctx.set("bare.achieved_tflops", round(flops * stats["tokens_per_s"] / 1e12, 4))
        if measured_peak:
            ctx.set("bare.mfu_vs_measured_matmul", round(flops * stats["tokens_per_s"] / (measured_peak * 1e12), 4))
        else:
            ctx.null("bare.mfu_vs_measured_matmul", "no matmul rate measured")
        peak = stats["peak_memory_bytes"] if stats["peak_memory_bytes"] is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        ctx.set("bare.peak_memory_gib", round(peak / 2**30, 2))
        ctx.set("bare.first_loss", round(stats["first_loss"], 5))
        ctx.set("bare.dtype", stats["dtype"])
    gc.collect()
    if p.device.startswith("cuda"):
        torch.cuda.empty_cache()

    from lt_cli.training.throughput import peak_tflops_for

    device_name = torch.cuda.get_device_name(0) if p.device.startswith("cuda") else "cpu"
    table_peak = peak_tflops_for(device_name, p.train_dtype)
    base_args = ["train", "--model", str(state.get("folder")), "--data", str(state.get("corpus")), "--seq-len", str(p.seq_len),
                 "--batch-size", str(p.batch_size), "--steps", str(p.train_steps), "--log-every", "5", "--dtype", p.train_dtype,
                 "--device", p.device, "--overwrite", *(["--compile"] if p.train_compile else [])]
    if table_peak is None and measured_peak:
        base_args += ["--peak-tflops", f"{measured_peak:.6g}"]
    for key, launcher in (("lt", None), ("fsdp", "torchrun")):
        fields = [f"{key}.{f}" for f in RUN_FIELDS] + (["fsdp.first_loss_abs_diff_vs_lt"] if key == "fsdp" else [])
        with ctx.step(key, fields):
            ctx.need(30)
            ctx.require("model", "model_flops_per_token")
            out = ctx.work / f"train-{key}"
            if launcher is None:
                wall = ctx.lt([*base_args, "--output", str(out)], f"train-{key}", stdout_path=ctx.logs / f"train-{key}.stdout.json")
            else:
                wall = ctx.torchrun(1, [*base_args, "--output", str(out), "--strategy", "fsdp"], f"train-{key}",
                                    stdout_path=ctx.logs / f"train-{key}.stdout.json")
            record_run(ctx, key, out, wall, tokens_per_step, measured_peak, table_peak)


def record_run(ctx: PartContext, key: str, out: Path, wall: float, tokens_per_step: int, measured_peak: float | None,
               table_peak: float | None) -> None:
    p = ctx.profile
    result = json.loads((out / "train_result.json").read_text())
    resolved = json.loads((out / "train_config.json").read_text())
    rates = steady(out / "metrics.jsonl", p.skip_steps, tokens_per_step)
    flops = result["model_flops_per_token"]
    if flops != ctx.get("model_flops_per_token"):
        raise AssertionError(f"lt counts {flops} FLOPs per token, the bare loop's model {ctx.get('model_flops_per_token')}")
    peak = result["peak_tflops"]
    per_device = rates["tokens_per_s_per_device"]
    ctx.set(f"{key}.tokens_per_s", round(rates["tokens_per_s"], 1))
    ctx.set(f"{key}.tokens_per_s_per_device", round(per_device, 1))
    if peak is None:
        ctx.null(f"{key}.mfu", "lt train reported no peak for this device")
        ctx.null(f"{key}.peak_tflops", "lt train reported no peak for this device")
    else:
        ctx.set(f"{key}.mfu", round(flops * per_device / (peak * 1e12), 4))
        ctx.set(f"{key}.peak_tflops", peak)
    ctx.set(f"{key}.peak_source", "lt's datasheet table" if table_peak is not None else "measured matmul (ceilings part), passed as --peak-tflops")
    ctx.set(f"{key}.achieved_tflops", round(flops * per_device / 1e12, 4))
    if measured_peak:
        ctx.set(f"{key}.mfu_vs_measured_matmul", round(flops * per_device / (measured_peak * 1e12), 4))
    else:
        ctx.null(f"{key}.mfu_vs_measured_matmul", "no matmul rate measured")
    if ctx.get("bare.tokens_per_s"):
        ctx.set(f"{key}.ratio_to_bare", round(rates["tokens_per_s"] / ctx.get("bare.tokens_per_s"), 3))
    else:
        ctx.null(f"{key}.ratio_to_bare", "the bare loop did not run")
    ctx.set(f"{key}.first_loss", round(rates["first_loss"], 5))
    ctx.set(f"{key}.strategy", resolved["strategy"])
    ctx.set(f"{key}.dtype", resolved["dtype"])
    ctx.set(f"{key}.loss", resolved["loss"])
    ctx.set(f"{key}.compiled", resolved["compile"])
    ctx.set(f"{key}.wall_s", round(wall, 1))
    if key == "fsdp":
        if ctx.get("lt.first_loss") is not None:
            ctx.set("fsdp.first_loss_abs_diff_vs_lt", round(abs(rates["first_loss"] - ctx.get("lt.first_loss")), 5))
        else:
            ctx.null("fsdp.first_loss_abs_diff_vs_lt", "the plain lt run did not finish")
