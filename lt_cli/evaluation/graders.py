"""Answer extraction and equivalence for generation tasks.

Two graders ship with ``lt``:

* ``gsm8k`` (numbers): ``flexible`` takes the LAST number in the output; ``strict`` takes the number
  after "the answer is" (or "the final answer is", or the dataset's own ``#### N`` marker). Both are
  compared with the gold answer as strings after :func:`normalize_number` (case, commas, ``$``,
  ``#### ``, a trailing period and surrounding whitespace are ignored), as in the reference's
  lm-evaluation-harness setup. There is no numeric tolerance: ``18.0`` and ``18`` differ.
* ``math`` (math-verify): the gold solution's last ``\\boxed{}`` and the generation are parsed by
  ``math_verify.parse`` and compared by ``math_verify.verify`` (symbolic equivalence).
* ``multiple_choice`` (MMLU chain of thought): ``strict`` takes the letter of the first "answer is
  (X)", ``flexible`` the last "(X)" (then the reference's fallbacks: a choice's text, "Answer: X").

Latent-variant outputs look like ``thought <EoL> stated answer``. Every grader also grades the two
parts separately (prefixes ``thought_`` and ``answer_``): the text before the first ``<EoL>``
(all of it when the model never closed the latent) and the text after it (empty when it did not).
The headline metric grades the whole output with the special-token strings removed.

A grader is a small object with ``metrics`` (names, first one is the headline), ``gold(record)``
and ``grade(output, gold) -> GradeResult``; register more with :func:`register_grader`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import formats

Record = dict[str, Any]


@dataclass
class GradeResult:
    """Per-metric extracted answers and correctness for one output."""

    extracted: dict[str, str | None] = field(default_factory=dict)
    correct: dict[str, bool] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ numbers
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\$?\.\d+")
_STRICT = re.compile(
    r"(?:the\s+(?:final\s+)?answer\s+is|####)\s*:?\s*\$?\s*(-?\$?\d[\d,]*(?:\.\d+)?)",
    re.IGNORECASE,
)


def normalize_number(text: str | None) -> str | None:
    """Canonical form for exact match: lower case, no commas, ``$``, ``#### `` or trailing period."""
    if text is None:
        return None
    text = text.strip().lower()
    text = text.replace("#### ", "").replace("####", "")
    text = text.replace(",", "").replace("$", "").strip()
    while text.endswith("."):
        text = text[:-1].rstrip()
    return text


def extract_last_number(text: str) -> str | None:
    """The last number in ``text`` (``flexible``), or None when there is none."""
    matches = _NUMBER.findall(text)
    if not matches:
        return None
    return matches[-1].rstrip(",")


def extract_stated_number(text: str) -> str | None:
    """The number after the first "the answer is" / "#### " (``strict``), or None."""
    match = _STRICT.search(text)
    return match.group(1).rstrip(",") if match else None


def gsm8k_gold(record: Record) -> str:
    """Gold answer of a GSM8K-style record.

    Accepts the Hugging Face schema (``answer`` = worked solution ending in ``#### N``) and the
    shared-data schema (``answer`` = ``N``, ``solution`` separate).
    """
    answer = record.get("answer")
    if answer is None:
        raise ValueError("missing field 'answer'")
    answer = str(answer)
    if "####" in answer:
        answer = answer.rsplit("####", 1)[1]
    gold = normalize_number(answer)
    if not gold:
        raise ValueError("field 'answer' has no final answer")
    return gold


# ------------------------------------------------------------------------------- latent split
def split_latent_output(output: str) -> tuple[str, str]:
    """(thought, answer): text before the first ``<EoL>`` and after it, special tokens removed."""
    separator = formats.latent_answer_separator()
    if separator in output:
        thought, answer = output.split(separator, 1)
    else:
        thought, answer = output, ""
    return formats.strip_special_tokens(thought), formats.strip_special_tokens(answer)


