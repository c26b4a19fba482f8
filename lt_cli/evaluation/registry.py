"""The task registry: every ``lt eval --task NAME`` resolves here.

Two kinds of task exist:

* **generation tasks** (few-shot prompts, generation, answer grading) are plain JSON task files
  (schema below). Every ``*.json`` in ``lt_cli/evaluation/tasks/`` is registered under its
  ``name``; ``--task-file PATH`` (or ``--task PATH.json``) loads a user's file the same way, so a
  new benchmark needs no Python at all.
* **likelihood tasks** (``nll``, ``elbo``) are Python objects registered with
  :func:`register_task`; a new Python task is one module that calls it at import time (import the
  module before calling :func:`~lt_cli.evaluation.evaluate`).

Task file schema (``"format": "lt-eval-task"``)::

    name               task name (metrics are reported under it)
    version            integer; bump it whenever the prompt or exemplars change
    grader             "gsm8k" (numbers) or "math" (math-verify), or one added with register_grader
    input_fields       record fields the prompt uses (checked on every record)
    data               default data: {"file": PATH} (relative to the task file) and/or
                       {"hf_path", "hf_name" | "hf_configs", "split"} for datasets.load_dataset
    prompt             question template, str.format fields from the record ("{question}")
    target_delimiter   between the prompt and an exemplar's target (raw variant)
    latent_target_delimiter  between the prompt and the latent suffix <SoL><PRIOR> (latent variant)
    fewshot_delimiter  between exemplars, and between the last exemplar and the question
    stops              stop strings (the latent variant adds <SoL>)
    exemplars          [{<input fields>, "target", "thought", "answer_text"}]: "target" is the
                       raw-variant solution; "thought" + <EoL> + "answer_text" the latent one
    latent_exemplars   optional separate list for the latent variant (default: "exemplars")
    finetune           optional, for ``lt finetune-eval``: {"answer_text": template of the stated
                       answer after the thought, with an {answer} field, "samples": samples per
                       test problem}

Task files never contain special-token strings: the latent suffix, ``<EoL>`` and the ``<SoL>``
stop come from :mod:`lt_cli.formats`, so task files cannot drift from the training format.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from .. import formats
from ..errors import UsageError

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
TASK_FILE_FORMAT = "lt-eval-task"

Record = dict[str, Any]


class Task(Protocol):
    """What :func:`~lt_cli.evaluation.evaluate` needs of a task."""

    name: str
    version: int

    def evaluate(self, config, backend=None) -> dict:
        """Run the task under an :class:`~lt_cli.evaluation.EvalConfig`; return its metrics.

        ``backend``: an already loaded Backend to use (and leave open) instead of loading
        ``config.model``."""


def _template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


@dataclass
class GenerationTask:
    """A few-shot generation task loaded from a task file (see the module docstring)."""

    name: str
    version: int
    grader: str
    prompt: str
    input_fields: list[str]
    exemplars: list[Record]
    latent_exemplars: list[Record]
    target_delimiter: str = " "
    latent_target_delimiter: str = ""
    fewshot_delimiter: str = "\n\n"
    stops: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    description: str = ""
    source: str = ""
    #: ``lt finetune-eval`` settings ({"answer_text", "samples"}); empty: not supported
    finetune: dict = field(default_factory=dict)

    kind = "generation"

    # ------------------------------------------------------------------ prompts
    def _render_input(self, record: Record) -> str:
        missing = [f for f in self.input_fields if not isinstance(record.get(f), str)]
        if missing:
            raise ValueError(f"missing string field(s) {', '.join(repr(f) for f in missing)} for task {self.name}")
        return self.prompt.format_map({f: record[f] for f in self.input_fields})

    def question_prompt(self, record: Record, latent: bool) -> str:
        """The prompt for one problem, without exemplars; the latent variant ends with <SoL><PRIOR>."""
        text = self._render_input(record)
        if latent:
            return text + self.latent_target_delimiter + formats.latent_eval_suffix()
        return text

    def exemplar_text(self, exemplar: Record, latent: bool) -> str:
        """One solved exemplar in the variant's layout."""
        if latent:
            return (
                self.question_prompt(exemplar, latent=True)
                + exemplar["thought"]
                + formats.latent_answer_separator()
                + exemplar["answer_text"]
            )
        return self.question_prompt(exemplar, latent=False) + self.target_delimiter + exemplar["target"]

    def max_shots(self, latent: bool) -> int:
        return len(self.latent_exemplars if latent else self.exemplars)

    def build_prompt(self, record: Record, latent: bool, n_shots: int | None = None) -> str:
        """``n_shots`` exemplars (all when None), in file order, then the problem's prompt."""
        pool = self.latent_exemplars if latent else self.exemplars
        n = len(pool) if n_shots is None else max(0, min(n_shots, len(pool)))
        parts = [self.exemplar_text(ex, latent) for ex in pool[:n]]
        parts.append(self.question_prompt(record, latent))
        return self.fewshot_delimiter.join(parts)

    def stop_strings(self, latent: bool) -> list[str]:
        stops = list(self.stops)
        if latent:
            stops.append(formats.START_OF_LATENT)
        return stops

    def evaluate(self, config, backend=None) -> dict:
        from .generation import run_generation_task

        return run_generation_task(self, config, backend)


