"""The markdown summary of gpu_check.json: a headline table, then every part's fields.

The headline lists the numbers a session pastes into docs/performance.md; each value that is null
shows its reason instead. The part tables list every field, so the markdown says no more and no
less than the JSON.
"""

from __future__ import annotations

from typing import Any

from .part import get_dotted

#: (part, field, what it is, goal or tolerance)
HEADLINE = (
    ("ceilings", "device_name", "device", ""),
    ("ceilings", "copy_gb_per_s", "copy bandwidth, GB/s (read + written)", ""),
    ("ceilings", "matmul_bf16_tflops", "bf16 matmul, TFLOP/s (random data)", ""),
    ("contract", "checks.logq_matches_score.passed", "contract fp32: log q = score", "true"),
    ("contract", "checks.seed_determinism.passed", "contract fp32: seed determinism", "true"),
    ("contract", "checks.sampling_batch_invariance.passed", "contract fp32: sampling batch invariance", "true"),
    ("contract", "checks.score_batch_invariance.passed", "contract fp32: score batch invariance", "true"),
    ("contract", "bf16.logits_rel_l2", "bf16 vs fp32, relative L2 of centred logits", "<= bf16.tolerance"),
    ("training", "lt.tokens_per_s_per_device", "lt train tokens/s per device", ""),
    ("training", "lt.mfu", "lt train MFU (datasheet or given peak)", ""),
    ("training", "lt.mfu_vs_measured_matmul", "lt train MFU against the measured matmul rate", ""),
    ("training", "lt.ratio_to_bare", "lt train / bare PyTorch loop", ">= 0.95"),
    ("training", "fsdp.tokens_per_s_per_device", "FSDP2 (torchrun, 1 rank) tokens/s per device", ""),
    ("training", "fsdp.ratio_to_bare", "FSDP2 / bare PyTorch loop", ""),
    ("training", "fsdp.first_loss_abs_diff_vs_lt", "FSDP2 first loss minus plain first loss (nats)", "bf16-sized"),
    ("estep", "lt_64.tokens_per_s", "sample-thoughts tokens/s, 64 rows (start-up excluded)", ""),
    ("estep", "generate_static_64.lt_over_static", "sample-thoughts / generate with static cache, 64 rows", ">= 1.0"),
    ("estep", "hw_limit_64.lt_fraction", "sample-thoughts / memory-bound limit, 64 rows", ""),
    ("estep", "lt_256.tokens_per_s", "sample-thoughts tokens/s, 256 rows (start-up excluded)", ""),
    ("estep", "generate_static_256.lt_over_static", "sample-thoughts / generate with static cache, 256 rows", ">= 1.0"),
    ("estep", "hw_limit_256.lt_fraction", "sample-thoughts / memory-bound limit, 256 rows", ">= 0.10 (stretch 0.25)"),
    ("estep", "lt_256.engine", "sampling engine", "slot engine, compiled cuda-graph"),
    ("estep", "speedup_vs_generate_loop", "sample-thoughts / per-sample generate loop", ">= 3"),
    ("estep", "scoring.ratio", "scoring / bare packed forward", ">= 0.9"),
    ("demo", "wall_s", "demo lt bootstrap --iters 3, wall s", ""),
    ("engines", "graph.lt_fraction", "slot engine, CUDA graph only / memory-bound limit", ""),
    ("engines", "compiled.lt_fraction", "slot engine, compiled + CUDA graph / memory-bound limit", ">= 0.10"),
    ("engines", "compiled_flex.lt_fraction", "slot engine, compiled + FlexAttention / memory-bound limit", ">= 0.10"),
    ("engines", "compiled.over_graph", "compiled / CUDA graph only", ""),
    ("engines", "compiled_flex.over_graph", "compiled + FlexAttention / CUDA graph only", ""),
    ("demo", "claims.teacher_beats_raw", "demo claim 1: teacher beats raw", "true"),
    ("demo", "claims.em_improves", "demo claim 2: EM improves", "true"),
)


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "/")


def _cell(report: dict, part: str, field: str) -> str:
    entry = report["parts"].get(part)
    if entry is None:
        return "not run (part not selected)"
    value = get_dotted(entry["results"], field)
    if value is None:
        return f"null: {entry['null_reasons'].get(field, entry.get('reason', 'not measured'))}"
    return _value(value)


def _flatten(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value and not all(isinstance(v, bool) for v in value.values()):
            rows.extend(_flatten(value, path))
        else:
            rows.append((path, value))
    return rows


def markdown(report: dict) -> str:
    device = get_dotted(report["parts"].get("ceilings", {}), "results.device_name") or "device not described"
    lines = [f"# gpu_check ({report['mode']}): {device}", "",
             f"Started {report['started_at']}; {report.get('seconds', 0):.0f} s of a {report['budget_s']:.0f} s budget. "
             f"Every value is measured; a null names its reason.", "",
             "| what | value | goal |", "|---|---|---|"]
    for part, field, what, goal in HEADLINE:
        lines.append(f"| {what} | {_cell(report, part, field)} | {goal} |")
    env = report["environment"]["results"]
    packages = ", ".join(f"{k} {v or 'MISSING'}" for k, v in env["packages"].items())
    lines += ["", f"Python {env['python']} on {env['platform']}; {packages}.", ""]
    for name, entry in report["parts"].items():
        lines += [f"## {name}: {entry['status']} ({entry['seconds']:.0f} s of {entry['budget_s']:.0f} s)", ""]
        if entry.get("reason"):
            lines += [f"Reason: {entry['reason']}", ""]
        for step, error in (entry.get("errors") or {}).items():
            lines += [f"Error in {step}: `{error.splitlines()[0][:400]}`", ""]
        lines += ["| field | value |", "|---|---|"]
        for path, value in _flatten(entry["results"]):
            shown = f"null: {entry['null_reasons'].get(path, 'not measured')}" if value is None else _value(value)
            lines.append(f"| {path} | {shown} |")
        lines.append("")
    return "\n".join(lines)
