"""Importance-weight arithmetic: log-sum-exp, self-normalised weights, ELBO_n, effective sample size.

Why its own module: selection (select.py), adaptive stopping (adaptive.py), the statistics
(stats.py) and ``lt view`` all compute with log w, and none of them needs the others to do it; this
floor depends on nothing, so they depend downwards only. Pure Python with ``math.fsum``: K is small,
and exact sums keep ELBO_n identical however a file is sharded.
"""

from __future__ import annotations

import math
from typing import Sequence


def logsumexp(values: Sequence[float]) -> float:
    peak = max(values)
    if peak == -math.inf:
        return -math.inf
    return peak + math.log(math.fsum(math.exp(v - peak) for v in values))


def softmax(log_w: Sequence[float]) -> list[float]:
    """Self-normalised importance weights (max-subtracted, as in the reference)."""
    peak = max(log_w)
    if not math.isfinite(peak):
        raise ValueError("no candidate has a finite log_w")
    exps = [math.exp(v - peak) for v in log_w]
    total = math.fsum(exps)
    return [e / total for e in exps]


def elbo_n(log_w: Sequence[float], n: int) -> float:
    """IWAE bound with the first n samples: ``logsumexp(log_w[:n]) - log n`` (nats)."""
    if not 1 <= n <= len(log_w):
        raise ValueError(f"elbo_n needs 1 <= n <= {len(log_w)}, got {n}")
    return logsumexp(list(log_w[:n])) - math.log(n)


def effective_sample_size(log_w: Sequence[float]) -> float:
    """``1 / sum p_j^2`` for ``p = softmax(log_w)``: 1 (one sample dominates) to K (uniform).

    Not computed by the reference; a diagnostic of how degenerate the resampling is.
    """
    p = softmax(log_w)
    return 1.0 / math.fsum(x * x for x in p)
