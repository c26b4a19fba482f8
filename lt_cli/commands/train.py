"""`lt train`: the M-step (continued pretraining on thought-augmented or raw documents)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import (
    ConfigOpt, DEVICES, LAYOUTS, PrintConfigOpt, ReportToOpt, RunNameOpt, TRAIN_DTYPES, TrackingDirOpt, WandbEntityOpt, WandbProjectOpt, one_of,
    parse_tokens, require, resolve, run_command, tracking_flags,
)

HELP = "Train a causal LM on augmented (or raw) documents; resumable, torchrun-ready."
EXAMPLES = """\
lt train --model M --data augmented.jsonl --output ckpt/ --tokens 13e9 --batch-size 192
lt train --init-config tiny.json --data aug.jsonl --output ckpt/ --seq-len 256 --batch-size 8 --epochs 3
lt train --model M --data aug.jsonl --data raw.jsonl:0.5 --layout random --output ckpt/ --save-every 1000
lt train --model M --data aug.jsonl --val-data val.jsonl --val-every 5000 --val-limit 1000 --output ckpt/
lt train --model M --data aug.jsonl --val-data val.jsonl --val-limit 1000 --val-reference-quirks --output ckpt/
torchrun --nproc_per_node 8 -m lt_cli train --model M --data aug.jsonl --output ckpt/ --micro-batch-size 8
"""
DETAILS = """\
Layouts: random (tagged prior or posterior form per chunk, fair coin, redrawn each epoch); prior
and posterior (the reference's untagged ablations, <SoL>z<EoL>x and x<SoL>z<EoL>); prior-tagged
and posterior-tagged (every chunk in one of random's two forms); pure (synthetic text only:
'latent' or chunk latents); raw ('text'). The final model is written to OUTPUT/ in Hugging Face
format; rerunning the same command resumes from OUTPUT/checkpoints/. --val-data adds held-out
NLL (and ELBO_1,2,4 for layout random) per token to metrics.jsonl; --val-reference-quirks computes
the reference's ELBO (the paper's figure) instead of lt's. See docs/training.md.
"""
NO_ARGS_IS_HELP = True


def _parse_ints(flag: str, value: str) -> list[int]:
    from ..errors import UsageError

    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{flag} must be comma-separated integers, got {value!r}") from None


@run_command
def command(
    ctx: typer.Context,
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", help="Output folder: final HF model, checkpoints/, metrics.jsonl, train_config.json.",
        show_default=False, rich_help_panel="Data and model", metavar="DIR",
    )] = None,
    data: Annotated[Optional[list[str]], typer.Option(
        "--data", help="Training JSONL (.gz ok); repeat for a mix, FILE:WEIGHT = weight x its documents per epoch.",
        show_default=False, rich_help_panel="Data and model", metavar="FILE",
    )] = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Start from this causal LM (hub id or folder).", show_default=False, rich_help_panel="Data and model", metavar="MODEL",
    )] = None,
    init_config: Annotated[Optional[str], typer.Option(
        "--init-config", help="Instead of --model: a tiny Llama from a TinyModelConfig JSON (byte tokenizer).",
        show_default=False, rich_help_panel="Data and model", metavar="FILE",
    )] = None,
    layout: Annotated[str, typer.Option(
        help="random, prior, posterior, prior-tagged, posterior-tagged, pure or raw.", rich_help_panel="Data and model", autocompletion=LAYOUTS,
    )] = "random",
    loss_on: Annotated[str, typer.Option(
        help="all (the reference) or observed (mask latent tokens; ablation).",
        rich_help_panel="Data and model", autocompletion=one_of("lt_cli.training.config.LOSS_ON"),
    )] = "all",
    seq_len: Annotated[int, typer.Option(help="Tokens per training sequence (packed window).", rich_help_panel="Data and model")] = 2048,
    batch_size: Annotated[int, typer.Option(help="Global sequences per optimizer step, whatever the number of GPUs.", rich_help_panel="Budget and batch")] = 96,
    micro_batch_size: Annotated[Optional[int], typer.Option(
        help="Sequences per forward pass per process; the rest is gradient accumulation (default: batch / world size).",
        show_default=False, rich_help_panel="Budget and batch",
    )] = None,
    tokens: Annotated[Optional[str], typer.Option(
        help="Token budget: steps = tokens // (batch * seq_len) (e.g. 13e9).", show_default=False, rich_help_panel="Budget and batch",
    )] = None,
    epochs: Annotated[Optional[float], typer.Option(
        help="Budget in epochs over the (weighted) data (default 1 when no budget is given).", show_default=False, rich_help_panel="Budget and batch",
    )] = None,
    steps: Annotated[Optional[int], typer.Option(help="Budget in optimizer steps.", show_default=False, rich_help_panel="Budget and batch")] = None,
    lr: Annotated[float, typer.Option(help="Peak learning rate.", rich_help_panel="Optimizer")] = 1e-4,
    min_lr_ratio: Annotated[float, typer.Option(help="Cosine decays to lr * this at the last step.", rich_help_panel="Optimizer")] = 1e-6,
    warmup_steps: Annotated[int, typer.Option(help="Linear warmup steps (the reference: 1000 in every run).", rich_help_panel="Optimizer")] = 1000,
    max_warmup_fraction: Annotated[Optional[float], typer.Option(
        help="Cap the warmup at this fraction of the steps (0.1 = lt's earlier default, for short runs).", show_default=False, rich_help_panel="Optimizer",
    )] = None,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.", rich_help_panel="Optimizer")] = 0.01,
    adam_beta1: Annotated[float, typer.Option("--adam-beta1", help="AdamW beta1.", rich_help_panel="Optimizer")] = 0.9,
    adam_beta2: Annotated[float, typer.Option("--adam-beta2", help="AdamW beta2.", rich_help_panel="Optimizer")] = 0.95,
    adam_eps: Annotated[float, typer.Option("--adam-eps", help="AdamW epsilon.", rich_help_panel="Optimizer")] = 1e-8,
    grad_clip: Annotated[float, typer.Option(help="Clip the global gradient norm to this.", rich_help_panel="Optimizer")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seeds data order, layouts and the torch RNG.", rich_help_panel="Optimizer")] = 42,
    shuffle: Annotated[bool, typer.Option(
        "--shuffle/--no-shuffle", help="Shuffle documents each epoch (seeded by seed and epoch).", rich_help_panel="Optimizer",
    )] = True,
    dtype: Annotated[str, typer.Option(
        help="auto (bfloat16 autocast on GPU, float32 on CPU), float32 or bfloat16.", rich_help_panel="Hardware and parallelism", autocompletion=TRAIN_DTYPES,
    )] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.", rich_help_panel="Hardware and parallelism", autocompletion=DEVICES)] = "auto",
    strategy: Annotated[str, typer.Option(
        help="Multi-process: auto, ddp or fsdp (FSDP2).",
        rich_help_panel="Hardware and parallelism", autocompletion=one_of("lt_cli.training.config.STRATEGIES"),
    )] = "auto",
    data_sharding: Annotated[str, typer.Option(
        help="global: every rank packs the same global stream (batches independent of world size); "
        "rank: each rank tokenizes only its own documents (scales to many GPUs).",
        rich_help_panel="Hardware and parallelism", autocompletion=one_of("lt_cli.training.config.DATA_SHARDING"),
    )] = "global",
    gradient_checkpointing: Annotated[bool, typer.Option(
        help="Recompute activations in the backward pass (less GPU memory, slower).", rich_help_panel="Hardware and parallelism",
    )] = False,
    compile: Annotated[bool, typer.Option(
        help="torch.compile each transformer layer (faster steps on a GPU after a one-off compile).", rich_help_panel="Hardware and parallelism",
    )] = False,
    loss: Annotated[str, typer.Option(
        help="Cross-entropy: full (all logits at once), chunked (never holds the batch's logits) or auto (chunked on GPU).",
        rich_help_panel="Hardware and parallelism", autocompletion=one_of("lt_cli.training.loss.LOSS_IMPLS"),
    )] = "auto",
    loss_chunk_tokens: Annotated[int, typer.Option(help="Positions per chunk of the chunked loss.", rich_help_panel="Hardware and parallelism")] = 4096,
    save_every: Annotated[Optional[int], typer.Option(
        help="Save a resumable checkpoint every N steps.", show_default=False, rich_help_panel="Checkpoints and logging",
    )] = None,
    keep_checkpoints: Annotated[int, typer.Option(help="How many periodic checkpoints to keep.", rich_help_panel="Checkpoints and logging")] = 1,
    log_every: Annotated[int, typer.Option(
        help="Print a progress line every N steps (metrics.jsonl gets every step).", rich_help_panel="Checkpoints and logging",
    )] = 10,
    report_to: ReportToOpt = None,
    wandb_project: WandbProjectOpt = None,
    wandb_entity: WandbEntityOpt = None,
    run_name: RunNameOpt = None,
    tracking_dir: TrackingDirOpt = None,
    peak_tflops: Annotated[Optional[float], typer.Option(
        help="Peak dense TFLOP/s per device for the MFU figure "
        "(default: the datasheet value of a known GPU in the training dtype; none on CPU, so MFU is null).",
        show_default=False, rich_help_panel="Hardware and parallelism",
    )] = None,
    overwrite: Annotated[bool, typer.Option(
        help="Discard an earlier run in OUTPUT instead of resuming it.", rich_help_panel="Checkpoints and logging",
    )] = False,
    val_data: Annotated[Optional[str], typer.Option(
        help="Held-out raw documents (JSONL with 'text'): NLL and ELBO per token into metrics.jsonl.",
        show_default=False, rich_help_panel="Validation", metavar="FILE",
    )] = None,
    val_every: Annotated[Optional[int], typer.Option(
        help="Validate every N steps (default: after the last step only).", show_default=False, rich_help_panel="Validation",
    )] = None,
    val_limit: Annotated[Optional[int], typer.Option(
        help="Validate on the first N documents (the reference: 1000).", show_default=False, rich_help_panel="Validation",
    )] = None,
    val_batch_size: Annotated[int, typer.Option(help="Documents per scoring call during validation.", rich_help_panel="Validation")] = 16,
    val_elbo_n: Annotated[str, typer.Option(
        help="ELBO_n values for layout random, comma-separated ('' skips the ELBO).", rich_help_panel="Validation",
    )] = "1,2,4",
    val_max_latent_tokens: Annotated[int, typer.Option(
        help="Max tokens per sampled latent for the ELBO (the reference: 1024).", rich_help_panel="Validation",
    )] = 1024,
    val_reference_quirks: Annotated[bool, typer.Option(
        help="Compute the validation ELBO as the reference does (lt eval --task elbo --reference-quirks), logged as "
        "val_reference_elbo_N_per_token: the figure that compares with the paper's elbo_4_per_token.", rich_help_panel="Validation",
    )] = False,
    config_file: ConfigOpt = None,
    print_config: PrintConfigOpt = False,
) -> int:
    flags = dict(locals())
    import os

    from ..console import require_stdout
    from ..files import write_stdout_json
    from ..runners import run

    config = resolve(flags, config_from_flags)
    if config is None:
        return 0
    require(output=config.output)
    if int(os.environ.get("RANK", "0")) == 0:
        require_stdout("the training result (JSON)")
    result = run("train", config)
    if int(os.environ.get("RANK", "0")) == 0:
        write_stdout_json(result)
    return 0


def config_from_flags(flags: dict):
    """The command's parameters -> its :class:`~lt_cli.training.TrainConfig`."""
    from ..flags import build
    from ..training import TrainConfig

    flags = {
        **tracking_flags(flags), "tokens": parse_tokens(flags["tokens"]), "data": list(flags["data"] or []),
        "val_elbo_n": _parse_ints("--val-elbo-n", flags["val_elbo_n"]),
    }
    return build(TrainConfig, flags)
