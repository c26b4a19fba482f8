"""`TrainConfig`: every knob of the M-step, resolved once and saved as ``DIR/train_config.json``.

Defaults are the reference's (``ryoungj/BoLT``: ``lingua/optim.py``, ``bin/exp_setups/*.sh``): AdamW
(0.9, 0.95), eps 1e-8, weight decay 0.01, grad clip 1.0, lr 1e-4, 1000 steps of linear warmup for
every run then cosine to ``lr * min_lr_ratio`` (1e-6), global batch 96 sequences of 2048 tokens,
seed 42, loss on every token. The budget is one of ``tokens`` (the
reference's way: ``steps = tokens // (batch_size * seq_len)``), ``epochs`` or ``steps``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..flags import flag, from_json
from ..formats import LAYOUTS
from ..tracking import TrackingConfig
from .loss import LOSS_IMPLS

LOSS_ON = ("all", "observed")
STRATEGIES = ("auto", "ddp", "fsdp")
DATA_SHARDING = ("global", "rank")
DTYPES = ("auto", "float32", "bfloat16")

#: Fields that may differ between an interrupted run and its resumption (they do not change the
#: trajectory). Everything else must match the saved train_config.json or the run refuses to resume.
#: (Bitwise-identical resumption also needs the same world size and micro-batch size, which fix
#: the order of floating-point reductions.)
RESUME_FREE_FIELDS = frozenset(
    {"output", "save_every", "keep_checkpoints", "log_every", "tracking", "micro_batch_size", "strategy", "device", "overwrite",
     "gradient_checkpointing", "compile", "loss", "loss_chunk_tokens", "peak_tflops",
     "val_data", "val_every", "val_limit", "val_batch_size", "val_elbo_n", "val_max_latent_tokens", "val_reference_quirks"}
)


@dataclass(frozen=True)
class DataSource:
    """One ``--data FILE[:WEIGHT]``: each epoch holds ``weight`` times this file's documents
    (whole copies for the integer part, a seeded subset for the fraction)."""

    path: str
    weight: float = 1.0

    @classmethod
    def parse(cls, spec: str) -> "DataSource":
        path, _, weight_text = spec.rpartition(":")
        if path and weight_text:
            try:
                weight = float(weight_text)
            except ValueError:
                return cls(spec, 1.0)  # a colon inside the path, no weight
            if not math.isfinite(weight) or weight <= 0:
                raise UsageError(f"--data {spec}: weight must be a positive number")
            return cls(path, weight)
        return cls(spec, 1.0)

    def check_exists(self, flag: str) -> None:
        """A missing file, or a ``FILE:WEIGHT`` whose weight is not a number, as one error line
        (a Hub dataset, ``hf://...``, is only checked for its form: it is read when training starts)."""
        from ..io import input_exists
        from ..paths import is_hub

        if is_hub(self.path):
            input_exists(self.path)
            return
        path = Path(self.path)
        if path.is_file():
            return
        if path.is_dir():
            raise UsageError(f"{flag} {self.path}: is a directory, not a JSONL file")
        head, _, weight = self.path.rpartition(":")
        if head and Path(head).is_file():
            raise UsageError(f"{flag} {self.path}: the weight {weight!r} is not a number (FILE:WEIGHT, e.g. {head}:0.5)")
        raise UsageError(f"{flag} {self.path}: no such file")


@dataclass
class TrainConfig:
    """One training run. ``model`` (hub id or folder) or ``init_config`` (a TinyModelConfig JSON)."""

    output: str
    data: list[str] = field(default_factory=list)
    model: str | None = None
    init_config: str | None = None
    layout: str = "random"
    loss_on: str = "all"
    seq_len: int = 2048
    batch_size: int = 96  # global sequences per optimizer step, whatever the world size
    micro_batch_size: int | None = None  # per-rank sequences per forward pass; None = batch_size / world
    tokens: int | None = None
    epochs: float | None = None
    steps: int | None = None
    lr: float = 1e-4
    min_lr_ratio: float = 1e-6
    warmup_steps: int = 1000  # the reference's, whatever the run's length
    #: cap the warmup at this fraction of the steps (None: no cap, as the reference; 0.1 was lt's old default)
    max_warmup_fraction: float | None = None
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    seed: int = 42
    shuffle: bool = True
    dtype: str = "auto"  # bfloat16 on GPU, float32 on CPU
    device: str = "auto"
    strategy: str = "auto"
    data_sharding: str = "global"  # global: world-size-invariant batches; rank: each rank tokenizes only its documents
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower
    compile: bool = False  # torch.compile each transformer layer's forward (training/compiling.py)
    loss: str = "auto"  # full | chunked | auto (chunked on GPU): training/loss.py
    loss_chunk_tokens: int = 4096  # positions per chunk of the chunked loss
    save_every: int | None = None
    keep_checkpoints: int = 1
    log_every: int = 10
    #: TensorBoard / W&B (metrics.jsonl is always written): --report-to, --run-name, --wandb-project...
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    peak_tflops: float | None = None  # per device, for MFU; None = the datasheet value of a known GPU (training/throughput.py)
    overwrite: bool = False
    # held-out likelihoods during training (validation.py): raw documents, every N steps and at the end
    val_data: str | None = None
    val_every: int | None = None  # None: after the last step only
    val_limit: int | None = None  # first N documents (the reference: 1000)
    val_batch_size: int = 16
    val_elbo_n: list[int] = field(default_factory=lambda: [1, 2, 4], metadata=flag(csv=True))  # ELBO_n for --layout random; [] skips it
    val_max_latent_tokens: int = 1024
    #: the ELBO as the reference computes it (``lt eval --task elbo --reference-quirks``), logged as
    #: ``val_reference_elbo_N_per_token``: the figure that compares with the paper's ``elbo_4_per_token``
    val_reference_quirks: bool = False

    def __post_init__(self) -> None:
        self.data = [str(d) for d in self.data]
        self.val_elbo_n = [int(n) for n in self.val_elbo_n]

    # ------------------------------------------------------------------------------------ checks
    def validate(self, *, check_paths: bool = True) -> None:
        """Raise UsageError for any inconsistent setting (before anything heavy is loaded).

        ``check_paths=False`` checks the settings alone (``lt bootstrap`` checks every stage's
        settings before its first stage, when the files earlier stages write do not exist yet).
        """
        if check_paths:
            if not self.data:
                raise UsageError("no training data: pass --data FILE (repeatable, FILE:WEIGHT for a mix)")
            for spec in self.data:
                DataSource.parse(spec).check_exists("--data")
            if Path(self.output).exists() and not Path(self.output).is_dir():
                raise UsageError(f"--output {self.output}: is a file; lt train writes a folder there")
            if (self.model is None) == (self.init_config is None):
                raise UsageError("pass exactly one of --model and --init-config")
            if self.init_config is not None and not Path(self.init_config).exists():
                raise UsageError(f"--init-config {self.init_config}: no such file")
            from ..nofollow import check_folder
            from ..tracking import check_installed
            from ..tracking import check_paths as check_tracking_paths

            check_installed(self.tracking)
            # links planted where the run will write: refused before the model loads
            check_tracking_paths(self.tracking, self.output, named=True, exclude=("jsonl",))
            check_folder(Path(self.output) / "checkpoints")
        if self.layout not in LAYOUTS:
            raise UsageError(f"--layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.loss_on not in LOSS_ON:
            raise UsageError(f"--loss-on must be one of {', '.join(LOSS_ON)}, got {self.loss_on!r}")
        if self.strategy not in STRATEGIES:
            raise UsageError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.data_sharding not in DATA_SHARDING:
            raise UsageError(f"--data-sharding must be global or rank, got {self.data_sharding!r}")
        if self.loss not in LOSS_IMPLS:
            raise UsageError(f"--loss must be one of {', '.join(LOSS_IMPLS)}, got {self.loss!r}")
        if self.loss_chunk_tokens < 1:
            raise UsageError("--loss-chunk-tokens must be >= 1")
        if self.dtype not in DTYPES:
            raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        budgets = [b for b in (self.tokens, self.epochs, self.steps) if b is not None]
        if len(budgets) > 1:
            raise UsageError("pass at most one of --tokens, --epochs and --steps")
        for name in ("seq_len", "batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise UsageError("--micro-batch-size must be >= 1")
        if self.tokens is not None and self.tokens < self.batch_size * self.seq_len:
            raise UsageError(f"--tokens {self.tokens} is less than one step ({self.batch_size} x {self.seq_len} tokens)")
        if self.epochs is not None and self.epochs <= 0:
            raise UsageError("--epochs must be > 0")
        if self.steps is not None and self.steps < 1:
            raise UsageError("--steps must be >= 1")
        if not self.lr > 0:
            raise UsageError("--lr must be > 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UsageError("--min-lr-ratio must be in [0, 1]")
        if self.warmup_steps is None or self.warmup_steps < 0:
            raise UsageError("--warmup-steps must be >= 0")
        if self.max_warmup_fraction is not None and not 0 <= self.max_warmup_fraction <= 1:
            raise UsageError("--max-warmup-fraction must be in [0, 1]")
        if self.save_every is not None and self.save_every < 1:
            raise UsageError("--save-every must be >= 1")
        if self.keep_checkpoints < 1:
            raise UsageError("--keep-checkpoints must be >= 1")
        if self.log_every < 1:
            raise UsageError("--log-every must be >= 1")
        from ..io import input_exists

        if self.peak_tflops is not None and not (math.isfinite(self.peak_tflops) and self.peak_tflops > 0):
            raise UsageError(f"--peak-tflops must be a positive number of TFLOP/s per device, got {self.peak_tflops}")
        if check_paths and self.val_data is not None and not input_exists(self.val_data):
            raise UsageError(f"--val-data {self.val_data}: no such file")
        if self.val_data is None and self.val_every is not None:
            raise UsageError("--val-every needs --val-data")
        if self.val_data is None and self.val_reference_quirks:
            raise UsageError("--val-reference-quirks needs --val-data")
        for name in ("val_every", "val_limit", "val_batch_size", "val_max_latent_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
        if any(int(n) < 1 for n in self.val_elbo_n):
            raise UsageError("--val-elbo-n values must be positive integers")
        from ..estep.config import MAX_K

        if self.val_elbo_n and max(int(n) for n in self.val_elbo_n) > MAX_K:
            raise UsageError(f"--val-elbo-n {max(int(n) for n in self.val_elbo_n)} is more samples per chunk than lt holds in memory at once (at most {MAX_K})")

    @property
    def sources(self) -> list[DataSource]:
        return [DataSource.parse(spec) for spec in self.data]

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    # ------------------------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        data = dict(data)
        if "report_to" in data or "run_name" in data:  # saved by lt before the tracking group existed
            data["tracking"] = {"report_to": data.pop("report_to", None) or [], "run_name": data.pop("run_name", None)}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        return from_json(cls, data)

    def trajectory_fields(self) -> dict[str, Any]:
        """The fields that decide the trained weights (compared on resume)."""
        return {k: v for k, v in self.to_dict().items() if k not in RESUME_FREE_FIELDS and k != "overwrite"}


def steps_for_tokens(tokens: int, batch_size: int, seq_len: int) -> int:
    """The reference's budget arithmetic: whole optimizer steps that fit in a token budget."""
    return tokens // (batch_size * seq_len)


def resolve_warmup(warmup_steps: int, total_steps: int, max_fraction: float | None = None) -> int:
    """Warmup steps of a run: ``warmup_steps``, capped at ``max_fraction`` of the steps when given.

    The reference warms up 1000 steps in every run; when that is not shorter than the run, its
    scheduler never leaves the warmup (the lr ramps to ``lr * steps / 1000`` and never decays), and
    so does :func:`lr_at`. ``max_fraction=0.1`` is lt's earlier default (min(1000, 10% of steps)).
    """
    if max_fraction is None:
        return warmup_steps
    return min(warmup_steps, math.floor(total_steps * max_fraction + 1e-9))


def lr_at(step: int, *, lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup from lr/warmup to lr over
    ``warmup_steps`` steps, then cosine from lr down to ``lr * min_lr_ratio`` at the last step."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay_steps = max(total_steps - 1 - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
