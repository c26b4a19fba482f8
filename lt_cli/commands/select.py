"""`lt select`: pick one latent per chunk from its candidates (importance resampling by default)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import (
    BackendOpt, BatchSizeOpt, CacheOpt, ConfigOpt, DocsPerCallOpt, DtypeOpt, InputArg, LimitOpt, MaxModelLenOpt, NoCacheOpt, OutputOpt,
    PrefixChunksOpt, PrintConfigOpt, QuirksOpt, RejectsOpt, ReportToOpt, RestartOpt, RunNameOpt, ShardOpt, SkipBadOpt, TrackingDirOpt,
    WandbEntityOpt, WandbProjectOpt, check_stdin, one_of, resolve, run_command, tracking_flags,
)

HELP = "E-step resampling: one latent per chunk drawn from softmax(log w); ELBO_n and ESS per document."
EXAMPLES = """\
lt sample-thoughts --model M --k 8 docs.jsonl | lt select > augmented.jsonl
lt select cand.jsonl -o augmented.jsonl --seed 43
lt select --method argmax --keep-candidates cand.jsonl > best.jsonl
lt select --k 2 cand-k8.jsonl > augmented-k2.jsonl   # the first 2 of 8 samples: same as --k 2 sampling
lt select --model M cand-unscored.jsonl > augmented.jsonl   # scores missing log p first
"""
DETAILS = """\
Methods: importance (one draw from softmax(log w), the reference's E-step), uniform (no Monte Carlo
weighting), argmax (highest log w), first (candidate 0). Each chunk's draw is seeded from
(--seed, document id, chunk index). K=1 passes its only sample through. --k N keeps the first N
candidates of every chunk: samples are seeded by index, so they are exactly what sample-thoughts
--k N would have drawn, and one sampling run serves a whole K sweep. Without --k every chunk must
have the same number of candidates.

Output: augmented documents for lt train (chunks[].latent, chunks[].selected) plus per document
elbo {"1", "2", "4", ..., "K"} (nats, summed over chunks: logsumexp(log w[:n]) - log n), ess (mean
over its chunks of 1/sum p^2, a diagnostic that the reference does not compute) and mean_log_w.
The summary table (ELBO_n per document, log w per candidate, ESS per chunk) goes to stderr and,
with -o FILE, to FILE.stats.json.
"""


@run_command
def command(
    ctx: typer.Context,
    input: InputArg = None,
    output: OutputOpt = None,
    method: Annotated[str, typer.Option(
        "--method", help="importance, uniform, argmax or first.", rich_help_panel="Selection", autocompletion=one_of("lt_cli.estep.config.SELECT_METHODS"),
    )] = "importance",
    seed: Annotated[int, typer.Option(
        "--seed", help="User seed; each chunk's draw derives from it, the document id and the chunk index.", rich_help_panel="Selection",
    )] = 42,
    keep_candidates: Annotated[bool, typer.Option("--keep-candidates", help="Keep chunks[].candidates in the output.", rich_help_panel="Selection")] = False,
    k: Annotated[Optional[int], typer.Option(
        "--k", help="Use only the first K candidates of every chunk (a K sweep from one sampling run).", show_default=False, rich_help_panel="Selection",
    )] = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Score candidates that lack log p with this model.", show_default=False, rich_help_panel="Scoring (--model)", metavar="MODEL",
    )] = None,
    prefix_chunks: PrefixChunksOpt = 3,
    reference_quirks: QuirksOpt = False,
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
    check_stdin(config.stream.input)
    return run("select", config)


def config_from_flags(flags: dict):
    """The command's parameters -> its :class:`~lt_cli.estep.SelectRun`."""
    from ..estep import SelectRun
    from ..flags import build

    return build(SelectRun, tracking_flags(flags))
