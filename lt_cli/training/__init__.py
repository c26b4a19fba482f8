"""The M-step: ``TrainConfig`` and ``train(config) -> TrainResult`` (docs/training.md).

Importing this package is cheap (no torch); ``train`` imports torch and transformers when called.
"""

from __future__ import annotations

from .config import TrainConfig, lr_at, steps_for_tokens

__all__ = ["TrainConfig", "TrainResult", "lr_at", "steps_for_tokens", "train"]


def train(config: TrainConfig):
    from .loop import train as _train

    return _train(config)


def __getattr__(name: str):
    if name == "TrainResult":
        from .loop import TrainResult

        return TrainResult
    raise AttributeError(name)
