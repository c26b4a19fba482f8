"""What the ``utils.py`` written by ``lt eval --export-lm-eval`` imports: lm-eval's
``process_results`` hook backed by lt's graders, so lm-eval scores exactly as ``lt eval`` does.

lm-eval calls ``process_results(doc, results)`` with the test document and the (filtered)
generations; the hook grades the first one and returns ``{metric: 0.0 or 1.0}`` for every metric
of the grader (``flexible``/``strict`` for GSM8K, ``math_verify`` for MATH; latent variants add
``thought_*`` and ``answer_*``). Note: lm-eval's ``hf`` model decodes with
``skip_special_tokens=True``, so ``<EoL>`` is gone from its generations and the thought/answer
split then sees the whole output as thought (the headline metric is unaffected).
"""

from __future__ import annotations

from typing import Any, Callable


def make_process_results(grader_name: str, *, latent: bool) -> Callable[[dict, list], dict[str, float]]:
    from .graders import get_grader

    grader = get_grader(grader_name)
    names = grader.metrics(latent)

    def process_results(doc: dict[str, Any], results: list) -> dict[str, float]:
        output = results[0] if results else ""
        if isinstance(output, (list, tuple)):  # some lm-eval filters keep a list per document
            output = output[0] if output else ""
        result = grader.grade(str(output), grader.gold(doc), latent=latent)
        return {name: float(result.correct[name]) for name in names}

    return process_results


def make_docs_filter(field: str, value: Any) -> Callable:
    """lm-eval's ``process_docs`` hook keeping the documents whose ``field`` is ``value`` (one
    exemplar set of a task, e.g. one MMLU subject, out of a file holding several)."""

    def process_docs(dataset):
        return dataset.filter(lambda doc: doc.get(field) == value)

    return process_docs
