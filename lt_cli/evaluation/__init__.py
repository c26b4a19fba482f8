"""``lt eval`` as a library: ``evaluate(EvalConfig(...)) -> dict`` of metrics.

Tasks: ``gsm8k`` and ``math`` (few-shot generation, lt's own exemplars in ``tasks/*.json``),
``mmlu_stem_cot_flan`` and ``mmlu_stem_cot_synthetic`` (MMLU-STEM chain of thought with the
reference's exemplars),
``nll`` and ``elbo`` (held-out likelihoods on raw documents), plus any task file passed with
``task_file`` / ``--task-file``. A new generation task is one JSON file (see
:mod:`lt_cli.evaluation.taskfile`); a new Python task is one module calling :func:`register_task`.
Generation-task metrics have a top-level ``accuracy`` (the task's headline metric).
"""

from __future__ import annotations

from .config import EvalConfig
from .registry import get_task, register_task, task_names
from .taskfile import GenerationTask, load_task_file, parse_task_file
from .runs import run_eval

__all__ = [
    "EvalConfig",
    "GenerationTask",
    "evaluate",
    "run_eval",
    "get_task",
    "load_task_file",
    "parse_task_file",
    "register_task",
    "task_names",
]


def evaluate(config: EvalConfig, backend=None) -> dict:
    """Run one evaluation; returns the metrics dict (also what ``lt eval`` prints on stdout).

    With ``config.export_lm_eval`` it writes lm-eval task YAMLs instead (no model needed) and
    returns what it wrote.

    ``backend``: an already loaded :class:`~lt_cli.backends.base.Backend` (for example the one an
    EM loop holds); it is used as is and left open. None loads ``config.model`` with
    ``config.backend`` and closes it afterwards.
    """
    from dataclasses import asdict

    from ..errors import UsageError

    if config.limit is not None and config.limit < 0:
        raise UsageError("--limit must be >= 0")
    from ..estep.config import MAX_K

    if config.samples > MAX_K:  # before any data or model loads: every problem's generations are held until graded
        raise UsageError(f"--samples {config.samples} is more generations per problem than lt holds in memory at once (at most {MAX_K})")
    if config.elbo_n and max(int(n) for n in config.elbo_n) > MAX_K:
        raise UsageError(f"--elbo-n {max(int(n) for n in config.elbo_n)} is more samples per chunk than lt holds in memory at once (at most {MAX_K})")
    task = load_task_file(config.task_file) if config.task_file else get_task(config.task)
    if config.export_lm_eval:
        from .lmeval_export import export_lm_eval

        variants = (config.variant,) if config.variant in ("latent", "raw") else ("latent", "raw")
        return export_lm_eval(task, config.export_lm_eval, variants=variants, data=config.data, split=config.split,
                              max_new_tokens=config.max_new_tokens, num_fewshot=config.num_fewshot)
    if config.reference_quirks and config.task not in ("elbo", "nll"):
        raise UsageError("--reference-quirks applies to --task elbo (and nll, where it changes nothing)")
    metrics = task.evaluate(config, backend=backend)
    metrics["config"] = asdict(config)
    return metrics

