"""What teacher synthesis costs: tokens used, their price, and an offline estimate before sending.

Why: ``lt synthesize --backend api`` is the one stage of lt that spends money per token. A run
reports what the server billed (:class:`TeacherUsage`, from the backend's ``usage``, the Batch API
included) and what that cost at the given or tabled prices (:mod:`lt_cli.backends.pricing`);
``--estimate`` says what a run would send before it sends anything (:func:`estimate`).

The estimate is offline, so it cannot run the teacher's tokenizer (no download is possible): it
counts ``ceil(characters / 4)`` tokens per text, OpenAI's rule of thumb for English, plus the chat
format's overhead of 3 tokens per message and 3 to open the reply (OpenAI's counting for its
gpt-4o family). Completions are estimated as ``output_ratio x`` the raw tokens the request
explains (the chunk, or the document for WRAP), capped at ``max_new_tokens``; the default ratios
are 2.3 for latent thoughts (the reference reports about 2.3 GPT latent tokens per raw token), 1.0
for WRAP rephrasings and 2.0 for WRAP-CoT. The worst case (every reply hits ``max_new_tokens``)
is reported next to it. Expect the estimate within about 25% on English prose; math and code
tokenize denser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..backends.base import Usage

#: estimated completion tokens per raw token of the text a request explains (see the module docstring)
DEFAULT_OUTPUT_RATIO = {"latent": 2.3, "wrap": 1.0, "wrap-cot": 2.0}
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3


def text_tokens(text: str) -> int:
    """Offline token estimate of ``text``: ceil(characters / 4)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def message_tokens(messages: list[dict]) -> int:
    """Offline estimate of a chat request's prompt tokens (contents plus the chat format's overhead)."""
    return sum(TOKENS_PER_MESSAGE + text_tokens(str(m.get("content", ""))) for m in messages) + TOKENS_PER_REPLY


@dataclass
class Prices:
    """USD per 1M input and output tokens, and where they came from (None: unknown)."""

    input_per_1m: float | None
    output_per_1m: float | None
    source: str

    def to_json(self) -> dict[str, Any]:
        return {"input_per_1m": self.input_per_1m, "output_per_1m": self.output_per_1m, "source": self.source}


def prices_for(model: str, input_price: float | None, output_price: float | None, *, batch: bool) -> Prices:
    """The prices a cost is computed at: flags first, then the dated table (Batch API prices with ``batch``)."""
    from ..backends.pricing import price_of

    known = price_of(model)
    table_in = table_out = None
    if known is not None:
        table_in = known.batch_input_per_1m if batch else known.input_per_1m
        table_out = known.batch_output_per_1m if batch else known.output_per_1m
    given = [name for name, value in (("--input-price", input_price), ("--output-price", output_price)) if value is not None]
    parts = []
    if given:
        parts.append(" and ".join(given))
    if known is not None and len(given) < 2:
        parts.append(f"the price table ({model}{', Batch API' if batch else ''}, checked {known.as_of})")
    return Prices(
        input_price if input_price is not None else table_in,
        output_price if output_price is not None else table_out,
        " + ".join(parts) if parts else "none (model not in the price table; pass --input-price and --output-price)",
    )


def cost_of(usage: Usage, prices: Prices) -> float | None:
    if prices.input_per_1m is None or prices.output_per_1m is None:
        return None
    return (usage.prompt_tokens * prices.input_per_1m + usage.completion_tokens * prices.output_per_1m) / 1_000_000


@dataclass
class TeacherUsage:
    """Tokens this run sent to the teacher: the server's billed ``usage`` for API backends, the
    local backend's own counts otherwise. Cache hits and resumed records cost nothing and are not
    counted; ``requests_without_usage`` replies carried no usage, so their tokens are missing."""

    usage: Usage = field(default_factory=Usage)
    #: True once an API backend's ``usage`` replaced the local counts
    billed: bool = False
    #: an HTTP backend's attempts, retries by cause (429, 5xx, timeouts, connection errors) and
    #: requests given up (:class:`lt_cli.backends.openai_client.RetryStats`); None for local backends
    http: dict[str, Any] | None = None

    def add_samples(self, samples: Iterable[Any]) -> None:
        """Count replies of a local backend (their ``prompt_tokens`` / ``completion_tokens``)."""
        for sample in samples:
            self.usage.add(sample.prompt_tokens, sample.completion_tokens)

    def set_billed(self, usage: Usage) -> None:
        self.usage = Usage(usage.requests, usage.prompt_tokens, usage.completion_tokens, usage.requests_without_usage)
        self.billed = True

    def to_json(self, prices: Prices, parameters: int | None) -> dict[str, Any]:
        u = self.usage
        flops = 2 * parameters * u.total_tokens if parameters is not None and not self.billed and not u.requests_without_usage else None
        return {
            "requests_sent": u.requests,
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "requests_without_usage": u.requests_without_usage,
            "source": "server usage" if self.billed else "local counts",
            "cost_usd": cost_of(u, prices),
            "prices": prices.to_json(),
            "model_parameters": parameters,
            "flops": flops,
            "http": self.http,
        }


