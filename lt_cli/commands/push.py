"""`lt push`: a JSONL output, a bootstrap run folder or a checkpoint to the Hugging Face Hub, with a card."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import run_command

HELP = "Push a JSONL output, a run folder or a checkpoint to the Hugging Face Hub with a card saying what produced it."
EXAMPLES = """\
lt push augmented.jsonl me/my-augmented-data         # dataset repo: data/augmented.jsonl + card
lt push lt-runs/demo me/bolt-demo-run                 # the run's data, reports and configs (no weights)
lt push lt-runs/gsm8k/k4/iter3/model me/bolt-k4-iter3 # model repo with a model card
lt push augmented.jsonl me/data --dry-run             # print the card, list the files, send nothing
"""
DETAILS = """\
The card records the command (rendered from the config lt saved beside the output), model, K,
seeds, statistics, the lt version and the differences from the reference code that applied.
Authentication is huggingface_hub's (HF_TOKEN or huggingface-cli login); HF_ENDPOINT selects a
mirror. A pushed JSONL reads back as hf://datasets/OWNER/NAME:train. On stdout: one JSON object
(repository, commit, files).
"""
NO_ARGS_IS_HELP = True


@run_command
def command(
    path: Annotated[str, typer.Argument(help="A JSONL output, a bootstrap run folder or a checkpoint folder.", show_default=False)],
    repo_id: Annotated[str, typer.Argument(help="The repository, OWNER/NAME (created if missing).", show_default=False)],
    repo_type: Annotated[str, typer.Option("--repo-type", help="auto (from PATH), dataset or model.")] = "auto",
    private: Annotated[bool, typer.Option("--private", help="Create the repository private.")] = False,
    message: Annotated[Optional[str], typer.Option("--message", "-m", help="Commit message.", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the card on stdout and the files on stderr; send nothing.")] = False,
) -> int:
    from ..errors import UsageError
    from ..files import write_stdout_json

    if repo_type not in ("auto", "dataset", "model"):
        raise UsageError(f"--repo-type must be auto, dataset or model, got {repo_type!r}")
    if dry_run:
        from ..console import log, protect_stdout
        from ..push import plan_upload

        upload = plan_upload(path, repo_id, repo_type)
        for name, local in upload.files.items():
            log(f"{upload.repo_type} {repo_id}: {name} <- {local}")
        stream = protect_stdout()
        stream.write(upload.card.encode("utf-8"))
        stream.flush()
        return 0
    from ..push import push

    write_stdout_json(push(path, repo_id, repo_type=repo_type, private=private, message=message))
    return 0