class Grader:
    """Base class: grade one output (whole, and for latent outputs, thought and answer parts)."""

    name = "base"
    #: metric names; the first is the task's headline ``accuracy``
    base_metrics: tuple[str, ...] = ()

    def metrics(self, latent: bool) -> list[str]:
        names = list(self.base_metrics)
        if latent:
            names += [f"thought_{m}" for m in self.base_metrics] + [f"answer_{m}" for m in self.base_metrics]
        return names

    def gold(self, record: Record) -> Any:
        raise NotImplementedError

    def check(self, record: Record) -> None:
        """Raise ValueError when ``record`` has no usable gold answer (cheap; used while reading)."""
        self.gold(record)

    def gold_display(self, gold: Any) -> str:
        return str(gold)

    def grade_text(self, text: str, gold: Any) -> GradeResult:
        raise NotImplementedError

    def vote_key(self, extracted: str | None) -> str | None:
        """The key majority voting groups answers by (None never wins a vote)."""
        return extracted

    def grade(self, output: str, gold: Any, *, latent: bool = False) -> GradeResult:
        result = self.grade_text(formats.strip_special_tokens(output), gold)
        if latent:
            thought, answer = split_latent_output(output)
            for prefix, part in (("thought_", thought), ("answer_", answer)):
                sub = self.grade_text(part, gold)
                for metric in self.base_metrics:
                    result.extracted[prefix + metric] = sub.extracted[metric]
                    result.correct[prefix + metric] = sub.correct[metric]
        return result


class NumberGrader(Grader):
    """GSM8K-style grading: ``flexible`` (last number, headline) and ``strict`` ("the answer is N")."""

    name = "gsm8k"
    base_metrics = ("flexible", "strict")

    def gold(self, record: Record) -> str:
        return gsm8k_gold(record)

    def grade_text(self, text: str, gold: str) -> GradeResult:
        flexible = extract_last_number(text)
        strict = extract_stated_number(text)
        return GradeResult(
            extracted={"flexible": flexible, "strict": strict},
            correct={
                "flexible": flexible is not None and normalize_number(flexible) == gold,
                "strict": strict is not None and normalize_number(strict) == gold,
            },
        )

    def vote_key(self, extracted: str | None) -> str | None:
        return normalize_number(extracted) if extracted is not None else None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces allowed), else None."""
    best = None
    for match in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, match.end()
        while i < len(text) and depth:
            if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "{}\\":
                i += 2
                continue
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            best = text[match.end():i - 1].strip()
    return best


class MathVerifyGrader(Grader):
    """MATH grading with math-verify: the gold solution's final (boxed) answer vs the generation."""

    name = "math"
    base_metrics = ("math_verify",)

    def gold(self, record: Record) -> Any:
        from math_verify import parse

        solution = record.get("solution")
        if isinstance(solution, str) and solution.strip():
            parsed = parse(solution)
            if parsed:
                return parsed
        answer = record.get("answer")
        if isinstance(answer, str) and answer.strip():
            parsed = parse(f"$\\boxed{{{answer}}}$")
            if parsed:
                return parsed
        raise ValueError("no gold answer: neither 'solution' nor 'answer' has a parsable final answer")

    def check(self, record: Record) -> None:
        for key in ("solution", "answer"):
            if isinstance(record.get(key), str) and record[key].strip():
                return
        raise ValueError("missing field 'solution' (or 'answer') with the gold final answer")

    def gold_display(self, gold: Any) -> str:
        return str(gold[-1]) if isinstance(gold, list) and gold else str(gold)

    def grade_text(self, text: str, gold: Any) -> GradeResult:
        from math_verify import parse, verify

        parsed = parse(text) if text.strip() else []
        extracted = str(parsed[-1]) if parsed else None
        correct = bool(parsed) and bool(verify(gold, parsed))
        return GradeResult(extracted={"math_verify": extracted}, correct={"math_verify": correct})


# ----------------------------------------------------------------------------- multiple choice
_STATED_LETTER = re.compile(r"answer is \(([A-Z])\)")  # the reference's strict filter: case as written
_LETTER = re.compile(r"\(([A-Z])\)")
_COLON_LETTER = ":[\\s]*({letters})"
_PUNCTUATION = None