def usage_line(data: dict[str, Any]) -> str:
    cost = (
        "cost unknown (no price: pass --input-price and --output-price)"
        if data["cost_usd"] is None
        else f"cost ${data['cost_usd']:.4f} at {_price_text(data['prices'])}"
    )
    missing = f" ({data['requests_without_usage']:,} replies reported no usage: a lower bound)" if data["requests_without_usage"] else ""
    flops = f", {data['flops']:.3g} FLOPs (2 x {data['model_parameters']:,} parameters x tokens)" if data["flops"] is not None else ""
    http = data.get("http")
    retries = ""
    if http:
        retries = (f"; {http['attempts']:,} HTTP attempts, {http['retries']:,} retries (HTTP 429: {http['rate_limited']:,}, "
                   f"HTTP 5xx: {http['server_errors']:,}, timeouts: {http['timeouts']:,}, connection errors: {http['connection_errors']:,}), "
                   f"{http['failed_requests']:,} requests given up")
    return (
        f"teacher usage ({data['source']}): {data['requests_sent']:,} requests sent, {data['prompt_tokens']:,} prompt + "
        f"{data['completion_tokens']:,} completion tokens{missing}, {cost}{flops}{retries}"
    )


def _price_text(prices: dict[str, Any]) -> str:
    return f"${prices['input_per_1m']:g} / ${prices['output_per_1m']:g} per 1M input / output tokens ({prices['source']})"


# ------------------------------------------------------------------------------------ estimate
@dataclass
class Estimate:
    """What a ``lt synthesize`` run would send, counted offline (see the module docstring)."""

    documents: int = 0
    requests: int = 0
    #: requests already answered in the cache (a run would not send them)
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    worst_completion_tokens: int = 0

    def to_json(self, prices: Prices, output_ratio: float, max_new_tokens: int) -> dict[str, Any]:
        expected = Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens)
        worst = Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.worst_completion_tokens)
        return {
            "documents": self.documents,
            "requests": self.requests,
            "requests_cached": self.cached,
            "requests_to_send": self.requests - self.cached,
            # tokens and costs cover the requests to send (cached ones are free)
            "estimated_prompt_tokens": self.prompt_tokens,
            "estimated_completion_tokens": self.completion_tokens,
            "worst_case_completion_tokens": self.worst_completion_tokens,
            "estimated_cost_usd": cost_of(expected, prices),
            "worst_case_cost_usd": cost_of(worst, prices),
            "prices": prices.to_json(),
            "method": {
                "tokens": f"ceil(characters / {CHARS_PER_TOKEN}) per text, + {TOKENS_PER_MESSAGE} per message + {TOKENS_PER_REPLY} per request",
                "completion": f"{output_ratio:g} x the raw tokens each request explains, at most {max_new_tokens} (--max-new-tokens)",
            },
        }


def estimate_lines(data: dict[str, Any]) -> list[str]:
    cost = "unknown (no price: pass --input-price and --output-price)"
    if data["estimated_cost_usd"] is not None:
        cost = f"${data['estimated_cost_usd']:.4f} expected, ${data['worst_case_cost_usd']:.4f} worst case, at {_price_text(data['prices'])}"
    return [
        f"synthesize --estimate: nothing sent. {data['documents']:,} documents, {data['requests']:,} requests"
        f" ({data['requests_cached']:,} already in the cache, {data['requests_to_send']:,} to send)",
        f"  tokens to send (estimated offline: {data['method']['tokens']}): {data['estimated_prompt_tokens']:,} prompt, "
        f"{data['estimated_completion_tokens']:,} completion ({data['method']['completion']}; worst case {data['worst_case_completion_tokens']:,})",
        f"  cost: {cost}",
    ]


def estimate(records: Iterable[dict], config, output_ratio: float | None = None, *, cached_keys=None) -> Estimate:
    """Count what synthesizing ``records`` would send. ``cached_keys(requests) -> set of indices``
    (optional) says which requests the cache already answers; those cost nothing."""
    from ..chunking import ensure_chunks
    from ..records import document_text
    from .requests import requests_for

    params = config.sampling_params()
    result = Estimate()
    for record in records:
        doc = ensure_chunks(record, config.chunking) if config.method == "latent" else dict(record)
        result.documents += 1
        requests = requests_for(doc, config)
        hits = cached_keys(requests) if cached_keys is not None else set()
        ratio = DEFAULT_OUTPUT_RATIO[config.method] if output_ratio is None else output_ratio
        for n, request in enumerate(requests):
            result.requests += 1
            if n in hits:
                result.cached += 1
                continue
            source = doc["chunks"][request.chunk]["text"] if request.chunk >= 0 else document_text(doc)
            result.prompt_tokens += message_tokens(request.messages)
            result.completion_tokens += min(params.max_new_tokens, math.ceil(ratio * text_tokens(source)))
            result.worst_completion_tokens += params.max_new_tokens
    return result
