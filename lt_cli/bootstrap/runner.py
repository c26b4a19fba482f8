"""Running a bootstrap plan: check everything first, then each stage in this process or through a
launcher, with its status and result in ``manifest.json``.

A stage runs its command's config either here (:func:`lt_cli.runners.run`, the function the
command itself calls) or, with ``--launcher``, as the command line :func:`lt_cli.flags.to_argv`
renders from the same config. Its result is then read from the files it wrote, whichever way it
ran. Rerunning the same command skips the finished stages and redoes the first unfinished one, so
an interrupted run (even ``kill -9``) ends with the same report as an uninterrupted one.
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
from .plan import build_plan, stage_log
from .stages import RunContext, Stage


INPUTS_FILE = "inputs.json"


def input_identity(config: BootstrapConfig) -> dict[str, Any]:
    """Content identity (sha256, size) of every input file the run reads, keyed by its flag."""
    from ..provenance import file_identity
    from ..training.config import DataSource

    files = {"--data": config.data, "--synthesize": config.synthesize, "--teacher-data": config.teacher_data, "--eval-data": config.eval.data}
    identity = {flag: file_identity(path) for flag, path in files.items() if path}
    for spec in config.warm_data:
        identity[f"--warm-data {spec}"] = file_identity(DataSource.parse(spec).path)
    return identity


def check_inputs(run_dir: Path, config: BootstrapConfig) -> None:
    """Refuse to resume a run folder whose input files changed content (same paths, other data:
    the finished stages were computed from the old content)."""
    from ..files import read_json, write_json
    from ..provenance import describe_input, content_key

    current = input_identity(config)
    path = run_dir / INPUTS_FILE
    if path.exists() and (run_dir / "config.json").exists():
        saved = read_json(path)
        changed = [
            f"{flag} {describe_input(saved[flag])} there, {describe_input(new)} now"
            for flag, new in current.items()
            if flag in saved and content_key(saved[flag]) != content_key(new)
        ]
        if changed:
            raise UsageError(
                f"{run_dir} holds a run on other input data: {'; '.join(changed)}. Restore the original files to resume it, or pass a new --run-dir"
            )
    write_json(path, current)


def check_config(run_dir: Path, config: BootstrapConfig) -> None:
    """Refuse to resume a run folder whose saved config differs in a field that changes results,
    or whose input files changed content."""
    from ..flags import leaves
    from ..files import read_json, write_json

    check_inputs(run_dir, config)
    path = run_dir / "config.json"
    if path.exists():
        saved = BootstrapConfig.from_dict(read_json(path)).result_fields()
        current = config.result_fields()
        differing = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if differing:
            names = {".".join(leaf.path): leaf.name for leaf in leaves(BootstrapConfig)}
            shown = ", ".join(names.get(k, k) for k in differing)
            raise UsageError(f"{run_dir} holds a run with different settings ({shown}); rerun the original command to resume it, or pass a new --run-dir")
    write_json(path, config.to_dict())
    write_config_toml(run_dir, config)


def write_config_toml(run_dir: Path, config: BootstrapConfig) -> None:
    """``RUN/config.toml``: config.json as a config file (``lt bootstrap --config RUN/config.toml``
    reruns or resumes the run; either file can be passed back)."""
    from .. import __version__
    from ..configfile import dumps
    from ..files import write_text
    from .config import PRINT_SKIP

    header = f"lt bootstrap config of {run_dir} (lt {__version__}); rerun or resume with: lt bootstrap --config {run_dir / 'config.toml'}"
    write_text(run_dir / "config.toml", dumps(config, skip=PRINT_SKIP, header=header))


def preflight(config: BootstrapConfig, plan: list[Stage], ctx: RunContext) -> None:
    """Everything that can be checked before the first stage: input files, eval tasks, and every
    stage's settings (files that earlier stages will write cannot be checked yet)."""
    from ..evaluation import get_task
    from ..io import input_exists
    from ..tracking import check_installed
    from .tracking import check_tracking_paths

    check_installed(config.tracking)
    check_tracking_paths(config)
    finetune = (("--finetune-train-data", config.finetune.train_data), ("--finetune-data", config.finetune.data)) if config.finetune_eval else ()
    for label, path in (
        ("--data", config.data), ("--synthesize", config.synthesize), ("--teacher-data", config.teacher_data), ("--eval-data", config.eval.data), *finetune
    ):
        if path and not input_exists(path):
            raise UsageError(f"{label} {path}: no such file")
    for spec in config.warm_data:
        from ..training.config import DataSource

        DataSource.parse(spec).check_exists("--warm-data")
    for task in config.eval_tasks:
        get_task(task)
    for k in config.ks:  # each E-step's SampleConfig, validated as its stage will build it
        config.sample.for_arm(k)
    if config.adaptive:
        config.sample.for_arm(config.adaptive_k, config.k_max)
    for stage in plan:
        if stage.command == "train":
            for train in stage.configs(ctx):
                train.validate(check_paths=False)


COMMANDS_FILE = "commands.jsonl"


