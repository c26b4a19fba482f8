"""Aggregating per-sample correctness: accuracy, maj@k and pass@k.

* ``accuracy`` of a metric = mean correctness over all samples of all problems (with one greedy
  sample per problem: the usual exact-match accuracy).
* ``pass@k`` = the unbiased estimator ``1 - C(n - c, k) / C(n, k)`` (Chen et al. 2021) averaged
  over problems, with n samples of which c are correct.
* ``maj@k`` = the first k samples vote with their extracted answers (grouped by the grader's
  ``vote_key``; a sample with no answer does not vote; ties go to the answer seen first), and the
  problem counts as solved when the winning answer is correct.
* k runs over the powers of two below n, and n itself.
* Every accuracy comes with its standard error over problems (:func:`stderr_over_problems`): the
  sample standard deviation (n - 1) of the per-problem values divided by sqrt(n). With one graded
  sample per problem that is the binomial standard error with Bessel's correction,
  sqrt(p (1 - p) / (n - 1)), the figure lm-evaluation-harness prints as ``acc_stderr``; with several
  samples per problem the problem, not the sample, is the unit (samples of one problem are not
  independent draws). ``lt eval``, ``lt finetune-eval``, the bootstrap report and the trackers all
  read this one function.
"""

from __future__ import annotations

from math import comb
from typing import Sequence


def k_values(n: int) -> list[int]:
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    ks.append(n)
    return ks


def pass_at_k(n: int, c: int, k: int) -> float:
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def majority_correct(keys: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """Whether the most frequent non-None key (first seen wins ties) belongs to a correct sample."""
    counts: dict[str, int] = {}
    first_correct: dict[str, bool] = {}
    for key, ok in zip(keys, correct):
        if key is None:
            continue
        counts[key] = counts.get(key, 0) + 1
        first_correct.setdefault(key, ok)
    if not counts:
        return False
    best = max(counts.values())
    winner = next(key for key in counts if counts[key] == best)
    return first_correct[winner]


def per_problem_sampling(per_problem_keys: list[list[str | None]], per_problem_correct: list[list[bool]]) -> dict[str, list[float]]:
    """maj@k and pass@k of each problem (problems that all have the same number of samples n)."""
    if not per_problem_correct:
        return {}
    n = len(per_problem_correct[0])
    if any(len(c) != n for c in per_problem_correct):
        raise ValueError("every problem needs the same number of samples for maj@k/pass@k")
    out: dict[str, list[float]] = {}
    for k in k_values(n):
        out[f"maj@{k}"] = [float(majority_correct(keys[:k], corr[:k])) for keys, corr in zip(per_problem_keys, per_problem_correct)]
    for k in k_values(n):
        out[f"pass@{k}"] = [pass_at_k(n, sum(corr), k) for corr in per_problem_correct]
    return out


def aggregate_samples(per_problem_keys: list[list[str | None]], per_problem_correct: list[list[bool]]) -> dict[str, float]:
    """maj@k and pass@k over problems that all have the same number of samples n."""
    return {name: sum(values) / len(values) for name, values in per_problem_sampling(per_problem_keys, per_problem_correct).items()}


#: how every ``*_stderr`` figure lt reports is computed (written next to them in the metrics)
STDERR_METHOD = "standard error over problems: sample std (n - 1) of per-problem accuracy / sqrt(n); binomial for one sample per problem"


def _stdev(values: Sequence[float]) -> float | None:
    """Sample standard deviation (n - 1); None for fewer than two values."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def stderr_over_problems(per_problem: Sequence[float]) -> float | None:
    """Standard error of the mean over problems of ``per_problem`` (each problem's accuracy: 0/1 for
    one sample, its share of correct samples for several); None for fewer than two problems."""
    stdev = _stdev([float(v) for v in per_problem])
    return None if stdev is None else stdev / len(per_problem) ** 0.5


def accuracy_spread(correct: Sequence[Sequence[bool]]) -> dict[str, float | None]:
    """Accuracy of ``correct[problem][sample]`` (every problem has the same number of samples) and
    two spreads:

    * ``accuracy_std_over_sample_draws``: the standard deviation, over sample indices j, of the
      accuracy of the j-th samples (what a one-sample-per-problem evaluation would scatter by);
    * ``accuracy_stderr_over_problems``: the standard error of the mean from the finite set of
      problems (stdev over problems of their mean correctness / sqrt(problems)).
    """
    if not correct or not correct[0]:
        raise ValueError("accuracy_spread needs at least one problem with one sample")
    n = len(correct[0])
    if any(len(row) != n for row in correct):
        raise ValueError("every problem needs the same number of samples")
    per_draw = [sum(row[j] for row in correct) / len(correct) for j in range(n)]
    per_problem = [sum(row) / n for row in correct]
    return {
        "accuracy": sum(per_problem) / len(per_problem),
        "accuracy_std_over_sample_draws": _stdev(per_draw),
        "accuracy_stderr_over_problems": stderr_over_problems(per_problem),
    }


def mean_and_std(values: Sequence[float]) -> tuple[float, float | None]:
    return sum(values) / len(values), _stdev(values)
