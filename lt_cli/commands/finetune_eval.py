"""`lt finetune-eval`: fine-tune on a task's training set, sample answers, report mean +- spread."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import BACKENDS, BACKEND_DTYPES, ConfigOpt, DEVICES, FINETUNE_TASKS, PrintConfigOpt, VARIANTS, require, resolve, run_command

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
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="The checkpoint to evaluate (folder or hub id).", show_default=False, rich_help_panel="Task and data", metavar="MODEL",
    )] = None,
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", help="Run folder: metrics.json, sft_train.jsonl, seed-S/samples.jsonl.",
        show_default=False, rich_help_panel="Task and data", metavar="DIR",
    )] = None,
    train_data: Annotated[Optional[str], typer.Option(
        "--train-data", help="Training problems JSONL, or a folder with train.jsonl.", show_default=False, rich_help_panel="Task and data", metavar="FILE",
    )] = None,
    data: Annotated[Optional[str], typer.Option(
        "--data", help="Test problems JSONL, or a folder with SPLIT.jsonl (default split: test).",
        show_default=False, rich_help_panel="Task and data", metavar="FILE",
    )] = None,
    task: Annotated[str, typer.Option(
        "--task", "-t", help="gsm8k or math (or a task file with a 'finetune' section).", rich_help_panel="Task and data", autocompletion=FINETUNE_TASKS,
    )] = "gsm8k",
    task_file: Annotated[Optional[str], typer.Option(
        "--task-file", help="Your own task file (JSON) with a 'finetune' section.", show_default=False, rich_help_panel="Task and data", metavar="FILE",
    )] = None,
    split: Annotated[Optional[str], typer.Option(
        "--split", help="Test split when --data is a folder (default test).", show_default=False, rich_help_panel="Task and data",
    )] = None,
    limit: Annotated[Optional[int], typer.Option(
        "--limit", help="Only the first N test problems.", show_default=False, rich_help_panel="Task and data",
    )] = None,
    train_limit: Annotated[Optional[int], typer.Option(
        "--train-limit", help="Only the first N training problems.", show_default=False, rich_help_panel="Task and data",
    )] = None,
    variant: Annotated[str, typer.Option(
        help="latent (prompt ends <SoL><PRIOR>, <EoL> before the stated answer), raw (prompt ends <SoL>), auto (from the training layout, else the tokenizer).",
        rich_help_panel="Task and data", autocompletion=VARIANTS,
    )] = "auto",
    seeds: Annotated[str, typer.Option(
        "--seeds", help="Fine-tuning seeds, comma-separated (reference: 42,43,44,45,46); the spread over seeds is reported.", rich_help_panel="Fine-tuning",
    )] = "42",
    epochs: Annotated[float, typer.Option("--epochs", rich_help_panel="Fine-tuning")] = 5.0,
    lr: Annotated[float, typer.Option("--lr", rich_help_panel="Fine-tuning")] = 1e-4,
    warmup_ratio: Annotated[float, typer.Option(
        "--warmup-ratio", help="Linear warmup as a fraction of the steps; then cosine to 0.", rich_help_panel="Fine-tuning",
    )] = 0.05,
    weight_decay: Annotated[float, typer.Option("--weight-decay", rich_help_panel="Fine-tuning")] = 0.0,
    examples_per_step: Annotated[int, typer.Option(
        "--examples-per-step", help="Fine-tuning examples per optimizer step (packed into --seq-len windows).", rich_help_panel="Fine-tuning",
    )] = 64,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Training window in tokens.", rich_help_panel="Fine-tuning")] = 2048,
    micro_batch_size: Annotated[Optional[int], typer.Option(
        "--micro-batch-size", help="Windows per forward pass (the rest is gradient accumulation).", show_default=False, rich_help_panel="Fine-tuning",
    )] = None,
    samples: Annotated[Optional[int], typer.Option(
        "--samples", help="Answers per test problem (default: 16 GSM8K, 4 MATH).", show_default=False, rich_help_panel="Sampling",
    )] = None,
    temperature: Annotated[float, typer.Option("--temperature", rich_help_panel="Sampling")] = 0.6,
    top_p: Annotated[float, typer.Option("--top-p", rich_help_panel="Sampling")] = 0.9,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", rich_help_panel="Sampling")] = 1600,
    keep_models: Annotated[bool, typer.Option(
        "--keep-models", help="Keep each seed's fine-tuned model (OUTPUT/seed-S/model).", rich_help_panel="Fine-tuning",
    )] = False,
    backend: Annotated[str, typer.Option(
        "--backend", help="Sampling backend: transformers (hf) or vllm.", rich_help_panel="Backend", autocompletion=BACKENDS,
    )] = "transformers",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts per sampling call.", rich_help_panel="Backend")] = 16,
    dtype: Annotated[str, typer.Option("--dtype", rich_help_panel="Backend", autocompletion=BACKEND_DTYPES)] = "auto",
    device: Annotated[str, typer.Option("--device", rich_help_panel="Backend", autocompletion=DEVICES)] = "auto",
    max_model_len: Annotated[Optional[int], typer.Option(
        "--max-model-len", help="Context length for sampling (default: the model's).", show_default=False, rich_help_panel="Backend",
    )] = None,
    config_file: ConfigOpt = None,
    print_config: PrintConfigOpt = False,
) -> int:
    flags = dict(locals())
    from ..console import require_stdout
    from ..files import write_stdout_json
    from ..runners import run

    config = resolve(flags, config_from_flags)
    if config is None:
        return 0
    require(model=config.model, output=config.output, train_data=config.train_data, data=config.data)
    require_stdout("the metrics (JSON)")
    write_stdout_json(run("finetune-eval", config))
    return 0


def config_from_flags(flags: dict):
    """The command's parameters -> its :class:`~lt_cli.evaluation.finetune.FinetuneConfig`."""
    from ..evaluation.finetune import FinetuneConfig
    from ..flags import build

    return build(FinetuneConfig, {**flags, "seeds": _seeds(flags["seeds"])})
