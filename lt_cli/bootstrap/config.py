"""`BootstrapConfig`: everything an `lt bootstrap` run depends on, saved as ``RUN/config.json``.

The stages' own configs are nested, not copied (as lingua nests its optimizer arguments in its
training arguments): ``sample`` is the E-step's :class:`~lt_cli.estep.SampleConfig`, ``select`` its
:class:`~lt_cli.estep.SelectConfig`, ``train`` a :class:`~lt_cli.training.TrainConfig` template and
``eval`` an :class:`~lt_cli.evaluation.EvalConfig` template. Each knob is therefore named and
validated once, and a stage's config is the template with the stage's own fields filled in (k,
seeds, paths, models, budgets). The bootstrap flags are the exposed leaves (:mod:`lt_cli.flags`):
``--temperature`` sets ``sample.temperature``, ``--lr`` sets ``train.lr``, ``--select-method`` sets
``select.method``, ``--eval-limit`` sets ``eval.limit``.

A rerun of the same command compares its resolved config with the saved one: fields that change
results (:meth:`BootstrapConfig.result_fields`) must match, or the run refuses to mix the two in
one folder. ``iters`` and ``ks`` may grow and an adaptive arm may be added (new stages are appended to the
plan, finished ones are kept); ``launcher``, ``dry_run``, ``nproc_per_node`` and ``tracking`` only
decide how stages run and where their numbers are logged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import UsageError
from ..estep.config import SampleConfig, SelectConfig
from ..evaluation.config import EvalConfig
from ..evaluation.finetune import FinetuneConfig
from ..flags import from_json, group, json_paths
from ..teacher.config import ApiArgs, SynthesizeConfig
from ..tracking import TrackingConfig
from ..training.config import TrainConfig

#: Fields that do not change any number of the run (a resumed run may differ in them).
RUN_ONLY_FIELDS = frozenset({"train.save_every", "iters", "ks", "adaptive", "launcher", "nproc_per_node", "dry_run", "run_dir", "name"})

#: The leaves of the stage configs that bootstrap exposes as its own flags; the others are set per
#: stage (k, seeds, paths, models, budgets) or keep their defaults.
SAMPLE_FLAGS = (
    "temperature", "top_p", "prefix_chunks", "max_new_tokens", "max_prompt_tokens", "reference_quirks", "docs_per_call",
    "k_step", "stop_rule", "stop_threshold",
)
SELECT_FLAGS = ("method",)
TRAIN_FLAGS = (
    "layout", "loss_on", "seq_len", "batch_size", "micro_batch_size", "lr", "warmup_steps", "weight_decay", "strategy", "gradient_checkpointing",
    "save_every", "val_data", "val_every", "val_limit",
)
EVAL_FLAGS = ("data", "limit", "max_new_tokens", "batch_size")
#: flags that set only the adaptive arm (an error without one: they would be silently ignored)
ADAPTIVE_ONLY_FLAGS = ("adaptive_k", "k_max", "k_step", "stop_rule", "stop_threshold")
FINETUNE_FLAGS = ("task", "train_data", "data", "limit", "train_limit", "seeds", "epochs", "samples", "max_new_tokens")
TEACHER_API_FLAGS = ("batch",)

#: Fields of the stage templates that every stage sets itself, and the setting that decides them
#: instead. A config file may not set them (a value equal to the template's default, as in a
#: recorded config.json, is accepted); every other field of a template reaches its stages.
SET_PER_STAGE: dict[str, str] = {
    "train.output": "run_dir (each stage trains into its own folder)",
    "train.data": "data, warm_data or teacher_data",
    "train.model": "model (or warm_model / continue_training)",
    "train.init_config": "model",
    "train.seed": "seed",
    "train.dtype": "dtype",
    "train.steps": "warm_steps or mstep_steps",
    "train.tokens": "warm_tokens, mstep_tokens or raw_token_matched_tokens",
    "sample.k": "ks (--k, --sweep-k) or adaptive_k",
    "sample.k_max": "k_max (the adaptive arm)",
    "sample.seed": "seed (iteration t samples with seed + t)",
    "select.seed": "seed (iteration t selects with seed + t)",
    "select.k": "ks",
    "eval.task": "eval_tasks",
    "eval.model": "the stage's checkpoint",
    "eval.variant": "the stage (latent for thought models, raw for raw baselines)",
    "eval.backend": "backend",
    "eval.dtype": "dtype",
    "eval.log_samples": "run_dir",
    "eval.output": "run_dir",
    "finetune.model": "the stage's checkpoint",
    "finetune.output": "run_dir",
    "finetune.backend": "backend",
    "finetune.dtype": "dtype",
}


def _train_template() -> TrainConfig:
    return TrainConfig(output="")


def _finetune_template() -> FinetuneConfig:
    return FinetuneConfig(model="", output="")


@dataclass
class BootstrapConfig:
    """One EM run (or a K sweep sharing its warm start and baselines).

    Either the embedded demo (``demo=True``: corpus, tiny model and accuracy eval are generated in
    the run folder) or real data: ``data`` (raw documents the E-step infers thoughts for),
    ``warm_data`` (teacher-thought documents for the warm start) or ``warm_model``, and ``model``.
    """

    run_dir: str = ""
    name: str = "demo"
    demo: bool = True
    iters: int = 3
    ks: list[int] = field(default_factory=lambda: [4])
    #: one more arm: adaptive E-step sampling (lt sample-thoughts --k adaptive_k --k-max k_max)
    adaptive: bool = False
    #: the adaptive arm's samples per chunk in the first round
    adaptive_k: int = 1
    #: the adaptive arm's most samples per chunk (its stopping rule: --stop-rule, --stop-threshold)
    k_max: int = 8
    # ---------------------------------------------------------------- data and models
    model: str | None = None  # base model (hub id or folder); demo: a TinyModelConfig built in the run
    data: str | None = None  # raw documents for the E-step (and the raw baseline)
    warm_data: list[str] = field(default_factory=list)  # teacher-thought documents for the warm start
    warm_model: str | None = None  # an already warm-started model (skips the warm-start training)
    synthesize: str | None = None  # raw documents to give teacher thoughts first (lt synthesize)
    teacher_model: str | None = None  # teacher for --synthesize
    teacher_backend: str = "api"
    teacher_data: str | None = None  # teacher thoughts on all of `data` (the teacher baseline); demo: built
    #: what --synthesize asks the teacher (lt synthesize's settings; a config file's [teacher])
    teacher: SynthesizeConfig = field(default_factory=SynthesizeConfig, metadata=group(prefix="teacher_", include=()))
    #: how --synthesize talks to an API teacher (--teacher-batch: the Batch API, as the paper)
    teacher_api: ApiArgs = field(default_factory=ApiArgs, metadata=group(prefix="teacher_", include=TEACHER_API_FLAGS))
    # ---------------------------------------------------------------- eval
    eval_tasks: list[str] = field(default_factory=lambda: ["demo"])  # the first one's headline leads the report
    eval: EvalConfig = field(default_factory=EvalConfig, metadata=group(prefix="eval_", include=EVAL_FLAGS))
    #: also run lt finetune-eval on every model (the reference's less noisy evaluation)
    finetune_eval: bool = False
    finetune: FinetuneConfig = field(default_factory=_finetune_template, metadata=group(prefix="finetune_", include=FINETUNE_FLAGS))
    # ---------------------------------------------------------------- baselines
    raw_baseline: bool = True  # raw documents for an M-step's budget (the paper's FLOPs-matched baseline)
    #: a second raw baseline for this many tokens (the paper's token-matched one: 3.84e9, the raw
    #: tokens an M-step sees inside its augmented data); None: not run
    raw_token_matched_tokens: int | None = None
    teacher_baseline: bool = True
    # ---------------------------------------------------------------- E-step
    sample: SampleConfig = field(default_factory=SampleConfig, metadata=group(include=SAMPLE_FLAGS))
    select: SelectConfig = field(default_factory=SelectConfig, metadata=group(prefix="select_", include=SELECT_FLAGS))
    estep_limit: int | None = None  # only the first N documents of `data` per iteration
    #: sequences per forward pass inside the E-step's backend (None: the backend's default, 16).
    #: Sampled tokens do not depend on it (each row has its own seed); log-probs move by float
    #: rounding only (about 1e-6 between 16 and 512 on the demo).
    estep_batch_size: int | None = None
    #: context length of the E-step's backend (None: the model's; the paper: 2048)
    estep_max_model_len: int | None = None
    # ---------------------------------------------------------------- M-step and warm start
    train: TrainConfig = field(default_factory=_train_template, metadata=group(include=TRAIN_FLAGS))
    continue_training: bool = False  # train iteration t from model t-1 (default: from the base model)
    warm_steps: int | None = None
    warm_tokens: int | None = None
    warm_batch_size: int | None = None  # None: the M-step's --batch-size (the paper: 96 warm, 192 M-step)
    mstep_steps: int | None = None
    mstep_tokens: int | None = None
    # ---------------------------------------------------------------- demo corpus
    demo_corpus: dict[str, Any] = field(default_factory=dict)  # DemoCorpusConfig fields
    demo_model: dict[str, Any] = field(default_factory=dict)  # TinyModelConfig fields
    # ---------------------------------------------------------------- execution
    backend: str = "transformers"  # E-step and eval backend
    dtype: str = "auto"  # of every backend and training
    seed: int = 42  # every stage's seed derives from it
    launcher: str | None = None  # None: stages run in this process
    nproc_per_node: int = 1
    dry_run: bool = False
    #: one tracker run for the loop: --report-to, --wandb-project, --run-name... (bootstrap/tracking.py)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def validate(self) -> None:
        if not self.run_dir:
            raise UsageError("--run-dir is required")
        if self.iters < 0:
            raise UsageError("--iters must be >= 0")
        if (not self.ks and not self.adaptive) or any(k < 1 for k in self.ks):
            raise UsageError("K must be >= 1 (--k or --sweep-k 1,4,8; adaptive for an adaptive arm)")
        if self.adaptive_k < 1 or self.k_max < self.adaptive_k:
            raise UsageError(f"the adaptive arm needs 1 <= --adaptive-k <= --k-max, got {self.adaptive_k} and {self.k_max}")
        from ..estep.config import MAX_K

        for name, value in [("--k", k) for k in self.ks] + [("--k-max", self.k_max)]:
            if value > MAX_K:  # the same bound as lt sample-thoughts, before any stage runs
                raise UsageError(f"{name} {value} is more samples per chunk than lt holds in memory at once (at most {MAX_K})")
        if self.adaptive and self.adaptive_k == 1 and self.sample.rule in ("mass", "ess"):
            raise UsageError(f"--stop-rule {self.sample.rule} needs --adaptive-k 2 or more: one sample always carries all the weight")
        if len(set(self.ks)) != len(self.ks):
            raise UsageError("--sweep-k lists a K twice")
        if self.select.method == "first":
            raise UsageError("--select-method must be importance, uniform or argmax")
        if self.estep_limit is not None and self.estep_limit < 1:
            raise UsageError("--estep-limit must be >= 1")
        if self.estep_batch_size is not None and self.estep_batch_size < 1:
            raise UsageError("--estep-batch-size must be >= 1")
        if self.estep_max_model_len is not None and self.estep_max_model_len < 1:
            raise UsageError("--estep-max-model-len must be >= 1")
        if not self.eval_tasks:
            raise UsageError("--eval-tasks needs at least one task")
        if not self.demo:
            if self.model is None:
                raise UsageError("--model is required with --data (the base model every M-step starts from)")
            if self.data is None:
                raise UsageError("--data is required unless running the embedded demo")
            if self.warm_model is None and not self.warm_data and self.synthesize is None:
                raise UsageError("the warm start needs --warm-data (teacher thoughts), --synthesize RAW or --warm-model")
            if self.synthesize is not None and self.teacher_model is None:
                raise UsageError("--synthesize needs --teacher-model")
            if "demo" in self.eval_tasks and self.eval.data is None:
                raise UsageError("the demo eval task needs --eval-data (held-out demo problems)")
        for budget in ("warm_steps", "warm_tokens", "mstep_steps", "mstep_tokens", "warm_batch_size", "raw_token_matched_tokens"):
            value = getattr(self, budget)
            if value is not None and value < 1:
                raise UsageError(f"--{budget.replace('_', '-')} must be >= 1")
        self.train.validate(check_paths=False)
        if self.finetune_eval and not (self.finetune.train_data and self.finetune.data):
            raise UsageError("--finetune-eval needs --finetune-train-data and --finetune-data (the task's training and test problems)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def arms(self) -> list[str]:
        """The EM runs of this config: ``k<K>`` per fixed K (ascending), then ``adaptive``."""
        return [f"k{k}" for k in sorted(self.ks)] + (["adaptive"] if self.adaptive else [])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BootstrapConfig":
        return from_json(cls, data)

    def result_fields(self) -> dict[str, Any]:
        """``{"a.b": value}`` of every field that changes results (JSON values, so a config read
        back from ``config.json`` compares equal to the one it was saved from)."""
        import orjson

        data = orjson.loads(orjson.dumps(self.to_dict()))
        return {path: value for path, value in json_paths(data).items() if path not in RUN_ONLY_FIELDS and not path.startswith("tracking.")}


# ------------------------------------------------------------------------------------ resolution
def resolve_config(options: dict[str, Any], found=None) -> BootstrapConfig:
    """A validated BootstrapConfig from flag values (None = not given), a config file's values
    (``found``, a :class:`lt_cli.configfile.FileValues`; flags win over it) and the demo or generic
    defaults.

    No ``--data`` and no ``--model`` (in the flags or the file) means the embedded demo: its
    calibrated settings (:data:`lt_cli.demo.DEMO_SETTINGS`, keyed by flag name) apply to every
    setting given neither way.
    """
    from pathlib import Path

    from ..configfile import apply
    from ..flags import build

    options = dict(options)
    later: dict[tuple[str, ...], Any] = {}
    on_command_line = {k for k, v in options.items() if v is not None}
    if found is not None:
        options, later = _file_values(options, found)
    given = {k: v for k, v in options.items() if v is not None}
    # a recorded config file holds every setting, the adaptive arm's defaults too: only a value a
    # flag gave, or a file changed, makes a fixed-K run an error
    defaults = BootstrapConfig()
    adaptive_only = [f"--{name.replace('_', '-')}" for name in ADAPTIVE_ONLY_FLAGS
                     if name in given and (name in on_command_line or given[name] != getattr(defaults, name, None))]
    if adaptive_only and not given.get("adaptive"):
        raise UsageError(
            f"{' and '.join(adaptive_only)} only {'applies' if len(adaptive_only) == 1 else 'apply'} to the adaptive arm: add adaptive to --k or --sweep-k "
            "(--sweep-k 1,4,adaptive), or drop them"
        )
    demo = given.get("data") is None and given.get("model") is None and not given.get("warm_model")
    if demo and (given.get("warm_data") or given.get("synthesize")):
        raise UsageError("--warm-data/--synthesize need --data and --model (without them lt runs the embedded demo)")
    values: dict[str, Any] = {"demo": demo}
    if demo:
        from ..demo import DEMO_SETTINGS

        values.update(DEMO_SETTINGS)
    else:
        values.update(eval_tasks=["gsm8k"], raw_baseline=False, teacher_baseline=False)
    values.update(given)
    _absolute_paths(values)
    for steps_key, tokens_key in (("warm_steps", "warm_tokens"), ("mstep_steps", "mstep_tokens")):
        if tokens_key in given and steps_key not in given:
            values[steps_key] = None  # an explicit token budget replaces the default step budget
    values["name"] = values.get("name") or ("demo" if demo else _data_name(str(values.get("data"))))
    values.setdefault("run_dir", str((Path("lt-runs") / values["name"]).absolute()))
    config = build(BootstrapConfig, values)
    if later:
        for path in NESTED_PATH_FIELDS:
            if later.get(path):
                later[path] = _absolute(str(later[path]))
        try:
            config = apply(config, later)
        except UsageError as exc:
            raise UsageError(f"{found.source}: {exc}") from None
    config.validate()
    return config


def _data_name(data: str) -> str:
    """A run's default name: the --data file's stem, or a Hub dataset's name."""
    from pathlib import Path

    from ..paths import is_hub

    if is_hub(data):
        from ..hub import HubSpec

        return HubSpec.parse(data).name
    return Path(data).stem


