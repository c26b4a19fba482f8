"""The E-step's settings, each named and validated once.

* :class:`SampleConfig`: how proposals are drawn and scored (the reference's E-step by default).
* :class:`SelectConfig`: how one candidate per chunk is chosen.
* :class:`SampleThoughtsRun` and :class:`SelectRun`: everything one ``lt sample-thoughts`` or
  ``lt select`` run takes. Their leaves are the commands' flags (:mod:`lt_cli.flags`), so
  ``lt bootstrap`` runs exactly these configs in-process or renders them as command lines.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from .. import formats
from ..backends.base import SamplingParams
from ..chunking import ChunkingConfig
from ..errors import UsageError
from ..flags import flag, group
from ..session import BackendArgs, CacheArgs
from ..stream import StreamArgs
from ..tracking import TrackingConfig

#: adaptive stopping rules (estep/adaptive.py) and the threshold each uses when --stop-threshold is not given
STOP_RULES = ("coverage", "mass", "repeat", "ess")
DEFAULT_THRESHOLDS = {"coverage": 0.1, "mass": 0.9, "repeat": 0.9, "ess": 0.9}
SELECT_METHODS = ("importance", "uniform", "argmax", "first")
#: samples per chunk: every candidate of a group of documents is held in memory until the group is
#: written (K = 10**9 would exhaust memory after the model loads), and the paper's K is 1 to 16
MAX_K = 4096
#: the reference's vLLM prompt cap (max_model_len 2,048 - max_gen_len 1,024)
REFERENCE_MAX_PROMPT_TOKENS = 1024


@dataclass
class SampleConfig:
    """How ``lt sample-thoughts`` draws and scores candidates (defaults: the reference's E-step)."""

    #: samples per chunk (reference: 4); with k_max, the samples every chunk gets in the first round
    k: int = 4
    #: adaptive sampling: at most this many samples per chunk, drawn in rounds until the stopping
    #: rule holds (None: every chunk gets exactly k)
    k_max: int | None = None
    #: samples added per later round (None: double the chunk's samples each round)
    k_step: int | None = None
    #: when a chunk stops early: coverage, mass, repeat or ess (lt_cli/estep/adaptive.py); None:
    #: coverage (:attr:`rule`). None, not "coverage", so that a rule given without k_max is seen
    stop_rule: str | None = None
    #: the rule's threshold (None: the rule's default, 0.1 for coverage, 0.9 for the others):
    #: posterior mass certified (coverage), weight share of the heaviest latent (mass, repeat),
    #: ESS / samples (ess)
    stop_threshold: float | None = None
    #: latent tokens per sample, the stop token included (reference: 1024)
    max_new_tokens: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    #: raw chunks before the current one given as context (reference E-step: 3); None: all of them
    prefix_chunks: int | None = 3
    seed: int = 42
    #: compute log_p and log_w now (False: leave it to ``lt select --model``)
    score: bool = True
    #: reproduce the reference's first-chunk prompt and the skipped first <SoL> in log_p
    reference_quirks: bool = False
    #: keep at most the last N tokens of each posterior prompt (None: lt's rule, see
    #: backends.base.fit_prompt; 1,024 with ``reference_quirks``, as the reference's vLLM setup)
    max_prompt_tokens: int | None = None
    #: input documents per backend call (None: 8, or 128 with vLLM); fixed groups keep a resumed
    #: run byte-identical to an uninterrupted one, so this is part of what decides the output
    docs_per_call: int | None = None
    #: how raw documents are chunked on the fly (always ``lt chunk``'s default on the command line)
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig, metadata=flag(enabled=False))

    def __post_init__(self) -> None:
        if self.k < 1:
            raise UsageError(f"--k must be at least 1, got {self.k}")
        if self.k > MAX_K:
            raise UsageError(f"--k {self.k} is more samples per chunk than lt holds in memory at once (at most {MAX_K})")
        if self.k_max is not None and self.k_max > MAX_K:
            raise UsageError(f"--k-max {self.k_max} is more samples per chunk than lt holds in memory at once (at most {MAX_K})")
        if self.max_new_tokens < 1:
            raise UsageError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise UsageError(f"--temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.prefix_chunks is not None and self.prefix_chunks < 0:
            raise UsageError(f"--prefix-chunks must be >= 0, got {self.prefix_chunks}")
        if self.docs_per_call is not None and self.docs_per_call < 1:
            raise UsageError(f"--docs-per-call must be at least 1, got {self.docs_per_call}")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise UsageError(f"--max-prompt-tokens must be at least 1, got {self.max_prompt_tokens}")
        if self.k_max is not None and self.k_max < self.k:
            raise UsageError(f"--k-max must be at least --k (the first round's samples), got --k-max {self.k_max} with --k {self.k}")
        if self.k_max is not None and self.k == 1 and self.rule in ("mass", "ess"):
            raise UsageError(f"--stop-rule {self.rule} needs --k 2 or more: one sample always carries all the weight")
        if self.k_step is not None and self.k_step < 1:
            raise UsageError(f"--k-step must be at least 1, got {self.k_step}")
        if self.stop_rule is not None and self.stop_rule not in STOP_RULES:
            raise UsageError(f"--stop-rule must be one of {', '.join(STOP_RULES)}, got {self.stop_rule!r}")
        if self.stop_threshold is not None and not 0 < self.stop_threshold <= 1:
            raise UsageError(f"--stop-threshold must be in (0, 1], got {self.stop_threshold}")

    @property
    def adaptive(self) -> bool:
        return self.k_max is not None

    @property
    def rule(self) -> str:
        """The stopping rule in force: ``stop_rule``, else coverage."""
        return self.stop_rule if self.stop_rule is not None else "coverage"

    def adaptive_only_flags(self) -> list[str]:
        """The adaptive settings given (they mean nothing without ``k_max``)."""
        return [f"--{name.replace('_', '-')}" for name in ("k_step", "stop_rule", "stop_threshold") if getattr(self, name) is not None]

    def for_arm(self, k: int, k_max: int | None = None, **changes) -> "SampleConfig":
        """This template with ``k`` (and ``k_max``): a fixed-K arm (``k_max`` None) drops the
        adaptive settings, which only the adaptive arm uses (``lt bootstrap``)."""
        if k_max is None:
            changes.update(k_step=None, stop_rule=None, stop_threshold=None)
        return replace(self, k=k, k_max=k_max, **changes)

    def check_runnable(self) -> None:
        """Combinations that are valid flags but cannot run (checked when a run starts)."""
        if self.k_max is not None and not self.score:
            raise UsageError("--k-max needs the weights after every round: drop --no-score")

    def estep_record(self, model_parameters: int | None) -> dict:
        """The document-level ``estep`` record: what decides the compute its candidates cost."""
        record: dict = {"model_parameters": model_parameters}
        if self.k_max is not None:
            threshold = self.stop_threshold if self.stop_threshold is not None else DEFAULT_THRESHOLDS[self.rule]
            record.update(k=self.k, k_max=self.k_max, k_step=self.k_step, stop_rule=self.rule, stop_threshold=threshold)
        return record

    def prompt_budget(self) -> int | None:
        """The posterior prompt budget in tokens: explicit, else the reference's 1,024 under
        ``reference_quirks``, else None (lt's rule: see :func:`lt_cli.backends.base.fit_prompt`)."""
        if self.max_prompt_tokens is not None:
            return self.max_prompt_tokens
        return REFERENCE_MAX_PROMPT_TOKENS if self.reference_quirks else None

    def group_size(self, backend_name: str | None = None) -> int:
        """Documents per backend call: the explicit value, else 128 for vLLM and 8 otherwise."""
        if self.docs_per_call is not None:
            return self.docs_per_call
        return 128 if backend_name == "vllm" else 8

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(
            n=1, temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens, stop=(formats.END_OF_LATENT,),
            max_prompt_tokens=self.prompt_budget(),
        )

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class SelectConfig:
    """How ``lt select`` picks one candidate per chunk."""

    #: importance (softmax(log w), the reference), uniform, argmax or first
    method: str = "importance"
    #: each chunk's draw is seeded from (seed, document id, chunk index)
    seed: int = 42
    #: use only the first K candidates of every chunk (None: all of them)
    k: int | None = None
    #: keep chunks[].candidates in the output
    keep_candidates: bool = False

    def __post_init__(self) -> None:
        if self.method not in SELECT_METHODS:
            raise UsageError(f"--method must be one of {', '.join(SELECT_METHODS)}, got {self.method!r}")
        if self.k is not None and self.k < 1:
            raise UsageError(f"--k must be at least 1, got {self.k}")


@dataclass
class SampleThoughtsRun:
    """One ``lt sample-thoughts`` run (its flags are the leaves)."""

    stream: StreamArgs = field(default_factory=StreamArgs)
    backend: BackendArgs = field(default_factory=BackendArgs)
    sample: SampleConfig = field(default_factory=SampleConfig)
    cache: CacheArgs = field(default_factory=CacheArgs)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        given = self.sample.adaptive_only_flags()
        if given and not self.sample.adaptive:
            verb = "applies" if len(given) == 1 else "apply"
            raise UsageError(f"{' and '.join(given)} only {verb} to adaptive sampling: add --k-max N (the most samples per chunk), or drop them")


#: what ``lt select --model`` needs of the sampling settings to rebuild the scoring strings
SCORING_FIELDS = ("prefix_chunks", "reference_quirks", "docs_per_call")


@dataclass
class SelectRun:
    """One ``lt select`` run; with ``backend.model`` set, candidates lacking log p are scored first."""

    stream: StreamArgs = field(default_factory=StreamArgs)
    select: SelectConfig = field(default_factory=SelectConfig)
    sample: SampleConfig = field(default_factory=SampleConfig, metadata=group(include=SCORING_FIELDS))
    backend: BackendArgs = field(default_factory=BackendArgs)
    cache: CacheArgs = field(default_factory=CacheArgs)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
