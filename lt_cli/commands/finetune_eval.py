"""`lt finetune-eval`: fine-tune on a task's training set, sample answers, report mean +- spread."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import run_command

HELP = "Fine-tuning evaluation: SFT on GSM8K/MATH train, then several sampled answers per test problem."
EXAMPLES = """\
lt finetune-eval --model ckpt/ --task gsm8k --train-data gsm8k/ --data gsm8k/ --output ft-gsm8k/
lt finetune-eval --model ckpt/ --task math --train-data math_train.jsonl --data math_test.jsonl --output ft-math/ --seeds 42,43,44,45,46
lt finetune-eval --model ckpt/ --task gsm8k --train-data gsm8k/ --data gsm8k/ --output ft/ --train-limit 500 --limit 50 --samples 4
"""
DETAILS = """Defaults are the reference's fine-tuning evaluation: 5 epochs, lr 1e-4 (5% warmup, cosine to 0),
weight decay 0, 64 examples per step, loss on the completion only; then T=0.6, top-p 0.9, up to
1600 new tokens, 16 samples per GSM8K problem and 4 per MATH problem. Metrics (mean accuracy and
its spread) go to stdout as JSON and to OUTPUT/metrics.json; every generation to
OUTPUT/seed-S/samples.jsonl. Rerunning resumes. See docs/eval.md."""
NO_ARGS_IS_HELP = True


def _seeds(text: str) -> tuple[int, ...]:
    from ..errors import UsageError

    try:
        seeds = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds has a repeated seed: {text!r}")
    return seeds


@run_command
def command(
    model: Annotated[str, typer.Option("--model", "-m", help="The checkpoint to evaluate (folder or hub id).", show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="Run folder: metrics.json, sft_train.jsonl, seed-S/samples.jsonl.", show_default=False)],
    train_data: Annotated[str, typer.Option("--train-data", help="Training problems JSONL, or a folder with train.jsonl.", show_default=False)],
    data: Annotated[str, typer.Option("--data", help="Test problems JSONL, or a folder with SPLIT.jsonl (default split: test).", show_default=False)],
    task: Annotated[str, typer.Option("--task", "-t", help="gsm8k or math (or a task file with a 'finetune' section).")] = "gsm8k",
    task_file: Annotated[Optional[str], typer.Option("--task-file", help="Your own task file (JSON) with a 'finetune' section.", show_default=False)] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Test split when --data is a folder (default test).", show_default=False)] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N test problems.", show_default=False)] = None,
    train_limit: Annotated[Optional[int], typer.Option("--train-limit", help="Only the first N training problems.", show_default=False)] = None,
    variant: Annotated[str, typer.Option(
        help="latent (prompt ends <SoL><PRIOR>, <EoL> before the stated answer), raw (prompt ends <SoL>), auto (from the training layout, else the tokenizer).",
    )] = "auto",
    seeds: Annotated[str, typer.Option(
        "--seeds", help="Fine-tuning seeds, comma-separated (reference: 42,43,44,45,46); the spread over seeds is reported.",
    )] = "42",
    epochs: Annotated[float, typer.Option("--epochs")] = 5.0,
    lr: Annotated[float, typer.Option("--lr")] = 1e-4,
    warmup_ratio: Annotated[float, typer.Option("--warmup-ratio", help="Linear warmup as a fraction of the steps; then cosine to 0.")] = 0.05,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 0.0,
    examples_per_step: Annotated[int, typer.Option(
        "--examples-per-step", help="Fine-tuning examples per optimizer step (packed into --seq-len windows).",
    )] = 64,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Training window in tokens.")] = 2048,
    micro_batch_size: Annotated[Optional[int], typer.Option(
        "--micro-batch-size", help="Windows per forward pass (the rest is gradient accumulation).", show_default=False,
    )] = None,
    samples: Annotated[Optional[int], typer.Option("--samples", help="Answers per test problem (default: 16 GSM8K, 4 MATH).", show_default=False)] = None,
    temperature: Annotated[float, typer.Option("--temperature")] = 0.6,
    top_p: Annotated[float, typer.Option("--top-p")] = 0.9,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 1600,
    keep_models: Annotated[bool, typer.Option("--keep-models", help="Keep each seed's fine-tuned model (OUTPUT/seed-S/model).")] = False,
    backend: Annotated[str, typer.Option("--backend", help="Sampling backend: transformers (hf) or vllm.")] = "transformers",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts per sampling call.")] = 16,
    dtype: Annotated[str, typer.Option("--dtype")] = "auto",
    device: Annotated[str, typer.Option("--device")] = "auto",
    max_model_len: Annotated[Optional[int], typer.Option(
        "--max-model-len", help="Context length for sampling (default: the model's).", show_default=False,
    )] = None,
) -> int:
    flags = dict(locals())
    from ..console import require_stdout
    from ..io import write_stdout_json
    from ..runners import run

    require_stdout("the metrics (JSON)")
    write_stdout_json(run("finetune-eval", config_from_flags(flags)))
    return 0


def config_from_flags(flags: dict):
    """The command's parameters -> its :class:`~lt_cli.evaluation.finetune.FinetuneConfig`."""
    from ..evaluation.finetune import FinetuneConfig
    from ..flags import build

    return build(FinetuneConfig, {**flags, "seeds": _seeds(flags["seeds"])})
