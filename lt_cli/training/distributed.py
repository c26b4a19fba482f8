"""Process groups and model wrapping for ``torchrun``: gloo on CPU, nccl on GPU; DDP or FSDP2.

A plain ``lt train`` (or an in-process ``train(config)``) runs as a world of one and never creates a
process group. Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank builds the same model, wraps it,
and reads the same global batches, keeping only its own slice of sequences.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

#: Parameters x 16 bytes (fp32 weights, grads, two Adam moments) above this share of GPU memory
#: switch ``--strategy auto`` to FSDP2.
FSDP_MEMORY_SHARE = 0.4


@dataclass
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: Any  # torch.device
    backend: str | None
    owns_group: bool  # True when this module created the process group (and must destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", group_of_one: bool = False) -> DistEnv:
    """Read torchrun's environment, pick the device, and create the process group when needed.

    ``group_of_one``: under torchrun with one process, still create the group (an explicit
    ``--strategy ddp|fsdp``), so the DDP/FSDP2 code path can be run and timed on a single GPU.
    """
    import torch
    import torch.distributed as dist

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("--device cuda but no GPU is visible")
        torch_device = torch.device("cuda", local_rank if device == "cuda" else torch.device(device).index or 0)
        torch.cuda.set_device(torch_device)
    elif device == "cpu":
        torch_device = torch.device("cpu")
    else:
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    backend = None
    owns_group = False
    launched = all(name in os.environ for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"))  # torchrun's env://
    if world_size > 1 or (group_of_one and launched):
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, device_id=torch_device if torch_device.type == "cuda" else None)
            owns_group = True
    return DistEnv(rank, world_size, local_rank, torch_device, backend, owns_group)


def shutdown(env: DistEnv) -> None:
    import torch.distributed as dist

    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    import torch.distributed as dist

    if env.distributed:
        dist.barrier()


def all_reduce_sum(env: DistEnv, value):
    """Sum a tensor over ranks (in place); identity in a world of one."""
    import torch.distributed as dist

    if env.distributed:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def broadcast_object(env: DistEnv, obj: Any) -> Any:
    import torch.distributed as dist

    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(env: DistEnv, obj: Any) -> list[Any]:
    import torch.distributed as dist

    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def resolve_strategy(strategy: str, env: DistEnv, n_params: int) -> str:
    """``none`` for one process (unless it has a process group and an explicit strategy);
    ``auto`` -> FSDP2 when fp32 training state would crowd one GPU."""
    if not env.distributed and (env.backend is None or strategy == "auto"):
        return "none"
    if strategy != "auto":
        return strategy
    if env.device.type == "cuda":
        import torch

        total = torch.cuda.get_device_properties(env.device).total_memory
        if n_params * 16 > FSDP_MEMORY_SHARE * total:
            return "fsdp"
    return "ddp"


def decoder_layers(model) -> list:
    """The repeated transformer blocks (HF's ``_no_split_modules`` names them): FSDP2 shards them one by one,
    --compile compiles them one by one."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        inner = getattr(getattr(model, "model", None), "layers", None)
        layers = list(inner) if inner is not None else []
    return layers


def wrap_model(model, strategy: str, env: DistEnv, *, bf16: bool):
    """Wrap for the strategy; returns the module to call (its parameters are what AdamW sees)."""
    import torch

    if strategy == "none":
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [env.device.index] if env.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)
    if strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
        for layer in decoder_layers(model):
            fully_shard(layer, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        return model
    raise UsageError(f"unknown strategy {strategy!r}")
