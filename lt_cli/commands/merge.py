"""`lt merge`: the outputs of a `--shard I/N` run back into one file, in the unsharded order."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from .common import OutputOpt, one_of, run_command

HELP = "Merge the shard outputs of a --shard I/N run (every shard must be complete)."
EXAMPLES = """\
lt merge -o candidates.jsonl candidates.0.jsonl candidates.1.jsonl candidates.2.jsonl
lt merge -o candidates.jsonl --num-shards 200 'shards/candidates.{i:03d}.jsonl.gz'
lt merge -o synth.jsonl 'synth.*.jsonl'          # a glob, sorted naturally
lt merge --check --num-shards 8 'cand.{i}.jsonl' # verify only, print a summary
"""
DETAILS = """\
Every shard needs the completion marker SHARD.done (records, sha256, shard I/N) that lt writes
when a --shard run finishes; a missing shard, a missing marker (interrupted or still running job)
or a file that no longer matches its marker is an error, never a smaller dataset. The default
order interleaves round-robin (record j of the result is record j//N of shard j%N), which is
exactly the record order of the unsharded run; --order concat appends shard after shard.
"""
NO_ARGS_IS_HELP = True


@run_command
def command(
    shards: Annotated[List[str], typer.Argument(
        help="Shard files in shard order, a glob, or a pattern with {i} (with --num-shards).", show_default=False, metavar="FILE",
    )],
    output: OutputOpt = None,
    num_shards: Annotated[Optional[int], typer.Option(
        "--num-shards", "-n", help="N of the --shard I/N run: expands {i} patterns and checks the count.", show_default=False,
    )] = None,
    order: Annotated[str, typer.Option(
        help="interleave (round-robin: the unsharded order) or concat.", autocompletion=one_of("lt_cli.merge.ORDERS"),
    )] = "interleave",
    check: Annotated[bool, typer.Option("--check", help="Only verify the shards (markers, counts, hashes); print a JSON summary.")] = False,
) -> int:
    from ..console import log
    from ..files import write_stdout_json
    from ..merge import merge_shards

    result = merge_shards(shards, output, num_shards=num_shards, order=order, verify_only=check)
    if check:
        write_stdout_json(result.summary())
    else:
        log(f"merged {result.records:,} records from {len(result.shards)} shards ({order}) into {output or '<stdout>'}")
    return 0
