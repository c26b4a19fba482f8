"""The machine and its two ceilings, measured: copy bandwidth and matrix-multiply rate.

Datasheet rates are leads; MFU is stated against the datasheet (as ``lt train`` does) and also
against the matmul rate measured here, and the E-step's hardware limit uses the copy bandwidth
measured here. Copy: a device-to-device copy of ``copy_mib`` MiB (several times the L2), bytes
read plus bytes written over the median time. Matmul: square products of random data (never
zeros: zeros run faster), 2 n^3 FLOPs over the median time, bf16 and fp32.
"""

from __future__ import annotations

import os
import platform
import time

from .part import PartContext, median, significant, synchronize

NEEDS = ("torch",)
FIELDS = (
    "device_name", "device_count", "device_memory_gib", "torch_version", "transformers_version", "python_version",
    "copy_mib", "copy_gb_per_s", "matmul_size", "matmul_bf16_tflops", "matmul_fp32_tflops",
)


def _timed(device: str, fn, reps: int) -> float:
    """Median seconds of ``fn`` over ``reps`` runs after two warm-ups (device events on CUDA)."""
    import torch

    for _ in range(2):
        fn()
    synchronize(device)
    times = []
    for _ in range(reps):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return median(times)


def copy_gb_per_s(device: str, mib: int, reps: int) -> float:
    import torch

    n = mib * 2**20 // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    seconds = _timed(device, lambda: dst.copy_(src), reps)
    return 2 * n * 4 / seconds / 1e9


def matmul_tflops(device: str, size: int, dtype_name: str, reps: int) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = _timed(device, lambda: torch.mm(a, b), reps)
    return 2 * size**3 / seconds / 1e12


def device_description(device: str) -> tuple[str, int, float]:
    """(name with driver and CUDA details, device count, memory GiB)."""
    import torch

    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        driver = _nvidia_smi_driver()
        name = f"{props.name} (compute {props.major}.{props.minor}, {props.multi_processor_count} SMs, CUDA {torch.version.cuda}, driver {driver})"
        return name, torch.cuda.device_count(), props.total_memory / 2**30
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"cpu {platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)", 1, memory


def _nvidia_smi_driver() -> str:
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown (nvidia-smi failed)"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (no nvidia-smi)"


def measure(ctx: PartContext) -> None:
    """Fill the fields (also used by other parts when this part's numbers are missing)."""
    import torch
    import transformers

    p, device = ctx.profile, ctx.profile.device
    with ctx.step("describe", FIELDS[:6]):
        name, count, memory = device_description(device)
        ctx.set("device_name", name)
        ctx.set("device_count", count)
        ctx.set("device_memory_gib", round(memory, 1))
        ctx.set("torch_version", torch.__version__)
        ctx.set("transformers_version", transformers.__version__)
        ctx.set("python_version", platform.python_version())
    with ctx.step("copy", ("copy_mib", "copy_gb_per_s")):
        ctx.set("copy_mib", p.copy_mib)
        ctx.set("copy_gb_per_s", significant(copy_gb_per_s(device, p.copy_mib, p.timing_reps)))
    with ctx.step("matmul", ("matmul_size", "matmul_bf16_tflops", "matmul_fp32_tflops")):
        ctx.set("matmul_size", p.matmul_size)
        ctx.set("matmul_bf16_tflops", significant(matmul_tflops(device, p.matmul_size, "bfloat16", p.timing_reps)))
        ctx.set("matmul_fp32_tflops", significant(matmul_tflops(device, p.matmul_size, "float32", p.timing_reps)))


def run(ctx: PartContext) -> None:
    measure(ctx)


def load(ctx: PartContext) -> dict:
    """This part's results for a later part (re-measured in that process when missing)."""
    import json

    path = ctx.out / "parts" / "ceilings.json"
    results = json.loads(path.read_text())["results"] if path.exists() else {}
    if all(results.get(k) is not None for k in ("copy_gb_per_s", "matmul_bf16_tflops", "matmul_fp32_tflops")):
        return results
    p = ctx.profile
    return {
        "copy_gb_per_s": copy_gb_per_s(p.device, p.copy_mib, p.timing_reps),
        "matmul_bf16_tflops": matmul_tflops(p.device, p.matmul_size, "bfloat16", p.timing_reps),
        "matmul_fp32_tflops": matmul_tflops(p.device, p.matmul_size, "float32", p.timing_reps),
    }