def record_invocation(run_dir: Path) -> None:
    """Append this ``lt bootstrap`` command line to ``RUN/commands.jsonl`` (what ``lt push`` cards
    name); a run started from Python (no ``lt bootstrap`` argv) records nothing."""
    if sys.argv[1:2] != ["bootstrap"]:
        return
    from .. import __version__
    from ..io import dumps
    from ..nofollow import open_binary_no_follow

    with open_binary_no_follow(run_dir / COMMANDS_FILE, "ab") as f:  # a predictable name in the run folder
        f.write(dumps({"argv": ["lt", *sys.argv[1:]], "lt_version": __version__, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))


def format_command(argv: list[str]) -> str:
    return shlex.join([sys.executable, "-m", "lt_cli", *argv])


def _make_launcher(config: BootstrapConfig):
    from ..launchers import make_launcher

    return make_launcher(config.launcher, nproc_per_node=config.nproc_per_node, dry_run=False) if config.launcher else None


def dry_run(config: BootstrapConfig) -> list[str]:
    """Every command the run would execute, on stdout (finished stages of an existing run marked)."""
    from ..flags import to_argv
    from ..files import write_stdout_bytes

    run_dir = Path(config.run_dir)
    ctx = RunContext(config, run_dir)
    done: set[str] = set()
    if (run_dir / "manifest.json").exists():
        manifest = Manifest(run_dir / "manifest.json")
        done = {k for k, r in manifest.stages.items() if r.status == "done"}
        ctx.results = {k: r.result for k, r in manifest.stages.items() if r.status == "done"}
    launcher = _make_launcher(config)
    lines = []
    for stage in build_plan(config):
        status = " (done)" if stage.key in done else ""
        via = f" (launcher: {config.launcher})" if launcher is not None and stage.command else ""
        lines.append(f"# {stage.key}{status}{via}")
        if stage.command is None:
            lines.append(stage.note(ctx) if stage.note else "# in-process")
            continue
        for stage_config in stage.configs(ctx):
            argv = to_argv(stage.command, stage_config)
            lines.append(launcher.shell_for(argv, distributed=stage.distributed) if launcher is not None else format_command(argv))
    write_stdout_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    return lines


def run_stage(stage: Stage, ctx: RunContext, launcher) -> dict[str, Any]:
    """Run one stage here or through ``launcher``; its result, read from what it wrote."""
    from .. import runners
    from ..flags import to_argv

    if stage.command is None:
        return stage.local(ctx)
    configs = stage.configs(ctx)
    for stage_config in configs:
        if launcher is not None:
            launcher.run(to_argv(stage.command, stage_config), distributed=stage.distributed, log_path=stage_log(ctx.run_dir, stage.key))
        else:
            runners.run(stage.command, stage_config)
    return stage.result(ctx, configs)


def run_bootstrap(config: BootstrapConfig) -> dict[str, Any]:
    """Run (or resume) the plan, then write and print the report. Returns the report dict."""
    if config.dry_run:
        dry_run(config)
        return {}
    from ..locks import OutputLock

    run_dir = Path(config.run_dir)
    plan = build_plan(config)
    ctx = RunContext(config, run_dir)
    preflight(config, plan, ctx)
    with OutputLock(run_dir, what="--run-dir"):  # one bootstrap per run folder
        return _run_plan(config, run_dir, plan, ctx)


def _run_plan(config: BootstrapConfig, run_dir: Path, plan: list[Stage], ctx: RunContext) -> dict[str, Any]:
    from ..console import log
    from .report import build_report, print_report, write_report

    run_dir.mkdir(parents=True, exist_ok=True)
    check_config(run_dir, config)
    record_invocation(run_dir)
    manifest = Manifest(run_dir / "manifest.json")
    manifest.plan([stage.key for stage in plan])
    ctx.results = {k: r.result for k, r in manifest.stages.items() if r.status == "done"}
    launcher = _make_launcher(config)
    n_done = sum(1 for s in plan if manifest.is_done(s.key))
    if n_done:
        log(f"resuming {run_dir}: {n_done}/{len(plan)} stages already done")
    tracker = None
    if config.tracking.enabled:
        from .tracking import LoopTracker

        tracker = LoopTracker(config)
    try:
        for index, stage in enumerate(plan, start=1):
            if manifest.is_done(stage.key):
                if tracker is not None:  # finished in an earlier run: logged then, unless that run had no tracker
                    tracker.log_stage(stage.key, ctx)
                continue
            log(f"[bold]stage {index}/{len(plan)}: {stage.key}[/bold]")
            manifest.start(stage.key)
            started = time.monotonic()
            try:
                result = run_stage(stage, ctx, launcher)
            except BaseException as exc:
                manifest.fail(stage.key, f"{type(exc).__name__}: {exc}")
                raise
            seconds = time.monotonic() - started
            manifest.finish(stage.key, result, seconds)
            ctx.results[stage.key] = result
            accuracy = result.get("accuracy")
            if accuracy is not None:
                stderr = result.get("accuracy_stderr")
                accuracy_text = f": accuracy {accuracy:.3f}" + (f" ± {stderr:.3f}" if stderr is not None else "")
            log(f"stage {stage.key} done in {seconds:.1f}s" + (accuracy_text if accuracy is not None else ""))
            if tracker is not None:
                tracker.log_stage(stage.key, ctx)
    finally:
        if tracker is not None:
            tracker.close()
    report = build_report(config, manifest)
    write_report(report, run_dir)
    print_report(report)
    log(f"report: {run_dir / 'report.md'}, {run_dir / 'report.json'}, {run_dir / 'report.png'}")
    return report
