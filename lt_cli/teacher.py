"""Teacher synthesis (`lt synthesize`): latent thoughts per chunk, and the WRAP rephrasing baselines.

Why: BoLT's warm start trains on latent thoughts written by a strong teacher (the paper used
gpt-4o-mini-2024-07-18 at T=0.7), and the paper compares them with WRAP-style rephrasings of whole
documents (docs/bolt-spec.md section 2). The prompts below are lt's own, written to that brief:

* ``latent``: per chunk, the teacher sees the previous chunk (``prefix_chunks=1``; "N/A" for the
  first) and the chunk, and writes the background knowledge and step-by-step reasoning the writer
  left out, as plain declarative text with no remarks about the task. The reply is stored verbatim
  as ``chunks[i].latent``. Chunks marked ``latent_fixed`` keep their given latent (no request).
* ``wrap``: the whole document rephrased in one of four styles (simple/toddler, terse scholarly,
  Wikipedia-style, Question/Answer turns), chosen per document and pass by a seeded draw.
* ``wrap-cot``: a paraphrase that keeps every fact and inserts the reasoning behind each step.
  WRAP outputs go to the document's ``latent`` field (train them with ``--layout pure``).

Every request is seeded from (seed, document id, chunk, pass) and cached by (backend, model,
messages, sampling parameters, pass, seed), so a rerun or a resumed run costs nothing.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator

from .backends.base import FINISH_LENGTH, SamplingParams
from .chunking import ChunkingConfig, prefix_text
from .errors import LtError
from .records import document_id, document_text, ensure_chunks, is_latent_fixed
from .seeding import derive_seed

Record = dict[str, Any]

DEFAULT_TEACHER = "gpt-4o-mini-2024-07-18"
METHODS = ("latent", "wrap", "wrap-cot")
#: max_tokens per method in the reference configs
DEFAULT_MAX_NEW_TOKENS = {"latent": 6000, "wrap": 5000, "wrap-cot": 8000}
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


@dataclass
class SynthesizeConfig:
    """What ``lt synthesize`` asks the teacher (defaults: the reference's teacher settings)."""

    method: str = "latent"
    temperature: float = 0.7
    top_p: float = 1.0
    #: None: the reference's per-method value (6000 latent, 5000 wrap, 8000 wrap-cot)
    max_new_tokens: int | None = None
    #: samples per document (or per chunk) written as separate records, pass 0 first
    passes: int = 1
    seed: int = 42
    #: raw chunks before the current one shown to the teacher (reference: 1)
    prefix_chunks: int = 1
    #: documents per backend call
    docs_per_call: int = 8
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise LtError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.passes < 1:
            raise LtError(f"--passes must be at least 1, got {self.passes}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise LtError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.prefix_chunks < 0:
            raise LtError(f"--prefix-chunks must be >= 0, got {self.prefix_chunks}")
        if self.docs_per_call < 1:
            raise LtError(f"--docs-per-call must be at least 1, got {self.docs_per_call}")

    def sampling_params(self) -> SamplingParams:
        max_new = self.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[self.method]
        return SamplingParams(n=1, temperature=self.temperature, top_p=self.top_p, max_new_tokens=max_new)

    def to_json(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------ prompts
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


# ------------------------------------------------------------------------------------ statistics
_WORD = re.compile(r"\S+")


@dataclass
class SynthesisStats:
    """Counts for the stderr report: outputs, failures, and the latent/raw size ratio."""

    records: int = 0
    requests: int = 0
    empty: int = 0
    truncated: int = 0
    latent_units: int = 0
    raw_units: int = 0
    unit: str = "words"

    def failures(self) -> int:
        return self.empty + self.truncated

    def line(self) -> str:
        ratio = self.latent_units / self.raw_units if self.raw_units else float("nan")
        return (
            f"synthesize: {self.records:,} records, {self.requests:,} teacher outputs, latent/raw {self.unit} "
            f"ratio {ratio:.2f}, failures {self.failures():,} ({self.empty:,} empty, {self.truncated:,} hit max tokens)"
        )


def _counter(backend):
    """Token counts with the backend's tokenizer when it exposes one; word counts otherwise."""
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is not None and hasattr(tokenizer, "encode"):
        return "tokens", lambda text: len(tokenizer.encode(text, add_special_tokens=False))
    return "words", lambda text: len(_WORD.findall(text))


# ------------------------------------------------------------------------------------ synthesis
def _requests_for(doc: Record, config: SynthesizeConfig) -> list[tuple[int, int, list[dict], str | None]]:
    """(pass, chunk index or -1, messages, wrap style) for every request one document needs."""
    doc_id = document_id(doc)
    requests = []
    for p in range(config.passes):
        if config.method == "latent":
            for i, chunk in enumerate(doc["chunks"]):
                if is_latent_fixed(chunk):
                    continue  # its latent is given (records.LATENT_FIXED)
                prefix = prefix_text(doc["chunks"], i, config.prefix_chunks)
                requests.append((p, i, latent_messages(prefix, chunk["text"]), None))
        elif config.method == "wrap":
            style = wrap_style(config.seed, doc_id, p)
            requests.append((p, -1, wrap_messages(document_text(doc), style), style))
        else:
            requests.append((p, -1, wrap_cot_messages(document_text(doc)), "cot"))
    return requests


def _teacher_group(backend, docs: list[Record], config: SynthesizeConfig, cache, stats: SynthesisStats | None, count) -> list[Record]:
    """All output records of a group of documents (``passes`` per document, in order)."""
    from .sample_cache import cache_key, model_fingerprint

    params = config.sampling_params()
    identity = {"backend": getattr(backend, "name", type(backend).__name__), "model": model_fingerprint(str(getattr(backend, "model_id", "")))}
    wanted = []  # (doc index, pass, chunk, messages, style, seed, key)
    for d, doc in enumerate(docs):
        doc_id = document_id(doc)
        for p, i, messages, style in _requests_for(doc, config):
            seed = derive_seed("teacher", config.method, config.seed, doc_id, i, p)
            key = None
            if cache is not None:
                key = cache_key(
                    "teacher", **identity, messages=messages, temperature=params.temperature, top_p=params.top_p,
                    max_new_tokens=params.max_new_tokens, sample_index=p, seed=seed,
                )
            wanted.append((d, p, i, messages, style, seed, key))
    cached = cache.get_many(w[6] for w in wanted) if cache is not None else {}
    missing = [n for n, w in enumerate(wanted) if w[6] not in cached]
    outputs: dict[int, dict] = {}
    if missing:
        results = backend.chat([wanted[n][3] for n in missing], params, seeds=[[wanted[n][5]] for n in missing])
        if len(results) != len(missing):
            raise LtError(f"backend returned {len(results)} results for {len(missing)} conversations")
        fresh = {}
        for n, samples in zip(missing, results):
            value = {"text": samples[0].text, "finished": samples[0].finish_reason != FINISH_LENGTH}
            outputs[n] = value
            if wanted[n][6] is not None:
                fresh[wanted[n][6]] = value
        if cache is not None:
            cache.put_many("teacher", fresh)
    for n, w in enumerate(wanted):
        if w[6] in cached:
            outputs[n] = cached[w[6]]

    records: list[Record] = []
    for d, doc in enumerate(docs):
        mine = [(n, w) for n, w in enumerate(wanted) if w[0] == d]
        for p in range(config.passes):
            in_pass = [(n, w) for n, w in mine if w[1] == p]
            if config.method == "latent":
                out = dict(doc)
                out["chunks"] = [dict(c) for c in doc["chunks"]]
                for n, w in in_pass:
                    out["chunks"][w[2]]["latent"] = outputs[n]["text"]
                if config.passes > 1:
                    out["pass"] = p
            else:
                [(n, w)] = in_pass
                out = dict(doc)
                out["latent"] = outputs[n]["text"]
                out["wrap_style"] = w[4]
                out["pass"] = p
            records.append(out)
            if stats is not None:
                stats.records += 1
                for n, w in in_pass:
                    value = outputs[n]
                    stats.requests += 1
                    stats.empty += not value["text"].strip()
                    stats.truncated += not value["finished"]
                    stats.latent_units += count(value["text"])
                    source = doc["chunks"][w[2]]["text"] if w[2] >= 0 else document_text(doc)
                    stats.raw_units += count(source)
    return records


def synthesize(backend, documents: Iterable[Record], config: SynthesizeConfig, cache=None, *, skip: int = 0, stats: SynthesisStats | None = None) -> Iterator[Record]:
    """Output records in input order (``passes`` per document); the first ``skip`` are not yielded.

    Documents are handled in fixed groups of ``docs_per_call`` (one backend call per group), so a
    resumed run re-issues exactly the requests of the interrupted group (served by the cache).
    """
    counter: list = []

    def count(text: str) -> int:
        if not counter:  # asked only once a group is done, so the backend loads after reading input
            unit, fn = _counter(backend)
            counter.append(fn)
            if stats is not None:
                stats.unit = unit
        return counter[0](text)

    per_doc = config.passes
    block: list[Record] = []
    start = 0
    index = -1

    def flush(start: int, block: list[Record]) -> Iterator[Record]:
        first_output = start * per_doc
        if first_output + len(block) * per_doc <= skip:
            return
        docs = [ensure_chunks(record, config.chunking) if config.method == "latent" else dict(record) for record in block]
        for offset, record in enumerate(_teacher_group(backend, docs, config, cache, stats, count)):
            if first_output + offset >= skip:
                yield record

    for index, record in enumerate(documents):
        if not block:
            start = index
        block.append(record)
        if len(block) == config.docs_per_call:
            yield from flush(start, block)
            block = []
    if block:
        yield from flush(start, block)


def run_synthesize(
    input_path: str | None,
    output_path: str | None,
    backend_name: str,
    backend_config,
    config: SynthesizeConfig,
    *,
    cache_path: str | None = None,
    shard: str | None = None,
    skip_bad: bool = False,
    rejects: str | None = None,
) -> int:
    """``lt synthesize`` as a function (resumable with ``-o``); reports ratio and failures on stderr."""
    from .console import log, warn
    from .pipeline import backend_session, run_stream
    from .records import validate_document

    stats = SynthesisStats()

    def produce(records: Iterable[Record], skip: int) -> Iterator[Record]:
        with backend_session(backend_name, backend_config, cache_path, cache_label="teacher") as (backend, cache):
            yield from synthesize(backend, records, config, cache, skip=skip, stats=stats)

    code = run_stream(input_path, output_path, produce, validate=validate_document, shard=shard, skip_bad=skip_bad, rejects=rejects, description="synthesize")
    if stats.records:
        log(stats.line())
        if stats.failures():
            warn(f"{stats.failures():,} teacher output(s) were empty or cut at --max-new-tokens; they are stored as returned")
    return code
