"""`lt eval`: few-shot GSM8K/MATH/MMLU-STEM accuracy, held-out NLL and ELBO, or grading of saved outputs."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import (
    BACKENDS, BACKEND_DTYPES, ConfigOpt, DEVICES, PrintConfigOpt, ReportToOpt, RunNameOpt, TASKS, TrackingDirOpt, VARIANTS, WandbEntityOpt,
    WandbProjectOpt, resolve, run_command, tracking_flags,
)

HELP = "Evaluate a model: GSM8K/MATH/MMLU-STEM few-shot accuracy (latent or raw prompts), NLL, ELBO_n."
EXAMPLES = """\
lt eval --model ckpt/ --task gsm8k --limit 50 --log-samples gsm8k.samples.jsonl
lt eval --model ckpt/ --task math --data math_test.jsonl --variant latent -o math.json
lt eval --model ckpt/ --task gsm8k --samples 8 --temperature 0.6     # maj@k, pass@k
lt eval --model ckpt/ --task mmlu_stem_cot_synthetic --limit 200       # MMLU-STEM CoT (also mmlu_stem_cot_flan)
lt eval --task gsm8k --grade gsm8k.samples.jsonl                      # regrade, no model
lt eval --model ckpt/ --task elbo --data val.jsonl --limit 100        # ELBO_1,2,4 per token
lt eval --model ckpt/ --task elbo --data val.jsonl --reference-quirks  # the paper's elbo_4_per_token
lt eval --model ckpt/ --task-file my_task.json --data my_problems.jsonl
lt eval --task gsm8k --data test.jsonl --export-lm-eval lt_tasks/    # lm-eval YAMLs, same prompts
"""
DETAILS = """Metrics go to stdout as one JSON object (or -o FILE); a table goes to stderr. Generation tasks
report a top-level "accuracy" (GSM8K: flexible = last number; MATH: math-verify; MMLU: flexible = last
"(X)"). See docs/eval.md."""


@run_command
def command(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Model folder or hub id (not needed with --grade).", show_default=False, rich_help_panel="Model and backend", metavar="MODEL",
    )] = None,
    task: Annotated[str, typer.Option(
        "--task", "-t", help="gsm8k, math, mmlu_stem_cot_synthetic, mmlu_stem_cot_flan, nll, elbo, or a task file (.json).",
        rich_help_panel="Task", autocompletion=TASKS,
    )] = "gsm8k",
    task_file: Annotated[Optional[str], typer.Option(
        "--task-file", help="Your own task file (JSON; see docs/eval.md).", show_default=False, rich_help_panel="Task", metavar="FILE",
    )] = None,
    variant: Annotated[str, typer.Option(
        help="latent: prompt ends with <SoL><PRIOR>; raw: plain few-shot; "
        "auto: from the training layout of an lt checkpoint (train_config.json), else latent when the tokenizer has the 4 special tokens.",
        rich_help_panel="Task", autocompletion=VARIANTS,
    )] = "auto",
    data: Annotated[Optional[str], typer.Option(
        "--data", help="Problems or documents JSONL (or a folder with SPLIT.jsonl); default: the task's Hugging Face dataset.",
        show_default=False, rich_help_panel="Task", metavar="FILE",
    )] = None,
    split: Annotated[Optional[str], typer.Option(
        "--split", help="Dataset split (default: the task's, usually test).", show_default=False, rich_help_panel="Task",
    )] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N problems/documents.", show_default=False, rich_help_panel="Task")] = None,
    samples: Annotated[int, typer.Option(
        "--samples", help="Generations per problem; > 1 reports maj@k and pass@k (needs --temperature > 0).", rich_help_panel="Generation",
    )] = 1,
    temperature: Annotated[float, typer.Option("--temperature", help="0 is greedy.", rich_help_panel="Generation")] = 0.0,
    top_p: Annotated[float, typer.Option("--top-p", rich_help_panel="Generation")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(
        "--max-new-tokens", help="Generated tokens per answer (reference: 1024).", rich_help_panel="Generation",
    )] = 1024,
    max_prompt_tokens: Annotated[Optional[int], typer.Option(
        "--max-prompt-tokens", help="Cap on prompt tokens (reference setup: 1024); exemplars are dropped to fit, never cut.",
        show_default=False, rich_help_panel="Generation",
    )] = None,
    num_fewshot: Annotated[Optional[int], typer.Option(
        "--num-fewshot", help="Exemplars to use (default: the task file's: 8 GSM8K, 4 MATH, 4 MMLU).", show_default=False, rich_help_panel="Task",
    )] = None,
    grade: Annotated[Optional[str], typer.Option(
        "--grade", help="Grade this predictions JSONL (field 'output' + the problem's fields) without a model.",
        show_default=False, rich_help_panel="Task", metavar="FILE",
    )] = None,
    log_samples: Annotated[Optional[str], typer.Option(
        "--log-samples", help="Write per-sample JSONL (prompt, output, extracted, gold, correct).",
        show_default=False, rich_help_panel="Output", metavar="FILE",
    )] = None,
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", help="Write the metrics JSON here (and the config next to it) instead of stdout.",
        show_default=False, rich_help_panel="Output", metavar="FILE",
    )] = None,
    backend: Annotated[str, typer.Option(
        "--backend", help="transformers (hf), vllm or api.", rich_help_panel="Model and backend", autocompletion=BACKENDS,
    )] = "transformers",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts per backend call.", rich_help_panel="Model and backend")] = 16,
    dtype: Annotated[str, typer.Option("--dtype", rich_help_panel="Model and backend", autocompletion=BACKEND_DTYPES)] = "auto",
    device: Annotated[str, typer.Option("--device", rich_help_panel="Model and backend", autocompletion=DEVICES)] = "auto",
    max_model_len: Annotated[Optional[int], typer.Option(
        "--max-model-len", help="Context length (default: the model's).", show_default=False, rich_help_panel="Model and backend",
    )] = None,
    elbo_n: Annotated[str, typer.Option(
        "--elbo-n", help="ELBO_n sample counts, comma-separated (K = the largest).", rich_help_panel="Likelihood (nll, elbo)",
    )] = "1,2,4",
    max_latent_tokens: Annotated[int, typer.Option(
        "--max-latent-tokens", help="ELBO: max tokens per sampled latent.", rich_help_panel="Likelihood (nll, elbo)",
    )] = 1024,
    elbo_avg_units: Annotated[int, typer.Option(
        "--elbo-avg-units", help="ELBO: mean sentences per uniform chunk (reference: 8).", rich_help_panel="Likelihood (nll, elbo)",
    )] = 8,
    max_doc_tokens: Annotated[Optional[int], typer.Option(
        "--max-doc-tokens",
        help="NLL/ELBO: keep the first N tokens of each document (default: context - 3, as the reference; 0: whole documents).",
        show_default=False, rich_help_panel="Likelihood (nll, elbo)",
    )] = None,
    reference_quirks: Annotated[bool, typer.Option(
        "--reference-quirks", help="ELBO: the reference's exact number (its E-step prompts and raw-token count).", rich_help_panel="Likelihood (nll, elbo)",
    )] = False,
    export_lm_eval: Annotated[Optional[str], typer.Option(
        "--export-lm-eval",
        help="Write lm-evaluation-harness task YAMLs for --task into this folder (no model; --variant auto writes both).",
        show_default=False, rich_help_panel="Task", metavar="DIR",
    )] = None,
    seed: Annotated[int, typer.Option("--seed", help="User seed; every draw derives from it and from what it is about.", rich_help_panel="Generation")] = 1234,
    report_to: ReportToOpt = None,
    wandb_project: WandbProjectOpt = None,
    wandb_entity: WandbEntityOpt = None,
    run_name: RunNameOpt = None,
    tracking_dir: TrackingDirOpt = None,
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
    output = config.output
    if not output or output == "-":
        require_stdout("the metrics (JSON)")  # before the model loads, not after the evaluation
    metrics = run("eval", config)
    if not output or output == "-":
        write_stdout_json(metrics)
    return 0


def config_from_flags(flags: dict):
    """The command's parameters -> its :class:`~lt_cli.evaluation.EvalConfig`."""
    from ..errors import UsageError
    from ..evaluation import EvalConfig
    from ..flags import build

    try:
        elbo_n = tuple(int(x) for x in str(flags["elbo_n"]).split(",") if x.strip())
    except ValueError:
        raise UsageError(f"--elbo-n must be comma-separated integers, got {flags['elbo_n']!r}") from None
    return build(EvalConfig, {**tracking_flags(flags), "elbo_n": elbo_n})
