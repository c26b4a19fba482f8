"""Resumable checkpoints: weights, optimizer, step (the schedule), RNG states and data position.

Layout: ``DIR/checkpoints/step-00000100/{model.pt, optimizer.pt, rng.pt, state.json}``. A
checkpoint is written into a hidden temporary folder and renamed into place, so a run killed in the
middle of saving leaves the previous checkpoint intact; ``state.json`` is written last and marks a
complete checkpoint. States are gathered as full (unsharded) state dicts on every strategy (plain,
DDP, FSDP2), so a checkpoint resumes under any world size or strategy. Multi-node resume needs the
output folder on a filesystem every node sees.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

from ..io import read_json, write_json
from .distributed import DistEnv, barrier, gather_objects

CHECKPOINTS = "checkpoints"


def checkpoint_root(output: str | Path) -> Path:
    return Path(output) / CHECKPOINTS


def list_checkpoints(output: str | Path) -> list[Path]:
    """Complete checkpoints (those with ``state.json``), oldest first."""
    root = checkpoint_root(output)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / "state.json").exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(output: str | Path) -> Path | None:
    found = list_checkpoints(output)
    return found[-1] if found else None


def _state_dict_options(cpu_offload: bool = True):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload)


def full_model_state(model) -> dict[str, Any]:
    """The unsharded model state on CPU (a collective under FSDP2: every rank must call it)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_state_dict_options())


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output: str | Path, step: int, model, optimizer, state: dict[str, Any], env: DistEnv, keep: int = 1) -> Path | None:
    """Save on rank 0 (all ranks call: gathering FSDP shards is collective); prune to ``keep``."""
    import torch
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    model_state = full_model_state(model)
    optim_state = get_optimizer_state_dict(model, optimizer, options=_state_dict_options())
    rng_states = gather_objects(env, rng_state())
    final = checkpoint_root(output) / f"step-{step:08d}"
    if env.is_main:
        tmp = final.with_name(f".{final.name}.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        torch.save(model_state, tmp / "model.pt")
        torch.save(optim_state, tmp / "optimizer.pt")
        torch.save(rng_states, tmp / "rng.pt")
        write_json(tmp / "state.json", {**state, "step": step, "world_size": env.world_size})
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in list_checkpoints(output)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(env)
    return final if env.is_main else None


def load_checkpoint(path: Path, model, optimizer, env: DistEnv) -> dict[str, Any]:
    """Restore weights, optimizer and (same world size) RNG states; returns ``state.json``."""
    import torch
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    model_state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    set_model_state_dict(model, model_state, options=_state_dict_options(cpu_offload=False))
    optim_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    set_optimizer_state_dict(model, optimizer, optim_state, options=_state_dict_options(cpu_offload=False))
    state = read_json(path / "state.json")
    rng_states = torch.load(path / "rng.pt", map_location="cpu", weights_only=False)
    if len(rng_states) == env.world_size:
        set_rng_state(rng_states[env.rank])
    return state


def clear_run(output: str | Path) -> None:
    """Remove what a previous run left (``--overwrite``): checkpoints, metrics, markers."""
    output = Path(output)
    shutil.rmtree(checkpoint_root(output), ignore_errors=True)
    for name in ("metrics.jsonl", "train_result.json", "train_config.json"):
        (output / name).unlink(missing_ok=True)
