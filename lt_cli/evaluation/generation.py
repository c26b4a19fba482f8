"""The generation driver: few-shot prompts -> backend samples -> graded answers -> metrics.

Prompt-length policy (never a silent cut). The prompt budget is ``context - max_new_tokens``
(and at most ``--max-prompt-tokens`` when given). A prompt with all exemplars that does not fit
loses exemplars from the END of the list, one at a time, until it fits; such prompts are counted
(``n_prompts_fewer_shots``, ``n_exemplars_dropped``). A problem whose zero-shot prompt still does
not fit is not generated at all: it is graded as wrong with an empty output and counted
(``n_prompts_skipped``). The problem text itself is never truncated. When no tokenizer is
available to count tokens (``prompt_check: false``), prompts are sent whole and the backend's own
limits apply.

Raw variant: the four special tokens are banned when the backend's SamplingParams can express it;
otherwise they are added as stop strings, so a raw model that emits one stops there (reported as
``special_tokens: "stop"`` instead of ``"banned"``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import formats
from ..errors import RecordError, UsageError
from ..seeding import derive_seed
from .graders import GradeResult, Grader, get_grader
from .results import print_table, summarize, write_sample_log  # noqa: F401 (re-exported)

Record = dict[str, Any]


class PromptedTask(Protocol):
    """A few-shot generation task as this driver uses it: what it builds prompts with, checks
    records by, stops on and grades with. ``taskfile.GenerationTask`` is one; declared here, so the
    driver needs nothing from the task-file module, whose tasks call :func:`run_generation_task`."""

    name: str
    grader: str
    data: dict

    def check_record(self, record: Record) -> None: ...

    def max_shots(self, latent: bool) -> int: ...

    def default_shots(self, latent: bool) -> int: ...

    def build_prompt(self, record: Record, latent: bool, n_shots: int | None = None) -> str: ...

    def stop_strings(self, latent: bool) -> list[str]: ...


@dataclass
class FittedPrompt:
    text: str | None  # None: too long even without exemplars (skipped)
    n_shots: int
    n_tokens: int | None


@dataclass
class ProblemResult:
    index: int
    record: Record
    gold: Any
    prompt: str | None
    n_shots: int | None
    outputs: list[str]
    finish_reasons: list[str | None]
    grades: list[GradeResult] = field(default_factory=list)


def fit_prompt(task: PromptedTask, record: Record, latent: bool, max_shots: int, budget: int | None, count_tokens) -> FittedPrompt:
    """The longest prompt (most exemplars, file order) within ``budget`` tokens; see module docs."""
    n_tokens = None
    for n_shots in range(max_shots, -1, -1):
        text = task.build_prompt(record, latent, n_shots)
        if budget is None or count_tokens is None:
            return FittedPrompt(text, n_shots, None)
        n_tokens = count_tokens(text)
        if n_tokens <= budget:
            return FittedPrompt(text, n_shots, n_tokens)
    return FittedPrompt(None, 0, n_tokens)


#: ``--variant`` values
VARIANTS = ("auto", "latent", "raw")


def resolve_variant(requested: str, has_latent_tokens: bool | None, trained_variant: str | None = None) -> str:
    """``latent``/``raw`` as asked. ``auto``: the variant the checkpoint was trained for when lt
    trained it (``trained_variant``, from its training layout: :mod:`.provenance`), else latent
    exactly when the tokenizer has the 4 tokens."""
    if requested not in VARIANTS:
        raise UsageError(f"--variant must be latent, raw or auto, got {requested!r}")
    if requested != "auto":
        return requested
    if trained_variant in ("latent", "raw"):
        return trained_variant
    return "latent" if has_latent_tokens else "raw"


def variant_source(requested: str, trained) -> str:
    """What decided the variant (reported as ``variant_source``)."""
    if requested != "auto":
        return "requested"
    if trained.variant is not None:
        return f"{trained.source} (layout {trained.layout})"
    return "tokenizer"


def _problem_id(record: Record, index: int) -> str:
    return str(record.get("id", index))


def _record_validator(task: PromptedTask, grader: Grader, *, need_inputs: bool, need_output: bool):
    def validate(record: Record) -> None:
        if need_inputs:
            task.check_record(record)
        grader.check(record)
        if need_output:
            output, outputs = record.get("output"), record.get("outputs")
            if isinstance(output, str):
                return
            if isinstance(outputs, list) and outputs and all(isinstance(o, str) for o in outputs):
                return
            raise ValueError("missing field 'output' (string) or 'outputs' (list of strings)")

    return validate


def _sampling_params(config, stops: list[str], ban_special: bool):
    from ..backends.base import SamplingParams

    names = {f.name for f in dataclasses.fields(SamplingParams)}
    kwargs: dict[str, Any] = dict(
        n=config.samples,
        temperature=config.temperature,
        top_p=config.top_p,
        max_new_tokens=config.max_new_tokens,
    )
    mode = "none"
    if ban_special:
        for name in ("bad_words", "banned_strings", "ban_strings"):
            if name in names:
                kwargs[name] = tuple(formats.SPECIAL_TOKENS)
                mode = "banned"
                break
        else:
            stops = stops + [t for t in formats.SPECIAL_TOKENS if t not in stops]
            mode = "stop"
    kwargs["stop"] = tuple(stops)
    return SamplingParams(**kwargs), mode


def open_backend(config):
    from ..backends import load_backend
    from ..backends.base import BackendConfig

    backend_config = BackendConfig(
        model=config.model,
        dtype=config.dtype,
        device=config.device,
        max_model_len=config.max_model_len,
        batch_size=config.batch_size,
        options=dict(config.backend_options),
    )
    return load_backend(config.backend, backend_config)


def _grade_problem(grader: Grader, result: ProblemResult, latent: bool) -> None:
    result.grades = [grader.grade(output, result.gold, latent=latent) for output in result.outputs]


def _gold(grader: Grader, record: Record, source: str, index: int) -> Any:
    try:
        return grader.gold(record)
    except ValueError as exc:
        raise RecordError(source, index + 1, str(exc)) from None


def generate_results(task: PromptedTask, grader: Grader, records: list[Record], source: str, config, backend=None,
                     *, keep_long_prompts: bool = False) -> tuple[list[ProblemResult], dict]:
    """Run the model on every problem; returns the graded results and the prompt/generation report.

    ``backend``: an already loaded Backend (left open); None loads ``config.model`` and closes it.
    ``keep_long_prompts``: the prompt budget leaves ``min(max_new_tokens, context / 4)`` tokens
    for generation instead of ``max_new_tokens`` (the room the backends keep), so longer prompts
    are kept and their generations stop at the end of the context (``lt finetune-eval``, as the
    reference's vLLM sampling does).
    """
    from ..console import log, progress

    if config.samples < 1:
        raise UsageError("--samples must be at least 1")
    if config.samples > 1 and config.temperature <= 0:
        raise UsageError("--samples N > 1 needs --temperature > 0 (temperature 0 is greedy: every sample would be the same)")
    if not config.model and backend is None:
        raise UsageError("--model is required (or pass --grade PREDICTIONS.jsonl to grade existing outputs)")
    from .modelinfo import model_info
    from .provenance import trained_for

    owned = backend is None
    if owned:
        backend = open_backend(config)
    try:
        info = model_info(backend, config.model, max_model_len=config.max_model_len)
        trained = trained_for(config.model or getattr(backend, "model_id", None))
        variant = resolve_variant(config.variant, info.has_latent_tokens, trained.variant)
        latent = variant == "latent"
        if latent and info.has_latent_tokens is False:
            from ..console import warn

            warn("--variant latent, but the tokenizer lacks the four special tokens: they are encoded as ordinary text")
        available = task.max_shots(latent)
        max_shots = task.default_shots(latent) if config.num_fewshot is None else min(config.num_fewshot, available)
        if config.num_fewshot is not None and config.num_fewshot > available:
            raise UsageError(f"--num-fewshot {config.num_fewshot}: task {task.name} has only {available} {variant} exemplars")
        budget = None
        if info.context_length is not None and info.count_tokens is not None:
            room = min(config.max_new_tokens, info.context_length // 4) if keep_long_prompts else config.max_new_tokens
            budget = info.context_length - room
            if budget <= 0:
                raise UsageError(f"--max-new-tokens {config.max_new_tokens} leaves no room for a prompt in a {info.context_length}-token context")
        if config.max_prompt_tokens is not None:
            budget = config.max_prompt_tokens if budget is None else min(budget, config.max_prompt_tokens)
        if info.count_tokens is None:
            budget = None

        results: list[ProblemResult] = []
        fitted: list[FittedPrompt] = []
        for index, record in enumerate(records):
            prompt = fit_prompt(task, record, latent, max_shots, budget, info.count_tokens)
            fitted.append(prompt)
            results.append(
                ProblemResult(index, record, _gold(grader, record, source, index), prompt.text, prompt.n_shots if prompt.text is not None else None, [], [])
            )

        params, special_mode = _sampling_params(config, task.stop_strings(latent), ban_special=not latent)
        todo = [r for r in results if r.prompt is not None]
        log(f"eval {task.name} ({variant}): {len(records)} problems from {source}, {max_shots}-shot, "
            f"{config.samples} sample(s) each, temperature {config.temperature:g}")
        n_length = 0
        n_output_tokens = 0
        with progress(f"eval {task.name}", total=len(todo), unit="problems", token_unit="output tokens") as bar:
            step = max(1, config.batch_size)
            for start in range(0, len(todo), step):
                batch = todo[start:start + step]
                seeds = [[derive_seed("eval", config.seed, task.name, _problem_id(r.record, r.index), j) for j in range(config.samples)] for r in batch]
                samples = backend.sample([r.prompt for r in batch], params, seeds)
                batch_tokens = 0
                for result, problem_samples in zip(batch, samples):
                    result.outputs = [s.text for s in problem_samples]
                    result.finish_reasons = [s.finish_reason for s in problem_samples]
                    n_length += sum(1 for s in problem_samples if not s.finished)
                    batch_tokens += sum(len(s.token_ids) for s in problem_samples)
                    _grade_problem(grader, result, latent)
                n_output_tokens += batch_tokens
                bar.advance(len(batch), tokens=batch_tokens)
    finally:
        if owned:
            backend.close()
    for result in results:
        if result.prompt is None:
            result.outputs = [""] * config.samples
            result.finish_reasons = [None] * config.samples
            _grade_problem(grader, result, latent)

    prompt_tokens = [f.n_tokens for f in fitted if f.text is not None and f.n_tokens is not None]
    report = {
        "variant": variant,
        "model": config.model or getattr(backend, "model_id", None),
        "backend": config.backend if owned else getattr(backend, "name", type(backend).__name__),
        "variant_source": variant_source(config.variant, trained),
        "tokenizer_has_latent_tokens": info.has_latent_tokens,
        "prompts": {
            "prompt_check": budget is not None,
            "context_length": info.context_length,
            "prompt_token_budget": budget,
            "n_shots": max_shots,
            "n_prompts_fewer_shots": sum(1 for f in fitted if f.text is not None and f.n_shots < max_shots),
            "n_exemplars_dropped": sum(max_shots - f.n_shots for f in fitted if f.text is not None),
            "n_prompts_skipped": sum(1 for f in fitted if f.text is None),
            "max_prompt_tokens_seen": max(prompt_tokens) if prompt_tokens else None,
            "mean_prompt_tokens": (sum(prompt_tokens) / len(prompt_tokens)) if prompt_tokens else None,
        },
        "generation": {
            "samples": config.samples,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "max_new_tokens": config.max_new_tokens,
            "stops": list(params.stop),
            "special_tokens": special_mode,
            "n_hit_max_new_tokens": n_length,
            "mean_output_tokens": n_output_tokens / max(1, sum(len(r.outputs) for r in results if r.prompt is not None)),
        },
    }
    return results, report


def predictions_results(task: PromptedTask, grader: Grader, config) -> tuple[list[ProblemResult], dict]:
    """Grade an existing predictions file: one record per problem (``outputs`` list or ``output``),
    or one record per sample (``output`` + ``sample``, grouped by ``index``/``id``)."""
    from .data import read_jsonl

    validate = _record_validator(task, grader, need_inputs=False, need_output=True)
    records = read_jsonl(config.grade, None, validate)
    if config.limit is not None:
        records = records[: config.limit] if not any("sample" in r for r in records) else records
    if not records:
        raise UsageError(f"{config.grade}: no predictions to grade")
    variant = config.variant
    if variant == "auto":
        latent_hint = any(r.get("variant") == "latent" for r in records) or any(
            formats.contains_special_token(o) for r in records for o in ([r["output"]] if isinstance(r.get("output"), str) else r["outputs"])
        )
        variant = "latent" if latent_hint else "raw"
    resolve_variant(variant, None)
    latent = variant == "latent"

    groups: list[list[tuple[int, Record]]] = []
    last_key: object = object()
    for line_index, record in enumerate(records):
        key = (record.get("index"), record.get("id")) if "sample" in record else object()
        if groups and key == last_key:
            groups[-1].append((line_index, record))
        else:
            groups.append([(line_index, record)])
        last_key = key
    if config.limit is not None:
        groups = groups[: config.limit]
    results = []
    for group_index, group in enumerate(groups):
        line_index, first = group[0]
        outputs: list[str] = []
        for _, record in group:
            outputs.extend([record["output"]] if isinstance(record.get("output"), str) else record["outputs"])
        gold = _gold(grader, first, config.grade, line_index)
        result = ProblemResult(group_index, first, gold, first.get("prompt"), first.get("n_shots"), outputs, [r.get("finish_reason") for _, r in group])
        _grade_problem(grader, result, latent)
        results.append(result)
    report = {"variant": variant, "graded_file": config.grade}
    return results, report


def run_generation_task(task: PromptedTask, config, backend=None) -> dict:
    """Generate (or read) outputs for a generation task, grade them and return the metrics."""
    grader = get_grader(task.grader)
    if config.grade:
        results, report = predictions_results(task, grader, config)
    else:
        from .data import load_task_records

        validate = _record_validator(task, grader, need_inputs=True, need_output=False)
        records, source = load_task_records(task.data, config, validate)
        if not records:
            raise UsageError("no problems to evaluate (empty data or --limit 0)")
        results, report = generate_results(task, grader, records, source, config, backend)
    latent = report["variant"] == "latent"
    metrics = summarize(task, grader, results, latent)
    metrics.update(report)
    if config.log_samples:
        write_sample_log(config.log_samples, grader, results, latent, report["variant"])
    print_table(metrics)
    return metrics
