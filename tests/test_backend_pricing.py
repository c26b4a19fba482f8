"""lt_cli.backends.pricing: table prices, explicit overrides, and no number for an unknown model."""

from __future__ import annotations

import pytest

from lt_cli.backends.base import Usage
from lt_cli.backends.pricing import PRICES, cost_usd, price_of
from lt_cli.errors import LtError

MINI = "gpt-4o-mini-2024-07-18"
USAGE = Usage(requests=3, prompt_tokens=2_000_000, completion_tokens=500_000)


def test_table_price_of_the_paper_teacher():
    # 2M input tokens at $0.15/1M + 0.5M output tokens at $0.60/1M
    assert cost_usd(USAGE, MINI) == pytest.approx(0.30 + 0.30, abs=1e-12)
    assert cost_usd(USAGE, MINI, batch=True) == pytest.approx(0.15 + 0.15, abs=1e-12)  # Batch API: half
    assert cost_usd(USAGE, "gpt-4o-mini") == cost_usd(USAGE, MINI)  # the alias has only meant this snapshot
    assert cost_usd(USAGE, " GPT-4o-mini-2024-07-18 ") == cost_usd(USAGE, MINI)
    assert cost_usd(Usage(), MINI) == 0.0


def test_every_table_entry_is_dated_and_batch_is_half():
    for model, price in PRICES.items():
        assert price.as_of[:2] == "20" and len(price.as_of) == 7, model
        assert price.source.startswith("https://")
        assert price.batch_input_per_1m == pytest.approx(price.input_per_1m / 2)
        assert price.batch_output_per_1m == pytest.approx(price.output_per_1m / 2)
    assert price_of("gpt-4o") is None  # a moving alias gets no price


def test_explicit_prices_override_the_table():
    assert cost_usd(USAGE, MINI, input_price=1.0, output_price=4.0) == pytest.approx(2.0 + 2.0)
    assert cost_usd(USAGE, MINI, input_price=1.0) == pytest.approx(2.0 + 0.30)  # output from the table
    assert cost_usd(USAGE, MINI, output_price=0.0) == pytest.approx(0.30)


def test_unknown_model_gives_no_number():
    assert cost_usd(USAGE, "my-local-teacher") is None
    assert cost_usd(USAGE, "my-local-teacher", input_price=1.0) is None  # output price still unknown
    assert cost_usd(USAGE, "my-local-teacher", input_price=1.0, output_price=2.0) == pytest.approx(2.0 + 1.0)


@pytest.mark.parametrize("bad", [-0.01, float("nan")])
def test_bad_prices_are_refused(bad):
    with pytest.raises(LtError, match="USD per 1M tokens"):
        cost_usd(USAGE, MINI, input_price=bad)
