"""The bootstrap report: a table on stderr, ``report.json``, ``report.md`` and ``report.png``.

``report.json`` is built only from the manifest's stage results (never from timings of the current
process), so a resumed run ends with the same numbers as an uninterrupted one; only the ``seconds``
columns can differ. The E-step columns are the selection statistics of :mod:`lt_cli.estep.stats`
(the numbers ``lt select`` prints), and every eval task reports its own headline figure (accuracy,
NLL or ELBO per token). The paper's claims, checked on these numbers, are :mod:`lt_cli.bootstrap.claims`.

Each EM row carries its E-step's compute, read from the selection stage's statistics (the
candidates it selected from: for a sweep's shared first iteration, what a run with that K would
have spent): samples per sampled chunk, generated and scored tokens, FLOPs, and their running
totals over the iterations, which the plot's second panel (accuracy against E-step compute, one
point per arm and iteration) uses.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .claims import ADAPTIVE_TOKEN_SHARE, ADAPTIVE_TOLERANCE, TEACHER_MARGIN, arm_order, claims

#: what the "± s.e." columns are (lt_cli/evaluation/metrics.py, stderr_over_problems)
STDERR_NOTE = "standard error of the accuracy over the held-out problems (sample std / sqrt(n): binomial, one greedy answer per problem)"

COLUMNS = [
    ("iter", "iter", "{}"),
    ("k", "K", "{}"),
    ("accuracy", "held-out acc", "{:.3f}"),
    ("accuracy_stderr", "± s.e.", "{:.3f}"),
    ("elbo_per_document", "ELBO_n/doc", "{:.2f}"),
    ("log_w_per_candidate", "log w/cand", "{:.2f}"),
    ("ess_per_chunk", "ESS/chunk", "{:.2f}"),
    ("estep_samples_per_chunk", "samples/chunk", "{:.2f}"),
    ("estep_generated_tokens", "E-step gen tokens", "{:,}"),
    ("estep_flops", "E-step FLOPs", "{:.3g}"),
    ("n_tokens", "train tokens", "{:,}"),
    ("seconds", "time s", "{:.0f}"),
]

#: the columns before the other eval tasks' (iter, K, held-out accuracy and its standard error)
HEAD = 4

#: the demo's column (after ESS): share of sampled chunks whose selected thought is the true one
TRUE_THOUGHT_COLUMN = ("true_thought_rate", "true thoughts", "{:.3f}")


def _columns(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    if not any(row.get("true_thought_rate") is not None for row in report.get("iterations", [])):
        return COLUMNS
    at = [key for key, _, _ in COLUMNS].index("ess_per_chunk") + 1
    return COLUMNS[:at] + [TRUE_THOUGHT_COLUMN] + COLUMNS[at:]


#: the E-step compute of a row, from the selection statistics' ``compute`` (report key, compute key)
COMPUTE_FIELDS = (
    ("estep_prompts", "prompts"),
    ("estep_prompt_tokens", "prompt_tokens"),
    ("estep_samples", "samples"),
    ("estep_generated_tokens", "generated_tokens"),
    ("estep_scored_tokens", "scored_tokens"),
    ("estep_flops", "flops"),
)


def _fmt(value: Any, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    try:
        return pattern.format(value)
    except (ValueError, TypeError):
        return str(value)


def _task_columns(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(task, metric) of every eval task's headline, in the order the rows first show them; the
    first task's accuracy is the "held-out acc" column already."""
    columns: list[tuple[str, str]] = []
    for row in report.get("iterations", []):
        for position, (task, value) in enumerate((row.get("tasks") or {}).items()):
            if value and not (position == 0 and value["metric"] == "accuracy") and (task, value["metric"]) not in columns:
                columns.append((task, value["metric"]))
    return columns


def _has_finetune(report: dict[str, Any]) -> bool:
    return any(row.get("finetune") for row in report.get("iterations", []))


def _cell(row: dict[str, Any], key: str, pattern: str) -> str:
    if key == "k" and row.get("arm") == "adaptive":
        return f"adaptive <={row.get('k_max')}"
    return _fmt(row.get(key), pattern)


