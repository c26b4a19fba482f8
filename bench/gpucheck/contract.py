"""The backend contract on the device in fp32, and bf16 against fp32.

The checks are tests/backend_contract.py's own functions (the ones the CPU test suite runs against
transformers and vLLM), applied to the transformers backend on the device in fp32: a sample's
summed log q equals ``score`` of its text, the same seeds give the same samples, a sample does not
depend on what else is in its batch, and a score does not either. Then the same model in bf16:
the relative L2 error of its centred logits (logits minus their mean over the vocabulary, which is
what log-softmax keeps) against fp32 over the scored sequences, with the tolerance of the profile
(bf16 operands land between 1e-3 and 1e-2 per product; a deep stack adds up), and the largest
difference of a scored token's log-prob in nats.
"""

from __future__ import annotations

import sys

from .part import REPO, PartContext
from .shapes import model_folder

NEEDS = ("torch", "transformers", "numpy", "tokenizers")
CHECKS = ("logq_matches_score", "seed_determinism", "sampling_batch_invariance", "score_batch_invariance")
FIELDS = (
    "model", "params", "device", "dtype",
    *(f"checks.{name}.passed" for name in CHECKS), *(f"checks.{name}.detail" for name in CHECKS),
    "bf16.logits_rel_l2", "bf16.tolerance", "bf16.passed", "bf16.token_logprob_max_abs_diff_nats", "bf16.tokens_compared",
)
PROMPTS = ["hello", "a much longer prompt than the first one", "x"]
PAIRS = [("hello", " world"), ("hello", " there, friend"), ("hello", "!"), ("other context", " world"), ("", "abc"), ("x", "y")]


def _contract():
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import backend_contract

    return backend_contract


def run(ctx: PartContext) -> None:
    from lt_cli.backends import load_backend
    from lt_cli.backends.base import BackendConfig, SamplingParams

    p, device = ctx.profile, ctx.profile.device
    holder: dict = {}
    with ctx.step("model", ("model", "params", "device", "dtype")):
        folder = model_folder(p.contract_shape, ctx.work / "models", device, dtype="float32")
        backend = load_backend("transformers", BackendConfig(model=str(folder), dtype="float32", device=device, batch_size=16, max_model_len=256))
        holder["folder"], holder["backend"] = folder, backend
        ctx.set("model", p.contract_shape.name)
        ctx.set("params", sum(t.numel() for t in backend.model.parameters()))
        ctx.set("device", str(backend.device))
        ctx.set("dtype", str(next(backend.model.parameters()).dtype).replace("torch.", ""))

    contract = _contract()
    sampling = SamplingParams(n=3, temperature=1.0, max_new_tokens=6)
    runs = {
        "logq_matches_score": lambda b: f"{contract.check_logq_matches_score(b, PROMPTS, n=p.contract_samples, max_new_tokens=3)} samples checked",
        "seed_determinism": lambda b: contract.check_seed_determinism(b, PROMPTS, sampling) or f"{len(PROMPTS)} prompts x n=3, 6 tokens",
        "sampling_batch_invariance": lambda b: contract.check_sampling_batch_invariance(b, PROMPTS, SamplingParams(n=2, temperature=1.0, max_new_tokens=6))
        or f"{len(PROMPTS)} prompts x n=2 alone and batched, and n+2",
        "score_batch_invariance": lambda b: contract.check_score_batch_invariance(b, PAIRS) or f"{len(PAIRS)} pairs alone, batched and reversed",
    }
    for name, check in runs.items():
        fields = (f"checks.{name}.passed", f"checks.{name}.detail")
        with ctx.step(name, fields):
            if "backend" not in holder:
                ctx.require("model")
            try:
                detail = check(holder["backend"])
                ctx.set(fields[0], True)
            except AssertionError as exc:  # a broken convention is a result, not a crash
                detail = f"failed: {exc}"
                ctx.set(fields[0], False)
            ctx.set(fields[1], str(detail))

    with ctx.step("bf16", [f for f in FIELDS if f.startswith("bf16.")]):
        ctx.require("model")
        compare_bf16(ctx, holder)


def compare_bf16(ctx: PartContext, holder: dict) -> None:
    import torch

    from lt_cli.backends import load_backend
    from lt_cli.backends.base import BackendConfig

    p, device = ctx.profile, ctx.profile.device
    fp32 = holder["backend"]
    bf16 = load_backend("transformers", BackendConfig(model=str(holder["folder"]), dtype="bfloat16", device=device, batch_size=16, max_model_len=256))
    texts = [c + x for c, x in PAIRS] + PROMPTS
    num = den = 0.0
    with torch.inference_mode():
        for text in texts:
            ids = torch.tensor([fp32.encode(text)], device=fp32.device)
            a = fp32.model(input_ids=ids).logits.double()
            b = bf16.model(input_ids=ids).logits.double()
            a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
            num += float(((a - b) ** 2).sum())
            den += float((a**2).sum())
    rel = (num / den) ** 0.5
    scores_a, scores_b = fp32.score(PAIRS), bf16.score(PAIRS)
    diffs = [abs(x - y) for sa, sb in zip(scores_a, scores_b) for x, y in zip(sa.token_logprobs, sb.token_logprobs)]
    ctx.set("bf16.logits_rel_l2", float(f"{rel:.4g}"))
    ctx.set("bf16.tolerance", p.bf16_logits_tolerance)
    ctx.set("bf16.passed", rel <= p.bf16_logits_tolerance)
    ctx.set("bf16.token_logprob_max_abs_diff_nats", float(f"{max(diffs):.4g}"))
    ctx.set("bf16.tokens_compared", len(diffs))
