"""Held-out likelihoods during training (``lt train --val-data FILE --val-every N``).

The paper's likelihood curves (held-out NLL per token, ELBO_{1,2,4} per raw token against training
steps) come out of the run itself: every ``val_every`` steps and after the last step, rank 0 wraps
the model it is training in the transformers backend and runs ``lt eval``'s own ``nll`` and
``elbo`` tasks (:mod:`lt_cli.evaluation.likelihood`) on the raw documents of ``val_data``. The
numbers go to ``metrics.jsonl`` as one line per validation, ``{"step", "val_nll_per_token",
"val_elbo_1_per_token", ...}``, so nothing is computed twice or differently from ``lt eval``.

With ``--val-reference-quirks`` the ELBO is the reference's (``lt eval --task elbo
--reference-quirks``: its E-step prompts, log p from ``<PRIOR>``, the whole document's token count,
posterior prompts cut to 1,024 tokens) and goes to ``val_reference_elbo_N_per_token``, the figure
that compares with the paper's ``elbo_4_per_token``; lt's own ELBO is then not computed (sampling
costs most of a validation). Another name, so a curve never mixes the two definitions.

Why the ELBO only for ``--layout random``: it samples latents from the model's posterior prompt and
scores them in the prior form; only a model trained on both tagged forms has learned either.

Validation does not change training: the model is put in eval mode and back, no gradient is kept,
the torch RNG states are restored (sampling uses its own seeded generators anyway), and a resumed
run gets the same weights. Under FSDP the weights are sharded across ranks, so it is refused there.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from ..errors import UsageError


def check_validation_settings(config, strategy: str) -> None:
    """Fail before training starts rather than at the first validation."""
    if config.val_data is None:
        return
    if strategy == "fsdp":
        raise UsageError("--val-data is not supported with --strategy fsdp (the weights are sharded); use ddp or evaluate checkpoints with lt eval")


def elbo_enabled(config) -> bool:
    return config.layout == "random" and bool(config.val_elbo_n)


def validate(model, tokenizer, config, step: int, *, autocast=None) -> dict[str, Any]:
    """Held-out NLL (and ELBO_n for the random layout) of ``model`` now; one metrics.jsonl record."""
    import torch

    from ..backends.base import BackendConfig
    from ..backends.hf import HFBackend
    from ..evaluation.config import EvalConfig
    from ..evaluation.elbo import ElboTask
    from ..evaluation.likelihood import NllTask
    from ..models import bos_policy

    started = time.monotonic()
    eval_config = EvalConfig(
        task="nll", model=config.output, data=config.val_data, limit=config.val_limit, batch_size=config.val_batch_size,
        seed=config.seed, elbo_n=tuple(config.val_elbo_n), max_latent_tokens=config.val_max_latent_tokens,
        reference_quirks=config.val_reference_quirks,
    )
    backend_config = BackendConfig(model=config.output, batch_size=config.val_batch_size, add_bos=bos_policy(tokenizer, training=True))
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    was_training = model.training
    model.eval()
    try:
        backend = HFBackend(backend_config, loaded=(model, tokenizer))
        with torch.no_grad(), (autocast if autocast is not None else contextlib.nullcontext()):
            nll = NllTask().evaluate(eval_config, backend)  # reference_quirks changes nothing for the NLL
            elbo = ElboTask().evaluate(eval_config, backend) if elbo_enabled(config) else None
    finally:
        model.train(was_training)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
    record: dict[str, Any] = {
        "step": step,
        "val_nll_per_token": nll["nll_per_token"],
        "val_nll_per_token_weighted": nll["nll_per_token_weighted"],
        "val_n_documents": nll["n_documents"],
        "val_n_tokens": nll["n_tokens"],
    }
    if elbo is not None:
        prefix = "val_reference_" if config.val_reference_quirks else "val_"
        for n in sorted(set(config.val_elbo_n)):
            record[f"{prefix}elbo_{n}_per_token"] = elbo[f"elbo_{n}_per_token"]
        record[f"{prefix}no_latent_log_p_per_token"] = elbo["no_latent_log_p_per_token"]
        if config.val_reference_quirks:  # 0: the number is exactly the reference's (docs/eval.md)
            record["val_n_posterior_prompts_over_1024_tokens"] = elbo["n_posterior_prompts_over_1024_tokens"]
    record["val_elapsed_s"] = round(time.monotonic() - started, 3)
    return record


def due(config, step: int, total_steps: int) -> bool:
    """Validate at every ``val_every``-th step and after the last one."""
    if config.val_data is None:
        return False
    return step == total_steps or (config.val_every is not None and step % config.val_every == 0)