def _cells(report: dict[str, Any], row: dict[str, Any]) -> list[str]:
    tasks = row.get("tasks") or {}
    columns = _columns(report)
    head = [_cell(row, key, pattern) for key, _, pattern in columns[:HEAD]]
    metrics = [_task_cell(tasks.get(task) or {}, metric) for task, metric in _task_columns(report)]
    if _has_finetune(report):
        ft = row.get("finetune") or {}
        spread = ft.get("accuracy_std_over_seeds")
        metrics.append(_fmt(ft.get("accuracy"), "{:.3f}") + (f" ± {spread:.3f}" if spread else ""))
    return head + metrics + [_cell(row, key, pattern) for key, _, pattern in columns[HEAD:]]


def _task_cell(value: dict[str, Any], metric: str) -> str:
    text = _fmt(value.get("value"), "{:.3f}" if metric == "accuracy" else "{:.4f}")
    return text + (f" ± {value['stderr']:.3f}" if value.get("stderr") is not None else "")


def _header(report: dict[str, Any]) -> list[str]:
    titles = [title for _, title, _ in _columns(report)]
    tasks = [f"{task} {'acc' if metric == 'accuracy' else metric}" for task, metric in _task_columns(report)]
    if _has_finetune(report):
        tasks.append("finetune acc")
    return titles[:HEAD] + tasks + titles[HEAD:]


def table_lines(report: dict[str, Any]) -> list[str]:
    header = _header(report)
    rows = [_cells(report, row) for row in report.get("iterations", [])]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return lines


def baseline_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for name, data in report.get("baselines", {}).items():
        figures = ", ".join(
            f"{task} {value['metric']} {value['value']:.4g}" + (f" ± {value['stderr']:.3f}" if value.get("stderr") is not None else "")
            for task, value in (data.get("tasks") or {}).items() if value
        )
        tokens = _fmt(data.get("n_tokens"), "{:,}")
        lines.append(
            f"baseline {name}: {figures or 'held-out acc ' + _fmt(data.get('accuracy'), '{:.3f}')}, train tokens {tokens}"
            + (f" ({data['note']})" if data.get("note") else "")
        )
    return lines


def claim_lines(report: dict[str, Any]) -> list[str]:
    c = report.get("claims", {})
    lines = []
    if c.get("teacher_beats_raw") is not None:
        lines.append(f"claim 1 (teacher thoughts beat raw by >= {TEACHER_MARGIN:.2f}): {c['teacher_beats_raw']} (margin {c['teacher_minus_raw']:+.3f})")
    for k, ok in c.get("em_improves", {}).items():
        lines.append(f"claim 2 (accuracy rises every EM iteration, from above the warm start, {'the adaptive arm' if k == 'adaptive' else f'K={k}'}): {ok}")
    if c.get("larger_k_better") is not None:
        finals = ", ".join(f"K={k}: {v:.3f}" for k, v in sorted(c["final_em_accuracy"].items(), key=lambda kv: arm_order(kv[0])) if k.isdigit())
        means = ", ".join(f"{v:.3f}" for k, v in sorted(c["mean_em_accuracy"].items(), key=lambda kv: arm_order(kv[0])) if k.isdigit())
        lines.append(f"claim 3 (larger K, better last-iteration accuracy): {c['larger_k_better']} ({finals}; means over iterations {means})")
    a = c.get("adaptive")
    if a is not None:
        if a.get("generated_tokens_share") is None:
            lines.append(
                f"claim 4 (adaptive matches K={a['k_max']} at <= {ADAPTIVE_TOKEN_SHARE:.0%} of its E-step tokens): None (no K={a['k_max']} arm to compare with)"
            )
        else:
            lines.append(
                f"claim 4 (adaptive within {ADAPTIVE_TOLERANCE} of K={a['k_max']} at <= {ADAPTIVE_TOKEN_SHARE:.0%} of its E-step tokens): {a['holds']} "
                f"(last iteration {_fmt(a['accuracy'], '{:.3f}')} vs {_fmt(a['k_max_accuracy'], '{:.3f}')}, "
                f"{a['generated_tokens']:,} vs {a['k_max_generated_tokens']:,} generated tokens, {a['generated_tokens_share']:.1%})"
            )
    return lines


def teacher_lines(report: dict[str, Any]) -> list[str]:
    if not report.get("teacher_usage"):
        return []
    from ..teacher.accounting import usage_line

    return [usage_line(report["teacher_usage"])]


def print_report(report: dict[str, Any]) -> None:
    from ..console import err

    err.print("", markup=False)
    for line in teacher_lines(report) + baseline_lines(report) + [""] + table_lines(report) + [""] + claim_lines(report) + example_summary(report):
        err.print(line, markup=False, highlight=False)


