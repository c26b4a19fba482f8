"""``lt bootstrap --report-to``: one tracker run for the whole loop, each stage logged when it finishes.

Stages run with their own tracking off; the loop logs what each one wrote (its result in the
manifest, its ``OUTPUT.stats.json``, its ``metrics.jsonl``), so a stage logs the same numbers
whether it ran in this process or under a launcher, and a resumed run logs the stages it has not
logged yet (``TRACKING_DIR/logged.json`` remembers which, per tracker: turning a tracker on in a
rerun logs the finished stages too; it is never read through a link, nor is ``TRACKING_DIR``
one when lt chose it: :func:`check_tracking_paths`, before the first stage). The tags
(docs/bootstrap.md, "Tracking"):

* ``ARM/estep/...`` (the selection statistics: ELBO_n, log w, ESS, true-thought rate in the demo,
  ``compute/...`` tokens and FLOPs), ``ARM/sample/...``, ``ARM/eval/TASK/METRIC`` and
  ``..._stderr``, ``ARM/train/final_loss``, ``ARM/finetune/...``: against ``ARM/iteration``
  (0 = the warm start's eval, logged under every arm); ARM is ``k4``, ``adaptive``...;
* ``ARM/estep/generated_tokens_total`` and ``ARM/estep/flops_total``: the E-step compute of
  iterations 1..t, logged with each eval so a W&B chart can use them as its x axis;
* ``ARM/eval_vs_estep_tokens/TASK/METRIC`` against the cumulative generated tokens, and
  ``ARM/eval_vs_estep_mflops/TASK/METRIC`` against the cumulative E-step compute in MFLOPs
  (TensorBoard steps are integers): accuracy against E-step compute in TensorBoard too;
* ``train/STAGE/KEY`` against ``train/step``: every training curve (``train/k4/iter2/loss``);
* ``baseline-raw/eval/...`` and the other baselines, ``warm/teacher/...`` (lt synthesize's usage).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..files import read_json, write_json
from ..nofollow import check_plain_file
from ..tracking import Tracker, check_paths, flat_metrics, open_tracker
from .config import BootstrapConfig
from .stages import RunContext

LOGGED_FILE = "logged.json"
Log = tuple[str, int, dict[str, Any]]  # (axis, step, metrics)


def tracking_folder(config: BootstrapConfig) -> Path:
    return Path(config.tracking.tracking_dir or Path(config.run_dir) / "tracking")


def check_tracking_paths(config: BootstrapConfig) -> None:
    """No link planted where the loop's trackers will write (lt_cli.tracking.check_paths, and
    ``logged.json``): refused before the first stage."""
    if config.tracking.enabled:
        check_paths(config.tracking, tracking_folder(config))
        check_plain_file(tracking_folder(config) / LOGGED_FILE)


class LoopTracker:
    """The run's trackers and which stages each has been given."""

    def __init__(self, config: BootstrapConfig):
        folder = tracking_folder(config)
        self.tracker: Tracker = open_tracker(config.tracking, folder=folder, name=config.name, run_config=config.to_dict())
        self.state_path = folder / LOGGED_FILE
        self.logged: dict[str, list[str]] = read_json(self.state_path) if check_plain_file(self.state_path) else {}

    def log_stage(self, key: str, ctx: RunContext) -> None:
        pending = {name for name in self.tracker.names if key not in self.logged.get(name, [])}
        if not pending:
            return
        for axis, step, metrics in stage_logs(key, ctx):
            self.tracker.log(metrics, axis=axis, step=step, only=pending)
        for name in pending:
            self.logged.setdefault(name, []).append(key)
        write_json(self.state_path, self.logged)

    def close(self) -> None:
        self.tracker.close()


def _arm_iteration(prefix: str) -> tuple[str, int] | None:
    found = re.fullmatch(r"(.+)/iter(\d+)", prefix)
    return (found.group(1), int(found.group(2))) if found else None


def estep_totals(ctx: RunContext, arm: str, t: int) -> dict[str, float | None]:
    """The E-step compute of iterations 1..t of an arm (the report's ``*_total`` columns)."""
    tokens, flops = 0, 0
    for i in range(1, t + 1):
        compute = (ctx.results.get(f"{arm}/iter{i}/select") or {}).get("compute") or {}
        tokens = None if tokens is None or compute.get("generated_tokens") is None else tokens + compute["generated_tokens"]
        flops = None if flops is None or compute.get("flops") is None else flops + compute["flops"]
    return {"generated_tokens_total": tokens, "flops_total": flops}


