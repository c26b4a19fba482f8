"""Backend-agnostic checks of the conventions in lt_cli/backends/base.py.

Every function takes a constructed :class:`~lt_cli.backends.base.Backend` (plus small parameters) and
raises ``AssertionError`` with a readable message when the backend breaks a convention, so the same
checks run against transformers (tests/test_backend_hf.py) and vLLM (tests/test_backend_vllm.py).

Backends are expected to expose ``tokenizer`` (a Hugging Face tokenizer), ``max_model_len`` and
``count_tokens(text)``. The token-frequency check needs the model's true next-token distribution from
an independent source: :func:`reference_next_token_logprobs` computes it with a plain transformers
forward pass over the same model folder, so it shares no code with either backend.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from lt_cli.backends.base import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, Sample, SamplingParams

TOLERANCE = 1e-4


# ------------------------------------------------------------------------------ helpers


def reference_next_token_logprobs(model_dir: str, prompt: str, *, add_bos: bool = True) -> np.ndarray:
    """log p(next token | prompt) over the whole vocabulary: one plain fp32 transformers forward."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if add_bos and tokenizer.bos_token_id is not None and (not ids or ids[0] != tokenizer.bos_token_id):
        ids = [tokenizer.bos_token_id] + ids
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0, -1].double()
    return torch.log_softmax(logits, dim=-1).numpy()


