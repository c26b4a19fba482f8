"""Fine-tuning records for ``lt finetune-eval``: a task's training problems as prompt/completion.

The layout follows the reference's fine-tuning data (``apps/main/finetune.py``), whose records are
``prompt <SoL><PRIOR> completion`` with ``<EoL>`` before the stated answer; lt writes its own
prompts and targets in the layout of its few-shot exemplars:

* prompt: the task's question prompt (``Question: {question}\\nAnswer:``), then ``<SoL><PRIOR>``
  for latent models or a bare ``<SoL>`` for raw ones (the reference's raw-baseline delimiter);
* completion: the worked solution, the bare final answer on its own line, ``<EoL>`` (latent only:
  the reference deletes it for raw models), then the stated answer from the task file's
  ``finetune.answer_text`` (`` The answer is 18.``).

GSM8K: the solution is the record's ``solution`` (the shared-data form) or the part of ``answer``
before ``####`` (the Hugging Face form), with the calculator annotations ``<<48/2=24>>`` removed
(they are tool calls of the original annotation, not text a model should learn to write); the
answer is the gold number. MATH: the solution verbatim and the answer is the record's ``answer``
or the content of the solution's last ``\\boxed{}``.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from .. import formats
from .graders import last_boxed

Record = dict[str, Any]

_CALCULATOR = re.compile(r"<<[^>]*>>")


def gsm8k_parts(record: Record, grader) -> tuple[str, str]:
    """(worked solution, gold answer) of a GSM8K-style record."""
    gold = grader.gold(record)
    solution = record.get("solution")
    if not isinstance(solution, str):
        answer = record.get("answer")
        if not isinstance(answer, str) or "####" not in answer:
            raise ValueError("no worked solution: needs 'solution' or an 'answer' of the form '... #### N'")
        solution = answer.rsplit("####", 1)[0]
    solution = _CALCULATOR.sub("", solution).strip()
    if not solution:
        raise ValueError("empty worked solution")
    return solution, gold


def math_parts(record: Record, grader) -> tuple[str, str]:
    """(solution, final answer) of a MATH-style record."""
    solution = record.get("solution")
    if not isinstance(solution, str) or not solution.strip():
        raise ValueError("missing field 'solution' (the worked solution)")
    answer = record.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        answer = last_boxed(solution)
    if not answer:
        raise ValueError("no final answer: neither 'answer' nor a \\boxed{} in 'solution'")
    return solution.strip(), answer.strip()


#: grader name -> (record, grader) -> (solution, answer)
PARTS: dict[str, Callable[[Record, Any], tuple[str, str]]] = {"gsm8k": gsm8k_parts, "number": gsm8k_parts, "math": math_parts}


def thought_text(task, solution: str, answer: str) -> str:
    """The thought of a completion: the solution, then the bare answer on its own line (as lt's
    exemplars end their thoughts); MATH answers are wrapped in ``$...$``."""
    shown = f"${answer}$" if task.grader == "math" else answer
    return f"{solution}\n{shown}"


def finetune_prompt(task, record: Record, latent: bool) -> str:
    return task._render_input(record) + task.latent_target_delimiter + formats.finetune_prompt_suffix(latent)


def finetune_record(task, grader, record: Record, latent: bool) -> Record:
    """``{"id", "prompt", "completion"}`` for one training problem (ValueError when unusable)."""
    parts = PARTS.get(task.grader)
    if parts is None:
        raise ValueError(f"no fine-tuning targets for grader {task.grader!r} (known: {', '.join(sorted(PARTS))})")
    solution, answer = parts(record, grader)
    completion = formats.finetune_completion(thought_text(task, solution, answer), task.finetune["answer_text"].format(answer=answer), latent)
    out = {"prompt": finetune_prompt(task, record, latent), "completion": completion}
    if record.get("id") is not None:
        out = {"id": record["id"], **out}
    return out


def record_validator(task, grader) -> Callable[[Record], None]:
    """Checks a training record while it is read (a bad one is reported as FILE:LINE)."""

    def validate(record: Record) -> None:
        task._render_input(record)
        parts = PARTS.get(task.grader)
        if parts is None:
            raise ValueError(f"no fine-tuning targets for grader {task.grader!r}")
        parts(record, grader)

    return validate
