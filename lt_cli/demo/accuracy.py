"""Held-out accuracy on the demo task: greedy decoding of each problem, exact match of the answer.

Two prompt variants, as in the paper's evaluation (docs/method.md §6; the reference's ``latent_``
task variants in ``ryoungj/BoLT configs/eval/task_configs/``):

* ``latent``: the problem chunk rendered as in training (prior layout, empty latent), then
  ``<SoL><PRIOR>``, so the model first writes its thought, closes it with ``<EoL>`` and states
  `` Answer: <state>``. Only the text after the first ``<EoL>`` is graded: an answer inside the
  thought does not count.
* ``raw``: the problem text alone; the model continues with `` Answer: <state>`` (the raw baseline).

The function works on any :class:`~lt_cli.backends.base.Backend` (temperature 0 = greedy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..formats import END_OF_LATENT, latent_eval_suffix, render_chunks, strip_special_tokens
from .corpus import parse_answer

VARIANTS = ("latent", "raw")


@dataclass(frozen=True)
class DemoEvalConfig:
    variant: str = "latent"
    #: thought (~2 tokens per step) + `` A:`` + answer + EOS, with room to spare
    max_new_tokens: int = 48
    batch_size: int = 128
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown demo eval variant {self.variant!r} (expected one of {', '.join(VARIANTS)})")


def demo_prompt(problem_chunk: str, variant: str) -> str:
    if variant == "latent":
        return render_chunks([{"text": problem_chunk, "latent": ""}], ["prior"]) + latent_eval_suffix()
    if variant == "raw":
        return problem_chunk
    raise ValueError(f"unknown demo eval variant {variant!r}")


def graded_text(generation: str, variant: str) -> str:
    """The part of a generation that may state the answer (after the first ``<EoL>`` for latent)."""
    if variant == "latent":
        if END_OF_LATENT not in generation:
            return ""
        generation = generation.split(END_OF_LATENT, 1)[1]
    return strip_special_tokens(generation)


def evaluate_demo_accuracy(backend, documents: Sequence[dict[str, Any]], config: DemoEvalConfig = DemoEvalConfig()) -> dict[str, Any]:
    """Accuracy (fraction of problems answered exactly) plus per-problem outputs.

    ``documents`` are held-out demo records (``chunks[0].text`` is the problem, ``answer`` the
    final state). Returns ``{"accuracy", "accuracy_stderr", "n_problems", "n_answered", "samples": [...]}``.
    """
    from ..backends.base import SamplingParams
    from ..errors import LtError

    docs = list(documents)[: config.limit] if config.limit else list(documents)
    if not docs:
        raise LtError("demo accuracy: no held-out problems")
    for doc in docs:
        if "answer" not in doc or not doc.get("chunks"):
            raise LtError(f"demo accuracy: record {doc.get('id')!r} has no 'answer' or no 'chunks' (not a demo held-out file?)")
    params = SamplingParams(n=1, temperature=0.0, top_p=1.0, max_new_tokens=config.max_new_tokens, stop=())
    samples = []
    n_correct = 0
    n_answered = 0
    for start in range(0, len(docs), config.batch_size):
        batch = docs[start : start + config.batch_size]
        prompts = [demo_prompt(doc["chunks"][0]["text"], config.variant) for doc in batch]
        outputs = backend.sample(prompts, params)
        for doc, output in zip(batch, outputs):
            generation = output[0].text
            predicted = parse_answer(graded_text(generation, config.variant))
            correct = predicted is not None and predicted == int(doc["answer"])
            n_correct += int(correct)
            n_answered += int(predicted is not None)
            samples.append({"id": doc.get("id"), "answer": int(doc["answer"]), "predicted": predicted, "correct": correct, "generation": generation})
    from ..evaluation.metrics import STDERR_METHOD, stderr_over_problems

    return {
        "accuracy": n_correct / len(docs),
        "accuracy_stderr": stderr_over_problems([float(sample["correct"]) for sample in samples]),
        "stderr_method": STDERR_METHOD,
        "n_problems": len(docs),
        "n_answered": n_answered,
        "variant": config.variant,
        "samples": samples,
    }