def parse_task_file(obj: dict, source: str = "<dict>", base_dir: Path | None = None) -> GenerationTask:
    """Validate a task-file object and build its :class:`GenerationTask` (errors name the file)."""

    def bad(reason: str) -> UsageError:
        return UsageError(f"{source}: {reason}")

    if not isinstance(obj, dict):
        raise bad("a task file must be a JSON object")
    if obj.get("format", TASK_FILE_FORMAT) != TASK_FILE_FORMAT:
        raise bad(f"'format' must be {TASK_FILE_FORMAT!r}")
    for key in ("name", "prompt", "grader"):
        if not isinstance(obj.get(key), str) or not obj[key]:
            raise bad(f"missing string field {key!r}")
    version = obj.get("version")
    if not isinstance(version, int):
        raise bad("missing integer field 'version'")
    from .graders import GRADERS

    if obj["grader"] not in GRADERS:
        raise bad(f"unknown grader {obj['grader']!r} (known: {', '.join(sorted(GRADERS))})")
    try:
        template_fields = _template_fields(obj["prompt"])
    except ValueError as exc:
        raise bad(f"bad prompt template: {exc}") from None
    input_fields = obj.get("input_fields", template_fields)
    if not isinstance(input_fields, list) or not all(isinstance(f, str) for f in input_fields):
        raise bad("'input_fields' must be a list of strings")
    unknown = [f for f in template_fields if f not in input_fields]
    if unknown:
        raise bad(f"prompt uses field(s) {unknown} not listed in 'input_fields'")
    for key in ("prompt", "target_delimiter", "latent_target_delimiter", "fewshot_delimiter"):
        if key in obj and not isinstance(obj[key], str):
            raise bad(f"{key!r} must be a string")
        if formats.contains_special_token(obj.get(key, "")):
            raise bad(f"{key!r} contains a special-token string; lt adds those itself")
    stops = obj.get("stops", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad("'stops' must be a list of non-empty strings")

    exemplars = obj.get("exemplars", [])
    if not isinstance(exemplars, list):
        raise bad("'exemplars' must be a list")
    latent_exemplars = obj.get("latent_exemplars")
    if latent_exemplars is None:
        latent_exemplars = [ex for ex in exemplars if isinstance(ex, dict) and "thought" in ex]
    elif not isinstance(latent_exemplars, list):
        raise bad("'latent_exemplars' must be a list")
    raw_exemplars = [ex for ex in exemplars if isinstance(ex, dict) and "target" in ex]
    for label, pool, needed in (("exemplars", raw_exemplars, ("target",)), ("latent_exemplars", latent_exemplars, ("thought", "answer_text"))):
        for i, ex in enumerate(pool):
            if not isinstance(ex, dict):
                raise bad(f"{label}[{i}] must be an object")
            for key in list(input_fields) + list(needed):
                if not isinstance(ex.get(key), str):
                    raise bad(f"{label}[{i}] has no string field {key!r}")
                if formats.contains_special_token(ex[key]):
                    raise bad(f"{label}[{i}].{key} contains a special-token string; lt adds those itself")
    finetune = obj.get("finetune") or {}
    if not isinstance(finetune, dict):
        raise bad("'finetune' must be an object")
    if finetune:
        answer_text = finetune.get("answer_text")
        if not isinstance(answer_text, str) or "{answer}" not in answer_text or formats.contains_special_token(answer_text):
            raise bad("finetune.answer_text must be a string template with an {answer} field and no special tokens")
        samples = finetune.get("samples", 1)
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise bad("finetune.samples must be a positive integer")
    data = dict(obj.get("data") or {})
    if data.get("file") and base_dir is not None:
        data["file"] = str((base_dir / data["file"]).resolve())
    return GenerationTask(
        name=obj["name"],
        version=version,
        grader=obj["grader"],
        prompt=obj["prompt"],
        input_fields=list(input_fields),
        exemplars=raw_exemplars,
        latent_exemplars=list(latent_exemplars),
        target_delimiter=obj.get("target_delimiter", " "),
        latent_target_delimiter=obj.get("latent_target_delimiter", ""),
        fewshot_delimiter=obj.get("fewshot_delimiter", "\n\n"),
        stops=list(stops),
        data=data,
        description=obj.get("description", ""),
        source=source,
        finetune=dict(finetune),
    )


def load_task_file(path: str | Path) -> GenerationTask:
    """Load and validate a JSON task file."""
    import orjson

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such task file")
    try:
        obj = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{path}: bad JSON: {exc}") from None
    return parse_task_file(obj, source=str(path), base_dir=path.parent)


# ------------------------------------------------------------------------------ registry
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
