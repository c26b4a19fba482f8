"""`lt sample-thoughts`: K posterior samples per chunk from the model itself, scored under its prior."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import (
    BackendOpt, BatchSizeOpt, CacheOpt, ConfigOpt, DocsPerCallOpt, DtypeOpt, InputArg, LimitOpt, MaxModelLenOpt, NoCacheOpt, OutputOpt,
    PrefixChunksOpt, PrintConfigOpt, QuirksOpt, RejectsOpt, ReportToOpt, RestartOpt, RunNameOpt, STOP_RULES, ShardOpt, SkipBadOpt, TrackingDirOpt,
    WandbEntityOpt, WandbProjectOpt, check_stdin, require, resolve, run_command, tracking_flags,
)

HELP = "E-step proposal: K latent thoughts per chunk from q(Z|X), with log q, log p(Z,X) and log w."
EXAMPLES = """\
lt sample-thoughts --model M --k 8 docs.jsonl | lt select > augmented.jsonl
lt sample-thoughts --model ckpt/ --k 4 docs.jsonl -o cand.jsonl   # resumable; cache cand.jsonl.cache.sqlite
lt sample-thoughts --model ckpt/ --backend vllm --shard 3/16 docs.jsonl -o cand.03.jsonl
lt sample-thoughts --model M --k 4 --no-score docs.jsonl | lt select --model M
lt sample-thoughts --model M --k 1 --k-max 8 docs.jsonl -o cand.jsonl   # adaptive: 1, 2, 4, then 8 per chunk
"""
DETAILS = """\
Input: raw documents (chunked on the fly exactly like lt chunk) or chunked documents. Output: the
same documents with chunks[].candidates[] = {latent, log_q, log_p, log_w, finished, n_tokens}
(natural-log sums; n_tokens counts the <EoL> stop token). Sample j of chunk i is seeded from
(--seed, document id, i, j), so a rerun with a larger --k reuses the cached samples. With -o FILE
the summary is also written to FILE.stats.json.

Prompts: lt fixes two quirks of the reference by default (the first chunk also gets the <SoL><EoL>
boundary marker in the posterior prompt; log p includes the first <SoL> of the joint string).
--reference-quirks reproduces the reference exactly. See docs/estep.md.

Adaptive (--k-max N): every chunk gets --k samples, is scored, and gets another round (doubling, or
--k-step more) until --stop-rule holds or it has N. The default rule, coverage, stops once the
thoughts seen have joint probabilities p(z, x) summing to --stop-threshold (0.1): a lower bound on
the share of the posterior they hold. A chunk's samples are always the first n of the N a fixed
--k N run draws. --k-step, --stop-rule and --stop-threshold without --k-max are an error; --k and
--k-max are at most 4096. The summary (stderr, FILE.stats.json) reports prompts, generated and
scored tokens, samples per chunk and FLOPs, for fixed and adaptive runs alike.

With -o FILE: resumable (FILE.partial), cache FILE.cache.sqlite. An -o that is not a regular file
(/dev/null, a FIFO) is written as a stream: no partial, no default cache (pass --cache to keep one).
"""


@run_command
def command(
    ctx: typer.Context,
    input: InputArg = None,
    output: OutputOpt = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Checkpoint (folder or hub id) that plays both q and p.", show_default=False, rich_help_panel="Sampling", metavar="MODEL",
    )] = None,
    k: Annotated[int, typer.Option("--k", help="Samples per chunk (reference: 4); with --k-max, the first round's.", rich_help_panel="Sampling")] = 4,
    k_max: Annotated[Optional[int], typer.Option(
        "--k-max", help="Adaptive: sample in rounds, at most this many per chunk, until --stop-rule holds.",
        show_default=False, rich_help_panel="Adaptive sampling",
    )] = None,
    k_step: Annotated[Optional[int], typer.Option(
        "--k-step", help="Adaptive: samples added per later round (default: double).", show_default=False, rich_help_panel="Adaptive sampling",
    )] = None,
    stop_rule: Annotated[Optional[str], typer.Option(
        "--stop-rule", help="Adaptive: coverage (default), mass, repeat or ess (docs/estep.md).", show_default=False,
        rich_help_panel="Adaptive sampling", autocompletion=STOP_RULES,
    )] = None,
    stop_threshold: Annotated[Optional[float], typer.Option(
        "--stop-threshold",
        help="Adaptive: posterior mass certified (coverage, default 0.1), heaviest latent's weight share (mass, repeat) or ESS/samples (ess) (default 0.9).",
        show_default=False, rich_help_panel="Adaptive sampling",
    )] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Latent tokens per sample, <EoL> included.", rich_help_panel="Sampling")] = 1024,
    prefix_chunks: PrefixChunksOpt = 3,
    temperature: Annotated[float, typer.Option(
        "--temperature", help="Sampling temperature (1 = the model's own posterior).", rich_help_panel="Sampling",
    )] = 1.0,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass (1 = off).", rich_help_panel="Sampling")] = 1.0,
    seed: Annotated[int, typer.Option(
        "--seed", help="User seed; each sample's seed derives from it, the document and the chunk.", rich_help_panel="Sampling",
    )] = 42,
    score: Annotated[bool, typer.Option(
        "--score/--no-score", help="Compute log p and log w now (--no-score: lt select --model scores later).", rich_help_panel="Sampling",
    )] = True,
    reference_quirks: QuirksOpt = False,
    max_prompt_tokens: Annotated[Optional[int], typer.Option(
        "--max-prompt-tokens",
        help="Keep at most the last N tokens of each posterior prompt (default: lt's rule, up to 3/4 of the context; 1024 with --reference-quirks).",
        show_default=False, rich_help_panel="Sampling",
    )] = None,
    docs_per_call: DocsPerCallOpt = None,
    backend: BackendOpt = "transformers",
    dtype: DtypeOpt = "auto",
    batch_size: BatchSizeOpt = 16,
    max_model_len: MaxModelLenOpt = None,
    cache: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    shard: ShardOpt = None,
    limit: LimitOpt = None,
    skip_bad: SkipBadOpt = False,
    rejects: RejectsOpt = None,
    restart: RestartOpt = False,
    report_to: ReportToOpt = None,
    wandb_project: WandbProjectOpt = None,
    wandb_entity: WandbEntityOpt = None,
    run_name: RunNameOpt = None,
    tracking_dir: TrackingDirOpt = None,
    config_file: ConfigOpt = None,
    print_config: PrintConfigOpt = False,
) -> int:
    flags = dict(locals())
    from ..runners import run

    config = resolve(flags, config_from_flags)
    if config is None:
        return 0
    require(model=config.backend.model)
    check_stdin(config.stream.input)
    return run("sample-thoughts", config)


def config_from_flags(flags: dict):
    """The command's parameters -> its :class:`~lt_cli.estep.SampleThoughtsRun`."""
    from ..estep import SampleThoughtsRun
    from ..flags import build

    return build(SampleThoughtsRun, tracking_flags(flags))
