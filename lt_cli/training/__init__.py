"""The M-step: ``TrainConfig`` and ``train(config) -> TrainResult`` (docs/training.md).

Importing this package is cheap (no torch); ``train`` imports torch and transformers when called.
"""

from __future__ import annotations

from .config import TrainConfig, lr_at, steps_for_tokens

__all__ = ["TrainConfig", "TrainResult", "lr_at", "steps_for_tokens", "train"]


def train(config: TrainConfig):
    """Train (or resume) under one-writer locking, a check of the data's identity and cleanup after
    a failure (:mod:`lt_cli.training.run_guard`)."""
    import gc

    from .loop import train as _train
    from .run_guard import guarded_train

    try:
        return guarded_train(config, _train)
    finally:
        # The trained model lives on in reference cycles (module hooks; under FSDP2 its device meshes
        # and the state of its last collectives): free it now, while the interpreter is whole. Left
        # to the interpreter's shutdown, a torchrun worker can abort at exit after a successful run
        # (gloo, "terminate called without an active exception"), and an in-process caller (lt
        # bootstrap) would keep its memory until the next collection.
        gc.collect()


def __getattr__(name: str):
    if name == "TrainResult":
        from .loop import TrainResult

        return TrainResult
    raise AttributeError(name)
