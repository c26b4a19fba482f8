"""The teacher's prompts: latent thoughts per chunk, and the WRAP rephrasing baselines.

Why: BoLT's warm start trains on latent thoughts written by a strong teacher (the paper used
gpt-4o-mini-2024-07-18 at T=0.7), and the paper compares them with WRAP-style rephrasings of whole
documents (docs/method.md). The prompts are lt's own, written to that brief:

* ``latent``: per chunk, the teacher sees the previous chunk (``prefix_chunks=1``; "N/A" for the
  first) and the chunk, and writes the background knowledge and step-by-step reasoning the writer
  left out, as plain declarative text with no remarks about the task.
* ``wrap``: the whole document rephrased in one of four styles (simple/toddler, terse scholarly,
  Wikipedia-style, Question/Answer turns), chosen per document and pass by a seeded draw.
* ``wrap-cot``: a paraphrase that keeps every fact and inserts the reasoning behind each step.
"""

from __future__ import annotations

from ..errors import LtError
from ..seeding import derive_seed

WRAP_STYLES = ("simple", "scholarly", "wikipedia", "qa")
NO_PREFIX = "N/A"

LATENT_SYSTEM = (
    "You are an expert with deep knowledge of mathematics, the sciences and the humanities. "
    "Given any passage from a web document, you can reconstruct the knowledge and the chain of "
    "reasoning that its author relied on without writing them down."
)

LATENT_USER = """\
Below are two consecutive passages of a web document: the text that comes right before (N/A when the \
passage opens the document) and the passage to explain.

Your job: write down the thinking an expert author would have had in mind while writing the passage \
to explain, given what came before it. Include the background facts, definitions and assumptions the \
passage takes for granted, and the reasoning that supports each of its statements, in particular \
every intermediate step of a calculation, a derivation or a logical argument that the passage skips.

=== Text before ===
{prefix}

=== Passage to explain ===
{text}

=== Write the thinking now ===
Follow these rules:
1. Use short, plain, declarative sentences. No headings, bullet points, markdown or decoration.
2. Write only the thinking itself. Do not introduce it, do not comment on the task, and do not refer \
to the passages, the document or their parts; your reply is read by a program.
3. Make every sentence carry information. Leave out empty statements such as "this concept is important".
4. Explain the passage to explain; do not restate the text before it.
5. Concentrate on what the passage leaves unsaid: missing background knowledge and skipped reasoning.
6. When mathematics or logic is involved, carry out the concrete derivation step by step."""

WRAP_PROMPTS = {
    "simple": (
        "Rewrite the text below so that a small child could follow it. Use very easy words and short "
        "sentences, and keep every fact it contains."
    ),
    "scholarly": (
        "Rewrite the text below in a terse, dense and learned register, as it might appear in a "
        "specialist monograph. Keep every piece of information it contains."
    ),
    "wikipedia": (
        "Rewrite the text below as a clear, well-organised passage of a high-quality encyclopedia "
        "article in the style of Wikipedia. Keep every piece of information it contains."
    ),
    "qa": (
        "Turn the text below into a series of question and answer turns that together cover all of its "
        "information. Start each question with \"Question:\" and each answer with \"Answer:\"."
    ),
}
WRAP_TAIL = "Reply with the rewritten text only.\n\nText:\n{text}"

WRAP_COT_PROMPT = """\
Paraphrase the text below with varied, high-quality wording while keeping all of its information. \
Wherever the text states a result, a claim or a step without justifying it, insert the reasoning that \
leads there, such as the intermediate steps of a calculation or a derivation, written out in full. \
Do not start with a title or a remark such as "Here is the paraphrase"; reply with the paraphrased \
text only.

Text:
{text}"""


def latent_messages(prefix: str, text: str) -> list[dict]:
    """System + user messages asking for the latent thoughts behind ``text`` (prefix "N/A" if empty)."""
    user = LATENT_USER.format(prefix=prefix if prefix else NO_PREFIX, text=text)
    return [{"role": "system", "content": LATENT_SYSTEM}, {"role": "user", "content": user}]


def wrap_messages(text: str, style: str) -> list[dict]:
    if style not in WRAP_PROMPTS:
        raise LtError(f"unknown WRAP style {style!r} (one of {', '.join(WRAP_STYLES)})")
    return [{"role": "user", "content": WRAP_PROMPTS[style] + " " + WRAP_TAIL.format(text=text)}]


def wrap_cot_messages(text: str) -> list[dict]:
    return [{"role": "user", "content": WRAP_COT_PROMPT.format(text=text)}]


def wrap_style(seed: int, doc_id: str, pass_index: int) -> str:
    """The style of one document's pass: a uniform draw seeded by (seed, document id, pass)."""
    return WRAP_STYLES[derive_seed("wrap-style", seed, doc_id, pass_index) % len(WRAP_STYLES)]