#: what --print-config leaves out: the fields each stage sets, and what is derived or run-only
PRINT_SKIP = frozenset(SET_PER_STAGE) | frozenset({"demo", "dry_run"})

#: fields without a bootstrap flag that hold a path (made absolute like the flags' paths)
NESTED_PATH_FIELDS = (("train", "val_data"), ("eval", "task_file"))
#: fields a recorded config.json holds that lt derives (no data and no model: the demo)
DERIVED_FIELDS = ("demo",)


def _file_values(options: dict[str, Any], found) -> tuple[dict[str, Any], dict[tuple[str, ...], Any]]:
    """Split a config file's values into flag values (where no flag was given) and the nested
    fields no flag reaches; refuse the fields every stage sets itself."""
    from ..flags import get, leaves

    names = {leaf.path: leaf.name for leaf in leaves(BootstrapConfig)}
    defaults = BootstrapConfig()
    later: dict[tuple[str, ...], Any] = {}
    for path, value in found.values.items():
        dotted = ".".join(path)
        if path[0] in DERIVED_FIELDS:
            continue
        owned = next((instead for prefix, instead in SET_PER_STAGE.items() if dotted == prefix or dotted.startswith(prefix + ".")), None)
        if owned is not None:
            if value != get(defaults, path):
                raise found.error(path, f"is set by each stage; set {owned} instead")
            continue
        if path in names:
            if options.get(names[path]) is None:
                options[names[path]] = value
        else:
            later[path] = value
    return options, later


def _absolute(spec: str) -> str:
    """An existing file or folder as an absolute path (FILE:WEIGHT keeps its weight); others as given."""
    from pathlib import Path

    if Path(spec).exists():
        return str(Path(spec).resolve())
    path, sep, weight = spec.rpartition(":")
    if sep and path and Path(path).exists():
        return f"{Path(path).resolve()}:{weight}"
    return spec


def _absolute_paths(values: dict[str, Any]) -> None:
    """Stage commands may run elsewhere (a launcher, another working directory): use absolute paths."""
    from pathlib import Path

    for key in ("model", "data", "warm_model", "synthesize", "teacher_data", "eval_data", "finetune_train_data", "finetune_data"):
        if values.get(key):
            values[key] = _absolute(str(values[key]))
    if values.get("warm_data"):
        values["warm_data"] = [_absolute(str(spec)) for spec in values["warm_data"]]
    if values.get("run_dir"):
        values["run_dir"] = str(Path(values["run_dir"]).absolute())
