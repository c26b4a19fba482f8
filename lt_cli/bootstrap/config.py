"""`BootstrapConfig`: everything an `lt bootstrap` run depends on, saved as ``RUN/config.json``.

A rerun of the same command compares its resolved config with the saved one: fields that change
results (:meth:`BootstrapConfig.result_fields`) must match, or the run refuses to mix the two in one
folder. ``iters`` and ``ks`` may grow (new stages are appended to the plan, finished ones are kept);
``launcher``, ``dry_run`` and ``nproc_per_node`` only decide how stages run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import UsageError

#: Fields that do not change any number of the run (a resumed run may differ in them).
RUN_ONLY_FIELDS = frozenset({"save_every", "iters", "ks", "launcher", "nproc_per_node", "dry_run", "run_dir", "name"})


@dataclass
class BootstrapConfig:
    """One EM run (or a K sweep sharing its warm start and baselines).

    Either the embedded demo (``demo=True``: corpus, tiny model and accuracy eval are generated in
    the run folder) or real data: ``data`` (raw documents the E-step infers thoughts for),
    ``warm_data`` (teacher-thought documents for the warm start) or ``warm_model``, and ``model``.
    """

    run_dir: str
    name: str = "demo"
    demo: bool = True
    iters: int = 3
    ks: list[int] = field(default_factory=lambda: [4])
    # ---------------------------------------------------------------- data and models
    model: str | None = None  # base model (hub id or folder); demo: a TinyModelConfig built in the run
    data: str | None = None  # raw documents for the E-step (and the raw baseline)
    warm_data: list[str] = field(default_factory=list)  # teacher-thought documents for the warm start
    warm_model: str | None = None  # an already warm-started model (skips the warm-start training)
    synthesize: str | None = None  # raw documents to give teacher thoughts first (lt synthesize)
    teacher_model: str | None = None  # teacher for --synthesize
    teacher_backend: str = "api"
    teacher_data: str | None = None  # teacher thoughts on all of `data` (the teacher baseline); demo: built
    # ---------------------------------------------------------------- eval
    eval_tasks: list[str] = field(default_factory=lambda: ["demo"])
    eval_data: str | None = None  # held-out problems for the demo task (demo: built)
    eval_limit: int | None = None
    eval_max_new_tokens: int | None = None
    # ---------------------------------------------------------------- baselines
    raw_baseline: bool = True
    teacher_baseline: bool = True
    # ---------------------------------------------------------------- E-step
    temperature: float = 1.0
    top_p: float = 1.0
    prefix_chunks: int = 3
    max_latent_tokens: int = 1024
    select_method: str = "importance"
    estep_limit: int | None = None  # only the first N documents of `data` per iteration
    estep_docs_per_call: int | None = None  # documents per backend call in the E-step (None: estep's default)
    # ---------------------------------------------------------------- M-step and warm start
    continue_training: bool = False  # train iteration t from model t-1 (default: from the base model)
    layout: str = "random"
    seq_len: int = 2048
    batch_size: int = 96
    lr: float = 1e-4
    warmup_steps: int | None = None
    warm_steps: int | None = None
    warm_tokens: int | None = None
    mstep_steps: int | None = None
    mstep_tokens: int | None = None
    save_every: int | None = None  # M-step checkpoints (an interrupted training resumes from the last)
    train_extra: dict[str, Any] = field(default_factory=dict)  # any other TrainConfig field
    # ---------------------------------------------------------------- demo corpus
    demo_corpus: dict[str, Any] = field(default_factory=dict)  # DemoCorpusConfig fields
    demo_model: dict[str, Any] = field(default_factory=dict)  # TinyModelConfig fields
    # ---------------------------------------------------------------- execution
    backend: str = "transformers"
    dtype: str = "auto"
    seed: int = 42
    launcher: str | None = None  # None: stages run in this process
    nproc_per_node: int = 1
    dry_run: bool = False

    def validate(self) -> None:
        if self.iters < 0:
            raise UsageError("--iters must be >= 0")
        if not self.ks or any(k < 1 for k in self.ks):
            raise UsageError("K must be >= 1 (--k or --sweep-k 1,4,8)")
        if len(set(self.ks)) != len(self.ks):
            raise UsageError("--sweep-k lists a K twice")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise UsageError("need --temperature >= 0 and 0 < --top-p <= 1")
        if self.prefix_chunks < 0:
            raise UsageError("--prefix-chunks must be >= 0")
        if self.max_latent_tokens < 1:
            raise UsageError("--max-latent-tokens must be >= 1")
        if self.select_method not in ("importance", "uniform", "argmax"):
            raise UsageError("--select must be importance, uniform or argmax")
        if self.launcher is not None and self.estep_limit:
            raise UsageError("--estep-limit works only with stages in this process (no --launcher); slice --data instead")
        if not self.demo:
            if self.model is None:
                raise UsageError("--model is required with --data (the base model every M-step starts from)")
            if self.data is None:
                raise UsageError("--data is required unless running the embedded demo")
            if self.warm_model is None and not self.warm_data and self.synthesize is None:
                raise UsageError("the warm start needs --warm-data (teacher thoughts), --synthesize RAW or --warm-model")
            if self.synthesize is not None and self.teacher_model is None:
                raise UsageError("--synthesize needs --teacher-model")
            if "demo" in self.eval_tasks and self.eval_data is None:
                raise UsageError("the demo eval task needs --eval-data (held-out demo problems)")
        for budget in ("warm_steps", "warm_tokens", "mstep_steps", "mstep_tokens"):
            value = getattr(self, budget)
            if value is not None and value < 1:
                raise UsageError(f"--{budget.replace('_', '-')} must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BootstrapConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def result_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k not in RUN_ONLY_FIELDS}
