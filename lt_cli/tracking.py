"""Experiment trackers: a stage's numbers in TensorBoard, Weights & Biases or a JSONL log.

Why one module: ``lt train`` logs its curves, the E-step and eval commands log their statistics,
and ``lt bootstrap`` logs every stage of the loop into ONE tracker run. They share
:class:`TrackingConfig` (the ``--report-to``, ``--wandb-project``, ``--wandb-entity``,
``--run-name`` and ``--tracking-dir`` flags, nested in each command's config) and :class:`Tracker`.

* ``tensorboard``: event files in ``DIR/tensorboard`` (``torch.utils.tensorboard``; needs the
  ``tensorboard`` package: ``pip install 'lt-cli[tensorboard]'``);
* ``wandb``: one W&B run (``pip install 'lt-cli[wandb]'``; ``WANDB_MODE=offline`` works without an
  account). For ``lt train`` and ``lt bootstrap`` its id is kept in ``DIR/wandb-run-id``, so a
  resumed run continues the same W&B run; the other commands start a new run each time.
  Project, entity and name come from the flags, else W&B's own variables (``WANDB_PROJECT``,
  ``WANDB_ENTITY``, ``WANDB_NAME``), else lt's defaults (project ``lt``, the stage's name): a
  variable is never overridden by a default (:func:`wandb_settings`);
* ``jsonl``: ``DIR/tracking.jsonl``, one line per log call (``{"axis", "step", "metrics"}``),
  for tools that read neither.

Every value is logged against a named step *axis* (``train/step``, ``k4/iteration``...). In
TensorBoard the axis is each tag's step; in W&B it is the key's ``step_metric``
(``define_metric``), so several axes live in one run and iterations of different arms may be
logged in any order. The trackers are imported only when asked for, and a missing one is an error
before any work starts.

Links (the policy of :mod:`lt_cli.nofollow`): the files lt opens itself, ``tracking.jsonl``
(appended) and ``wandb-run-id`` (read, then written whole), are never opened through a symbolic
link, and the folders lt creates at a predictable name and hands to a library (the default
``OUTPUT.tracking`` / ``RUN/tracking``, and ``tensorboard/`` and ``wandb/`` inside it) must not
be links: a link at any of them is refused with one line (exit 2), before any work
(:func:`check_paths`), and left untouched. What TensorBoard and W&B write inside their own folders
is theirs: lt hands them a real folder and does not police their files. A folder the user names
(``--tracking-dir``, ``lt train``'s ``--output``) is taken as it is, a link included, like ``-o``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .flags import flag
from .nofollow import check_folder, check_plain_file, open_binary_no_follow

REPORT_TO = ("tensorboard", "wandb", "jsonl")
DEFAULT_WANDB_PROJECT = "lt"
WANDB_ID_FILE = "wandb-run-id"
JSONL_FILE = "tracking.jsonl"


@dataclass
class TrackingConfig:
    """Where a command's statistics go besides its own output files (nested in its config)."""

    #: tensorboard, wandb and/or jsonl (repeat the flag or separate with commas; none: nowhere)
    report_to: list[str] = field(default_factory=list, metadata=flag(csv=True))
    #: W&B project (default: $WANDB_PROJECT, else "lt")
    wandb_project: str | None = None
    #: W&B entity (default: $WANDB_ENTITY, else your W&B default)
    wandb_entity: str | None = None
    #: the run's name in the tracker (default: $WANDB_NAME, else the run or output name)
    run_name: str | None = None
    #: folder for TensorBoard events, the JSONL log and W&B's files (default: beside the output)
    tracking_dir: str | None = None

    def __post_init__(self) -> None:
        names: list[str] = []
        for item in self.report_to or []:
            for part in str(item).split(","):
                part = part.strip().lower()
                if part and part != "none" and part not in names:
                    names.append(part)
        unknown = [n for n in names if n not in REPORT_TO]
        if unknown:
            raise UsageError(f"--report-to must be none or one of {', '.join(REPORT_TO)} (comma-separated), got {', '.join(unknown)}")
        self.report_to = names

    @property
    def enabled(self) -> bool:
        return bool(self.report_to)


