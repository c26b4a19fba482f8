"""The bootstrap report: a table on stderr, ``report.json``, ``report.md`` and ``report.png``.

``report.json`` is built only from the manifest's stage results (never from timings of the current
process), so a resumed run ends with the same numbers as an uninterrupted one; only the ``seconds``
columns can differ.

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
    ("elbo", "ELBO/doc", "{:.2f}"),
    ("mean_log_w", "mean log w", "{:.2f}"),
    ("ess", "ESS", "{:.2f}"),
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


def table_lines(report: dict[str, Any]) -> list[str]:
    header = [title for _, title, _ in COLUMNS]
    rows = [[_fmt(row.get(key), pattern) for key, _, pattern in COLUMNS] for row in report.get("iterations", [])]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return lines


def baseline_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for name, data in report.get("baselines", {}).items():
        acc = _fmt(data.get("accuracy"), "{:.3f}")
        tokens = _fmt(data.get("n_tokens"), "{:,}")
        lines.append(f"baseline {name}: held-out acc {acc}, train tokens {tokens}" + (f" ({data['note']})" if data.get("note") else ""))
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
    lines.append("| " + " | ".join(title for _, title, _ in COLUMNS) + " |")
    lines.append("|" + "---|" * len(COLUMNS))
    for row in report.get("iterations", []):
        lines.append("| " + " | ".join(_fmt(row.get(key), pattern) for key, _, pattern in COLUMNS) + " |")
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


def write_report(report: dict[str, Any], run_dir: Path) -> None:
    from ..io import write_json

    report["claims"] = claims(report)
    write_json(run_dir / "report.json", report)
    write_markdown(report, run_dir / "report.md")
    write_plot(report, run_dir / "report.png")
