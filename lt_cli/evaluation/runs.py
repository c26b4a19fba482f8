"""The runner of ``lt eval``: evaluate, then write the metrics (and the config beside them) to ``-o``."""

from __future__ import annotations

from .config import EvalConfig


def run_eval(config: EvalConfig) -> dict:
    """``lt eval`` as a function: the metrics dict; with ``config.output`` also ``OUTPUT`` and
    ``OUTPUT.config.json`` (written atomically)."""
    from ..io import write_json
    from . import evaluate

    metrics = evaluate(config)
    if config.output and config.output != "-":
        write_json(config.output, metrics)
        write_json(config.output + ".config.json", config)
    return metrics
