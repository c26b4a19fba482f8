"""The runner of ``lt eval``: evaluate, then write the metrics (and the config beside them) to ``-o``."""

from __future__ import annotations

from .config import EvalConfig


def run_eval(config: EvalConfig) -> dict:
    """``lt eval`` as a function: the metrics dict; with ``config.output`` also ``OUTPUT`` and
    ``OUTPUT.config.json`` (written atomically); with ``--report-to`` the numbers also go to the
    trackers (``eval/TASK/...``)."""
    from ..io import write_json
    from ..tracking import check_installed, log_summary
    from . import evaluate

    check_installed(config.tracking)
    metrics = evaluate(config)
    if config.output and config.output != "-":
        write_json(config.output, metrics)
        write_json(config.output + ".config.json", config)
    summary = {key: value for key, value in metrics.items() if key != "config"}
    log_summary(config.tracking, output=config.output, prefix=f"eval/{metrics.get('task', config.task)}", summary=summary, run_config=config)
    return metrics
