"""What ``lt synthesize`` asks the teacher (:class:`SynthesizeConfig`) and everything one run takes
(:class:`SynthesizeRun`, whose leaves are the command's flags)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..backends.base import SamplingParams
from ..chunking import ChunkingConfig
from ..errors import UsageError
from ..flags import flag
from ..session import BackendArgs, CacheArgs
from ..stream import StreamArgs

DEFAULT_TEACHER = "gpt-4o-mini-2024-07-18"
METHODS = ("latent", "wrap", "wrap-cot")
#: max_tokens per method in the reference configs
DEFAULT_MAX_NEW_TOKENS = {"latent": 6000, "wrap": 5000, "wrap-cot": 8000}


@dataclass
class SynthesizeConfig:
    """What ``lt synthesize`` asks the teacher (defaults: the reference's teacher settings)."""

    #: latent (thoughts per chunk), wrap or wrap-cot (rephrasings per document)
    method: str = "latent"
    temperature: float = 0.7
    top_p: float = 1.0
    #: None: the reference's per-method value (6000 latent, 5000 wrap, 8000 wrap-cot)
    max_new_tokens: int | None = None
    #: samples per document (or per chunk) written as separate records, pass 0 first
    passes: int = 1
    seed: int = 42
    #: raw chunks before the current one shown to the teacher (reference: 1)
    prefix_chunks: int = 1
    #: documents per backend call (None: 8; every document in one call with --batch)
    docs_per_call: int | None = None
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig, metadata=flag(enabled=False))

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.passes < 1:
            raise UsageError(f"--passes must be at least 1, got {self.passes}")
        from ..estep.config import MAX_K

        if self.passes > MAX_K:  # a group's replies are held until it is written; each pass is a paid request
            raise UsageError(f"--passes {self.passes} is more replies per document than lt holds in memory at once (at most {MAX_K})")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise UsageError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.prefix_chunks < 0:
            raise UsageError(f"--prefix-chunks must be >= 0, got {self.prefix_chunks}")
        if self.docs_per_call is not None and self.docs_per_call < 1:
            raise UsageError(f"--docs-per-call must be at least 1, got {self.docs_per_call}")

    def group_size(self) -> int:
        return self.docs_per_call if self.docs_per_call is not None else 8

    def sampling_params(self) -> SamplingParams:
        max_new = self.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[self.method]
        return SamplingParams(n=1, temperature=self.temperature, top_p=self.top_p, max_new_tokens=max_new)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class ApiArgs:
    """Options of the OpenAI-compatible teacher (``--backend api``)."""

    #: send the requests through the Batch API (needs -o; its state is kept in OUTPUT.batches.jsonl)
    batch: bool = False
    #: seconds between Batch API status checks
    batch_poll_interval: float = 30.0
    #: requests in flight at once
    max_concurrency: int = 8


@dataclass
class CostArgs:
    """What the teacher costs: prices for the report, and ``--estimate`` (count, send nothing)."""

    #: USD per 1M input (prompt) tokens (default: backends/pricing.py's table for known models)
    input_price: float | None = None
    #: USD per 1M output (completion) tokens (default: the table)
    output_price: float | None = None
    #: print the requests, estimated tokens and cost a run would spend, and send nothing
    estimate: bool = False
    #: --estimate: completion tokens per raw token explained (None: 2.3 latent, 1.0 wrap, 2.0 wrap-cot)
    output_ratio: float | None = None

    def __post_init__(self) -> None:
        for name, value in (("--input-price", self.input_price), ("--output-price", self.output_price), ("--output-ratio", self.output_ratio)):
            if value is not None and not (value >= 0 and value < float("inf")):
                raise UsageError(f"{name} must be a non-negative number, got {value}")


@dataclass
class SynthesizeRun:
    """One ``lt synthesize`` run (its flags are the leaves)."""

    stream: StreamArgs = field(default_factory=StreamArgs)
    backend: BackendArgs = field(default_factory=lambda: BackendArgs(backend="api", model=DEFAULT_TEACHER))
    synth: SynthesizeConfig = field(default_factory=SynthesizeConfig)
    api: ApiArgs = field(default_factory=ApiArgs)
    cost: CostArgs = field(default_factory=CostArgs)
    cache: CacheArgs = field(default_factory=CacheArgs)
