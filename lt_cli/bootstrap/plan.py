"""The plan of a bootstrap run: which stages, in which order, reading which files.

::

    [demo/corpus]                       the embedded demo only: corpus + tiny model config
    [warm/synthesize]                   --synthesize RAW: teacher thoughts first
    warm/train, warm/eval               iteration 0: train the base model on teacher thoughts
    baseline-raw/train, .../eval        the same raw documents for an M-step's budget (FLOPs-matched);
                                        every baseline starts where iteration 1's M-step does
    [baseline-raw-tokens/train, ...]    --raw-token-matched-tokens N: the raw baseline for N tokens
    baseline-teacher/train, .../eval    teacher thoughts on all the raw documents (when known)
    [shared/iter1/sample]               a K sweep samples max(K) once from the warm start
    k<K>/iter<t>/sample                 E-step proposal: K thoughts per chunk from model t-1
    k<K>/iter<t>/select                 E-step: importance resampling, one thought per chunk
    k<K>/iter<t>/train                  M-step: from the BASE model (--continue: from model t-1)
    k<K>/iter<t>/eval                   held-out evaluation
    adaptive/iter<t>/...                --sweep-k ...,adaptive: the same four stages, adaptive sampling
    [.../finetune]                      --finetune-eval: lt finetune-eval after every eval stage
"""

from __future__ import annotations

from pathlib import Path

from .config import BootstrapConfig
from .stages import (
    RunContext,
    Stage,
    base_model_args,
    checkpoint_of,
    demo_corpus_stage,
    eval_stage,
    finetune_stage,
    raw_data,
    sample_stage,
    select_stage,
    synthesize_stage,
    train_config,
    train_stage,
)