def example_summary(report: dict[str, Any]) -> list[str]:
    """The first example document's thoughts over the iterations (stderr); report.md has them all."""
    examples = report.get("examples") or []
    if not examples:
        return []
    first = examples[0]
    lines = ["", f"thoughts of {first['id']} over the iterations (report.md has {len(examples)} documents; ARM/iterT/view.html every one):"]
    if first.get("teacher") is not None:
        lines.append(f"  teacher: {first['teacher']}")
    return lines + [f"  {item['arm']} iteration {item['iter']}: {item['thought']}" for item in first["thoughts"]]


def write_markdown(report: dict[str, Any], path: Path) -> None:
    lines = [f"# lt bootstrap report: {report.get('name', '')}", ""]
    lines += ["## Baselines", "", "| baseline | held-out accuracy | ± s.e. | train tokens | note |", "|---|---|---|---|---|"]
    for name, data in report.get("baselines", {}).items():
        lines.append(
            f"| {name} | {_fmt(data.get('accuracy'), '{:.3f}')} | {_fmt(data.get('accuracy_stderr'), '{:.3f}')} | {_fmt(data.get('n_tokens'), '{:,}')} "
            f"| {data.get('note', '')} |"
        )
    lines += ["", "## Iterations (iteration 0 is the warm start)", ""]
    header = _header(report)
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in report.get("iterations", []):
        lines.append("| " + " | ".join(_cells(report, row)) + " |")
    lines += ["", f"± s.e.: the {STDERR_NOTE}.", "", "## Claims", ""] + [f"- {line}" for line in claim_lines(report)]
    lines += ["", "![accuracy per iteration](report.png)", ""]
    from ..files import write_bytes_atomic
    from .examples import VIEW_DOCUMENTS, example_lines

    if report.get("examples"):
        lines += ["## Example thoughts (the same documents in every iteration)", ""] + example_lines(report)
    views = [row for row in report.get("iterations", []) if row.get("view")]
    if views:
        lines += [f"## Thoughts of each iteration (`lt view`: the first {VIEW_DOCUMENTS} documents, candidates ranked by weight)", ""]
        lines += [f"- [{row['arm']} iteration {row['iter']}]({row['view']})" for row in views] + [""]
    write_bytes_atomic(path, "\n".join(lines).encode("utf-8"))


