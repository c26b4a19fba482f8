"""`lt env`: versions, device and the differences from the reference, for a bug report."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import run_command

HELP = "Print versions (lt, Python, torch, CUDA, transformers, vllm, datasets...), the device and the differences list."
EXAMPLES = """\
lt env                 # paste the output into a bug report
lt env --json          # the same as one JSON object
"""
DETAILS = """\
Versions are read from package metadata (absent optional packages are reported as not installed);
torch is imported for the device. Variables that may hold secrets (LT_API_KEY, HF_TOKEN...) are
listed by name only.
"""


@run_command
def command(
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object instead of text lines.")] = False,
    no_device: Annotated[bool, typer.Option("--no-device", help="Do not import torch to describe the device (faster).")] = False,
) -> int:
    from ..console import protect_stdout
    from ..envinfo import collect, lines
    from ..files import write_stdout_json

    info = collect(device=not no_device)
    if json_output:
        write_stdout_json(info)
        return 0
    stream = protect_stdout()
    stream.write(("\n".join(lines(info)) + "\n").encode("utf-8"))
    stream.flush()
    return 0
