"""`lt synthesize`: a teacher writes latent thoughts per chunk (or WRAP rephrasings per document)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import (
    BACKENDS, CacheOpt, ConfigOpt, DtypeOpt, InputArg, LimitOpt, MaxModelLenOpt, NoCacheOpt, OutputOpt, PrintConfigOpt, RejectsOpt, RestartOpt,
    ShardOpt, SkipBadOpt, check_stdin, one_of, resolve, run_command,
)

HELP = "Teacher synthesis: latent thoughts per chunk (default) or WRAP / WRAP-CoT rephrasings per document."
EXAMPLES = """\
lt synthesize docs.jsonl -o teacher.jsonl                     # gpt-4o-mini over the API (LT_API_KEY)
lt synthesize --batch docs.jsonl -o teacher.jsonl             # OpenAI Batch API; rerun to re-attach
lt synthesize --backend transformers --model smollm2 docs.jsonl > t.jsonl   # local instruct model
lt synthesize --method wrap --passes 5 docs.jsonl -o wrap.jsonl
lt synthesize --estimate docs.jsonl -o teacher.jsonl             # requests, tokens and cost; sends nothing
"""
DETAILS = """\
latent: per chunk (chunked on the fly like lt chunk) the teacher sees the previous chunk ("N/A" for
the first) and writes the background knowledge and reasoning behind the chunk; the reply is stored
verbatim in chunks[i].latent. wrap: one of four styles per document and pass (simple, scholarly,
wikipedia, qa), by a seeded draw; wrap-cot: a paraphrase with inserted step-by-step reasoning. WRAP
outputs go to the document's latent field (train with --layout pure). Defaults follow the reference:
T=0.7, max tokens 6000 (latent) / 5000 (wrap) / 8000 (wrap-cot). Replies are cached (--cache), so
reruns and resumed runs cost nothing. See docs/estep.md.

Cost: the summary reports the requests sent and the prompt and completion tokens the server billed
(api; the local backend's own counts otherwise), priced with --input-price/--output-price (USD per
1M tokens) or the dated table in lt_cli/backends/pricing.py (Batch API prices with --batch), and
writes them to OUTPUT.stats.json. --estimate counts the requests offline (requests the cache
already answers excluded), estimates tokens as ceil(characters / 4) plus the chat format's
overhead and completions as --output-ratio x the raw tokens explained (at most --max-new-tokens),
and prints the expected and worst-case cost.
"""


@run_command
def command(
    ctx: typer.Context,
    input: InputArg = None,
    output: OutputOpt = None,
    method: Annotated[str, typer.Option(
        "--method", help="latent, wrap or wrap-cot.", rich_help_panel="Teacher", autocompletion=one_of("lt_cli.teacher.config.METHODS"),
    )] = "latent",
    model: Annotated[str, typer.Option(
        "--model", "-m", help="Teacher model (an API model name, or a local instruct checkpoint).", rich_help_panel="Teacher",
    )] = "gpt-4o-mini-2024-07-18",
    backend: Annotated[str, typer.Option(
        "--backend", help="api (OpenAI-compatible HTTP), vllm or transformers (chat template).", rich_help_panel="Backend", autocompletion=BACKENDS,
    )] = "api",
    batch: Annotated[bool, typer.Option(
        "--batch", help="api backend: send requests through the Batch API (needs -o; state in OUTPUT.batches.jsonl).", rich_help_panel="API",
    )] = False,
    batch_poll_interval: Annotated[float, typer.Option("--batch-poll-interval", help="Seconds between Batch API status checks.", rich_help_panel="API")] = 30.0,
    temperature: Annotated[float, typer.Option("--temperature", help="Teacher sampling temperature.", rich_help_panel="Teacher")] = 0.7,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass (1 = off).", rich_help_panel="Teacher")] = 1.0,
    max_new_tokens: Annotated[Optional[int], typer.Option(
        "--max-new-tokens", help="Tokens per reply (default 6000 latent, 5000 wrap, 8000 wrap-cot).", show_default=False, rich_help_panel="Teacher",
    )] = None,
    passes: Annotated[int, typer.Option("--passes", help="Replies per document (or chunk), written as separate records.", rich_help_panel="Teacher")] = 1,
    prefix_chunks: Annotated[int, typer.Option("--prefix-chunks", help="Previous chunks shown to the teacher (reference: 1).", rich_help_panel="Teacher")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="User seed: request seeds and WRAP style draws derive from it.", rich_help_panel="Teacher")] = 42,
    docs_per_call: Annotated[Optional[int], typer.Option(
        "--docs-per-call", help="Documents per backend call (default 8; all with --batch).", show_default=False, rich_help_panel="Teacher",
    )] = None,
    max_concurrency: Annotated[int, typer.Option("--max-concurrency", help="api backend: requests in flight at once.", rich_help_panel="API")] = 8,
    input_price: Annotated[Optional[float], typer.Option(
        "--input-price", help="USD per 1M input tokens for the cost report (default: the price table for known models).",
        show_default=False, rich_help_panel="Cost",
    )] = None,
    output_price: Annotated[Optional[float], typer.Option(
        "--output-price", help="USD per 1M output tokens for the cost report (default: the price table).", show_default=False, rich_help_panel="Cost",
    )] = None,
    estimate: Annotated[bool, typer.Option(
        "--estimate", help="Print the requests, estimated tokens and cost a run would spend (JSON on stdout); send nothing.", rich_help_panel="Cost",
    )] = False,
    output_ratio: Annotated[Optional[float], typer.Option(
        "--output-ratio", help="--estimate: completion tokens per raw token explained (default 2.3 latent, 1.0 wrap, 2.0 wrap-cot).",
        show_default=False, rich_help_panel="Cost",
    )] = None,
    dtype: DtypeOpt = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Sequences per forward pass (local backends).", rich_help_panel="Backend")] = 16,
    max_model_len: MaxModelLenOpt = None,
    cache: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    shard: ShardOpt = None,
    limit: LimitOpt = None,
    skip_bad: SkipBadOpt = False,
    rejects: RejectsOpt = None,
    restart: RestartOpt = False,
    config_file: ConfigOpt = None,
    print_config: PrintConfigOpt = False,
) -> int:
    flags = dict(locals())
    from ..runners import run

    config = resolve(flags, config_from_flags)
    if config is None:
        return 0
    check_stdin(config.stream.input)
    return run("synthesize", config)


def config_from_flags(flags: dict):
    """The command's parameters -> its :class:`~lt_cli.teacher.SynthesizeRun`."""
    from ..flags import build
    from ..teacher import SynthesizeRun

    return build(SynthesizeRun, flags)