def processed_distribution(logprobs: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
    """Probabilities after temperature then nucleus (top-p) filtering, written independently of backends."""
    scaled = logprobs / temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        mass_before = np.cumsum(probs[order]) - probs[order]
        keep = np.zeros_like(probs, dtype=bool)
        keep[order[mass_before < top_p]] = True
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum()
    return probs


def chi_square_p_value(counts: np.ndarray, expected_probs: np.ndarray, min_expected: float = 5.0) -> tuple[float, float, int]:
    """(statistic, p-value, degrees of freedom) of a chi-square goodness-of-fit test.

    Categories with expected count below ``min_expected`` are pooled into one bin. A token sampled
    where the expected probability is exactly zero makes the p-value 0. The p-value uses the
    Wilson-Hilferty normal approximation of the chi-square tail (accurate to ~1e-3 here).
    """
    total = counts.sum()
    if np.any(counts[expected_probs == 0] > 0):
        return math.inf, 0.0, 0
    expected = expected_probs * total
    big = expected >= min_expected
    obs = list(counts[big]) + ([counts[~big].sum()] if (~big).any() else [])
    exp = list(expected[big]) + ([expected[~big].sum()] if (~big).any() else [])
    obs_arr, exp_arr = np.array(obs, dtype=float), np.array(exp, dtype=float)
    nonzero = exp_arr > 0
    stat = float((((obs_arr - exp_arr) ** 2)[nonzero] / exp_arr[nonzero]).sum())
    dof = int(nonzero.sum()) - 1
    if dof < 1:
        return stat, 1.0, dof
    z = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return stat, 0.5 * math.erfc(z / math.sqrt(2)), dof


def _encode_plain(backend, text: str) -> list[int]:
    return list(backend.tokenizer(text, add_special_tokens=False)["input_ids"])


def _scored_ids(sample: Sample) -> tuple[list[int], list[float]]:
    """The sample's tokens and log-probs without a final EOS (score() sees text only)."""
    if sample.finish_reason == FINISH_EOS:
        return sample.token_ids[:-1], sample.token_logprobs[:-1]
    return sample.token_ids, sample.token_logprobs


def _seed_grid(n_prompts: int, n: int, base: int) -> list[list[int]]:
    return [[base + 1000 * i + j for j in range(n)] for i in range(n_prompts)]


# ------------------------------------------------------------------------------ checks


def check_sample_shapes(backend, prompts: Sequence[str], params: SamplingParams, seeds=None) -> list[list[Sample]]:
    """n samples per prompt, one log-prob per token, finish reasons consistent with lengths."""
    out = backend.sample(prompts, params, seeds)
    assert len(out) == len(prompts), f"{len(out)} result rows for {len(prompts)} prompts"
    for row in out:
        assert len(row) == params.n, f"{len(row)} samples, expected n={params.n}"
        for s in row:
            assert len(s.token_ids) == len(s.token_logprobs) >= 1, "token_ids and token_logprobs differ in length"
            assert len(s.token_ids) <= params.max_new_tokens
            assert all(lp <= 1e-6 and math.isfinite(lp) for lp in s.token_logprobs), f"invalid log-probs {s.token_logprobs}"
            assert s.finish_reason in (FINISH_EOS, FINISH_STOP, FINISH_LENGTH)
            for stop in params.stop:
                assert stop not in s.text, f"stop string {stop!r} left in text {s.text!r}"
    return out


def check_logq_matches_score(
    backend,
    prompts: Sequence[str],
    *,
    n: int = 32,
    max_new_tokens: int = 3,
    seed: int = 11,
    min_checked: int = 4,
    tolerance: float = TOLERANCE,
) -> int:
    """At temperature 1 / top-p 1, sum(token_logprobs) of a sample == score(prompt, sample.text).

    Only samples whose text re-encodes to exactly the sampled ids are comparable (a byte-level model
    can sample half a UTF-8 character); at least ``min_checked`` must be. Returns how many were checked.
    """
    params = SamplingParams(n=n, temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens)
    out = backend.sample(prompts, params, _seed_grid(len(prompts), n, seed))
    pairs, expected = [], []
    for prompt, row in zip(prompts, out):
        for s in row:
            ids, lps = _scored_ids(s)
            if ids and _encode_plain(backend, s.text) == ids:
                pairs.append((prompt, s.text))
                expected.append((float(sum(lps)), lps))
    assert len(pairs) >= min_checked, f"only {len(pairs)} samples re-encode to their own ids; need {min_checked}"
    scores = backend.score(pairs)
    for (prompt, text), (log_q, lps), score in zip(pairs, expected, scores):
        assert score.n_tokens == len(lps), f"score saw {score.n_tokens} tokens, sample had {len(lps)} ({text!r})"
        assert abs(score.logprob - log_q) < tolerance, f"log q {log_q:.6f} != score {score.logprob:.6f} for {prompt!r} + {text!r}"
        for a, b in zip(score.token_logprobs, lps):
            assert abs(a - b) < tolerance, f"per-token log-probs differ: {score.token_logprobs} vs {lps}"
    return len(pairs)


def check_token_frequencies(
    backend,
    prompt: str,
    reference_logprobs: np.ndarray,
    *,
    temperature: float,
    top_p: float,
    n: int = 3000,
    seed: int = 5,
    alpha: float = 1e-3,
    wrong: Sequence[tuple[float, float]] = (),
    tolerance: float = TOLERANCE,
) -> dict:
    """Sampled first-token frequencies fit the processed model distribution (chi-square, level ``alpha``).

    Also checks each reported log-prob against the independently processed distribution, and, for
    every (temperature, top_p) in ``wrong``, that the SAME samples are rejected against that wrong
    distribution: proof that the test has the power to catch a wrong temperature or top-p.
    """
    params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_new_tokens=1)
    samples = backend.sample([prompt], params, _seed_grid(1, n, seed))[0]
    vocab = reference_logprobs.shape[0]
    counts = np.zeros(vocab, dtype=np.int64)
    expected = processed_distribution(reference_logprobs, temperature, top_p)
    for s in samples:
        token = s.token_ids[0]
        assert 0 <= token < vocab, f"token id {token} outside the vocabulary"
        counts[token] += 1
        assert expected[token] > 0, f"token {token} sampled but excluded by top-p {top_p}"
        want = math.log(expected[token])
        assert abs(s.token_logprobs[0] - want) < tolerance, f"reported log q {s.token_logprobs[0]:.6f} != {want:.6f} for token {token}"
    stat, p_value, dof = chi_square_p_value(counts, expected)
    assert p_value > alpha, f"frequencies do not match T={temperature} top_p={top_p}: chi2={stat:.1f} dof={dof} p={p_value:.2e}"
    rejected = {}
    for wrong_t, wrong_p in wrong:
        _, wrong_p_value, _ = chi_square_p_value(counts, processed_distribution(reference_logprobs, wrong_t, wrong_p))
        assert wrong_p_value < alpha, f"test too weak: samples also fit T={wrong_t} top_p={wrong_p} (p={wrong_p_value:.2e})"
        rejected[(wrong_t, wrong_p)] = wrong_p_value
    return {"chi2": stat, "dof": dof, "p_value": p_value, "rejected": rejected}


