"""``lt env``: what a bug report needs to know about this installation, in a second or two.

Versions come from the installed distributions' metadata (``importlib.metadata``), so optional
packages that are absent, or too broken to import, are reported as such and cost nothing. Only
torch is imported, for the device: whether CUDA (or MPS) is usable, which GPUs, how much memory.
Environment variables are listed by name only for anything that may hold a secret (API keys, base
URLs with credentials, tokens); a few harmless switches show their values.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

#: distributions reported (import name differs for some): core first, then the extras
PACKAGES = (
    "torch", "transformers", "vllm", "datasets", "huggingface_hub", "tokenizers", "safetensors", "accelerate", "numpy",
    "typer", "rich", "orjson", "nltk", "math-verify", "httpx", "openai", "tensorboard", "wandb", "lm-eval",
)
#: environment variables whose values are shown (none can hold a secret)
SHOWN_VALUES = (
    "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "WANDB_MODE",
    "WANDB_PROJECT", "WANDB_ENTITY", "LT_PROGRESS_INTERVAL", "LT_NO_PROGRESS", "VLLM_USE_V1",
)
#: prefixes of variables listed by name only (their values may be keys, tokens or private URLs)
NAMED_PREFIXES = ("LT_", "OPENAI_", "HF_", "HUGGING_FACE_", "WANDB_", "VLLM_", "NCCL_", "TORCH_")


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def device_info() -> dict[str, Any]:
    """torch's view of the accelerators (torch is a dependency; if it fails to import, say why)."""
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - a broken install is exactly what a bug report must show
        return {"error": f"import torch failed: {type(exc).__name__}: {exc}"}
    info: dict[str, Any] = {"torch_cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count()}
    if info["cuda_available"]:
        gpus = []
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1), "capability": f"{props.major}.{props.minor}"})
        info["gpus"] = gpus
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
        info["cudnn"] = torch.backends.cudnn.version()
    mps = getattr(torch.backends, "mps", None)
    info["mps_available"] = bool(mps is not None and mps.is_available())
    return info


def environment_variables() -> dict[str, str]:
    shown = {name: os.environ[name] for name in SHOWN_VALUES if name in os.environ}
    named = {name: "(set)" for name in sorted(os.environ) if name.startswith(NAMED_PREFIXES) and name not in shown}
    return {**shown, **named}


def collect(*, device: bool = True) -> dict[str, Any]:
    from . import __version__
    from .differences import DIFFERENCES, describe

    return {
        "lt": {"version": __version__, "location": os.path.dirname(os.path.abspath(__file__))},
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(), "executable": sys.executable},
        "platform": platform.platform(),
        "packages": {name: package_version(name) for name in PACKAGES},
        "device": device_info() if device else None,
        "environment": environment_variables(),
        "differences_from_reference": [describe(d) for d in DIFFERENCES],
    }


def lines(info: dict[str, Any]) -> list[str]:
    """The report as plain text, for pasting into an issue."""
    out = [
        f"lt: {info['lt']['version']} ({info['lt']['location']})",
        f"python: {info['python']['version']} ({info['python']['implementation']}, {info['python']['executable']})",
        f"platform: {info['platform']}",
    ]
    device = info.get("device")
    if device is not None:
        if "error" in device:
            out.append(f"device: unknown ({device['error']})")
        else:
            build = f"CUDA {device['torch_cuda_build']} build" if device["torch_cuda_build"] else "CPU-only build"
            if device["cuda_available"]:
                gpus = device["gpus"]
                names = sorted({f"{g['name']} ({g['memory_gib']} GiB, sm {g['capability']})" for g in gpus})
                out.append(f"device: {len(gpus)} x {', '.join(names)}; torch {build}, cuDNN {device['cudnn']}, bf16 {device['bf16_supported']}")
            else:
                accelerator = "MPS" if device["mps_available"] else "no GPU visible"
                out.append(f"device: cpu ({device['cpu_count']} cores), {accelerator}; torch {build}")
    out.append("packages:")
    out += [f"  {name}: {version or 'not installed'}" for name, version in info["packages"].items()]
    out.append("environment (values of variables that may hold secrets are not shown):")
    out += [f"  {name}={value}" for name, value in info["environment"].items()] or ["  (none of lt's variables set)"]
    out.append("differences from the reference code (docs/formats.md, numbered as there):")
    out += [f"  {line}" for line in info["differences_from_reference"]]
    return out
