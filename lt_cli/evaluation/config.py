"""``EvalConfig``: everything one ``lt eval`` run depends on (saved next to ``-o`` outputs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..flags import flag
from ..tracking import TrackingConfig


@dataclass
class EvalConfig:
    """One evaluation run. ``evaluate(EvalConfig(...))`` is ``lt eval`` as a function.

    Generation tasks (gsm8k, math, task files) read ``data``/``split``/``limit``, build few-shot
    prompts in the ``variant`` (latent | raw | auto) and decode greedily unless ``temperature`` > 0;
    ``samples`` > 1 adds maj@k and pass@k. ``grade`` grades an existing predictions file instead and
    loads no model. Likelihood tasks (nll, elbo) read raw documents from ``data``.
    """

    task: str = "gsm8k"
    model: str | None = None
    #: a user task file (JSON); overrides ``task``
    task_file: str | None = None
    backend: str = "transformers"
    #: latent | raw | auto (latent when the tokenizer has the four special tokens)
    variant: str = "auto"
    #: JSONL file, or a folder holding SPLIT.jsonl; None: the task's default (Hugging Face datasets)
    data: str | None = None
    split: str | None = None
    limit: int | None = None
    seed: int = 1234
    #: generations per problem (maj@k, pass@k when > 1; needs temperature > 0)
    samples: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    #: cap on prompt tokens (the reference's vLLM setup used 1024); None: context - max_new_tokens
    max_prompt_tokens: int | None = None
    #: exemplars to use (None: all in the task file)
    num_fewshot: int | None = None
    #: grade this predictions JSONL (fields ``output`` or ``outputs`` + the problem's fields)
    grade: str | None = None
    #: per-sample JSONL (generation tasks: prompt, output, extracted, gold, correct, problem
    #: fields; nll/elbo: one line per document with its cut text, scores and latents)
    log_samples: str | None = None
    #: metrics JSON (and OUTPUT.config.json) written here by ``run_eval``; None: stdout (the CLI)
    output: str | None = None
    #: write lm-evaluation-harness task YAMLs for this task into this folder instead of evaluating
    export_lm_eval: str | None = None
    # backend
    batch_size: int = 16
    dtype: str = "auto"
    device: str = "auto"
    max_model_len: int | None = None
    backend_options: dict = field(default_factory=dict, metadata=flag(enabled=False))
    # nll and elbo tasks
    #: tokens kept per document before NLL/ELBO (None: context - 3, the reference's cut; 0: no cut)
    max_doc_tokens: int | None = None
    #: elbo: reproduce the reference's number (its E-step prompts and raw-token count)
    reference_quirks: bool = False
    elbo_n: tuple[int, ...] = field(default=(1, 2, 4), metadata=flag(csv=True))
    #: max latent tokens per chunk when sampling thoughts for the ELBO (reference: 1024)
    max_latent_tokens: int = 1024
    #: average sentences per uniform chunk for the ELBO (reference: 8)
    elbo_avg_units: int = 8
    #: --report-to and the other tracker flags (lt_cli/tracking.py)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
