"""The demo corpus: observed text that is the compressed outcome of a multi-step latent process.

A fixed random *state machine* (``n_states`` states, ``n_letters`` input letters, each letter a
random permutation of the states) runs from state 0 over a word of ``n_steps`` letters. A document
shows only the word and the final state::

    chunk 0 (problem): "Q: cbadjehf"
    chunk 1 (answer):  " Answer: 7"

The hidden process, the sequence of intermediate states ``"35190247"``, is the latent
thought of the answer chunk: it is what a teacher writes down, and what the E-step has to infer.
Without it the answer is a composition of ``n_steps`` table look-ups that a tiny model cannot learn
from the final states alone (raw training stays near chance); with it every step is one look-up.

Documents are pre-chunked (``chunks`` present) because sentence chunking would not split them into
problem and answer. Nothing is hidden in the problem chunk, so it carries ``"latent": ""`` and
``"latent_fixed": true`` (records.LATENT_FIXED) in every file: the E-step does not sample a thought
for it and training always renders it in the prior layout. Without the mark, the fair-coin layout put
three extra tokens after the problem half of the time, the model had to learn two distances from
letter i to state i per layout of the answer chunk, and a 10% warm start stayed at chance (0.10
held-out accuracy; 0.59 with the mark, 300 steps, measured).

**Why the answer chunk is ten tokens long.** The random layout still writes the answer chunk in
two ways: prior (``<SoL><PRIOR> states <EoL> Answer: 7``) and posterior
(``<SoL><EoL> Answer: 7<SoL><POST> states <EoL>``). State i then sits at two distances from letter
i, and they differ by the answer chunk's length + 2 tokens. When that difference is smaller than
``n_steps``, the look-up learned for one layout, applied to the other, lands on another letter of
the word: with the earlier answer `` A:7`` (difference 6) exactly states 7-8 (prior) and 2
(posterior) were wrong, and whether a run learned to tell the layouts apart was luck (teacher
baseline 0.99 on one run, 0.80 on a rerun of the same seed, 0.31-0.45 with seed 7).
`` Answer: 7`` makes the difference 12, so it never lands on a letter for up to 12 steps
(:data:`MAX_STEPS`), and every seed measured learned the task (docs/bootstrap.md, "Calibration").

Everything is a pure function of :class:`DemoCorpusConfig` (numpy ``default_rng(seed)``), so the
same config always writes byte-identical files.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..records import LATENT_FIXED, is_latent_fixed

LETTERS = "abcdefghijklmnopqrstuvwxyz"
PROBLEM_PREFIX = "Q: "
ANSWER_PREFIX = " Answer: "
_ANSWER = re.compile(r"Answer:\s*(\d+)")
#: The longest word for which the two layouts' letter-to-state distances (which differ by the answer
#: chunk's length + 2 = 12 tokens) never point at two different letters of it (module docstring).
MAX_STEPS = len(ANSWER_PREFIX) + 1 + 2


@dataclass(frozen=True)
class DemoCorpusConfig:
    """Sizes of the synthetic task. Defaults: 2,000 training documents, 5% with teacher thoughts."""

    n_states: int = 10
    n_letters: int = 10
    n_steps: int = 8
    n_train: int = 2000
    n_heldout: int = 500
    #: fraction of training documents whose teacher thoughts the warm start may see (5% = 100
    #: documents: the warm start learns part of the table; 10% already solved the task)
    warm_fraction: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.n_states <= 10:
            raise ValueError("n_states must be in [2, 10] (one digit per state in the thought)")
        if not 1 <= self.n_letters <= len(LETTERS):
            raise ValueError(f"n_letters must be in [1, {len(LETTERS)}]")
        if self.n_steps < 1 or self.n_train < 1 or self.n_heldout < 1:
            raise ValueError("n_steps, n_train and n_heldout must be positive")
        if self.n_steps > MAX_STEPS:
            raise ValueError(f"n_steps must be at most {MAX_STEPS}: the answer chunk must separate the two layouts' letter-to-state distances by more")
        if not 0.0 < self.warm_fraction <= 1.0:
            raise ValueError("warm_fraction must be in (0, 1]")
        if self.n_letters**self.n_steps < 2 * (self.n_train + self.n_heldout):
            # documents are distinct words; demand slack so rejection sampling ends quickly
            raise ValueError(
                f"{self.n_letters}^{self.n_steps} possible problems are too few for {self.n_train} + {self.n_heldout} distinct "
                "documents (need at least twice as many): raise n_letters or n_steps"
            )

    @property
    def n_warm(self) -> int:
        return max(1, int(round(self.n_train * self.warm_fraction)))

    @property
    def chance_accuracy(self) -> float:
        return 1.0 / self.n_states


class StateMachine:
    """``transitions[letter][state]`` is the next state; each row is a permutation of the states."""

    def __init__(self, n_states: int, n_letters: int, rng: np.random.Generator):
        self.n_states = n_states
        self.letters = LETTERS[:n_letters]
        self.transitions = {letter: [int(s) for s in rng.permutation(n_states)] for letter in self.letters}

    def trace(self, word: str, start: int = 0) -> list[int]:
        """The states visited after each letter (the last one is the answer)."""
        state = start
        states = []
        for letter in word:
            state = self.transitions[letter][state]
            states.append(state)
        return states


def problem_text(word: str) -> str:
    return f"{PROBLEM_PREFIX}{word}"


def answer_text(state: int) -> str:
    return f"{ANSWER_PREFIX}{state}"


def thought_text(states: list[int]) -> str:
    """The teacher's latent for the answer chunk: every intermediate state, one digit each.

    No separators: with one token per state, state i sits at a fixed distance from letter i of the
    problem, which a tiny model with relative positions learns quickly. With spaces the distance
    grows with i, and a full-teacher model reached 11% instead of 32% (400 steps, measured).
    """
    return "".join(str(s) for s in states)


def parse_answer(generation: str) -> int | None:
    """The first ``Answer: <number>`` in a generation, or None when the model never stated an answer."""
    match = _ANSWER.search(generation)
    return int(match.group(1)) if match else None


def _documents(config: DemoCorpusConfig) -> tuple[StateMachine, list[dict[str, Any]], list[dict[str, Any]]]:
    rng = np.random.default_rng(config.seed)
    machine = StateMachine(config.n_states, config.n_letters, rng)
    n_total = config.n_train + config.n_heldout
    seen: set[str] = set()
    words: list[str] = []
    # Distinct words, so no held-out problem is a training document.
    while len(words) < n_total:
        word = "".join(machine.letters[i] for i in rng.integers(0, config.n_letters, size=config.n_steps))
        if word not in seen:
            seen.add(word)
            words.append(word)
    docs = []
    for index, word in enumerate(words):
        states = machine.trace(word)
        split = "train" if index < config.n_train else "heldout"
        number = index if split == "train" else index - config.n_train
        docs.append(
            {
                "id": f"demo-{split}-{number:05d}",
                "text": problem_text(word) + answer_text(states[-1]),
                "num_chunks": 2,
                "chunks": [
                    {"text": problem_text(word), "latent": "", LATENT_FIXED: True},
                    {"text": answer_text(states[-1]), "latent": thought_text(states)},
                ],
                "answer": states[-1],
            }
        )
    return machine, docs[: config.n_train], docs[config.n_train :]


def strip_latents(doc: dict[str, Any]) -> dict[str, Any]:
    """The raw document (chunk texts, and the given empty latent of the fixed problem chunk): what
    the E-step and the raw baseline see."""
    out = {k: v for k, v in doc.items() if k != "chunks"}
    out["chunks"] = [c if is_latent_fixed(c) else {"text": c["text"]} for c in doc["chunks"]]
    return out


@dataclass(frozen=True)
class DemoCorpusFiles:
    raw: Path  # all training documents, no latents (pre-chunked)
    warm: Path  # the warm-start subset with teacher thoughts
    teacher: Path  # every training document with teacher thoughts (the teacher baseline)
    heldout: Path  # held-out problems with the answer (accuracy eval)
    machine: Path  # the state machine, for inspection


def write_demo_corpus(folder: str | Path, config: DemoCorpusConfig = DemoCorpusConfig()) -> DemoCorpusFiles:
    """Write the four JSONL files of the demo (atomically; identical bytes for the same config)."""
    from ..files import write_json
    from ..output import open_output

    folder = Path(folder)
    machine, train_docs, heldout_docs = _documents(config)
    files = DemoCorpusFiles(
        raw=folder / "raw.jsonl",
        warm=folder / "warm.jsonl",
        teacher=folder / "teacher.jsonl",
        heldout=folder / "heldout.jsonl",
        machine=folder / "machine.json",
    )
    with open_output(files.raw) as out:
        for doc in train_docs:
            out.write(strip_latents(doc))
    with open_output(files.teacher) as out:
        for doc in train_docs:
            out.write(doc)
    with open_output(files.warm) as out:
        for doc in train_docs[: config.n_warm]:
            out.write(doc)
    with open_output(files.heldout) as out:
        for doc in heldout_docs:
            out.write(strip_latents(doc))
    write_json(files.machine, {"config": asdict(config), "letters": machine.letters, "transitions": machine.transitions})
    return files
