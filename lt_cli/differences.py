"""The differences from the reference code, as data: what ``lt env`` prints and what ``lt push`` cards record.

docs/formats.md ("Differences from the reference code") explains each item in full: what the
reference does, what lt does, which flag restores the reference, what changes. This module holds
the same numbered list in short form, with the stage it concerns and, for the items a setting turns
on or off, a predicate saying whether it was in effect for a run's settings, so a dataset or model
card can list the differences that applied to what it describes. ``tests/test_differences.py``
checks that numbers and titles match the document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

Settings = dict[str, Any]


@dataclass(frozen=True)
class Difference:
    number: int
    #: the bold title of the item in docs/formats.md
    title: str
    #: the lt command it concerns (``bootstrap`` for the EM loop's own choices)
    stage: str
    #: the flag that restores the reference's behaviour, if any
    restore: str | None = None
    #: in effect for these settings (flag names without dashes, missing = default); None: always,
    #: whenever the stage ran
    in_effect: Callable[[Settings], bool] | None = None

    def applies(self, settings: Settings) -> bool:
        return True if self.in_effect is None else bool(self.in_effect(settings))


def _prompt_budget(s: Settings) -> int | None:
    if s.get("max_prompt_tokens") is not None:
        return int(s["max_prompt_tokens"])
    return 1024 if s.get("reference_quirks") else None


DIFFERENCES: tuple[Difference, ...] = (
    Difference(1, "Sentence units", "chunk", None, lambda s: s.get("sentences") == "english"),
    Difference(2, "Leading newlines", "chunk"),
    Difference(3, "Chunks with a given latent (`latent_fixed`)", "chunk", "remove the mark"),
    Difference(4, "Prompt wording", "synthesize"),
    Difference(5, "WRAP passes", "synthesize", None, lambda s: s.get("method") in ("wrap", "wrap-cot") and int(s.get("passes") or 1) > 1),
    Difference(6, "First-chunk posterior prompt", "sample-thoughts", "--reference-quirks", lambda s: not s.get("reference_quirks")),
    Difference(7, "Joint score off by one", "sample-thoughts", "--reference-quirks", lambda s: not s.get("reference_quirks")),
    Difference(8, "Posterior prompt budget", "sample-thoughts", "--max-prompt-tokens 1024", lambda s: _prompt_budget(s) != 1024),
    Difference(9, "Scoring truncation", "sample-thoughts"),
    Difference(10, "Sampling seeds", "sample-thoughts"),
    Difference(11, "Sample cache", "sample-thoughts"),
    Difference(12, "Adaptive E-step (`--k-max`)", "sample-thoughts", "no --k-max", lambda s: s.get("k_max") is not None or bool(s.get("adaptive"))),
    Difference(13, "Importance resampling", "select"),
    Difference(14, "Candidates per chunk", "select"),
    Difference(15, "Where each M-step starts", "bootstrap", "--from-base", lambda s: bool(s.get("continue_training"))),
    Difference(16, "K sweeps and seeds", "bootstrap"),
    Difference(17, "Training trials", "bootstrap"),
    Difference(18, "Batch sizes", "bootstrap", "--batch-size 192 --warm-batch-size 96", lambda s: s.get("warm_batch_size") is None),
    Difference(19, "The embedded demo", "bootstrap", "--data and --model", lambda s: bool(s.get("demo"))),
    Difference(20, "Warmup", "train"),
    Difference(21, "Ablation layouts", "train", "--layout prior|posterior", lambda s: s.get("layout") in ("prior-tagged", "posterior-tagged")),
    Difference(22, "Tokenization at the document start and after special tokens", "train"),
    Difference(23, "BOS", "train"),
    Difference(24, "Packing and data order", "train"),
    Difference(25, "Model implementation", "train"),
    Difference(26, "Few-shot prompts", "eval", None, lambda s: s.get("task", "gsm8k") in ("gsm8k", "math")),
    Difference(27, "`--variant auto`", "eval", "--variant latent|raw", lambda s: s.get("variant", "auto") == "auto"),
    Difference(28, "NLL sign", "eval", None, lambda s: s.get("task") in ("nll", "elbo")),
    Difference(29, "ELBO evaluation", "eval", "--reference-quirks", lambda s: s.get("task") == "elbo" and not s.get("reference_quirks")),
    Difference(30, "GSM8K answer extraction", "eval", None, lambda s: s.get("task", "gsm8k") == "gsm8k"),
    Difference(31, "math-verify version", "eval", "math-verify==0.5.2", lambda s: s.get("task") == "math"),
    Difference(32, "Fine-tuning evaluation", "finetune-eval"),
)

#: the stages whose differences concern the output of each command (a stage's output carries the
#: choices of the stages before it: augmented data was chunked, sampled and selected)
UPSTREAM = {
    "chunk": ("chunk",),
    "synthesize": ("chunk", "synthesize"),
    "sample-thoughts": ("chunk", "sample-thoughts"),
    "select": ("chunk", "sample-thoughts", "select"),
    "train": ("train",),
    "eval": ("eval",),
    "finetune-eval": ("train", "finetune-eval"),
    "bootstrap": ("chunk", "synthesize", "sample-thoughts", "select", "bootstrap", "train", "eval", "finetune-eval"),
}


def applied(command: str, settings: Settings | None = None, *, stages: Iterable[str] | None = None) -> list[Difference]:
    """The differences in effect for an output of ``command`` run with ``settings`` (flag names)."""
    wanted = set(stages if stages is not None else UPSTREAM.get(command, (command,)))
    settings = settings or {}
    return [d for d in DIFFERENCES if d.stage in wanted and d.applies(settings)]


def describe(difference: Difference) -> str:
    """``"6. First-chunk posterior prompt (sample-thoughts; restore: --reference-quirks)"``."""
    restore = f"; restore: {difference.restore}" if difference.restore else ""
    return f"{difference.number}. {difference.title} ({difference.stage}{restore})"
