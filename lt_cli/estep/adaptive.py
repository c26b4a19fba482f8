"""Adaptive E-step: samples per chunk drawn in rounds, a chunk stopping once more would change little.

Why: importance resampling spends K samples on every chunk, but most chunks are easy (the
proposals agree, or one of them carries all the weight) and a few are hard. With ``--k-max`` a
chunk gets ``k`` samples first; after each round its weights are checked by a stopping rule, and
only the chunks the rule keeps open get the next round, up to ``k_max`` samples.

Sample j of a chunk is still seeded by ``seeding.sample_seed(seed, doc, chunk, j)``, so a chunk's
samples are always the first n of what ``--k k_max`` would draw: the cache, ``lt select --k``,
resumption and byte-identical reruns work as with a fixed K.

Four stopping rules, checked after each round on the chunk's samples so far (samples whose
latent text is identical are one latent, counted once):

* ``coverage`` (default, threshold 0.1): stop when the distinct latents seen have
  ``sum exp(log_p) >= threshold``. Because ``p(x) <= 1``, ``p(z, x) <= p(z | x)``: the joint
  probability of a latent is a lower bound on its posterior probability, so the latents seen
  provably hold at least ``threshold`` of the posterior, whatever the unseen ones do. It needs no
  estimate of p(x) and cannot be fooled by a proposal that repeats a wrong latent with
  confidence (its joint probability stays tiny). It only fires where the observed chunk is
  predictable given a good thought (short or formulaic chunks such as answers); on long free
  text p(z, x) is far below any threshold and every chunk gets ``k_max``, as without the rule.
  With ``--layout random`` training the bound is capped near 1/2 (the prior layout's share), and
  a chunk whose text was truncated for scoring never stops early (its log p is not a bound).
* ``mass`` (threshold 0.9): stop when one distinct latent carries at least ``threshold`` of the
  normalised weight ``softmax(log_w)``: the selection is then that latent with probability at
  least ``threshold`` unless a new latent outweighs all the current ones together.
* ``repeat`` (threshold 0.9): ``mass``, and the heaviest latent was drawn at least twice.
* ``ess`` (threshold 0.9): stop when the effective sample size ``1 / sum p^2`` is at least
  ``threshold`` times the samples drawn: flat weights, so q already agrees with the posterior here.

``mass``, ``repeat`` and ``ess`` look only at relative weights, so they stop on a proposal that
confidently repeats a wrong latent; docs/estep.md has the measured accuracy and compute of each.

The stopping decision depends on the weights, which biases what the samples estimate: the set of
samples a chunk ends with is a stopping time, so ELBO_N over all of a chunk's N samples is not a
lower bound on log p(X) any more (a chunk stops more often when its first weights happen to be
high), and the selection distribution is tilted towards latents that dominated early.
``lt select`` therefore reports ELBO_n only for n up to the first round (:func:`unbiased_counts`):
those samples are drawn for every chunk whatever their weights, so those bounds stay valid.
docs/estep.md ("Adaptive sampling") has the measured effect.
"""

from __future__ import annotations

import math
from typing import Sequence

from .config import DEFAULT_THRESHOLDS, STOP_RULES
from .weights import effective_sample_size



def round_sizes(k: int, k_max: int, k_step: int | None = None) -> list[int]:
    """Cumulative samples per chunk after each round: ``k``, then ``+k_step`` (None: doubling), capped at ``k_max``."""
    if k < 1 or k_max < k:
        raise ValueError(f"need 1 <= k <= k_max, got k={k}, k_max={k_max}")
    sizes = [k]
    while sizes[-1] < k_max:
        step = k_step if k_step is not None else sizes[-1]
        sizes.append(min(k_max, sizes[-1] + max(1, step)))
    return sizes


def pooled_weights(latents: Sequence[str], log_w: Sequence[float]) -> dict[str, float]:
    """Normalised weight of each distinct latent (identical texts pooled), in first-seen order."""
    peak = max(log_w)
    if not math.isfinite(peak):
        return {latent: 1.0 / len(set(latents)) for latent in latents}
    exps = [math.exp(v - peak) for v in log_w]
    total = math.fsum(exps)
    pooled: dict[str, float] = {}
    for latent, e in zip(latents, exps):
        pooled[latent] = pooled.get(latent, 0.0) + e / total
    return pooled


def should_stop(candidates: Sequence[dict], rule: str, threshold: float | None = None, *, truncated: bool = False) -> bool:
    """Whether a chunk with these scored candidates (``latent``, ``log_p``, ``log_w``) needs no more samples.

    ``truncated``: the chunk's text was cut for scoring, so its log p values are no bound
    (``coverage`` then never stops).
    """
    if not candidates:
        raise ValueError("should_stop needs at least one scored candidate")
    if rule not in STOP_RULES:
        raise ValueError(f"unknown stopping rule {rule!r} (one of {', '.join(STOP_RULES)})")
    if threshold is None:
        threshold = DEFAULT_THRESHOLDS[rule]
    latents = [c["latent"] for c in candidates]
    log_w = [float(c["log_w"]) for c in candidates]
    if rule == "coverage":
        if truncated:
            return False
        first: dict[str, float] = {}
        for c in candidates:
            first.setdefault(c["latent"], float(c["log_p"]))
        return math.fsum(math.exp(v) for v in first.values()) >= threshold
    if rule == "ess":
        if not math.isfinite(max(log_w)):
            return False  # no usable weight yet
        return effective_sample_size(log_w) >= threshold * len(log_w)
    pooled = pooled_weights(latents, log_w)
    heaviest = max(pooled, key=lambda latent: pooled[latent])
    if pooled[heaviest] < threshold:
        return False
    return rule == "mass" or sum(1 for latent in latents if latent == heaviest) >= 2


def rounds_for(sizes: Sequence[int], n: int) -> list[int]:
    """The round sizes a run capped at ``n`` samples would have used: those below n, then n."""
    return [s for s in sizes if s < n] + [n]


def unbiased_counts(chunks: Sequence[dict]) -> int | None:
    """The largest n for which every chunk's first n samples were drawn regardless of weights.

    That is the smallest first round over the chunks (a chunk without a ``sampling`` record, or
    with a fixed K, counts its candidates); None for a document without candidates.
    """
    firsts = []
    for chunk in chunks:
        candidates = chunk.get("candidates") or []
        if not candidates:
            continue
        rounds = (chunk.get("sampling") or {}).get("rounds") or []
        firsts.append(min(int(rounds[0]), len(candidates)) if rounds else len(candidates))
    return min(firsts) if firsts else None
