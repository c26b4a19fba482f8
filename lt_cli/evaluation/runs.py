"""The runner of ``lt eval``: evaluate, then write the metrics (and the config beside them) to ``-o``."""

from __future__ import annotations

from .config import EvalConfig


def check_outputs(config: EvalConfig) -> None:
    """Refuse ``-o`` and ``--log-samples`` paths that cannot be files before the model loads: an
    evaluation can take hours, and its metrics must not be lost to a path that was wrong from the
    start (an existing folder, a parent that is a file)."""
    from pathlib import Path

    from ..paths import is_device, is_std
    from ..output import check_output_path

    for flag, path in (("-o", config.output), ("--log-samples", config.log_samples)):
        if not is_std(path) and not is_device(path):
            check_output_path(Path(path), flag)


def run_eval(config: EvalConfig) -> dict:
    """``lt eval`` as a function: the metrics dict; with ``config.output`` also ``OUTPUT`` and
    ``OUTPUT.config.json`` (written atomically; no config beside an output that is not a regular
    file, such as /dev/stdout); with ``--report-to`` the numbers also go to the trackers
    (``eval/TASK/...``)."""
    from ..paths import is_device
    from ..files import write_json
    from ..tracking import log_summary, preflight
    from . import evaluate

    check_outputs(config)
    preflight(config.tracking, config.output)  # installed, and no link where it will write
    metrics = evaluate(config)
    if config.output and config.output != "-":
        write_json(config.output, metrics, stream_device=True)
        if not is_device(config.output):
            write_json(config.output + ".config.json", config)
    summary = {key: value for key, value in metrics.items() if key != "config"}
    log_summary(config.tracking, output=config.output, prefix=f"eval/{metrics.get('task', config.task)}", summary=summary, run_config=config)
    return metrics