def check_seed_determinism(backend, prompts: Sequence[str], params: SamplingParams, seed: int = 3) -> None:
    """Same seeds -> identical samples; different seeds -> different samples (at temperature > 0)."""
    seeds = _seed_grid(len(prompts), params.n, seed)
    first = backend.sample(prompts, params, seeds)
    again = backend.sample(prompts, params, seeds)
    for row_a, row_b in zip(first, again):
        for a, b in zip(row_a, row_b):
            assert a.token_ids == b.token_ids and a.text == b.text, "same seed gave different samples"
            assert np.allclose(a.token_logprobs, b.token_logprobs, atol=TOLERANCE, rtol=0)
    if params.temperature > 0:
        other = backend.sample(prompts, params, _seed_grid(len(prompts), params.n, seed + 7919))
        flat_a = [s.token_ids for row in first for s in row]
        flat_b = [s.token_ids for row in other for s in row]
        assert flat_a != flat_b, "different seeds gave identical samples"
        within = [s.token_ids for s in first[0]]
        if params.n > 1:
            assert len({tuple(t) for t in within}) > 1, "the n samples of one prompt are all identical"


def check_sampling_batch_invariance(backend, prompts: Sequence[str], params: SamplingParams, seed: int = 17) -> None:
    """A sample is the same alone, inside a batch of other prompts, and as part of a larger n."""
    seeds = _seed_grid(len(prompts), params.n, seed)
    together = backend.sample(prompts, params, seeds)
    for i, prompt in enumerate(prompts):
        for j in range(params.n):
            alone_params = SamplingParams(
                n=1, temperature=params.temperature, top_p=params.top_p, max_new_tokens=params.max_new_tokens, stop=params.stop
            )
            alone = backend.sample([prompt], alone_params, [[seeds[i][j]]])[0][0]
            batched = together[i][j]
            assert alone.token_ids == batched.token_ids, f"prompt {i} sample {j}: alone {alone.token_ids} != batched {batched.token_ids}"
            assert alone.text == batched.text and alone.finish_reason == batched.finish_reason
            assert np.allclose(alone.token_logprobs, batched.token_logprobs, atol=TOLERANCE, rtol=0)
    # a larger n keeps the first samples (seed j always belongs to sample j)
    bigger = SamplingParams(
        n=params.n + 2, temperature=params.temperature, top_p=params.top_p, max_new_tokens=params.max_new_tokens, stop=params.stop
    )
    more = backend.sample(prompts[:1], bigger, [seeds[0] + [seed + 500, seed + 501]])[0]
    assert [s.token_ids for s in more[: params.n]] == [s.token_ids for s in together[0]], "larger n changed earlier samples"


def check_score_batch_invariance(backend, pairs: Sequence[tuple[str, str]], tolerance: float = TOLERANCE) -> None:
    """Scoring pairs together (shared contexts, padding) == scoring each alone, within ``tolerance``."""
    together = backend.score(pairs)
    assert len(together) == len(pairs)
    for pair, batched in zip(pairs, together):
        alone = backend.score([pair])[0]
        assert alone.n_tokens == batched.n_tokens == backend.count_tokens(pair[1]), f"token counts differ for {pair!r}"
        assert abs(alone.logprob - batched.logprob) < tolerance, f"{pair!r}: alone {alone.logprob:.6f} batched {batched.logprob:.6f}"
        assert abs(batched.logprob - sum(batched.token_logprobs)) < 1e-6
        assert batched.n_truncated == 0
    reversed_scores = backend.score(list(pairs)[::-1])[::-1]
    for a, b in zip(together, reversed_scores):
        assert abs(a.logprob - b.logprob) < tolerance, "order of pairs changed a score"