def wandb_settings(config: TrackingConfig, default_name: str | None) -> dict[str, str | None]:
    """Project, entity and name for ``wandb.init``: the flag, else W&B's environment variable, else
    lt's default (project "lt", the given name; no entity: W&B picks the account's default)."""
    return {
        "project": config.wandb_project or os.environ.get("WANDB_PROJECT") or DEFAULT_WANDB_PROJECT,
        "entity": config.wandb_entity or os.environ.get("WANDB_ENTITY") or None,
        "name": config.run_name or os.environ.get("WANDB_NAME") or default_name,
    }


def check_installed(config: TrackingConfig) -> None:
    """A tracker that is asked for but not installed: one error line, before any work."""
    import importlib.util

    for name, module in (("tensorboard", "tensorboard"), ("wandb", "wandb")):
        if name in config.report_to and importlib.util.find_spec(module) is None:
            raise UsageError(f"--report-to {name}: the {module} package is not installed (pip install 'lt-cli[{name}]')")


def check_paths(
    config: TrackingConfig, folder: str | os.PathLike, *, named: bool = False, exclude: tuple[str, ...] = (), resume: bool = True,
) -> Path:
    """The folder the trackers write into, once no link is planted where lt will write: the folder
    itself when lt chose it (not ``--tracking-dir``, nor a ``folder`` the user ``named``), the
    tracker folders lt creates there and the files lt opens there. Run before any work, and again
    when the trackers open (the files are then opened without following links)."""
    root = Path(config.tracking_dir or folder)
    wanted = [kind for kind in config.report_to if kind not in exclude]
    if not wanted:
        return root
    if config.tracking_dir is None and not named:
        check_folder(root)
    for kind in wanted:
        if kind == "tensorboard":
            check_folder(root / "tensorboard")
        elif kind == "wandb":
            check_folder(root / "wandb")  # where W&B puts its files under the dir lt gives it
            if resume:
                check_plain_file(root / WANDB_ID_FILE)
        elif kind == "jsonl":
            check_plain_file(root / JSONL_FILE)
    return root


