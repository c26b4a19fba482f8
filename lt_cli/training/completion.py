"""The ``completion`` layout: supervised fine-tuning records ``{"prompt", "completion"}``.

Why a layout of its own: fine-tuning evaluation (``lt finetune-eval``, the reference's
``apps/main/finetune.py``) trains on prompt + completion with the loss on the completion only, and
the training loop already knows how to restrict the loss to marked character spans
(``--loss-on observed``). So a completion record renders as one segment, ``prompt + completion``,
whose only observed span is the completion: with ``loss_on="observed"`` the labels are the
completion's tokens and EOS (and BOS, as for every segment); with ``loss_on="all"`` the prompt
is trained on too.
"""

from __future__ import annotations

from typing import Any

LAYOUT = "completion"


def validate_completion_record(record: dict[str, Any]) -> None:
    for key in ("prompt", "completion"):
        if not isinstance(record.get(key), str):
            raise ValueError(f"--layout {LAYOUT} needs string fields 'prompt' and 'completion' (missing {key!r})")
    if not record["completion"]:
        raise ValueError("empty 'completion': nothing to train on")


def completion_text(prompt: str, completion: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """The segment text and its observed (in the loss) character span: the completion."""
    return prompt + completion, ((len(prompt), len(prompt) + len(completion)),)
