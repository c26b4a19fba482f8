"""The embedded demo on the device: ``lt bootstrap --iters 3`` with its run folder in the output.

Timed from outside (wall seconds of the command), with the accuracies and the paper's claims read
from its report.json, and the stage count and stage seconds from manifest.json. If the command is
stopped at the part's budget, the manifest still says how far it got and how long each finished
stage took (the run resumes with the same command). On a GPU the demo trains in bf16 (lt's
``auto``), so its accuracies need not equal the CPU run of docs/bootstrap.md.
"""

from __future__ import annotations

import json

from .part import PartContext

NEEDS = ("torch", "transformers", "numpy", "tokenizers", "typer", "rich", "orjson", "safetensors")
ITERS = 3
FIELDS = (
    "wall_s", "complete", "stages_done", "stages_total", "stage_seconds_total", "slowest_stage", "slowest_stage_s",
    "accuracy.raw", "accuracy.teacher", *(f"accuracy.iter{i}" for i in range(ITERS + 1)),
    "claims.teacher_beats_raw", "claims.teacher_minus_raw", "claims.em_improves",
)


def run(ctx: PartContext) -> None:
    run_dir = ctx.out / "demo"
    wall_fields = ("wall_s", "complete")
    with ctx.step("bootstrap", wall_fields):
        ctx.need(20)
        try:
            wall = ctx.lt(["bootstrap", "--iters", str(ITERS), "--run-dir", str(run_dir), *ctx.profile.demo_args], "demo", margin_s=8)
        except TimeoutError:
            ctx.set("complete", False)
            raise
        ctx.set("wall_s", round(wall, 1))
        ctx.set("complete", (run_dir / "report.json").exists())

    manifest_fields = ("stages_done", "stages_total", "stage_seconds_total", "slowest_stage", "slowest_stage_s")
    with ctx.step("manifest", manifest_fields):
        stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
        done = [s for s in stages if s["status"] == "done"]
        ctx.set("stages_done", len(done))
        ctx.set("stages_total", len(stages))
        ctx.set("stage_seconds_total", round(sum(s["seconds"] or 0 for s in done), 1))
        if done:
            slowest = max(done, key=lambda s: s["seconds"] or 0)
            ctx.set("slowest_stage", slowest["key"])
            ctx.set("slowest_stage_s", round(slowest["seconds"] or 0, 1))
        else:
            ctx.null("slowest_stage", "no stage finished")
            ctx.null("slowest_stage_s", "no stage finished")

    report_fields = [f for f in FIELDS if f.startswith(("accuracy.", "claims."))]
    with ctx.step("report", report_fields):
        if not (run_dir / "report.json").exists():
            raise FileNotFoundError("no report.json: the demo did not finish")
        report = json.loads((run_dir / "report.json").read_text())
        for name in ("raw", "teacher"):
            accuracy = report.get("baselines", {}).get(name, {}).get("accuracy")
            if accuracy is None:
                ctx.null(f"accuracy.{name}", f"report.json has no {name} baseline accuracy")
            else:
                ctx.set(f"accuracy.{name}", accuracy)
        for row in report.get("iterations", []):
            if row.get("accuracy") is not None and row["iter"] <= ITERS:
                ctx.set(f"accuracy.iter{row['iter']}", row["accuracy"])
        claims = report.get("claims", {})
        for key in ("teacher_beats_raw", "teacher_minus_raw", "em_improves"):
            value = claims.get(key)
            if value is None or (isinstance(value, dict) and any(v is None for v in value.values())):
                ctx.null(f"claims.{key}", f"report.json gives no verdict for {key}")
            else:
                ctx.set(f"claims.{key}", round(value, 4) if isinstance(value, float) else value)
        for i in range(ITERS + 1):
            if ctx.get(f"accuracy.iter{i}") is None:
                ctx.null(f"accuracy.iter{i}", f"report.json has no accuracy for iteration {i}")