def _without_punctuation(text: str) -> str:
    """``text`` without Unicode punctuation (categories P*), as lm-eval's ``ignore_punctuation``."""
    global _PUNCTUATION
    if _PUNCTUATION is None:
        import sys
        import unicodedata

        _PUNCTUATION = dict.fromkeys(i for i in range(sys.maxunicode) if unicodedata.category(chr(i)).startswith("P"))
    return text.translate(_PUNCTUATION)


def choice_letter(index: int) -> str:
    return chr(ord("A") + index)


def extract_stated_letter(text: str) -> str | None:
    """``strict``: the letter of the first "answer is (X)" (case-sensitive), or None."""
    match = _STATED_LETTER.search(text)
    return match.group(1) if match else None


def extract_choice(text: str, choices: list[str]) -> str | None:
    """``flexible``: the letter of the LAST "(X)" in ``text``; failing that, the last choice whose
    text appears in the output (case and punctuation ignored); failing that, the last letter after
    a colon ("Answer: B"). The reference's lm-eval ``multi_choice_regex`` filter, in that order."""
    found = _LETTER.findall(text)
    if found:
        return found[-1]
    normalized = {_without_punctuation(c.strip().lower()): choice_letter(i) for i, c in enumerate(choices)}
    normalized.pop("", None)  # an empty choice would match everywhere
    if normalized:
        pattern = re.compile("|".join(re.escape(c) for c in normalized))
        hits = pattern.findall(_without_punctuation(text.lower()))
        if hits:
            return normalized[hits[-1]]
    if choices:
        letters = "|".join(choice_letter(i) for i in range(len(choices)))
        hits = re.findall(_COLON_LETTER.format(letters=letters), text)
        if hits:
            return hits[-1]
    return None


def multiple_choice_gold(record: Record) -> tuple[str, list[str]]:
    """(gold letter, choices) of an MMLU-style record: ``choices`` a list of strings, ``answer`` the
    index of the right one (Hugging Face MMLU) or its letter (``"B"`` or ``"(B)"``)."""
    choices = record.get("choices")
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
        raise ValueError("missing field 'choices' (a list of strings)")
    answer = record.get("answer")
    if isinstance(answer, bool) or answer is None:
        raise ValueError("missing field 'answer' (the index or letter of the right choice)")
    if isinstance(answer, int):
        index = answer
    elif isinstance(answer, str) and re.fullmatch(r"\(?[A-Z]\)?", answer.strip()):
        index = ord(answer.strip().strip("()")) - ord("A")
    else:
        raise ValueError(f"field 'answer' must be a choice index or letter, got {answer!r}")
    if not 0 <= index < len(choices):
        raise ValueError(f"field 'answer' {answer!r} is not one of the {len(choices)} choices")
    return choice_letter(index), list(choices)


class MultipleChoiceGrader(Grader):
    """MMLU chain-of-thought grading (the reference's two filters): ``flexible`` (headline; the last
    "(X)", with the reference's fallbacks) and ``strict`` (the first "answer is (X)")."""

    name = "multiple_choice"
    base_metrics = ("flexible", "strict")

    def gold(self, record: Record) -> tuple[str, list[str]]:
        return multiple_choice_gold(record)

    def gold_display(self, gold: Any) -> str:
        return f"({gold[0]})"

    def grade_text(self, text: str, gold: tuple[str, list[str]]) -> GradeResult:
        letter, choices = gold
        flexible = extract_choice(text, choices)
        strict = extract_stated_letter(text)
        return GradeResult(
            extracted={"flexible": f"({flexible})" if flexible else None, "strict": f"({strict})" if strict else None},
            correct={"flexible": flexible == letter, "strict": strict == letter},
        )


GRADERS: dict[str, Callable[[], Grader]] = {"gsm8k": NumberGrader, "number": NumberGrader, "math": MathVerifyGrader,
                                            "multiple_choice": MultipleChoiceGrader}


def register_grader(name: str, factory: Callable[[], Grader]) -> None:
    """Make ``"grader": name`` usable in task files."""
    GRADERS[name] = factory


def get_grader(name: str) -> Grader:
    try:
        return GRADERS[name]()
    except KeyError:
        from ..errors import UsageError

        raise UsageError(f"unknown grader {name!r} (known: {', '.join(sorted(GRADERS))})") from None
