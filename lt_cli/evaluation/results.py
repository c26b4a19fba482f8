"""Turning graded generations into what ``lt eval`` reports: the metrics summary, the per-sample
log (itself valid ``--grade`` input) and the stderr table."""

from __future__ import annotations

from typing import Any

from .metrics import STDERR_METHOD, per_problem_sampling, stderr_over_problems

Record = dict[str, Any]


def summarize(task, grader, results, latent: bool) -> dict:
    metric_names = grader.metrics(latent)
    headline = metric_names[0]
    all_grades = [g for r in results for g in r.grades]
    metrics = {m: sum(g.correct[m] for g in all_grades) / len(all_grades) for m in metric_names}
    graded = [r for r in results if r.grades]
    stderr = {m: stderr_over_problems([sum(g.correct[m] for g in r.grades) / len(r.grades) for r in graded]) for m in metric_names}
    out: dict[str, Any] = {
        "task": task.name,
        "task_version": task.version,
        "accuracy": metrics[headline],
        "accuracy_stderr": stderr[headline],
        "headline_metric": headline,
        "metrics": metrics,
        "metrics_stderr": stderr,
        "stderr_method": STDERR_METHOD,
        "n_problems": len(results),
        "n_samples": len(all_grades),
    }
    sizes = {len(r.grades) for r in results}
    if len(sizes) == 1 and sizes.pop() > 1:
        keys = [[grader.vote_key(g.extracted[headline]) for g in r.grades] for r in results]
        correct = [[g.correct[headline] for g in r.grades] for r in results]
        per_problem = per_problem_sampling(keys, correct)
        out["sampling"] = {name: sum(values) / len(values) for name, values in per_problem.items()}
        out["sampling_stderr"] = {name: stderr_over_problems(values) for name, values in per_problem.items()}
    return out


def write_sample_log(path: str, grader, results, latent: bool, variant: str) -> None:
    """One JSONL line per sample: the problem's fields, then prompt, output, extracted, gold, correct.

    The file is itself a valid ``--grade`` input (``output`` + ``sample`` + ``index``).
    """
    from ..output import open_output

    metric_names = grader.metrics(latent)
    headline = metric_names[0]
    with open_output(path, flag="--log-samples") as writer:
        for result in results:
            for j, (output, grade) in enumerate(zip(result.outputs, result.grades)):
                line = dict(result.record)
                line.update(
                    {
                        "index": result.index,
                        "sample": j,
                        "variant": variant,
                        "n_shots": result.n_shots,
                        "prompt": result.prompt,
                        "output": output,
                        "finish_reason": result.finish_reasons[j] if j < len(result.finish_reasons) else None,
                        "extracted": grade.extracted[headline],
                        "gold": grader.gold_display(result.gold),
                        "correct": grade.correct[headline],
                        "grades": {m: {"extracted": grade.extracted[m], "correct": grade.correct[m]} for m in metric_names},
                    }
                )
                writer.write(line)


def print_table(metrics: dict) -> None:
    from rich.table import Table

    from ..console import err

    table = Table(title=f"{metrics['task']} (v{metrics['task_version']}, {metrics.get('variant', '?')})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("± stderr", justify="right")
    for group in ("metrics", "sampling"):
        errors = metrics.get(f"{group}_stderr") or {}
        for name, value in (metrics.get(group) or {}).items():
            label = f"{name} (accuracy)" if name == metrics.get("headline_metric") else name
            table.add_row(label, f"{value:.4f}", _stderr_text(errors.get(name)))
    table.add_row("problems", str(metrics["n_problems"]), "")
    prompts = metrics.get("prompts")
    if prompts:
        table.add_row("prompts with fewer shots", str(prompts["n_prompts_fewer_shots"]), "")
        table.add_row("prompts skipped (too long)", str(prompts["n_prompts_skipped"]), "")
    err.print(table)
    err.print("stderr: " + STDERR_METHOD, markup=False, highlight=False)


def _stderr_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
