"""``lt finetune-eval``: fine-tune a checkpoint on a task's training set, then sample answers.

Why: few-shot accuracy of a 1B model moves by points between neighbouring checkpoints; the
reference README recommends this evaluation instead (``apps/main/finetune.py``,
``configs/finetune/{gsm8k,math}_finetune_vllm.yaml``): supervised fine-tuning with the loss on the
completion only, then several sampled answers per test problem and the mean accuracy.

Per seed (the reference runs seeds 42-46): ``lt_cli.training.train`` fine-tunes ``model`` on the
records of :mod:`.finetune_data` (layout ``completion``, ``loss_on="observed"``), with the
reference's settings: 5 epochs, lr 1e-4, 5% linear warmup then cosine to 0, weight decay 0,
AdamW (0.9, 0.95), 64 examples per step. Then the generation driver samples ``samples`` answers
per test problem (16 GSM8K, 4 MATH; T=0.6, top-p 0.9, at most 1,600 new tokens, zero-shot, the
fine-tuning prompt) and the task's grader grades them.

Differences (docs/eval.md): lt packs examples into ``seq_len`` windows (no per-example padding or
attention mask), so "64 examples per step" becomes ``round(64 x mean example tokens / seq_len)``
windows; no top-k 50 (lt's backends have top-p only); GSM8K is graded by lt's number grader.

Output folder: ``finetune_config.json``, ``sft_train.jsonl`` (the fine-tuning records),
``seed-S/samples.jsonl`` (every generation, graded), ``seed-S/metrics.json``, ``seed-S/model/``
(the fine-tuned model; deleted after its evaluation unless ``keep_models``) and ``metrics.json``.
A rerun skips seeds that have ``metrics.json`` and resumes interrupted fine-tuning.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..flags import flag

Record = dict[str, Any]


@dataclass
class FinetuneConfig:
    """One fine-tuning evaluation (saved as ``OUTPUT/finetune_config.json``)."""

    model: str
    output: str
    task: str = "gsm8k"
    task_file: str | None = None
    #: training problems: a JSONL file, or a folder holding train.jsonl
    train_data: str | None = None
    #: test problems: a JSONL file, or a folder holding SPLIT.jsonl (default split: test)
    data: str | None = None
    split: str | None = None
    limit: int | None = None
    train_limit: int | None = None
    variant: str = "auto"
    seeds: tuple[int, ...] = field(default=(42,), metadata=flag(csv=True))
    # fine-tuning (reference: configs/finetune/*.yaml)
    epochs: float = 5.0
    lr: float = 1e-4
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    examples_per_step: int = 64
    seq_len: int = 2048
    micro_batch_size: int | None = None
    # sampling
    #: answers per test problem (None: the task file's finetune.samples: 16 GSM8K, 4 MATH)
    samples: int | None = None
    temperature: float = 0.6
    top_p: float = 0.9
    max_new_tokens: int = 1600
    # backends
    backend: str = "transformers"
    batch_size: int = 16
    dtype: str = "auto"
    device: str = "auto"
    max_model_len: int | None = None
    keep_models: bool = False
    backend_options: dict = field(default_factory=dict, metadata=flag(enabled=False))

    def validate(self) -> None:
        if not self.train_data:
            raise UsageError("--train-data is required (the task's training problems, JSONL)")
        if not self.data:
            raise UsageError("--data is required (the test problems, JSONL or a folder with test.jsonl)")
        if not self.seeds:
            raise UsageError("--seeds needs at least one seed")
        for name in ("epochs", "lr", "examples_per_step", "seq_len", "max_new_tokens"):
            if not getattr(self, name) > 0:
                raise UsageError(f"--{name.replace('_', '-')} must be > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise UsageError("--warmup-ratio must be in [0, 1)")
        if self.samples is not None and self.samples < 1:
            raise UsageError("--samples must be at least 1")
        from ..estep.config import MAX_K

        if self.samples is not None and self.samples > MAX_K:
            raise UsageError(f"--samples {self.samples} is more answers per problem than lt holds in memory at once (at most {MAX_K})")
        if self.temperature <= 0 and (self.samples or 2) > 1:
            raise UsageError("several samples per problem need --temperature > 0")
        for name in ("limit", "train_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1")


def _finetuned_task(task):
    """The task as the fine-tuned model is prompted: zero-shot, the fine-tuning prompt, no stops."""
    from .finetune_data import finetune_prompt
    from .taskfile import GenerationTask

    class FinetunedTask(GenerationTask):
        def question_prompt(self, record, latent):
            return finetune_prompt(self, record, latent)

        def stop_strings(self, latent):
            return []

    return FinetunedTask(**{f.name: getattr(task, f.name) for f in dataclasses.fields(GenerationTask)} | {"exemplars": [], "latent_exemplars": []})


def _resolve_variant(config: FinetuneConfig) -> tuple[str, str]:
    from .generation import resolve_variant, variant_source
    from .modelinfo import _load_hf_tokenizer, tokenizer_has_latent_tokens
    from .provenance import trained_for

    trained = trained_for(config.model)
    tokenizer = _load_hf_tokenizer(config.model) if config.variant == "auto" and trained.variant is None else None
    has_tokens = tokenizer_has_latent_tokens(tokenizer) if tokenizer is not None else None
    return resolve_variant(config.variant, has_tokens, trained.variant), variant_source(config.variant, trained)


def _example_tokens(model: str, records: list[Record]) -> list[int]:
    """Tokens each fine-tuning example occupies in the training stream (BOS + text + EOS)."""
    from tokenizers import AddedToken

    from ..models import load_tokenizer, missing_latent_tokens

    tokenizer = load_tokenizer(model)
    missing = missing_latent_tokens(tokenizer)
    if missing:  # lt train adds them before tokenizing; count the same way
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    texts = [r["prompt"] + r["completion"] for r in records]
    extra = 1 + (tokenizer.bos_token_id is not None)
    return [len(ids) + extra for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _schedule(config: FinetuneConfig, example_tokens: list[int]) -> dict[str, Any]:
    """Windows per step, steps and warmup steps that match the reference's 64 examples per step."""
    mean_tokens = sum(example_tokens) / len(example_tokens)
    batch_windows = max(1, round(config.examples_per_step * mean_tokens / config.seq_len))
    if config.micro_batch_size:
        batch_windows = max(config.micro_batch_size, batch_windows - batch_windows % config.micro_batch_size)
    steps = max(1, int(config.epochs * sum(example_tokens) // (batch_windows * config.seq_len)))
    return {
        "n_train_examples": len(example_tokens),
        "mean_example_tokens": mean_tokens,
        "batch_windows": batch_windows,
        "seq_len": config.seq_len,
        "steps": steps,
        "warmup_steps": math.ceil(config.warmup_ratio * steps),
        "epochs": config.epochs,
    }


def _train_seed(config: FinetuneConfig, sft_path: Path, schedule: dict, seed: int, out: Path):
    from ..training import TrainConfig, train

    return train(TrainConfig(
        output=str(out), data=[str(sft_path)], model=config.model, layout="completion", loss_on="observed",
        seq_len=config.seq_len, batch_size=schedule["batch_windows"], micro_batch_size=config.micro_batch_size,
        steps=schedule["steps"], lr=config.lr, min_lr_ratio=0.0, warmup_steps=schedule["warmup_steps"],
        weight_decay=config.weight_decay, seed=seed, dtype=config.dtype, device=config.device, log_every=10,
    ))


def _evaluate_seed(config: FinetuneConfig, task, grader, records, source: str, variant: str, samples: int, seed: int, model_dir: Path, seed_dir: Path) -> dict:
    from .config import EvalConfig
    from .generation import generate_results, summarize, write_sample_log
    from .metrics import accuracy_spread

    eval_config = EvalConfig(
        task=task.name, model=str(model_dir), backend=config.backend, variant=variant, seed=seed, samples=samples,
        temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens, num_fewshot=0,
        batch_size=config.batch_size, dtype=config.dtype, device=config.device, max_model_len=config.max_model_len,
        backend_options=dict(config.backend_options),
    )
    results, report = generate_results(task, grader, records, source, eval_config, keep_long_prompts=True)
    latent = variant == "latent"
    summary = summarize(task, grader, results, latent)
    write_sample_log(str(seed_dir / "samples.jsonl"), grader, results, latent, variant)
    headline = summary["headline_metric"]
    spread = accuracy_spread([[g.correct[headline] for g in r.grades] for r in results])
    return {"seed": seed, **spread, "metrics": summary["metrics"], "sampling": summary.get("sampling"),
            "prompts": report["prompts"], "generation": report["generation"], "samples_file": str(seed_dir / "samples.jsonl")}


def _load_problems(config: FinetuneConfig, task, grader) -> tuple[list[Record], list[Record], str]:
    """(training problems, test problems, where the test problems came from)."""
    from .data import read_jsonl, resolve_data_path
    from .finetune_data import record_validator
    from .generation import _record_validator

    train_path = resolve_data_path(config.train_data, "train")
    train_records = read_jsonl(train_path, config.train_limit, record_validator(task, grader))
    if not train_records:
        raise UsageError(f"{train_path}: no training problems")
    test_path = resolve_data_path(config.data, config.split or "test")
    test_records = read_jsonl(test_path, config.limit, _record_validator(task, grader, need_inputs=True, need_output=False))
    if not test_records:
        raise UsageError(f"{test_path}: no test problems")
    return train_records, test_records, str(test_path)


#: settings that may change between a run and its rerun (they do not change the numbers)
RERUN_FREE_FIELDS = frozenset({"output", "keep_models", "batch_size", "device", "backend", "backend_options", "seeds"})


def _check_same_run(out: Path, config: FinetuneConfig) -> None:
    """Refuse to mix two different evaluations in one folder (finished seeds are reused)."""
    from ..files import read_json

    saved_path = out / "finetune_config.json"
    if not saved_path.exists():
        return
    saved = read_json(saved_path)
    current = asdict(config)
    for key, value in current.items():
        if key in RERUN_FREE_FIELDS:
            continue
        old = saved.get(key)
        if isinstance(value, tuple):
            value = list(value)
        if old != value:
            raise UsageError(f"{out} holds a different finetune-eval run ({key}: {old!r} there, {value!r} now); choose another --output")


def _print_table(metrics: dict) -> None:
    from rich.table import Table

    from ..console import err

    table = Table(title=f"finetune-eval {metrics['task']} ({metrics['variant']}, {metrics['samples_per_problem']} samples per problem)")
    table.add_column("seed")
    table.add_column("accuracy", justify="right")
    table.add_column("± stderr over problems", justify="right")
    table.add_column("std over draws", justify="right")
    table.add_column("final train loss", justify="right")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    for row in metrics["seeds"]:
        table.add_row(
            str(row["seed"]), fmt(row["accuracy"]), fmt(row["accuracy_stderr_over_problems"]), fmt(row["accuracy_std_over_sample_draws"]),
            fmt(row["train"]["final_loss"]),
        )
    table.add_row("mean", fmt(metrics["accuracy"]), fmt(metrics["accuracy_stderr_over_problems"]), fmt(metrics["accuracy_std_over_sample_draws"]), "")
    err.print(table)


def run_finetune_eval(config: FinetuneConfig) -> dict:
    """Fine-tune and evaluate for every seed; returns (and writes) the combined metrics."""
    import shutil

    from ..console import log
    from ..files import read_json, write_json
    from ..output import open_output
    from .finetune_data import finetune_record
    from .graders import get_grader
    from .metrics import STDERR_METHOD, mean_and_std
    from .registry import get_task
    from .taskfile import load_task_file

    config.validate()
    task = load_task_file(config.task_file) if config.task_file else get_task(config.task)
    if getattr(task, "kind", None) != "generation" or not task.finetune:
        raise UsageError(f"task {task.name!r} has no fine-tuning settings (a 'finetune' section in its task file)")
    grader = get_grader(task.grader)
    samples = config.samples or int(task.finetune.get("samples", 1))
    if samples > 1 and config.temperature <= 0:
        raise UsageError("several samples per problem need --temperature > 0")
    train_records, test_records, source = _load_problems(config, task, grader)
    variant, source_of_variant = _resolve_variant(config)
    latent = variant == "latent"
    out = Path(config.output)
    _check_same_run(out, config)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "finetune_config.json", asdict(config))
    sft_path = out / "sft_train.jsonl"
    sft_records = [finetune_record(task, grader, r, latent) for r in train_records]
    with open_output(sft_path) as writer:
        for record in sft_records:
            writer.write(record)
    schedule = _schedule(config, _example_tokens(config.model, sft_records))
    log(f"finetune-eval {task.name} ({variant}): {schedule['n_train_examples']} training examples, {schedule['steps']} steps x "
        f"{schedule['batch_windows']} windows of {config.seq_len} tokens; {len(test_records)} test problems x {samples} samples")
    ft_task = _finetuned_task(task)
    per_seed = []
    for seed in config.seeds:
        seed_dir = out / f"seed-{seed}"
        done = seed_dir / "metrics.json"
        if done.exists():
            log(f"seed {seed}: already evaluated ({done})")
            per_seed.append(read_json(done))
            continue
        model_dir = seed_dir / "model"
        result = _train_seed(config, sft_path, schedule, seed, model_dir)
        row = _evaluate_seed(config, ft_task, grader, test_records, source, variant, samples, seed, model_dir, seed_dir)
        row["train"] = {"steps": result.steps, "final_loss": result.final_loss, "tokens_seen": result.tokens_seen, "elapsed_s": result.elapsed_s}
        write_json(done, row)
        if not config.keep_models:
            shutil.rmtree(model_dir, ignore_errors=True)
        per_seed.append(row)
    accuracy, std_seeds = mean_and_std([row["accuracy"] for row in per_seed])
    draws = [row["accuracy_std_over_sample_draws"] for row in per_seed if row["accuracy_std_over_sample_draws"] is not None]
    stderr = [row["accuracy_stderr_over_problems"] for row in per_seed if row["accuracy_stderr_over_problems"] is not None]
    metrics = {
        "task": task.name,
        "task_version": task.version,
        "model": config.model,
        "variant": variant,
        "variant_source": source_of_variant,
        "headline_metric": grader.metrics(latent)[0],
        "accuracy": accuracy,
        "accuracy_std_over_seeds": std_seeds,
        "accuracy_std_over_sample_draws": sum(draws) / len(draws) if draws else None,
        "accuracy_stderr_over_problems": sum(stderr) / len(stderr) if stderr else None,
        "stderr_method": STDERR_METHOD + " (per seed, then the mean over seeds)",
        "n_seeds": len(per_seed),
        "n_problems": len(test_records),
        "samples_per_problem": samples,
        "data": source,
        "finetune": schedule | {"lr": config.lr, "warmup_ratio": config.warmup_ratio, "weight_decay": config.weight_decay,
                                "examples_per_step": config.examples_per_step, "sft_data": str(sft_path)},
        "seeds": per_seed,
        "config": asdict(config),
    }
    write_json(out / "metrics.json", metrics)
    _print_table(metrics)
    return metrics
