"""The bootstrap report: a table on stderr, ``report.json``, ``report.md`` and ``report.png``.

``report.json`` is built only from the manifest's stage results (never from timings of the current
process), so a resumed run ends with the same numbers as an uninterrupted one; only the ``seconds``
columns can differ. The E-step columns are the selection statistics of :mod:`lt_cli.estep.stats`
(the numbers ``lt select`` prints), and every eval task reports its own headline figure (accuracy,
NLL or ELBO per token).

It also states the paper's three claims as checks on the numbers (``claims``):

1. ``teacher_beats_raw``: training on teacher thoughts beats training on the same raw documents
   by at least ``TEACHER_MARGIN`` accuracy.
2. ``em_improves`` (per K): the last EM iteration is above the warm start (iteration 0) and not
   below the first EM iteration.
3. ``larger_k_better`` (sweeps): the mean accuracy over the EM iterations increases with K.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

TEACHER_MARGIN = 0.2

COLUMNS = [
    ("iter", "iter", "{}"),
    ("k", "K", "{}"),
    ("accuracy", "held-out acc", "{:.3f}"),
    ("elbo_per_document", "ELBO_K/doc", "{:.2f}"),
    ("log_w_per_candidate", "log w/cand", "{:.2f}"),
    ("ess_per_chunk", "ESS/chunk", "{:.2f}"),
    ("n_tokens", "train tokens", "{:,}"),
    ("seconds", "time s", "{:.0f}"),
]


def _fmt(value: Any, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    try:
        return pattern.format(value)
    except (ValueError, TypeError):
        return str(value)


def claims(report: dict[str, Any]) -> dict[str, Any]:
    """Evaluate the three claims on a report's numbers (None when the run cannot tell)."""
    out: dict[str, Any] = {}
    raw = report.get("baselines", {}).get("raw", {}).get("accuracy")
    teacher = report.get("baselines", {}).get("teacher", {}).get("accuracy")
    if raw is not None and teacher is not None:
        out["teacher_minus_raw"] = teacher - raw
        out["teacher_beats_raw"] = teacher - raw >= TEACHER_MARGIN
    else:
        out["teacher_beats_raw"] = None
    by_k: dict[int, list[dict[str, Any]]] = {}
    for row in report.get("iterations", []):
        by_k.setdefault(int(row["k"]), []).append(row)
    improves: dict[str, bool | None] = {}
    mean_em: dict[str, float] = {}
    for k, rows in sorted(by_k.items()):
        rows = sorted(rows, key=lambda r: r["iter"])
        accs = [r.get("accuracy") for r in rows]
        if len(accs) < 2 or any(a is None for a in accs):
            improves[str(k)] = None
            continue
        improves[str(k)] = accs[-1] > accs[0] and accs[-1] >= accs[1]
        mean_em[str(k)] = sum(accs[1:]) / len(accs[1:])
    out["em_improves"] = improves
    out["mean_em_accuracy"] = mean_em
    if len(mean_em) >= 2:
        values = [mean_em[k] for k in sorted(mean_em, key=int)]
        out["larger_k_better"] = all(b > a for a, b in zip(values, values[1:]))
    else:
        out["larger_k_better"] = None
    return out


