"""`lt bootstrap`: warm start, then EM iterations (sample-thoughts, select, train, eval), resumable."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import (
    BACKENDS, ConfigOpt, FINETUNE_TASKS, LAYOUTS, PrintConfigOpt, ReportToOpt, RunNameOpt, STOP_RULES, TRAIN_DTYPES, TrackingDirOpt,
    WandbEntityOpt, WandbProjectOpt, one_of, parse_tokens, run_command,
)

HELP = "Run BoLT end to end (warm start + EM iterations) in a resumable run folder; no data = the CPU demo."
EXAMPLES = """\
lt bootstrap --iters 3                      # the embedded demo on a CPU (about 4 minutes)
lt bootstrap --iters 3 --sweep-k 1,4,8      # one EM run per K, one report comparing them (about 9)
lt bootstrap --iters 3 --sweep-k 1,4,8,adaptive   # plus adaptive E-step sampling (1, 2, 4, 8 per chunk)
lt bootstrap --iters 3 --dry-run            # print every command it would run
lt bootstrap --model M --data raw.jsonl --warm-data teacher.jsonl --iters 2 --k 4 --eval-task gsm8k --launcher torchrun
"""
DETAILS = """\
Rerun the same command after an interruption to resume at the first unfinished stage.
The run folder (--run-dir, default ./lt-runs/NAME) holds config.json, manifest.json, every
stage's JSONL, checkpoints and metrics, and report.md / report.json / report.png
(docs/bootstrap.md). --report-to tensorboard|wandb|jsonl logs every stage's statistics into one
tracker run (RUN/tracking/), each under its arm and iteration.
"""

Opt = typer.Option


def _arms(k: str | None, sweep_k: str | None) -> tuple[list[int] | None, bool | None]:
    """(fixed Ks, adaptive arm) from --k or --sweep-k; ``adaptive`` in either adds the adaptive arm."""
    from ..errors import UsageError

    if sweep_k and k is not None:
        raise UsageError("pass --k or --sweep-k, not both")
    spec = sweep_k if sweep_k else k
    if spec is None:
        return None, None
    name = "--sweep-k" if sweep_k else "--k"
    items = [v.strip() for v in spec.split(",") if v.strip()]
    if not items:
        raise UsageError(f"{name} is empty")
    if name == "--k" and len(items) > 1:
        raise UsageError("--k takes one K (or adaptive); use --sweep-k for several")
    adaptive = "adaptive" in items
    try:
        values = [int(v) for v in items if v != "adaptive"]
    except ValueError:
        raise UsageError(f"{name} must be comma-separated integers or adaptive, like 1,4,8,adaptive, got {spec!r}") from None
    if items.count("adaptive") > 1:
        raise UsageError("--sweep-k lists adaptive twice")
    return values, adaptive


@run_command
def command(
    ctx: typer.Context,
    iters: Annotated[int, Opt(help="EM iterations after the warm start.", rich_help_panel="EM loop")] = 3,
    k: Annotated[Optional[str], Opt(
        "--k", help="Posterior samples per chunk in the E-step (default 4), or adaptive.", show_default=False, rich_help_panel="EM loop",
    )] = None,
    sweep_k: Annotated[Optional[str], Opt(
        help="Comma-separated K values: one EM run each, sharing the warm start (e.g. 1,4,8); adaptive adds the adaptive arm.",
        show_default=False, rich_help_panel="EM loop",
    )] = None,
    adaptive_k: Annotated[Optional[int], Opt(
        help="Adaptive arm: samples per chunk in the first round (default 1).", show_default=False, rich_help_panel="EM loop",
    )] = None,
    k_max: Annotated[Optional[int], Opt(
        help="Adaptive arm: at most this many samples per chunk (default 8).", show_default=False, rich_help_panel="EM loop",
    )] = None,
    k_step: Annotated[Optional[int], Opt(
        help="Adaptive arm: samples added per later round (default: double).", show_default=False, rich_help_panel="EM loop",
    )] = None,
    stop_rule: Annotated[Optional[str], Opt(
        help="Adaptive arm: coverage (default), mass, repeat or ess.", show_default=False, rich_help_panel="EM loop", autocompletion=STOP_RULES,
    )] = None,
    stop_threshold: Annotated[Optional[float], Opt(
        help="Adaptive arm: the rule's threshold (default 0.1 coverage, 0.9 others).", show_default=False, rich_help_panel="EM loop",
    )] = None,
    model: Annotated[Optional[str], Opt(
        help="Base model every M-step starts from (hub id or folder).", show_default=False, rich_help_panel="Data and models", metavar="MODEL",
    )] = None,
    data: Annotated[Optional[str], Opt(
        help="Raw documents (JSONL) the E-step infers thoughts for.", show_default=False, rich_help_panel="Data and models", metavar="FILE",
    )] = None,
    warm_data: Annotated[Optional[list[str]], Opt(
        help="Teacher-thought documents for the warm start (repeatable, FILE[:WEIGHT]).",
        show_default=False, rich_help_panel="Data and models", metavar="FILE",
    )] = None,
    warm_model: Annotated[Optional[str], Opt(
        help="An already warm-started model: skip the warm-start training.", show_default=False, rich_help_panel="Data and models", metavar="MODEL",
    )] = None,
    synthesize: Annotated[Optional[str], Opt(
        help="Raw documents to give teacher thoughts first (lt synthesize), added to the warm-start data.",
        show_default=False, rich_help_panel="Data and models", metavar="FILE",
    )] = None,
    teacher_model: Annotated[Optional[str], Opt(help="Teacher model for --synthesize.", show_default=False, rich_help_panel="Data and models")] = None,
    teacher_backend: Annotated[Optional[str], Opt(
        help="Backend of the teacher (api, transformers, vllm).", show_default=False, rich_help_panel="Data and models", autocompletion=BACKENDS,
    )] = None,
    teacher_batch: Annotated[Optional[bool], Opt(
        "--teacher-batch/--no-teacher-batch", help="--synthesize through the OpenAI Batch API (half price, results within 24 h).",
        show_default=False, rich_help_panel="Data and models",
    )] = None,
    teacher_data: Annotated[Optional[str], Opt(
        help="Teacher thoughts for all of --data: trains the teacher baseline.", show_default=False, rich_help_panel="Data and models", metavar="FILE",
    )] = None,
    eval_tasks: Annotated[Optional[list[str]], Opt(
        "--eval-tasks", "--eval-task", help="Eval task (repeatable); the first one's headline leads the report. Demo: demo.",
        show_default=False, rich_help_panel="Evaluation", autocompletion=one_of("lt_cli.evaluation.registry.task_names", extra=["demo"]),
    )] = None,
    eval_data: Annotated[Optional[str], Opt(
        help="Held-out problems for the demo task (or the data of every task).", show_default=False, rich_help_panel="Evaluation", metavar="FILE",
    )] = None,
    eval_limit: Annotated[Optional[int], Opt(help="Evaluate only the first N problems.", show_default=False, rich_help_panel="Evaluation")] = None,
    eval_max_new_tokens: Annotated[Optional[int], Opt(
        help="Generated tokens per eval answer (default: the task's; demo 48).", show_default=False, rich_help_panel="Evaluation",
    )] = None,
    eval_batch_size: Annotated[Optional[int], Opt(
        help="Prompts per backend call in eval (default 16; demo 128).", show_default=False, rich_help_panel="Evaluation",
    )] = None,
    finetune_eval: Annotated[Optional[bool], Opt(
        "--finetune-eval/--no-finetune-eval",
        help="Also run lt finetune-eval on every model (needs --finetune-train-data and --finetune-data).",
        show_default=False, rich_help_panel="Fine-tuning evaluation",
    )] = None,
    finetune_task: Annotated[Optional[str], Opt(
        help="Fine-tuning eval task: gsm8k (default) or math.", show_default=False, rich_help_panel="Fine-tuning evaluation", autocompletion=FINETUNE_TASKS,
    )] = None,
    finetune_train_data: Annotated[Optional[str], Opt(
        help="Fine-tuning eval: the task's training problems (JSONL or a folder with train.jsonl).",
        show_default=False, rich_help_panel="Fine-tuning evaluation", metavar="FILE",
    )] = None,
    finetune_data: Annotated[Optional[str], Opt(
        help="Fine-tuning eval: the test problems (JSONL or a folder with test.jsonl).",
        show_default=False, rich_help_panel="Fine-tuning evaluation", metavar="FILE",
    )] = None,
    finetune_limit: Annotated[Optional[int], Opt(
        help="Fine-tuning eval: only the first N test problems.", show_default=False, rich_help_panel="Fine-tuning evaluation",
    )] = None,
    finetune_train_limit: Annotated[Optional[int], Opt(
        help="Fine-tuning eval: only the first N training problems.", show_default=False, rich_help_panel="Fine-tuning evaluation",
    )] = None,
    finetune_seeds: Annotated[Optional[str], Opt(
        help="Fine-tuning eval seeds, comma-separated (default 42).", show_default=False, rich_help_panel="Fine-tuning evaluation",
    )] = None,
    finetune_epochs: Annotated[Optional[float], Opt(
        help="Fine-tuning eval epochs (default 5).", show_default=False, rich_help_panel="Fine-tuning evaluation",
    )] = None,
    finetune_samples: Annotated[Optional[int], Opt(
        help="Fine-tuning eval answers per problem (default 16 GSM8K, 4 MATH).", show_default=False, rich_help_panel="Fine-tuning evaluation",
    )] = None,
    finetune_max_new_tokens: Annotated[Optional[int], Opt(
        help="Fine-tuning eval tokens per answer (default 1600).", show_default=False, rich_help_panel="Fine-tuning evaluation",
    )] = None,
    raw_baseline: Annotated[Optional[bool], Opt(
        "--raw-baseline/--no-raw-baseline", help="Train on the raw documents for the same tokens (demo default: on).",
        show_default=False, rich_help_panel="Baselines",
    )] = None,
    teacher_baseline: Annotated[Optional[bool], Opt(
        "--teacher-baseline/--no-teacher-baseline", help="Train on --teacher-data for the same tokens (demo default: on).",
        show_default=False, rich_help_panel="Baselines",
    )] = None,
    temperature: Annotated[Optional[float], Opt(help="E-step sampling temperature (default 1.0).", show_default=False, rich_help_panel="E-step")] = None,
    top_p: Annotated[Optional[float], Opt(help="E-step top-p (default 1.0).", show_default=False, rich_help_panel="E-step")] = None,
    prefix_chunks: Annotated[Optional[int], Opt(
        help="Raw chunks of context before each chunk in the E-step (default 3).", show_default=False, rich_help_panel="E-step",
    )] = None,
    max_new_tokens: Annotated[Optional[int], Opt(
        "--max-new-tokens", "--max-latent-tokens", help="Max tokens per sampled thought (default 1024; demo 32).", show_default=False, rich_help_panel="E-step",
    )] = None,
    max_prompt_tokens: Annotated[Optional[int], Opt(
        help="E-step: keep at most the last N posterior prompt tokens (default: lt's rule; 1024 with --reference-quirks).",
        show_default=False, rich_help_panel="E-step",
    )] = None,
    reference_quirks: Annotated[Optional[bool], Opt(
        "--reference-quirks/--no-reference-quirks", help="E-step prompts and log p exactly as the reference (default off).",
        show_default=False, rich_help_panel="E-step",
    )] = None,
    docs_per_call: Annotated[Optional[int], Opt(
        "--docs-per-call", "--estep-docs-per-call", help="E-step documents per backend call (default 8; 128 with vllm; demo 64).",
        show_default=False, rich_help_panel="E-step",
    )] = None,
    estep_batch_size: Annotated[Optional[int], Opt(
        help="E-step sequences per forward pass inside the backend (default 16; demo 256).", show_default=False, rich_help_panel="E-step",
    )] = None,
    select_method: Annotated[Optional[str], Opt(
        "--select-method", "--select", help="Selection: importance (default), uniform or argmax.", show_default=False, rich_help_panel="E-step",
        autocompletion=one_of("lt_cli.estep.config.SELECT_METHODS", without=["first"]),
    )] = None,
    estep_max_model_len: Annotated[Optional[int], Opt(
        help="E-step backend context length (default: the model's; the paper: 2048).", show_default=False, rich_help_panel="E-step",
    )] = None,
    estep_limit: Annotated[Optional[int], Opt(help="E-step on the first N documents of --data only.", show_default=False, rich_help_panel="E-step")] = None,
    continue_training: Annotated[Optional[bool], Opt(
        "--continue/--from-base",
        help="Train iteration t from model t-1, or from the base model as the paper does (default; the demo continues).",
        show_default=False, rich_help_panel="EM loop",
    )] = None,
    layout: Annotated[Optional[str], Opt(
        help="Training layout for thought data (default random).",
        show_default=False, rich_help_panel="M-step and warm start (lt train)", autocompletion=LAYOUTS,
    )] = None,
    loss_on: Annotated[Optional[str], Opt(
        help="Training loss on all tokens (default) or observed ones.",
        show_default=False, rich_help_panel="M-step and warm start (lt train)", autocompletion=one_of("lt_cli.training.config.LOSS_ON"),
    )] = None,
    seq_len: Annotated[Optional[int], Opt(help="Training sequence length.", show_default=False, rich_help_panel="M-step and warm start (lt train)")] = None,
    batch_size: Annotated[Optional[int], Opt(
        help="Training sequences per step.", show_default=False, rich_help_panel="M-step and warm start (lt train)",
    )] = None,
    micro_batch_size: Annotated[Optional[int], Opt(
        help="Training sequences per forward pass per process.", show_default=False, rich_help_panel="M-step and warm start (lt train)",
    )] = None,
    lr: Annotated[Optional[float], Opt(help="Learning rate.", show_default=False, rich_help_panel="M-step and warm start (lt train)")] = None,
    warmup_steps: Annotated[Optional[int], Opt(help="LR warmup steps.", show_default=False, rich_help_panel="M-step and warm start (lt train)")] = None,
    weight_decay: Annotated[Optional[float], Opt(
        help="AdamW weight decay (default 0.01).", show_default=False, rich_help_panel="M-step and warm start (lt train)",
    )] = None,
    strategy: Annotated[Optional[str], Opt(
        help="Multi-GPU training: auto, ddp or fsdp (FSDP2).",
        show_default=False, rich_help_panel="M-step and warm start (lt train)", autocompletion=one_of("lt_cli.training.config.STRATEGIES"),
    )] = None,
    gradient_checkpointing: Annotated[Optional[bool], Opt(
        "--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations in backward (less memory, slower).",
        show_default=False, rich_help_panel="M-step and warm start (lt train)",
    )] = None,
    val_data: Annotated[Optional[str], Opt(
        help="Held-out raw documents: NLL and ELBO per token in every training's metrics.jsonl.",
        show_default=False, rich_help_panel="M-step and warm start (lt train)", metavar="FILE",
    )] = None,
    val_every: Annotated[Optional[int], Opt(
        help="Validate every N training steps (default: after the last step).", show_default=False, rich_help_panel="M-step and warm start (lt train)",
    )] = None,
    val_limit: Annotated[Optional[int], Opt(
        help="Validate on the first N documents of --val-data.", show_default=False, rich_help_panel="M-step and warm start (lt train)",
    )] = None,
    warm_steps: Annotated[Optional[int], Opt(help="Warm-start training steps.", show_default=False, rich_help_panel="M-step and warm start (lt train)")] = None,
    warm_tokens: Annotated[Optional[str], Opt(
        help="Warm-start training tokens (instead of --warm-steps), e.g. 0.8e9.", show_default=False, rich_help_panel="M-step and warm start (lt train)",
    )] = None,
    warm_batch_size: Annotated[Optional[int], Opt(
        help="Warm-start sequences per step (default: --batch-size; the paper: 96, M-steps 192).",
        show_default=False, rich_help_panel="M-step and warm start (lt train)",
    )] = None,
    mstep_steps: Annotated[Optional[int], Opt(
        "--mstep-steps", "--steps", help="M-step (and baseline) training steps.", show_default=False, rich_help_panel="M-step and warm start (lt train)",
    )] = None,
    mstep_tokens: Annotated[Optional[str], Opt(
        "--mstep-tokens", "--tokens", help="M-step (and baseline) training tokens (instead of --mstep-steps), e.g. 13e9.",
        show_default=False, rich_help_panel="M-step and warm start (lt train)",
    )] = None,
    raw_token_matched_tokens: Annotated[Optional[str], Opt(
        help="Also train the raw baseline for this many tokens (the paper's token-matched baseline: 3.84e9).", show_default=False, rich_help_panel="Baselines",
    )] = None,
    save_every: Annotated[Optional[int], Opt(
        help="Training checkpoint interval (an interrupted training resumes from it).", show_default=False, rich_help_panel="M-step and warm start (lt train)",
    )] = None,
    demo_train: Annotated[Optional[int], Opt(help="Demo: training documents (default 2000).", show_default=False, rich_help_panel="Demo")] = None,
    demo_heldout: Annotated[Optional[int], Opt(help="Demo: held-out problems (default 500).", show_default=False, rich_help_panel="Demo")] = None,
    demo_steps: Annotated[Optional[int], Opt(help="Demo: latent steps per problem (default 8).", show_default=False, rich_help_panel="Demo")] = None,
    demo_warm_fraction: Annotated[Optional[float], Opt(
        help="Demo: fraction of training documents with teacher thoughts for the warm start (default 0.05).", show_default=False, rich_help_panel="Demo",
    )] = None,
    backend: Annotated[Optional[str], Opt(
        help="Inference backend for E-step and eval (transformers, vllm).", show_default=False, rich_help_panel="Execution", autocompletion=BACKENDS,
    )] = None,
    dtype: Annotated[Optional[str], Opt(
        help="auto, float32 or bfloat16.", show_default=False, rich_help_panel="Execution", autocompletion=TRAIN_DTYPES,
    )] = None,
    seed: Annotated[Optional[int], Opt(help="Seed of every stage (default 42).", show_default=False, rich_help_panel="Execution")] = None,
    launcher: Annotated[Optional[str], Opt(
        help="local, torchrun, slurm or a command template with {cmd}; default: stages run in this process.",
        show_default=False, rich_help_panel="Execution", autocompletion=one_of("lt_cli.launchers.LAUNCHERS"),
    )] = None,
    nproc_per_node: Annotated[Optional[int], Opt(help="Processes per node for distributed launchers.", show_default=False, rich_help_panel="Execution")] = None,
    run_dir: Annotated[Optional[str], Opt(
        help="Run folder (default ./lt-runs/NAME).", show_default=False, rich_help_panel="Execution", metavar="DIR",
    )] = None,
    name: Annotated[Optional[str], Opt(help="Run name (default demo, or the --data file's stem).", show_default=False, rich_help_panel="Execution")] = None,
    dry_run: Annotated[bool, Opt("--dry-run", help="Print every command it would run, then exit.", rich_help_panel="Execution")] = False,
    report_to: ReportToOpt = None,
    wandb_project: WandbProjectOpt = None,
    wandb_entity: WandbEntityOpt = None,
    run_name: RunNameOpt = None,
    tracking_dir: TrackingDirOpt = None,
    config_file: ConfigOpt = None,
    print_config: PrintConfigOpt = False,
) -> int:
    options = dict(locals())
    from ..bootstrap import BootstrapConfig, resolve_config, run_bootstrap

    from .common import given_on_command_line

    given = given_on_command_line(options.pop("ctx"))
    path, show = options.pop("config_file"), options.pop("print_config")
    if path:  # None = not given, so that the file's value (else the default) applies
        options = {name: value if name in given else None for name, value in options.items()}

    demo_corpus = {
        key: options.pop(flag)
        for key, flag in (("n_train", "demo_train"), ("n_heldout", "demo_heldout"), ("n_steps", "demo_steps"), ("warm_fraction", "demo_warm_fraction"))
    }
    options["demo_corpus"] = {key: value for key, value in demo_corpus.items() if value is not None} or None
    options["ks"], options["adaptive"] = _arms(options.pop("k"), options.pop("sweep_k"))
    options["dry_run"] = options["dry_run"] or None
    for key in ("warm_tokens", "mstep_tokens", "raw_token_matched_tokens"):
        options[key] = parse_tokens(options[key])
    if options["finetune_seeds"] is not None:
        from .finetune_eval import _seeds

        options["finetune_seeds"] = _seeds(options["finetune_seeds"])
    found = None
    if path:
        from ..configfile import read

        found = read(path, BootstrapConfig)
    config = resolve_config(options, found)
    if show:
        from ..bootstrap.config import PRINT_SKIP
        from .common import print_config as write_config

        write_config(config, path, skip=PRINT_SKIP, command="bootstrap")
        return 0
    run_bootstrap(config)
    return 0
