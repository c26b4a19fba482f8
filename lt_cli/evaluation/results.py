"""Turning graded generations into what ``lt eval`` reports: the metrics summary, the per-sample
log (itself valid ``--grade`` input) and the stderr table."""

from __future__ import annotations

from typing import Any

from .metrics import aggregate_samples

Record = dict[str, Any]


def summarize(task, grader, results, latent: bool) -> dict:
    metric_names = grader.metrics(latent)
    headline = metric_names[0]
    all_grades = [g for r in results for g in r.grades]
    metrics = {m: sum(g.correct[m] for g in all_grades) / len(all_grades) for m in metric_names}
    out: dict[str, Any] = {
        "task": task.name,
        "task_version": task.version,
        "accuracy": metrics[headline],
        "headline_metric": headline,
        "metrics": metrics,
        "n_problems": len(results),
        "n_samples": len(all_grades),
    }
    sizes = {len(r.grades) for r in results}
    if len(sizes) == 1 and sizes.pop() > 1:
        keys = [[grader.vote_key(g.extracted[headline]) for g in r.grades] for r in results]
        correct = [[g.correct[headline] for g in r.grades] for r in results]
        out["sampling"] = aggregate_samples(keys, correct)
    return out


def write_sample_log(path: str, grader, results, latent: bool, variant: str) -> None:
    """One JSONL line per sample: the problem's fields, then prompt, output, extracted, gold, correct.

    The file is itself a valid ``--grade`` input (``output`` + ``sample`` + ``index``).
    """
    from ..io import open_output

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
    for name, value in metrics["metrics"].items():
        label = f"{name} (accuracy)" if name == metrics["headline_metric"] else name
        table.add_row(label, f"{value:.4f}")
    for name, value in metrics.get("sampling", {}).items():
        table.add_row(name, f"{value:.4f}")
    table.add_row("problems", str(metrics["n_problems"]))
    prompts = metrics.get("prompts")
    if prompts:
        table.add_row("prompts with fewer shots", str(prompts["n_prompts_fewer_shots"]))
        table.add_row("prompts skipped (too long)", str(prompts["n_prompts_skipped"]))
    err.print(table)
