#!/usr/bin/env python
"""GPU-hours of the paper's BoLT runs from token counts and throughput assumptions (docs/scaling.md).

Every number is ``tokens / (tokens per second per GPU) / 3600``; only the throughputs are
assumptions, so measure yours (a 1,000-document pilot of each stage) and pass them in:

    python runs/cost.py                                  # the table in docs/scaling.md
    python runs/cost.py --decode-tps 35000 --scale 10    # your vLLM throughput, 10x the data

Token counts (the paper's setting, docs/method.md §1, §4, §5), for D raw tokens in the E-step split:
* M-step training: the budget itself (13e9 per iteration; warm start 0.8e9; raw baselines
  3.84e9 and 13e9), at ``train_tps``.
* E-step generation: K samples per chunk, each ``r`` latent tokens per raw token
  (r = 2.3 for GPT-4o-mini latents; bootstrapped latents are assumed as long) -> ``K r D`` decoded
  tokens, at ``decode_tps``.
* E-step prefill: the posterior prompt once per chunk (``P`` = 3 prefix chunks + the chunk: ``4 D``;
  the K samples share it through prefix caching) plus K joint strings to score (latent + chunk,
  the shared prefix cached: ``K (r + 1) D``) -> ``(P + 1 + K (r + 1)) D`` tokens, at ``prefill_tps``.
With ``--scale s`` the E-step data and the M-step budgets grow by s (the paper's M-step is ~2 epochs
of the augmented data; keeping that ratio is what makes more data useful).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

#: the paper's token counts (``ryoungj/BoLT bin/exp_setups/bootstrap_fixed_data.sh``; docs/method.md §1, §5)
BOOTSTRAP_RAW_TOKENS = 1.92e9
WARM_TRAIN_TOKENS = 0.8e9
MSTEP_TRAIN_TOKENS = 13e9
RAW_TOKEN_MATCHED_TOKENS = 3.84e9
RAW_FLOPS_MATCHED_TOKENS = 13e9
EVAL_TOKENS_PER_MODEL = 6319 * (1100 + 300)  # MATH 5,000 + GSM8K 1,319 prompts: ~1,100 prompt + ~300 generated


@dataclass
class Assumptions:
    """Throughputs per GPU (H100-class, bf16) and data shape. Change them to your measurements."""

    train_tps: float = 40_000  # TinyLlama-1.1B, seq 2048, FSDP2: ~7.2 GFLOP/token -> ~290 TFLOP/s (~29% MFU)
    decode_tps: float = 20_000  # vLLM, 1.1B model, hundreds of concurrent sequences
    prefill_tps: float = 160_000  # vLLM prompt processing (scoring) for the same model
    latent_ratio: float = 2.3  # latent tokens per raw token
    prefix_chunks: int = 3
    k: int = 4
    iters: int = 3
    trials: int = 1  # the paper trained 3 seeds per M-step; only trial 0 feeds the next E-step
    scale: float = 1.0


def _hours(tokens: float, tps: float) -> float:
    return tokens / tps / 3600


def estep_tokens(a: Assumptions) -> tuple[float, float]:
    """(decoded, prefilled) tokens of one E-step."""
    d = BOOTSTRAP_RAW_TOKENS * a.scale
    decoded = a.k * a.latent_ratio * d
    prefilled = (a.prefix_chunks + 1 + a.k * (a.latent_ratio + 1)) * d
    return decoded, prefilled


def stages(a: Assumptions) -> list[tuple[str, str, float]]:
    """(stage, arithmetic, GPU-hours) rows."""
    decoded, prefilled = estep_tokens(a)
    e_hours = _hours(decoded, a.decode_tps) + _hours(prefilled, a.prefill_tps)
    m_tokens = MSTEP_TRAIN_TOKENS * a.scale
    m_hours = _hours(m_tokens, a.train_tps) * a.trials
    rows = [
        ("teacher synthesis (API)", "gpt-4o-mini batch API, no GPU", 0.0),
        ("warm start", f"{WARM_TRAIN_TOKENS:.3g} tok / {a.train_tps:,.0f} tok/s", _hours(WARM_TRAIN_TOKENS, a.train_tps) * a.trials),
        (
            "E-step, per iteration",
            f"{decoded:.4g} decoded / {a.decode_tps:,.0f} + {prefilled:.4g} prefilled / {a.prefill_tps:,.0f}",
            e_hours,
        ),
        ("M-step, per iteration", f"{m_tokens:.3g} tok / {a.train_tps:,.0f} tok/s" + (f" x {a.trials} trials" if a.trials > 1 else ""), m_hours),
        (f"{a.iters} BoLT iterations", f"{a.iters} x (E + M)", a.iters * (e_hours + m_hours)),
        ("raw token-matched baseline", f"{RAW_TOKEN_MATCHED_TOKENS * a.scale:.3g} tok", _hours(RAW_TOKEN_MATCHED_TOKENS * a.scale, a.train_tps)),
        ("raw FLOPs-matched baseline", f"{RAW_FLOPS_MATCHED_TOKENS * a.scale:.3g} tok", _hours(RAW_FLOPS_MATCHED_TOKENS * a.scale, a.train_tps)),
        (
            f"evaluation ({a.iters + 3} models)",
            f"{EVAL_TOKENS_PER_MODEL:.3g} tok each, decode rate",
            (a.iters + 3) * _hours(EVAL_TOKENS_PER_MODEL, a.decode_tps),
        ),
    ]
    total = sum(h for name, _, h in rows if "per iteration" not in name)
    rows.append(("total", "", total))
    return rows


def table(a: Assumptions) -> str:
    lines = ["| stage | arithmetic | GPU-hours |", "|---|---|---:|"]
    for name, arithmetic, hours in stages(a):
        lines.append(f"| {name} | {arithmetic} | {hours:,.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Assumptions()
    for name in ("train_tps", "decode_tps", "prefill_tps", "latent_ratio", "scale"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    for name in ("k", "iters", "trials", "prefix_chunks"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    args = parser.parse_args(argv)
    assumptions = Assumptions(**vars(args))
    print(table(assumptions))
    total = stages(assumptions)[-1][2]
    print(f"\n{total:,.0f} GPU-hours = {total / 8:,.0f} hours ({total / 8 / 24:.1f} days) on one 8-GPU node", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
