"""Where per-step metrics go: ``metrics.jsonl`` always (rank 0), TensorBoard and W&B when asked.

On resume the file is cut back to the checkpoint's step, so it never holds two histories. Any
record with a ``step`` can be written (training steps, validation results).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..console import warn
from ..io import check_plain_file, dumps, open_binary_no_follow, write_bytes_atomic
from .config import TrainConfig

METRICS_FILE = "metrics.jsonl"


class MetricsReporter:
    """metrics.jsonl always; TensorBoard / W&B when installed and asked for."""

    def __init__(self, output: Path, config: TrainConfig, resume_step: int, enabled: bool):
        self.enabled = enabled
        self.path = output / METRICS_FILE
        self._file = None
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        if check_plain_file(self.path):  # drop lines written after the checkpoint we resume from
            import orjson

            kept = [line for line in self.path.read_bytes().splitlines(keepends=True)
                    if line.endswith(b"\n") and orjson.loads(line).get("step", 0) <= resume_step]
            write_bytes_atomic(self.path, b"".join(kept))
        self._file = open_binary_no_follow(self.path, "ab")  # never through a link planted in the folder
        if "tensorboard" in config.report_to:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(output / "tensorboard"))
            except ImportError:
                warn("--report-to tensorboard: the tensorboard package is not installed; metrics.jsonl only")
        if "wandb" in config.report_to:
            try:
                import wandb

                self._wandb = wandb.init(project="lt", name=config.run_name, config=config.to_dict(), resume="allow")
            except ImportError:
                warn("--report-to wandb: the wandb package is not installed; metrics.jsonl only")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(dumps(record))
        self._file.flush()
        step = record["step"]
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(f"train/{key}", value, step)
        if self._wandb is not None:
            self._wandb.log({f"train/{k}": v for k, v in record.items() if k != "step"}, step=step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
