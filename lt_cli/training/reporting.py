"""Where per-step metrics go: ``metrics.jsonl`` always (rank 0), the trackers of ``--report-to``.

On resume the file is cut back to the checkpoint's step, so it never holds two histories, and
TensorBoard drops the events after that step (``purge_step``). Any record with a ``step`` can be
written (training steps, validation results); trackers get its numbers as ``train/KEY`` against
the ``train/step`` axis (:mod:`lt_cli.tracking`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..files import write_bytes_atomic
from ..io import dumps
from ..nofollow import check_plain_file, open_binary_no_follow
from .config import TrainConfig

METRICS_FILE = "metrics.jsonl"


class MetricsReporter:
    """metrics.jsonl always; TensorBoard / W&B when asked for (``--report-to``)."""

    def __init__(self, output: Path, config: TrainConfig, resume_step: int, enabled: bool):
        self.enabled = enabled
        self.path = output / METRICS_FILE
        self._file = None
        self._tracker = None
        if not enabled:
            return
        if check_plain_file(self.path):  # drop lines written after the checkpoint we resume from
            import orjson

            kept = [line for line in self.path.read_bytes().splitlines(keepends=True)
                    if line.endswith(b"\n") and orjson.loads(line).get("step", 0) <= resume_step]
            write_bytes_atomic(self.path, b"".join(kept))
        self._file = open_binary_no_follow(self.path, "ab")  # never through a link planted in the folder
        if config.tracking.enabled:
            from ..tracking import open_tracker

            self._tracker = open_tracker(
                config.tracking, folder=output, name=output.name if output.name != "model" else output.parent.name, run_config=config.to_dict(),
                exclude=("jsonl",), purge_step=resume_step + 1, named=True,  # --output is the user's: tensorboard/, wandb/ are checked
            )

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(dumps(record))
        self._file.flush()
        if self._tracker is not None:
            self._tracker.log({f"train/{k}": v for k, v in record.items() if k != "step"}, axis="train/step", step=record["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tracker is not None:
            self._tracker.close()