def _task_columns(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(task, metric) of every eval task's headline, in the order the rows first show them; the
    first task's accuracy is the "held-out acc" column already."""
    columns: list[tuple[str, str]] = []
    for row in report.get("iterations", []):
        for position, (task, value) in enumerate((row.get("tasks") or {}).items()):
            if value and not (position == 0 and value["metric"] == "accuracy") and (task, value["metric"]) not in columns:
                columns.append((task, value["metric"]))
    return columns


def _cells(report: dict[str, Any], row: dict[str, Any]) -> list[str]:
    tasks = row.get("tasks") or {}
    head = [_fmt(row.get(key), pattern) for key, _, pattern in COLUMNS[:3]]
    metrics = [_fmt((tasks.get(task) or {}).get("value"), "{:.3f}" if metric == "accuracy" else "{:.4f}") for task, metric in _task_columns(report)]
    return head + metrics + [_fmt(row.get(key), pattern) for key, _, pattern in COLUMNS[3:]]


def _header(report: dict[str, Any]) -> list[str]:
    titles = [title for _, title, _ in COLUMNS]
    tasks = [f"{task} {'acc' if metric == 'accuracy' else metric}" for task, metric in _task_columns(report)]
    return titles[:3] + tasks + titles[3:]


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
        figures = ", ".join(f"{task} {value['metric']} {value['value']:.4g}" for task, value in (data.get("tasks") or {}).items() if value)
        tokens = _fmt(data.get("n_tokens"), "{:,}")
        lines.append(f"baseline {name}: {figures or 'held-out acc ' + _fmt(data.get('accuracy'), '{:.3f}')}, train tokens {tokens}" + (f" ({data['note']})" if data.get("note") else ""))
    return lines


def claim_lines(report: dict[str, Any]) -> list[str]:
    c = report.get("claims", {})
    lines = []
    if c.get("teacher_beats_raw") is not None:
        lines.append(f"claim 1 (teacher thoughts beat raw by >= {TEACHER_MARGIN:.2f}): {c['teacher_beats_raw']} (margin {c['teacher_minus_raw']:+.3f})")
    for k, ok in c.get("em_improves", {}).items():
        lines.append(f"claim 2 (EM rises above the warm start, K={k}): {ok}")
    if c.get("larger_k_better") is not None:
        means = ", ".join(f"K={k}: {v:.3f}" for k, v in sorted(c["mean_em_accuracy"].items(), key=lambda kv: int(kv[0])))
        lines.append(f"claim 3 (larger K, better mean EM accuracy): {c['larger_k_better']} ({means})")
    return lines


def print_report(report: dict[str, Any]) -> None:
    from ..console import err

    err.print("", markup=False)
    for line in baseline_lines(report) + [""] + table_lines(report) + [""] + claim_lines(report):
        err.print(line, markup=False, highlight=False)


def write_markdown(report: dict[str, Any], path: Path) -> None:
    lines = [f"# lt bootstrap report: {report.get('name', '')}", ""]
    lines += ["## Baselines", "", "| baseline | held-out accuracy | train tokens | note |", "|---|---|---|---|"]
    for name, data in report.get("baselines", {}).items():
        lines.append(f"| {name} | {_fmt(data.get('accuracy'), '{:.3f}')} | {_fmt(data.get('n_tokens'), '{:,}')} | {data.get('note', '')} |")
    lines += ["", "## Iterations (iteration 0 is the warm start)", ""]
    header = _header(report)
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in report.get("iterations", []):
        lines.append("| " + " | ".join(_cells(report, row)) + " |")
    lines += ["", "## Claims", ""] + [f"- {line}" for line in claim_lines(report)]
    lines += ["", "![accuracy per iteration](report.png)", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_plot(report: dict[str, Any], path: Path) -> None:
    """Held-out accuracy per iteration, one line per K, baselines as horizontal lines (Agg, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    by_k: dict[int, list[dict[str, Any]]] = {}
    for row in report.get("iterations", []):
        by_k.setdefault(int(row["k"]), []).append(row)
    for k, rows in sorted(by_k.items()):
        rows = sorted(rows, key=lambda r: r["iter"])
        xs = [r["iter"] for r in rows if r.get("accuracy") is not None]
        ys = [r["accuracy"] for r in rows if r.get("accuracy") is not None]
        ax.plot(xs, ys, marker="o", label=f"BoLT K={k}")
    styles = {"raw": ":", "teacher": "--"}
    for name, data in report.get("baselines", {}).items():
        if data.get("accuracy") is not None:
            ax.axhline(data["accuracy"], linestyle=styles.get(name, "-."), color="gray", label=f"{name} baseline")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("EM iteration (0 = warm start)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title(report.get("name", "lt bootstrap"))
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


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
            "n_tokens": result("baseline-raw/train").get("n_tokens"),
            "note": "raw documents, same tokens as an M-step",
            "tasks": result("baseline-raw/eval").get("tasks", {}),
        }
    if config.raw_token_matched_tokens:
        baselines["raw_token_matched"] = {
            "accuracy": result("baseline-raw-tokens/eval").get("accuracy"),
            "n_tokens": result("baseline-raw-tokens/train").get("n_tokens"),
            "note": "raw documents, as many tokens as --raw-token-matched-tokens",
            "tasks": result("baseline-raw-tokens/eval").get("tasks", {}),
        }
    warm_acc = result("warm/eval").get("accuracy")
    if "baseline-teacher/eval" in manifest.stages:
        baselines["teacher"] = {
            "accuracy": result("baseline-teacher/eval").get("accuracy"),
            "n_tokens": result("baseline-teacher/train").get("n_tokens"),
            "note": "teacher thoughts on every raw document, same tokens as an M-step",
            "tasks": result("baseline-teacher/eval").get("tasks", {}),
        }
    else:
        baselines["teacher"] = {
            "accuracy": warm_acc, "n_tokens": result("warm/train").get("n_tokens"), "note": "the warm start (teacher-thought data)",
            "tasks": result("warm/eval").get("tasks", {}),
        }

    iterations = []
    for k in sorted(config.ks):
        iterations.append({
            "iter": 0, "k": k, "accuracy": warm_acc, "elbo_per_document": None, "log_w_per_candidate": None, "ess_per_chunk": None,
            "n_tokens": result("warm/train").get("n_tokens"), "seconds": seconds("warm/train", "warm/eval"), "tasks": result("warm/eval").get("tasks", {}),
        })
        for t in range(1, config.iters + 1):
            prefix = f"k{k}/iter{t}"
            select = result(f"{prefix}/select")
            iterations.append({
                "iter": t,
                "k": k,
                "accuracy": result(f"{prefix}/eval").get("accuracy"),
                "elbo_per_document": (select.get("elbo_n_per_document") or {}).get(str(select.get("k"))),
                "log_w_per_candidate": select.get("log_w_per_candidate"),
                "ess_per_chunk": select.get("ess_per_chunk"),
                "n_tokens": result(f"{prefix}/train").get("n_tokens"),
                "seconds": seconds(sample_key_of(manifest.stages, k, t), f"{prefix}/select", f"{prefix}/train", f"{prefix}/eval"),
                "tasks": result(f"{prefix}/eval").get("tasks", {}),
            })
    report = {
        "name": config.name,
        "demo": config.demo,
        "ks": sorted(config.ks),
        "iters": config.iters,
        "baselines": baselines,
        "iterations": iterations,
        "stage_seconds": {k: r.seconds for k, r in manifest.stages.items()},
    }
    if config.demo:
        report["chance_accuracy"] = result("demo/corpus").get("chance_accuracy")
    return report


def write_report(report: dict[str, Any], run_dir: Path) -> None:
    from ..io import write_json

    report["claims"] = claims(report)
    write_json(run_dir / "report.json", report)
    write_markdown(report, run_dir / "report.md")
    write_plot(report, run_dir / "report.png")