def build_plan(config: BootstrapConfig) -> list[Stage]:
    c = config
    plan: list[Stage] = []

    def evaluate(prefix: str, folder: tuple[str, ...], model_fn, variant: str) -> None:
        plan.append(eval_stage(f"{prefix}/eval", folder, model_fn, variant))
        if c.finetune_eval:
            plan.append(finetune_stage(f"{prefix}/finetune", folder, model_fn))

    if c.demo:
        plan.append(demo_corpus_stage())

    # ------------------------------------------------------------ warm start (iteration 0)
    if c.synthesize:
        plan.append(synthesize_stage())

    def warm_data(ctx: RunContext) -> list[str]:
        if c.demo:
            return [str(ctx.path("data", "warm.jsonl"))]
        return list(c.warm_data) + ([str(ctx.path("warm", "teacher.jsonl"))] if c.synthesize else [])

    if c.warm_model is None:
        plan.append(train_stage("warm/train", lambda ctx: train_config(
            ctx, output=ctx.path("warm", "model"), data=warm_data(ctx), start=base_model_args(ctx), steps=c.warm_steps, tokens=c.warm_tokens,
            layout=c.train.layout, batch_size=c.warm_batch_size,
        )))

    def warm_model(ctx: RunContext) -> str:
        return c.warm_model if c.warm_model is not None else checkpoint_of(ctx, "warm/train", ctx.path("warm"))

    evaluate("warm", ("warm",), warm_model, "latent")

    # ------------------------------------------------------------ baselines (same tokens as an M-step)
    # Each baseline trains exactly as iteration 1's M-step does, on other data: from the base model
    # (the paper), or from the warm start when M-steps continue (--continue, the demo's default).
    def baseline_start(ctx: RunContext) -> dict[str, str | None]:
        return {"model": warm_model(ctx), "init_config": None} if c.continue_training else base_model_args(ctx)

    if c.raw_baseline:
        plan.append(train_stage("baseline-raw/train", lambda ctx: train_config(
            ctx, output=ctx.path("baseline-raw", "model"), data=[raw_data(ctx)], start=baseline_start(ctx), steps=c.mstep_steps, tokens=c.mstep_tokens,
            layout="raw",
        )))
        evaluate("baseline-raw", ("baseline-raw",), _checkpoint_fn("baseline-raw/train", ("baseline-raw",)), "raw")
    if c.raw_token_matched_tokens:
        plan.append(train_stage("baseline-raw-tokens/train", lambda ctx: train_config(
            ctx, output=ctx.path("baseline-raw-tokens", "model"), data=[raw_data(ctx)], start=baseline_start(ctx), steps=None,
            tokens=c.raw_token_matched_tokens, layout="raw",
        )))
        evaluate("baseline-raw-tokens", ("baseline-raw-tokens",), _checkpoint_fn("baseline-raw-tokens/train", ("baseline-raw-tokens",)), "raw")
    if c.teacher_baseline and (c.teacher_data or c.demo):
        plan.append(train_stage("baseline-teacher/train", lambda ctx: train_config(
            ctx, output=ctx.path("baseline-teacher", "model"), data=[str(ctx.path("data", "teacher.jsonl")) if c.demo else str(c.teacher_data)],
            start=baseline_start(ctx), steps=c.mstep_steps, tokens=c.mstep_tokens, layout=c.train.layout,
        )))
        evaluate("baseline-teacher", ("baseline-teacher",), _checkpoint_fn("baseline-teacher/train", ("baseline-teacher",)), "latent")

    # ------------------------------------------------------------ EM iterations
    ks = sorted(c.ks)
    # A sweep shares iteration 1's samples (all K sample the warm start): one stage samples max(K)
    # and each K selects from its first K (lt select --k; samples are seeded by index).
    shared_first = len(ks) > 1 and c.iters >= 1
    if shared_first:
        plan.append(sample_stage("shared/iter1/sample", ("shared", "iter1"), warm_model, max(ks), c.seed + 1))
    for k in ks:
        for t in range(1, c.iters + 1):
            folder = (f"k{k}", f"iter{t}")
            prefix = f"k{k}/iter{t}"
            previous = warm_model if t == 1 else _checkpoint_fn(f"k{k}/iter{t - 1}/train", (f"k{k}", f"iter{t - 1}"))
            if t == 1 and shared_first:
                candidates, select_k = _candidates_fn(("shared", "iter1")), k
            else:
                plan.append(sample_stage(f"{prefix}/sample", folder, previous, k, c.seed + t))
                candidates, select_k = _candidates_fn(folder), None
            plan.append(select_stage(f"{prefix}/select", folder, candidates, c.seed + t, select_k))
            plan.append(train_stage(f"{prefix}/train", _mstep_config(c, folder, previous)))
            evaluate(prefix, folder, _checkpoint_fn(f"{prefix}/train", folder), "latent")
    if c.adaptive:
        # its own samples in every iteration (rounds stop early, so sharing K_max samples would
        # spend what the arm saves); the seeds are the fixed arms', so its samples are their prefixes
        for t in range(1, c.iters + 1):
            folder, prefix = ("adaptive", f"iter{t}"), f"adaptive/iter{t}"
            previous = warm_model if t == 1 else _checkpoint_fn(f"adaptive/iter{t - 1}/train", ("adaptive", f"iter{t - 1}"))
            plan.append(sample_stage(f"{prefix}/sample", folder, previous, c.adaptive_k, c.seed + t, k_max=c.k_max))
            plan.append(select_stage(f"{prefix}/select", folder, _candidates_fn(folder), c.seed + t))
            plan.append(train_stage(f"{prefix}/train", _mstep_config(c, folder, previous)))
            evaluate(prefix, folder, _checkpoint_fn(f"{prefix}/train", folder), "latent")
    return plan


def sample_key_of(manifest_keys, arm: str, t: int) -> str:
    """The stage that sampled iteration t's candidates for an arm (``k4``, ``adaptive``; the shared
    stage in a sweep's first iteration)."""
    own = f"{arm}/iter{t}/sample"
    return own if own in manifest_keys else "shared/iter1/sample"


def _checkpoint_fn(train_key: str, folder: tuple[str, ...]):
    return lambda ctx: checkpoint_of(ctx, train_key, ctx.path(*folder))


def _candidates_fn(folder: tuple[str, ...]):
    return lambda ctx: ctx.path(*folder, "candidates.jsonl")


def _mstep_config(c: BootstrapConfig, folder: tuple[str, ...], previous):
    def build(ctx: RunContext):
        start = {"model": previous(ctx), "init_config": None} if c.continue_training else base_model_args(ctx)
        return train_config(
            ctx, output=ctx.path(*folder, "model"), data=[str(ctx.path(*folder, "augmented.jsonl"))], start=start,
            steps=c.mstep_steps, tokens=c.mstep_tokens, layout=c.train.layout,
        )

    return build


def stage_log(run_dir: Path, key: str) -> Path:
    return run_dir / "logs" / (key.replace("/", "_") + ".log")