def check_truncation_reported(backend, unit: str = "ab ") -> None:
    """Too-long contexts lose their front (reported), too-long continuations lose their end (reported)."""
    limit = backend.max_model_len
    long_text = unit * (limit + 8)
    cont = "x y"
    n_ctx, n_cont = backend.count_tokens(long_text), backend.count_tokens(cont)
    score = backend.score([(long_text, cont)])[0]
    assert score.n_tokens == n_cont, f"continuation shortened to {score.n_tokens} although only the context was too long"
    over = n_ctx + n_cont - limit
    assert over <= score.n_context_truncated <= over + 1, f"context truncation {score.n_context_truncated}, expected {over} (+1 for BOS)"
    assert score.n_continuation_truncated == 0 and score.n_truncated == score.n_context_truncated
    assert math.isfinite(score.logprob)
    short = backend.score([("hello", long_text)])[0]
    assert short.n_continuation_truncated > 0, "a continuation longer than max_model_len was not reported"
    assert short.n_tokens + short.n_continuation_truncated == n_ctx
    assert short.n_tokens < limit
    fits = backend.score([("hello", cont)])[0]
    assert fits.n_truncated == 0


def check_stop_strings(backend, prompt: str, max_new_tokens: int = 12) -> None:
    """Cutting at a stop string: text ends before it, ids/log-probs keep the completing token."""
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    base = backend.sample([prompt], greedy)[0][0]
    # a printable character that first appears after position 0 of the greedy text
    position = next((k for k, ch in enumerate(base.text) if k > 0 and ch.isprintable() and not ch.isspace() and base.text.index(ch) == k), None)
    assert position is not None, f"greedy text {base.text!r} offers no stop character"
    stop = base.text[position]
    stopped = backend.sample([prompt], SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens, stop=(stop, "never-produced-stop")))[0][0]
    assert stopped.finish_reason == FINISH_STOP, f"finish {stopped.finish_reason}, text {stopped.text!r}, stop {stop!r}"
    assert stopped.text == base.text[:position], f"{stopped.text!r} != {base.text[:position]!r}"
    k = len(stopped.token_ids)
    assert stopped.token_ids == base.token_ids[:k], "stopped ids are not a prefix of the unstopped ids"
    assert stop in backend.tokenizer.decode(stopped.token_ids) and stop not in backend.tokenizer.decode(stopped.token_ids[:-1])
    assert np.allclose(stopped.token_logprobs, base.token_logprobs[:k], atol=TOLERANCE, rtol=0)


def check_greedy(backend, prompts: Sequence[str], max_new_tokens: int = 6) -> None:
    """Temperature 0 is greedy: independent of seeds and equal across the n samples."""
    params = SamplingParams(n=2, temperature=0.0, max_new_tokens=max_new_tokens)
    a = backend.sample(prompts, params, _seed_grid(len(prompts), 2, 1))
    b = backend.sample(prompts, params, _seed_grid(len(prompts), 2, 99))
    for row_a, row_b in zip(a, b):
        assert row_a[0].token_ids == row_a[1].token_ids == row_b[0].token_ids


CHECKS: dict[str, Callable] = {
    "sample_shapes": check_sample_shapes,
    "logq_matches_score": check_logq_matches_score,
    "token_frequencies": check_token_frequencies,
    "seed_determinism": check_seed_determinism,
    "sampling_batch_invariance": check_sampling_batch_invariance,
    "score_batch_invariance": check_score_batch_invariance,
    "truncation_reported": check_truncation_reported,
    "stop_strings": check_stop_strings,
    "greedy": check_greedy,
}
