"""What API usage costs: a small dated price table and :func:`cost_usd`.

Why a table in the code: teacher synthesis over the API is the one stage of lt that costs money
per token, and a run should be able to say what it spent (or will spend) without a network call.
Prices change, so every entry carries the date it was checked and its source, and a model that is
not in the table gets no price at all (``None``) unless the caller passes prices explicitly:
lt never reports a made-up number.

Prices are USD per 1M tokens, input (prompt) and output (completion). The Batch API bills half of
both for these models; ``batch=True`` uses those prices. Cached-input discounts are not modelled
(``usage`` as lt records it does not split cached tokens out), so costs are for uncached input.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LtError
from .base import Usage

_OPENAI_PRICING = "https://platform.openai.com/docs/pricing"


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens for one model (sync and Batch API), with when and where it was read."""

    input_per_1m: float
    output_per_1m: float
    batch_input_per_1m: float
    batch_output_per_1m: float
    as_of: str  # year-month the price was last checked
    source: str


#: model name -> price. Dated snapshot names only (an alias such as ``gpt-4o`` has pointed at
#: snapshots with different prices over time), plus aliases that have only ever meant one snapshot.
#: Checked (no network from lt's build machine) against dated summaries of OpenAI's pricing page:
#: chatgptpricing.com/api (updated 2025-03), deploybase.ai/articles/openai-pricing (2026-03),
#: pecollective.com/tools/gpt-4o-mini-pricing (2026-04, including the Batch API price); the Batch
#: API is 50% off input and output for these models. ``as_of`` is the month of the newest check.
PRICES: dict[str, Price] = {
    # $0.15 / $0.60 since its launch on 2024-07-18; batch $0.075 / $0.30 (all three summaries)
    "gpt-4o-mini-2024-07-18": Price(0.15, 0.60, 0.075, 0.30, "2026-04", _OPENAI_PRICING),
    # $2.50 / $10.00 (summaries of 2025-03 and 2026-03; "GPT-4o" there is this snapshot's price)
    "gpt-4o-2024-08-06": Price(2.50, 10.00, 1.25, 5.00, "2026-03", _OPENAI_PRICING),
    # GPT-4.1 family, launched 2025-04-14 (summary of 2026-03)
    "gpt-4.1-2025-04-14": Price(2.00, 8.00, 1.00, 4.00, "2026-03", _OPENAI_PRICING),
    "gpt-4.1-mini-2025-04-14": Price(0.40, 1.60, 0.20, 0.80, "2026-03", _OPENAI_PRICING),
    "gpt-4.1-nano-2025-04-14": Price(0.10, 0.40, 0.05, 0.20, "2026-03", _OPENAI_PRICING),
    # $0.50 / $1.50 (summary of 2025-03)
    "gpt-3.5-turbo-0125": Price(0.50, 1.50, 0.25, 0.75, "2025-03", _OPENAI_PRICING),
}

#: aliases that have only ever pointed at one snapshot (checked on the dates above)
ALIASES: dict[str, str] = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18"}


def price_of(model: str) -> Price | None:
    """The table's price for ``model`` (a dated name or a listed alias), None when unknown."""
    key = model.strip().lower()
    return PRICES.get(ALIASES.get(key, key))


def cost_usd(usage: Usage, model: str, input_price: float | None = None, output_price: float | None = None, *, batch: bool = False) -> float | None:
    """USD for ``usage`` on ``model``: prices per 1M tokens, explicit ones overriding the table.

    ``input_price`` / ``output_price`` (USD per 1M input / output tokens) replace the table's
    values one by one; ``batch`` picks the table's Batch API prices. Returns None when a price is
    still missing (a model not in the table and not both prices given). With
    ``usage.requests_without_usage > 0`` the result covers only the replies that reported usage.
    """
    for name, value in (("input_price", input_price), ("output_price", output_price)):
        if value is not None and not value >= 0:
            raise LtError(f"{name} must be a non-negative number of USD per 1M tokens, got {value}")
    known = price_of(model)
    if known is not None:
        table_in = known.batch_input_per_1m if batch else known.input_per_1m
        table_out = known.batch_output_per_1m if batch else known.output_per_1m
    else:
        table_in = table_out = None
    per_1m_in = input_price if input_price is not None else table_in
    per_1m_out = output_price if output_price is not None else table_out
    if per_1m_in is None or per_1m_out is None:
        return None
    return (usage.prompt_tokens * per_1m_in + usage.completion_tokens * per_1m_out) / 1_000_000
