"""``report.png``: accuracy per EM iteration, and for several arms the inference-scaling picture.

The second panel is the paper's third claim drawn as lt measures it: held-out accuracy after
iteration t against the E-step compute spent in iterations 1..t (FLOPs when the parameter count is
known, generated tokens otherwise), one point per (arm, iteration), so fixed K values and the
adaptive arm lie on one compute axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .claims import arm_label, arm_order


def write_plot(report: dict[str, Any], path: Path) -> None:
    """Held-out accuracy per iteration (± one standard error), one line per arm, baselines as horizontal lines; with more
    than one arm a second panel: accuracy against the E-step compute spent so far (Agg, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_arm: dict[str, list[dict[str, Any]]] = {}
    for row in report.get("iterations", []):
        by_arm.setdefault(arm_label(row), []).append(row)
    arms = sorted(by_arm, key=arm_order)
    scaling = len(arms) > 1
    fig, axes = plt.subplots(1, 2 if scaling else 1, figsize=(11 if scaling else 6, 4), dpi=100, squeeze=False)
    ax = axes[0][0]
    for label in arms:
        rows = sorted(by_arm[label], key=lambda r: r["iter"])
        rows = [r for r in rows if r.get("accuracy") is not None]
        errors = [r.get("accuracy_stderr") or 0.0 for r in rows]  # error bars: one standard error
        ax.errorbar([r["iter"] for r in rows], [r["accuracy"] for r in rows], yerr=errors, marker="o", capsize=3, label=_arm_name(label, rows))
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
    if scaling:
        _plot_scaling(axes[0][1], by_arm, arms)
    fig.tight_layout()
    import io

    from ..files import write_bytes_atomic

    image = io.BytesIO()
    fig.savefig(image, format="png")
    plt.close(fig)
    write_bytes_atomic(path, image.getvalue())


def _arm_name(label: str, rows: list[dict[str, Any]]) -> str:
    return f"adaptive (<= {rows[-1].get('k_max')})" if label == "adaptive" else f"BoLT K={label}"


def _plot_scaling(ax, by_arm: dict[str, list[dict[str, Any]]], arms: list[str]) -> None:
    """The paper's inference-scaling picture: accuracy after iteration t against the E-step compute
    of iterations 1..t, one point per (arm, iteration); FLOPs when every row has them, else tokens."""
    rows = [r for label in arms for r in by_arm[label] if r["iter"] > 0]
    use_flops = bool(rows) and all(r.get("estep_flops_total") is not None for r in rows)
    key = "estep_flops_total" if use_flops else "estep_generated_tokens_total"
    for label in arms:
        points = sorted((r for r in by_arm[label] if r["iter"] > 0 and r.get(key) and r.get("accuracy") is not None), key=lambda r: r["iter"])
        if points:
            ax.plot([r[key] for r in points], [r["accuracy"] for r in points], marker="o", label=_arm_name(label, by_arm[label]))
            for r in points:
                ax.annotate(str(r["iter"]), (r[key], r["accuracy"]), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())  # labels on the decades only: minor ones overlap
    ax.set_xlabel("E-step " + ("FLOPs" if use_flops else "generated tokens") + " spent through the iteration (log)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title("accuracy vs E-step compute (labels: iteration)")
    if ax.get_lines():
        ax.legend(fontsize=8)
