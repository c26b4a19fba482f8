"""The commands ``lt bootstrap`` runs, each with its config class and runner, in one table.

A stage of a bootstrap run is (command, config). In this process it calls :func:`run` with that
config, exactly as ``lt COMMAND`` does after parsing its flags; under a launcher the same config is
rendered as a command line (:func:`lt_cli.flags.to_argv`). There is no second implementation.
"""

from __future__ import annotations

import importlib
from typing import Any

#: command -> (module, config class, runner function)
RUNNERS: dict[str, tuple[str, str, str]] = {
    "synthesize": ("lt_cli.teacher", "SynthesizeRun", "run_synthesize"),
    "sample-thoughts": ("lt_cli.estep", "SampleThoughtsRun", "run_sample_thoughts"),
    "select": ("lt_cli.estep", "SelectRun", "run_select"),
    "train": ("lt_cli.training", "TrainConfig", "train"),
    "eval": ("lt_cli.evaluation", "EvalConfig", "run_eval"),
    "finetune-eval": ("lt_cli.evaluation.finetune", "FinetuneConfig", "run_finetune_eval"),
}


def config_class(command: str) -> type:
    module, cls, _ = RUNNERS[command]
    return getattr(importlib.import_module(module), cls)


def run(command: str, config: Any) -> Any:
    """Run ``lt COMMAND`` with an already built config (what the command itself does)."""
    module, cls, fn = RUNNERS[command]
    package = importlib.import_module(module)
    if not isinstance(config, getattr(package, cls)):
        raise TypeError(f"lt {command} takes a {cls}, got {type(config).__name__}")
    return getattr(package, fn)(config)
