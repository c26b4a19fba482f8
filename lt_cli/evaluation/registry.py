"""The task registry: every ``lt eval --task NAME`` resolves here.

Two kinds of task exist:

* **generation tasks** (few-shot prompts, generation, answer grading) are plain JSON task files
  (schema: :mod:`lt_cli.evaluation.taskfile`). Every ``*.json`` in ``lt_cli/evaluation/tasks/`` is
  registered under its ``name``; ``--task-file PATH`` (or ``--task PATH.json``) loads a user's file
  the same way, so a new benchmark needs no Python at all.
* **likelihood tasks** (``nll``, ``elbo``) are Python objects registered with
  :func:`register_task`; a new Python task is one module that calls it at import time (import the
  module before calling :func:`~lt_cli.evaluation.evaluate`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol

from ..errors import UsageError
from .taskfile import load_task_file

TASKS_DIR = Path(__file__).resolve().parent / "tasks"


class Task(Protocol):
    """What :func:`~lt_cli.evaluation.evaluate` needs of a task."""

    name: str
    version: int

    def evaluate(self, config, backend=None) -> dict:
        """Run the task under an :class:`~lt_cli.evaluation.EvalConfig`; return its metrics.

        ``backend``: an already loaded Backend to use (and leave open) instead of loading
        ``config.model``."""


_FACTORIES: dict[str, Callable[[], Any]] = {}


def register_task(name: str, factory: Callable[[], Any]) -> None:
    """Register a task: ``factory()`` returns an object with ``name``, ``version`` and ``evaluate(config)``."""
    _FACTORIES[name] = factory


def _register_builtin_files() -> None:
    for path in sorted(TASKS_DIR.glob("*.json")):
        register_task(path.stem, lambda path=path: load_task_file(path))


#: modules that register Python tasks when imported (light imports only); add yours here or
#: import your module before calling evaluate()
TASK_MODULES = ["lt_cli.evaluation.likelihood", "lt_cli.evaluation.elbo", "lt_cli.demo.task"]


def _ensure_builtins() -> None:
    if not _FACTORIES.get("__builtins_loaded__"):
        import importlib

        _register_builtin_files()
        for module in TASK_MODULES:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if not exc.name or not module.startswith(exc.name):  # present but broken: say so
                    raise
        _FACTORIES["__builtins_loaded__"] = lambda: None


def task_names() -> list[str]:
    _ensure_builtins()
    return sorted(n for n in _FACTORIES if not n.startswith("__"))


def get_task(name: str) -> Any:
    """A registered task by name, or a task file when ``name`` is a path to a ``.json`` file."""
    _ensure_builtins()
    if name.endswith(".json") and Path(name).exists():
        return load_task_file(name)
    factory = _FACTORIES.get(name)
    if factory is None or name.startswith("__"):
        raise UsageError(f"unknown task {name!r} (known: {', '.join(task_names())}; or pass --task-file PATH)")
    return factory()