def build_report(config, manifest) -> dict[str, Any]:
    """The report from the manifest's results only (so a resumed run reports the same numbers)."""
    from .plan import sample_key_of

    def result(key: str) -> dict[str, Any]:
        record = manifest.stages.get(key)
        return record.result if record is not None and record.status == "done" else {}

    def seconds(*keys: str) -> float | None:
        values = [manifest.stages[k].seconds for k in keys if k in manifest.stages and manifest.stages[k].seconds is not None]
        return round(sum(values), 1) if values else None

    baselines: dict[str, Any] = {}
    if config.raw_baseline:
        baselines["raw"] = {
            "accuracy": result("baseline-raw/eval").get("accuracy"),
            "accuracy_stderr": result("baseline-raw/eval").get("accuracy_stderr"),
            "n_tokens": result("baseline-raw/train").get("n_tokens"),
            "note": "raw documents, same tokens and start as an M-step",
            "tasks": result("baseline-raw/eval").get("tasks", {}),
            "finetune": result("baseline-raw/finetune") or None,
        }
    if config.raw_token_matched_tokens:
        baselines["raw_token_matched"] = {
            "accuracy": result("baseline-raw-tokens/eval").get("accuracy"),
            "accuracy_stderr": result("baseline-raw-tokens/eval").get("accuracy_stderr"),
            "n_tokens": result("baseline-raw-tokens/train").get("n_tokens"),
            "note": "raw documents, as many tokens as --raw-token-matched-tokens",
            "tasks": result("baseline-raw-tokens/eval").get("tasks", {}),
            "finetune": result("baseline-raw-tokens/finetune") or None,
        }
    warm_acc = result("warm/eval").get("accuracy")
    warm_stderr = result("warm/eval").get("accuracy_stderr")
    if "baseline-teacher/eval" in manifest.stages:
        baselines["teacher"] = {
            "accuracy": result("baseline-teacher/eval").get("accuracy"),
            "accuracy_stderr": result("baseline-teacher/eval").get("accuracy_stderr"),
            "n_tokens": result("baseline-teacher/train").get("n_tokens"),
            "note": "teacher thoughts on every raw document, same tokens and start as an M-step",
            "tasks": result("baseline-teacher/eval").get("tasks", {}),
            "finetune": result("baseline-teacher/finetune") or None,
        }
    else:
        baselines["teacher"] = {
            "accuracy": warm_acc, "accuracy_stderr": warm_stderr, "n_tokens": result("warm/train").get("n_tokens"),
            "note": "the warm start (teacher-thought data)",
            "tasks": result("warm/eval").get("tasks", {}),
            "finetune": result("warm/finetune") or None,
        }

    iterations = []
    for arm in config.arms():
        k = None if arm == "adaptive" else int(arm[1:])
        identity = {"arm": arm, "k": k, **({"k_max": config.k_max} if arm == "adaptive" else {})}
        iterations.append({
            "iter": 0, **identity, "accuracy": warm_acc, "accuracy_stderr": warm_stderr,
            "elbo_per_document": None, "log_w_per_candidate": None, "ess_per_chunk": None,
            "n_tokens": result("warm/train").get("n_tokens"), "seconds": seconds("warm/train", "warm/eval"), "tasks": result("warm/eval").get("tasks", {}),
            "finetune": result("warm/finetune") or None,
        })
        totals: dict[str, Any] = {"estep_generated_tokens": 0, "estep_flops": 0}
        for t in range(1, config.iters + 1):
            prefix = f"{arm}/iter{t}"
            select = result(f"{prefix}/select")
            compute = select.get("compute") or {}
            row = {
                "iter": t,
                **identity,
                "accuracy": result(f"{prefix}/eval").get("accuracy"),
                "accuracy_stderr": result(f"{prefix}/eval").get("accuracy_stderr"),
                "elbo_per_document": _tightest(select.get("elbo_n_per_document")),
                "log_w_per_candidate": select.get("log_w_per_candidate"),
                "ess_per_chunk": select.get("ess_per_chunk"),
                "true_thought_rate": select.get("true_thought_rate"),  # the demo only
                "estep_samples_per_chunk": (compute.get("samples_per_chunk") or {}).get("mean"),
                **{name: compute.get(field) for name, field in COMPUTE_FIELDS},
                "n_tokens": result(f"{prefix}/train").get("n_tokens"),
                "seconds": seconds(sample_key_of(manifest.stages, arm, t), f"{prefix}/select", f"{prefix}/train", f"{prefix}/eval"),
                "tasks": result(f"{prefix}/eval").get("tasks", {}),
                "finetune": result(f"{prefix}/finetune") or None,
                # the iteration's thoughts as a page (written by write_report; lt view --html)
                "view": f"{arm}/iter{t}/view.html" if select else None,
            }
            for name in totals:  # running totals over iterations 1..t (None once one is unknown)
                totals[name] = None if totals[name] is None or row[name] is None else totals[name] + row[name]
                row[f"{name}_total"] = totals[name]
            iterations.append(row)
    report = {
        "name": config.name,
        "demo": config.demo,
        "ks": sorted(config.ks),
        "arms": config.arms(),
        "iters": config.iters,
        "baselines": baselines,
        "iterations": iterations,
        "stage_seconds": {k: r.seconds for k, r in manifest.stages.items()},
    }
    if config.demo:
        report["chance_accuracy"] = result("demo/corpus").get("chance_accuracy")
    from pathlib import Path

    from .examples import example_thoughts

    report["examples"] = example_thoughts(config, Path(config.run_dir), iterations)
    if result("warm/synthesize").get("usage"):
        report["teacher_usage"] = result("warm/synthesize")["usage"]  # what lt synthesize sent (this run's requests)
    return report


def _tightest(elbos: dict[str, float] | None) -> float | None:
    """ELBO_n per document at the largest n reported (K; an adaptive arm's first round)."""
    if not elbos:
        return None
    return elbos[max(elbos, key=int)]


def write_report(report: dict[str, Any], run_dir: Path) -> None:
    from ..files import write_json

    from .examples import write_views

    report["claims"] = claims(report)
    write_views(report, run_dir)
    write_json(run_dir / "report.json", report)
    write_markdown(report, run_dir / "report.md")
    from .plot import write_plot

    write_plot(report, run_dir / "report.png")
