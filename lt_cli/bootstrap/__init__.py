"""`lt bootstrap`: the BoLT EM loop as a resumable pipeline of stages in one run folder.

Plan (docs/bootstrap.md has the folder layout)::

    [demo/corpus]                       the embedded demo only: corpus + tiny model config
    [warm/synthesize]                   --synthesize RAW: teacher thoughts first
    warm/train, warm/eval               iteration 0: train the base model on teacher thoughts
    baseline-raw/train, .../eval        the same raw documents, the same number of tokens
    baseline-teacher/train, .../eval    teacher thoughts on all the raw documents (when known)
    [shared/iter1/sample]               a K sweep samples max(K) once from the warm start
    k<K>/iter<t>/sample                 E-step proposal: K thoughts per chunk from model t-1
    k<K>/iter<t>/select                 E-step: importance resampling, one thought per chunk
    k<K>/iter<t>/train                  M-step: from the BASE model (--continue: from model t-1)
    k<K>/iter<t>/eval                   held-out accuracy

Every stage's status and result live in ``manifest.json``; rerunning the same command skips the
finished stages and redoes the first unfinished one, so an interrupted run (even ``kill -9``) ends
with the same report as an uninterrupted one.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .config import BootstrapConfig
from .manifest import Manifest
from .stages import (
    RunContext,
    Stage,
    base_model_args,
    checkpoint_of,
    demo_corpus_stage,
    eval_stage,
    sample_stage,
    select_stage,
    synthesize_stage,
    train_config_fields,
    train_stage,
)

__all__ = ["BootstrapConfig", "build_plan", "resolve_config", "run_bootstrap"]


# ------------------------------------------------------------------------------------ config
def resolve_config(options: dict[str, Any]) -> BootstrapConfig:
    """Fill a BootstrapConfig from explicit options (None = not given) plus demo or generic defaults.

    No ``--data`` and no ``--model`` means the embedded demo: its calibrated settings
    (:data:`lt_cli.demo.DEMO_SETTINGS`) apply to every option not given explicitly.
    """
    given = {k: v for k, v in options.items() if v is not None}
    demo = given.get("data") is None and given.get("model") is None and not given.get("warm_model")
    if demo and (given.get("warm_data") or given.get("synthesize")):
        raise UsageError("--warm-data/--synthesize need --data and --model (without them lt runs the embedded demo)")
    values: dict[str, Any] = {"demo": demo}
    if demo:
        from ..demo import DEMO_SETTINGS

        values.update(DEMO_SETTINGS)
    else:
        values["eval_tasks"] = ["gsm8k"]
        values["raw_baseline"] = False
        values["teacher_baseline"] = False
    values.update(given)
    _absolute_paths(values)
    for steps_key, tokens_key in (("warm_steps", "warm_tokens"), ("mstep_steps", "mstep_tokens")):
        if tokens_key in given and steps_key not in given:
            values[steps_key] = None  # an explicit token budget replaces the default step budget
    name = values.get("name") or ("demo" if demo else Path(str(values.get("data"))).stem)
    values["name"] = name
    values.setdefault("run_dir", str((Path("lt-runs") / name).absolute()))
    config = BootstrapConfig.from_dict(values)
    config.validate()
    return config


def _absolute(spec: str) -> str:
    """An existing file or folder as an absolute path (FILE:WEIGHT keeps its weight); others as given."""
    if Path(spec).exists():
        return str(Path(spec).resolve())
    path, sep, weight = spec.rpartition(":")
    if sep and path and Path(path).exists():
        return f"{Path(path).resolve()}:{weight}"
    return spec


def _absolute_paths(values: dict[str, Any]) -> None:
    """Stage commands may run elsewhere (a launcher, another working directory): use absolute paths."""
    for key in ("model", "data", "warm_model", "synthesize", "teacher_data", "eval_data"):
        if values.get(key):
            values[key] = _absolute(str(values[key]))
    if values.get("warm_data"):
        values["warm_data"] = [_absolute(str(spec)) for spec in values["warm_data"]]
    if values.get("run_dir"):
        values["run_dir"] = str(Path(values["run_dir"]).absolute())


# ------------------------------------------------------------------------------------ plan
def build_plan(config: BootstrapConfig) -> list[Stage]:
    c = config
    plan: list[Stage] = []
    if c.demo:
        plan.append(demo_corpus_stage())

    # ------------------------------------------------------------ warm start (iteration 0)
    warm_train_key = "warm/train"
    if c.synthesize:
        plan.append(synthesize_stage())

    def warm_data(ctx: RunContext) -> list[str]:
        if c.demo:
            return [str(ctx.path("data", "warm.jsonl"))]
        data = list(c.warm_data)
        if c.synthesize:
            data.append(str(ctx.path("warm", "teacher.jsonl")))
        return data

    if c.warm_model is None:
        plan.append(
            train_stage(
                warm_train_key,
                ("warm",),
                lambda ctx: train_config_fields(
                    ctx, output=ctx.path("warm", "model"), data=warm_data(ctx), start=base_model_args(ctx),
                    steps=c.warm_steps, tokens=c.warm_tokens, layout=c.layout, seed=c.seed,
                ),
            )
        )

    def warm_model(ctx: RunContext) -> str:
        if c.warm_model is not None:
            return c.warm_model
        return checkpoint_of(ctx, warm_train_key, ctx.path("warm"))

    plan.append(eval_stage("warm/eval", ("warm",), warm_model, "latent"))

    def raw_data(ctx: RunContext) -> str:
        return str(ctx.path("data", "raw.jsonl")) if c.demo else str(c.data)

    # ------------------------------------------------------------ baselines (same tokens as an M-step)
    if c.raw_baseline:
        plan.append(
            train_stage(
                "baseline-raw/train",
                ("baseline-raw",),
                lambda ctx: train_config_fields(
                    ctx, output=ctx.path("baseline-raw", "model"), data=[raw_data(ctx)], start=base_model_args(ctx),
                    steps=c.mstep_steps, tokens=c.mstep_tokens, layout="raw", seed=c.seed,
                ),
            )
        )
        plan.append(eval_stage("baseline-raw/eval", ("baseline-raw",), lambda ctx: checkpoint_of(ctx, "baseline-raw/train", ctx.path("baseline-raw")), "raw"))
    teacher_data = c.teacher_data or (None if not c.demo else "@demo")
    if c.teacher_baseline and teacher_data:
        plan.append(
            train_stage(
                "baseline-teacher/train",
                ("baseline-teacher",),
                lambda ctx: train_config_fields(
                    ctx, output=ctx.path("baseline-teacher", "model"),
                    data=[str(ctx.path("data", "teacher.jsonl")) if c.demo else str(c.teacher_data)],
                    start=base_model_args(ctx), steps=c.mstep_steps, tokens=c.mstep_tokens, layout=c.layout, seed=c.seed,
                ),
            )
        )
        plan.append(eval_stage("baseline-teacher/eval", ("baseline-teacher",), lambda ctx: checkpoint_of(ctx, "baseline-teacher/train", ctx.path("baseline-teacher")), "latent"))

    # ------------------------------------------------------------ EM iterations
    ks = sorted(c.ks)
    # A sweep shares iteration 1's samples (all K sample the warm start): one stage samples max(K)
    # and each K selects from its first K (lt select --k; samples are seeded by index).
    shared_first = len(ks) > 1 and c.iters >= 1
    if shared_first:
        plan.append(sample_stage("shared/iter1/sample", ("shared", "iter1"), warm_model, max(ks), c.seed + 1))
    for k in ks:
        for t in range(1, c.iters + 1):
            folder = (f"k{k}", f"iter{t}")
            prefix = f"k{k}/iter{t}"
            previous = warm_model if t == 1 else _checkpoint_fn(f"k{k}/iter{t - 1}/train", (f"k{k}", f"iter{t - 1}"))
            if t == 1 and shared_first:
                sample_key = "shared/iter1/sample"
                candidates = _candidates_fn(("shared", "iter1"))
                select_k: int | None = k
            else:
                sample_key = f"{prefix}/sample"
                plan.append(sample_stage(sample_key, folder, previous, k, c.seed + t))
                candidates = _candidates_fn(folder)
                select_k = None
            plan.append(select_stage(f"{prefix}/select", folder, sample_key, candidates, c.seed + t, select_k))
            start = _start_fn(c, previous)
            plan.append(
                train_stage(
                    f"{prefix}/train",
                    folder,
                    _mstep_fields(c, folder, start),
                )
            )
            plan.append(eval_stage(f"{prefix}/eval", folder, _checkpoint_fn(f"{prefix}/train", folder), "latent"))
    return plan


def _checkpoint_fn(train_key: str, folder: tuple[str, ...]):
    return lambda ctx: checkpoint_of(ctx, train_key, ctx.path(*folder))


def _candidates_fn(folder: tuple[str, ...]):
    return lambda ctx: ctx.path(*folder, "candidates.jsonl")


def _start_fn(c: BootstrapConfig, previous):
    if c.continue_training:
        return lambda ctx: {"model": previous(ctx)}
    return base_model_args


def _mstep_fields(c: BootstrapConfig, folder: tuple[str, ...], start):
    return lambda ctx: train_config_fields(
        ctx, output=ctx.path(*folder, "model"), data=[str(ctx.path(*folder, "augmented.jsonl"))], start=start(ctx),
        steps=c.mstep_steps, tokens=c.mstep_tokens, layout=c.layout, seed=c.seed,
    )


# ------------------------------------------------------------------------------------ run
def _check_config(run_dir: Path, config: BootstrapConfig) -> None:
    from ..io import read_json, write_json

    path = run_dir / "config.json"
    if path.exists():
        saved = BootstrapConfig.from_dict(read_json(path)).result_fields()
        current = config.result_fields()
        differing = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if differing:
            raise UsageError(
                f"{run_dir} holds a run with different settings ({', '.join(differing)}); "
                "rerun the original command to resume it, or pass a new --run-dir"
            )
    write_json(path, config.to_dict())


def format_command(argv: list[str]) -> str:
    if argv and argv[0].startswith("#"):
        return " ".join(argv)
    return shlex.join([sys.executable, "-m", "lt_cli", *argv])


def dry_run(config: BootstrapConfig) -> list[str]:
    """Every command the run would execute (finished stages of an existing run are marked done)."""
    from ..console import protect_stdout

    run_dir = Path(config.run_dir)
    manifest_path = run_dir / "manifest.json"
    done = set()
    ctx = RunContext(config, run_dir)
    if manifest_path.exists():
        manifest = Manifest(manifest_path)
        done = {k for k, r in manifest.stages.items() if r.status == "done"}
        ctx.results = {k: r.result for k, r in manifest.stages.items() if r.status == "done"}
    launcher = _make_launcher(config) if config.launcher else None
    lines = []
    for stage in build_plan(config):
        status = " (done)" if stage.key in done else ""
        in_process = launcher is None or stage.collect is None or (stage.in_process_only is not None and stage.in_process_only(config))
        lines.append(f"# {stage.key}{status}" + ("" if in_process else f" (launcher: {config.launcher})"))
        for argv in stage.commands(ctx):
            if in_process or argv[0].startswith("#"):
                lines.append(format_command(argv))
            else:
                lines.append(launcher.shell_for([str(a) for a in argv], distributed=stage.distributed))
    stream = protect_stdout()
    stream.write(("\n".join(lines) + "\n").encode("utf-8"))
    stream.flush()
    return lines


def run_bootstrap(config: BootstrapConfig) -> dict[str, Any]:
    """Run (or resume) the plan, then write and print the report. Returns the report dict."""
    from ..console import log
    from .report import print_report, write_report

    if config.dry_run:
        dry_run(config)
        return {}
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_config(run_dir, config)
    plan = build_plan(config)
    manifest = Manifest(run_dir / "manifest.json")
    manifest.plan([stage.key for stage in plan])
    ctx = RunContext(config, run_dir)
    ctx.results = {k: r.result for k, r in manifest.stages.items() if r.status == "done"}
    launcher = _make_launcher(config) if config.launcher else None
    n_done = sum(1 for s in plan if manifest.is_done(s.key))
    if n_done:
        log(f"resuming {run_dir}: {n_done}/{len(plan)} stages already done")
    for index, stage in enumerate(plan, start=1):
        if manifest.is_done(stage.key):
            continue
        log(f"[bold]stage {index}/{len(plan)}: {stage.key}[/bold]")
        manifest.start(stage.key)
        started = time.monotonic()
        try:
            in_process = stage.in_process_only is not None and stage.in_process_only(config)
            if launcher is not None and stage.collect is not None and not in_process:
                for argv in stage.commands(ctx):
                    launcher.run(argv, distributed=stage.distributed, log_path=run_dir / "logs" / (stage.key.replace("/", "_") + ".log"))
                result = stage.collect(ctx)
            else:
                result = stage.run(ctx)
        except BaseException as exc:
            manifest.fail(stage.key, f"{type(exc).__name__}: {exc}")
            raise
        seconds = time.monotonic() - started
        manifest.finish(stage.key, result, seconds)
        ctx.results[stage.key] = result
        log(f"stage {stage.key} done in {seconds:.1f}s" + (f": accuracy {result['accuracy']:.3f}" if result.get("accuracy") is not None else ""))
    report = build_report(config, manifest)
    write_report(report, run_dir)
    print_report(report)
    log(f"report: {run_dir / 'report.md'}, {run_dir / 'report.json'}, {run_dir / 'report.png'}")
    return report


def _make_launcher(config: BootstrapConfig):
    from ..launchers import make_launcher

    return make_launcher(config.launcher, nproc_per_node=config.nproc_per_node, dry_run=False)


# ------------------------------------------------------------------------------------ report
def build_report(config: BootstrapConfig, manifest: Manifest) -> dict[str, Any]:
    """The report from the manifest's results only (so a resumed run reports the same numbers)."""

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
        }
    warm_acc = result("warm/eval").get("accuracy")
    if "baseline-teacher/eval" in manifest.stages:
        baselines["teacher"] = {
            "accuracy": result("baseline-teacher/eval").get("accuracy"),
            "n_tokens": result("baseline-teacher/train").get("n_tokens"),
            "note": "teacher thoughts on every raw document, same tokens as an M-step",
        }
    else:
        baselines["teacher"] = {"accuracy": warm_acc, "n_tokens": result("warm/train").get("n_tokens"), "note": "the warm start (teacher-thought data)"}

    iterations = []
    for k in sorted(config.ks):
        iterations.append(
            {
                "iter": 0,
                "k": k,
                "accuracy": warm_acc,
                "elbo": None,
                "mean_log_w": None,
                "ess": None,
                "n_tokens": result("warm/train").get("n_tokens"),
                "seconds": seconds("warm/train", "warm/eval"),
                "tasks": result("warm/eval").get("tasks", {}),
            }
        )
        for t in range(1, config.iters + 1):
            prefix = f"k{k}/iter{t}"
            select = result(f"{prefix}/select")
            sample_key = f"{prefix}/sample" if f"{prefix}/sample" in manifest.stages else "shared/iter1/sample"
            iterations.append(
                {
                    "iter": t,
                    "k": k,
                    "accuracy": result(f"{prefix}/eval").get("accuracy"),
                    "elbo": select.get("elbo"),
                    "mean_log_w": select.get("mean_log_w"),
                    "ess": select.get("ess"),
                    "n_tokens": result(f"{prefix}/train").get("n_tokens"),
                    "seconds": seconds(sample_key, f"{prefix}/select", f"{prefix}/train", f"{prefix}/eval"),
                    "tasks": result(f"{prefix}/eval").get("tasks", {}),
                }
            )
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
