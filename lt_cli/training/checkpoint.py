"""Resumable checkpoints: weights, optimizer, step (the schedule), RNG states and data position.

Layout: ``DIR/checkpoints/step-00000100/{model.safetensors, optimizer.safetensors, optimizer.json,
rng.json, state.json}``. Nothing in a checkpoint is a pickle: loading one never runs code, whoever
wrote the folder (``torch.load`` of a planted ``rng.pt`` could run a shell command). Tensors go to
safetensors, the optimizer's structure (param groups, non-tensor state) and the RNG states (Python,
NumPy, torch, CUDA; per rank) to JSON.

A checkpoint is written into a hidden temporary folder and renamed into place, so a run killed in
the middle of saving leaves the previous checkpoint intact (a failed save removes its temporary
folder); ``state.json`` is written last and marks a complete checkpoint. That folder is made
fresh (``mkdir``, never reused), so no link can be planted inside it; a link at ``checkpoints/``,
at a ``step-N`` it replaces or at the temporary name is refused
(:func:`lt_cli.nofollow.check_folder`) and left untouched: saving through it would write, or
prune, folders elsewhere. States are gathered as full (unsharded) state dicts on every strategy
(plain, DDP, FSDP2), so a checkpoint resumes under any world size or strategy. Multi-node resume needs the output folder on a filesystem every node
sees. A checkpoint in the pickle layout of older lt versions (``model.pt``...) is refused.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

from ..errors import FileError, UsageError
from ..files import read_json, write_json
from ..nofollow import check_folder
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
    """This process's RNG states as JSON values (Python, NumPy, torch CPU and CUDA)."""
    import numpy as np
    import torch

    version, words, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(words), gauss],
        "numpy": [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "torch": bytes(torch.get_rng_state().tolist()).hex(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [bytes(s.tolist()).hex() for s in torch.cuda.get_rng_state_all()]
    return state


def _byte_tensor(text: str):
    import torch

    return torch.frombuffer(bytearray(bytes.fromhex(text)), dtype=torch.uint8).clone()


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_byte_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_byte_tensor(s) for s in state["cuda"]])


def _unshared(tensors: dict[str, Any]) -> dict[str, Any]:
    """Contiguous tensors with no storage shared between two names (tied embeddings), as
    safetensors requires."""
    seen: set[int] = set()
    out = {}
    for name, tensor in tensors.items():
        ptr = tensor.untyped_storage().data_ptr()
        tensor = tensor.contiguous()
        if ptr in seen and tensor.numel():
            tensor = tensor.clone()
        seen.add(ptr)
        out[name] = tensor
    return out


_SEP = "\x1f"  # between a parameter's name and a state key in optimizer.safetensors


def _save_optimizer(optim_state: dict[str, Any], folder: Path) -> None:
    import torch
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param, values in optim_state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param}{_SEP}{key}"] = value
            else:
                scalars.setdefault(str(param), {})[key] = value
    save_file(_unshared(tensors), str(folder / "optimizer.safetensors"))
    write_json(folder / "optimizer.json", {"param_groups": optim_state["param_groups"], "scalars": scalars})


def _load_optimizer(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    structure = read_json(folder / "optimizer.json")
    state: dict[str, dict[str, Any]] = {}
    for name, tensor in load_file(str(folder / "optimizer.safetensors")).items():
        param, key = name.split(_SEP, 1)
        state.setdefault(param, {})[key] = tensor
    for param, values in structure["scalars"].items():
        state.setdefault(param, {}).update(values)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in group.items()} for group in structure["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(output: str | Path, step: int, model, optimizer, state: dict[str, Any], env: DistEnv, keep: int = 1) -> Path | None:
    """Save on rank 0 (all ranks call: gathering FSDP shards is collective); prune to ``keep``."""
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    model_state = full_model_state(model)
    optim_state = get_optimizer_state_dict(model, optimizer, options=_state_dict_options())
    rng_states = gather_objects(env, rng_state())
    final = checkpoint_root(output) / f"step-{step:08d}"
    if env.is_main:
        tmp = final.with_name(f".{final.name}.tmp")
        check_folder(final.parent)  # a link planted at checkpoints/ since the run started
        try:
            if check_folder(tmp):  # left by a killed run
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            save_file(_unshared(model_state), str(tmp / "model.safetensors"))
            _save_optimizer(optim_state, tmp)
            write_json(tmp / "rng.json", {"ranks": rng_states}, indent=False)
            write_json(tmp / "state.json", {**state, "step": step, "world_size": env.world_size})
            if check_folder(final):
                shutil.rmtree(final)
            tmp.rename(final)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise FileError.from_os(exc, tmp) from None
            if type(exc).__name__ == "SafetensorError":  # safetensors' write error (disk full)
                raise FileError(f"{final}: cannot write the checkpoint ({exc})") from None
            raise
        for old in list_checkpoints(output)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(env)
    return final if env.is_main else None


def load_checkpoint(path: Path, model, optimizer, env: DistEnv) -> dict[str, Any]:
    """Restore weights, optimizer and (same world size) RNG states; returns ``state.json``."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    if not (path / "model.safetensors").exists():
        if (path / "model.pt").exists():
            raise UsageError(
                f"{path} was saved by an older lt as pickle files, which lt no longer loads (they can run code): "
                "pass --overwrite to start the run over"
            )
        raise UsageError(f"{path}: model.safetensors is missing: remove this checkpoint to resume from an earlier one, or pass --overwrite")
    try:
        model_state = load_file(str(path / "model.safetensors"))
        optim_state = _load_optimizer(path)
        rng_states = read_json(path / "rng.json")["ranks"]
    except Exception as exc:  # a damaged checkpoint (truncated file, unreadable JSON)
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
            raise FileError.from_os(exc, path) from None
        raise UsageError(f"checkpoint {path} is damaged ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}): "
                         "remove it to resume from an earlier one, or pass --overwrite") from None
    set_model_state_dict(model, model_state, options=_state_dict_options(cpu_offload=False))
    set_optimizer_state_dict(model, optimizer, optim_state, options=_state_dict_options(cpu_offload=False))
    state = read_json(path / "state.json")
    if len(rng_states) == env.world_size:
        set_rng_state(rng_states[env.rank])
    return state


def clear_run(output: str | Path) -> None:
    """Remove what a previous run left (``--overwrite``): checkpoints, metrics, markers."""
    output = Path(output)
    shutil.rmtree(checkpoint_root(output), ignore_errors=True)
    for name in ("metrics.jsonl", "train_result.json", "train_config.json"):
        (output / name).unlink(missing_ok=True)