def _eval_metrics(result: dict[str, Any]) -> dict[str, float]:
    out = {}
    for task, value in (result.get("tasks") or {}).items():
        if value:
            out[f"{task}/{value['metric']}"] = value["value"]
            out[f"{task}/{value['metric']}_stderr"] = value.get("stderr")
    return out


def stage_logs(key: str, ctx: RunContext) -> list[Log]:
    """What a finished stage logs: (axis, step, metrics) triples, from its result and its files."""
    result = ctx.results.get(key) or {}
    prefix, _, kind = key.rpartition("/")
    where = _arm_iteration(prefix)
    logs: list[Log] = []
    if kind == "eval":
        evals = _eval_metrics(result)
        if where is None and prefix != "warm":  # a baseline: one point
            return [("baseline/step", 0, {f"{prefix}/eval/{name}": value for name, value in evals.items()})]
        arms = [(arm, 0) for arm in ctx.config.arms()] if where is None else [where]
        for arm, t in arms:
            totals = estep_totals(ctx, arm, t)
            logs.append((f"{arm}/iteration", t, {
                **{f"{arm}/eval/{name}": value for name, value in evals.items()},
                **{f"{arm}/estep/{name}": value for name, value in totals.items()},
            }))
            if totals["generated_tokens_total"] is not None:
                logs.append((f"{arm}/estep_generated_tokens_total", totals["generated_tokens_total"],
                             {f"{arm}/eval_vs_estep_tokens/{name}": value for name, value in evals.items()}))
            if totals["flops_total"] is not None:
                logs.append((f"{arm}/estep_mflops_total", round(totals["flops_total"] / 1e6),
                             {f"{arm}/eval_vs_estep_mflops/{name}": value for name, value in evals.items()}))
        return logs
    if kind == "select" and where is not None:
        arm, t = where
        stats = {name: result.get(name) for name in (
            "ess_per_chunk", "log_w_per_candidate", "elbo_n_per_document", "latent_tokens_per_candidate", "true_thought_rate", "compute",
            "documents", "chunks", "candidates",
        )}
        totals = estep_totals(ctx, arm, t)
        return [(f"{arm}/iteration", t, {**flat_metrics(f"{arm}/estep", stats), **{f"{arm}/estep/{n}": v for n, v in totals.items()}})]
    if kind == "sample" and where is not None:
        arm, t = where
        stats = {name: result.get(name) for name in ("documents", "chunks", "candidates", "latent_tokens_per_candidate", "unfinished")}
        return [(f"{arm}/iteration", t, flat_metrics(f"{arm}/sample", stats))]
    if kind == "train":
        logs += _training_curve(prefix, result)
        if where is not None:
            arm, t = where
            logs.append((f"{arm}/iteration", t, {f"{arm}/train/{n}": result.get(n) for n in ("final_loss", "n_tokens", "steps")}))
        return logs
    if kind == "finetune" and where is not None:
        arm, t = where
        names = ("accuracy", "accuracy_stderr_over_problems", "accuracy_std_over_seeds")
        return [(f"{arm}/iteration", t, {f"{arm}/finetune/{n}": result.get(n) for n in names})]
    if kind == "finetune":
        names = ("accuracy", "accuracy_stderr_over_problems", "accuracy_std_over_seeds")
        return [("baseline/step" if prefix != "warm" else "warm/iteration", 0, {f"{prefix}/finetune/{n}": result.get(n) for n in names})]
    if kind == "synthesize":
        return [("warm/iteration", 0, flat_metrics("warm/teacher", result.get("usage") or {}))]
    return logs


def _training_curve(prefix: str, result: dict[str, Any]) -> list[Log]:
    """Every line of the stage's ``metrics.jsonl`` (training steps and validations) as ``train/PREFIX/KEY``."""
    checkpoint = result.get("checkpoint")
    path = Path(checkpoint) / "metrics.jsonl" if checkpoint else None
    if path is None or not path.exists():
        return []
    from ..io import read_all

    return [("train/step", int(record["step"]), {f"train/{prefix}/{k}": v for k, v in record.items() if k != "step"})
            for record in read_all(path) if "step" in record]
