"""The demo accuracy as an ``lt eval`` task: ``evaluate(EvalConfig(task="demo", data=HELDOUT, ...))``.

Importing this module registers the task ``demo`` in :mod:`lt_cli.evaluation.registry`. It grades
held-out demo problems with :func:`lt_cli.demo.accuracy.evaluate_demo_accuracy` (greedy; the
``latent`` variant thinks first, ``raw`` answers directly; ``auto`` means ``latent``).
``max_new_tokens`` is capped at 64: a demo answer needs fewer than 30 tokens, and a batch runs as
long as its longest generation.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError

DEMO_MAX_NEW_TOKENS = 64


class DemoTask:
    name = "demo"
    version = 1
    kind = "generation"

    def evaluate(self, config, backend=None) -> dict[str, Any]:
        from ..backends import load_backend
        from ..backends.base import BackendConfig
        from ..io import read_all
        from ..output import open_output
        from .accuracy import DemoEvalConfig, evaluate_demo_accuracy

        if not config.data:
            raise UsageError("task demo needs --data (the held-out file of a demo run, RUN/data/heldout.jsonl)")
        variant = "latent" if config.variant == "auto" else config.variant
        eval_config = DemoEvalConfig(
            variant=variant, max_new_tokens=min(config.max_new_tokens, DEMO_MAX_NEW_TOKENS), batch_size=max(config.batch_size, 1), limit=config.limit
        )
        own = backend is None
        if own:
            backend = load_backend(
                config.backend, BackendConfig(model=config.model, dtype=config.dtype, device=config.device, max_model_len=config.max_model_len)
            )
        try:
            metrics = evaluate_demo_accuracy(backend, read_all(config.data), eval_config)
        finally:
            if own:
                backend.close()
        samples = metrics.pop("samples")
        if config.log_samples:
            with open_output(config.log_samples, flag="--log-samples") as out:
                for sample in samples:
                    out.write(sample)
        from ..evaluation.results import print_table

        summary = {
            "task": "demo", "task_version": self.version, "headline_metric": "accuracy", **metrics,
            "metrics": {"accuracy": metrics["accuracy"]}, "metrics_stderr": {"accuracy": metrics["accuracy_stderr"]},
        }
        print_table(summary)
        return summary


def _register() -> None:
    from ..evaluation.registry import register_task

    register_task("demo", DemoTask)


_register()