# ------------------------------------------------------------------------------------ sinks
class _TensorBoard:
    name = "tensorboard"

    def __init__(self, folder: Path, purge_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step)

    def log(self, metrics: dict[str, float], axis: str, step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # the dashboard shows a stage as soon as it finished

    def close(self) -> None:
        self.writer.close()


class _WandB:
    name = "wandb"

    def __init__(self, folder: Path, settings: dict[str, str | None], run_config: dict[str, Any] | None, resume: bool):
        import wandb

        folder.mkdir(parents=True, exist_ok=True)
        id_file = folder / WANDB_ID_FILE if resume else None
        run_id = id_file.read_text().strip() if id_file is not None and check_plain_file(id_file) else None
        # console="off": W&B must not wrap stdout, which carries lt's records
        self.run = wandb.init(
            project=settings["project"], entity=settings["entity"], name=settings["name"], config=run_config, dir=str(folder),
            id=run_id, resume="allow", settings=wandb.Settings(console="off"),
        )
        if id_file is not None and run_id is None:
            from .files import write_bytes_atomic  # renamed over the name: a link planted meanwhile is replaced

            write_bytes_atomic(id_file, (self.run.id + "\n").encode())
        self._defined: set[str] = set()

    def log(self, metrics: dict[str, float], axis: str, step: int) -> None:
        if axis not in self._defined:
            self.run.define_metric(axis, hidden=True)
            self._defined.add(axis)
        for key in metrics:
            if key not in self._defined:
                self.run.define_metric(key, step_metric=axis)
                self._defined.add(key)
        self.run.log({axis: step, **metrics})

    def close(self) -> None:
        self.run.finish()


class _Jsonl:
    name = "jsonl"

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open_binary_no_follow(path, "ab")  # appended, never through a link

    def log(self, metrics: dict[str, float], axis: str, step: int) -> None:
        from .io import dumps

        self.file.write(dumps({"axis": axis, "step": step, "metrics": metrics}))
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class Tracker:
    """One run in each tracker asked for. ``log`` keeps finite numbers only (None, NaN, strings
    and booleans are dropped: a statistic that is unknown is not logged as zero)."""

    def __init__(self, sinks: list[Any]):
        self.sinks = sinks

    @property
    def names(self) -> list[str]:
        return [sink.name for sink in self.sinks]

    def log(self, metrics: dict[str, Any], *, axis: str, step: int, only: set[str] | None = None) -> None:
        numbers = {
            key: float(value) for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        }
        if not numbers:
            return
        for sink in self.sinks:
            if only is None or sink.name in only:
                sink.log(numbers, axis, int(step))

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_tracker(
    config: TrackingConfig, *, folder: str | os.PathLike, name: str | None, run_config: dict[str, Any] | None = None,
    exclude: tuple[str, ...] = (), purge_step: int | None = None, resume: bool = True, named: bool = False,
) -> Tracker:
    """The trackers ``config`` asks for, writing under ``config.tracking_dir`` or else ``folder``.

    ``exclude`` leaves sinks out (``lt train`` writes its own metrics.jsonl); ``purge_step``: a
    resumed training run drops TensorBoard events at or after the step it resumes from; ``resume``:
    continue the W&B run whose id ``folder`` keeps (runs that resume: train, bootstrap), or start a
    new one every time (a stage's one-off summary); ``named``: ``folder`` is one the user named
    (see :func:`check_paths`).
    """
    check_installed(config)
    root = check_paths(config, folder, named=named, exclude=exclude, resume=resume)
    sinks: list[Any] = []
    for kind in config.report_to:
        if kind in exclude:
            continue
        if kind == "tensorboard":
            sinks.append(_TensorBoard(root / "tensorboard", purge_step))
        elif kind == "wandb":
            sinks.append(_WandB(root, wandb_settings(config, name), run_config, resume))
        elif kind == "jsonl":
            sinks.append(_Jsonl(root / JSONL_FILE))
    return Tracker(sinks)


def flat_metrics(prefix: str, data: dict[str, Any]) -> dict[str, Any]:
    """``{"prefix/a/b": value}`` for the numbers of a nested summary (``compute.flops`` ->
    ``prefix/compute/flops``); lists and strings are left out."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flat_metrics(path, value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[path] = value
    return out


def output_folder(output: str | None) -> tuple[str, str]:
    """(default tracking folder, default run name) of a command writing ``output``: ``OUTPUT.tracking``
    beside a file output, ``./lt-tracking`` for stdout."""
    from .paths import is_device, is_std

    if is_std(output) or is_device(output):
        return "lt-tracking", "lt"
    return f"{output}.tracking", Path(str(output)).name


def preflight(config: TrackingConfig, output: str | None) -> None:
    """Before a one-stage command's work: its trackers are installed, and no link is planted where
    :func:`log_summary` will write."""
    check_installed(config)
    check_paths(config, output_folder(output)[0], resume=False)


def log_summary(config: TrackingConfig, *, output: str | None, prefix: str, summary: dict[str, Any], run_config: Any = None) -> None:
    """One stage's statistics as one log call at step 0 of the ``PREFIX/step`` axis: what
    ``lt sample-thoughts``, ``lt select`` and ``lt eval`` send when run with ``--report-to``."""
    if not config.enabled:
        return
    from .files import to_jsonable

    folder, name = output_folder(output)
    with open_tracker(config, folder=folder, name=name, run_config=to_jsonable(run_config), resume=False) as tracker:
        tracker.log(flat_metrics(prefix, summary), axis=f"{prefix}/step", step=0)
