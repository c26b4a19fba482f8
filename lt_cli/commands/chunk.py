"""`lt chunk`: raw documents in, documents with `chunks` out."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import InputArg, LimitOpt, OutputOpt, RejectsOpt, ShardOpt, SkipBadOpt, check_stdin, one_of, run_command

HELP = "Split documents into sentence chunks (deterministic per document)."
EXAMPLES = """\
lt chunk docs.jsonl > chunked.jsonl
cat docs.jsonl | lt chunk - --shard 0/8 -o chunked.00.jsonl.gz
lt chunk --mode uniform --avg-units 8 val.jsonl -o val.chunked.jsonl
lt chunk --sentences english docs.jsonl > chunked.english.jsonl
"""


@run_command
def command(
    input: InputArg = None,
    output: OutputOpt = None,
    mode: Annotated[str, typer.Option(
        help="random: 1+Poisson(7) sentences per chunk (training, E-step); uniform: ceil(n/avg) equal chunks (ELBO eval).",
        rich_help_panel="Chunking", autocompletion=one_of("lt_cli.chunking.MODES"),
    )] = "random",
    units: Annotated[str, typer.Option(
        help="sentence, paragraph or word units.", rich_help_panel="Chunking", autocompletion=one_of("lt_cli.chunking.UNITS"),
    )] = "sentence",
    sentences: Annotated[str, typer.Option(
        help="Sentence splitter. reference: NLTK's untrained Punkt, as the reference (also breaks after 'Dr.', 'e.g.'); "
        "english: Punkt with English abbreviations (better sentences, chunks differ from the reference's).",
        rich_help_panel="Chunking", autocompletion=one_of("lt_cli.chunking.SENTENCE_SPLITTERS"),
    )] = "reference",
    avg_units: Annotated[int, typer.Option(help="Mean units per chunk.", rich_help_panel="Chunking")] = 8,
    min_units: Annotated[int, typer.Option(help="Minimum units per chunk (random mode).", rich_help_panel="Chunking")] = 1,
    max_units: Annotated[int, typer.Option(help="Maximum units per chunk (random mode).", rich_help_panel="Chunking")] = 20,
    chunk_seed: Annotated[int, typer.Option(help="Added to md5(text) to seed each document's RNG (reference: 42).", rich_help_panel="Chunking")] = 42,
    shard: ShardOpt = None,
    limit: LimitOpt = None,
    skip_bad: SkipBadOpt = False,
    rejects: RejectsOpt = None,
) -> int:
    from ..chunking import ChunkingConfig, run_chunk
    from ..stream import StreamArgs

    check_stdin(input)
    stream = StreamArgs(input=input, output=output, shard=shard, limit=limit, skip_bad=skip_bad, rejects=rejects)
    config = ChunkingConfig(mode=mode, units=units, sentences=sentences, avg_units=avg_units, min_units=min_units, max_units=max_units, seed=chunk_seed)
    return run_chunk(stream, config)
