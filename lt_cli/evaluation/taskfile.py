"""Generation tasks as JSON task files: the schema, its validation, and the prompts a task builds.

Why a file format rather than Python: a new few-shot benchmark (prompt template, exemplars, grader,
default data) should need no code, and a task file can be read, diffed and versioned like data.
Every ``*.json`` in ``lt_cli/evaluation/tasks/`` is one (:mod:`lt_cli.evaluation.registry` lists
them), and ``--task-file PATH`` loads a user's the same way.

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
    choices            optional, multiple-choice tasks: {"field": "choices", "item": "({label}) {text}",
                       "separator": " "}; a record's list of choice texts becomes one string (labels
                       A, B, C, ...) for the prompt's {choices} field; an exemplar may give that
                       string as written instead of a list
    strip_inputs       optional bool: strip the other input strings before formatting
    num_fewshot        optional default number of exemplars (the first N; --num-fewshot overrides)
    preamble           optional text before the first exemplar (no separator after it)
    exemplar_sets      optional, exemplars chosen per record: {"by": FIELD, "sets": {VALUE:
                       {"preamble", "exemplars", "latent_exemplars"}}}; a record uses the set named
                       by its FIELD (MMLU: one set per subject); replaces the top-level lists

Task files never contain special-token strings: the latent suffix, ``<EoL>`` and the ``<SoL>``
stop come from :mod:`lt_cli.formats`, so task files cannot drift from the training format.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import formats
from ..errors import UsageError

TASK_FILE_FORMAT = "lt-eval-task"

Record = dict[str, Any]


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
    #: multiple-choice rendering ({"field", "item", "separator"}); empty: none
    choices: dict = field(default_factory=dict)
    strip_inputs: bool = False
    #: exemplars used by default (None: all)
    num_fewshot: int | None = None
    preamble: str = ""
    #: field whose value picks an exemplar set ("" = one set for every record)
    exemplars_by: str = ""
    #: {value: ExemplarSet} when ``exemplars_by`` is set
    exemplar_sets: dict = field(default_factory=dict)

    kind = "generation"

    # ------------------------------------------------------------------ prompts
    def render_choices(self, value: Any) -> str:
        """A record's choices (a list of texts) as the prompt shows them; a string is kept as is."""
        if isinstance(value, str):
            return value
        item, separator = self.choices.get("item", "({label}) {text}"), self.choices.get("separator", " ")
        return separator.join(item.format(label=chr(ord("A") + i), text=text) for i, text in enumerate(value))

    def _render_input(self, record: Record) -> str:
        choices_field = self.choices.get("field")
        values, missing = {}, []
        for f in self.input_fields:
            value = record.get(f)
            if f == choices_field and isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                values[f] = self.render_choices(value)
            elif isinstance(value, str):
                values[f] = value.strip() if self.strip_inputs and f != choices_field else value
            else:
                missing.append(f)
        if missing:
            kind = lambda f: "list of strings or string" if f == choices_field else "string"  # noqa: E731
            raise ValueError(f"missing {', '.join(f'{kind(f)} field {f!r}' for f in missing)} for task {self.name}")
        return self.prompt.format_map(values)

    def exemplar_set(self, record: Record) -> "ExemplarSet":
        """The exemplars (and preamble) for ``record``."""
        if not self.exemplars_by:
            return ExemplarSet(self.preamble, self.exemplars, self.latent_exemplars)
        key = record.get(self.exemplars_by)
        found = self.exemplar_sets.get(key) if isinstance(key, str) else None
        if found is None:
            raise ValueError(f"field {self.exemplars_by!r} = {key!r} names no exemplar set of task {self.name} "
                             f"(known: {', '.join(sorted(self.exemplar_sets))})")
        return found

    def check_record(self, record: Record) -> None:
        """Raise ValueError when ``record`` cannot be prompted (missing inputs or exemplar set)."""
        self._render_input(record)
        self.exemplar_set(record)

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
        """Exemplars every record can get (the smallest set's size with ``exemplar_sets``)."""
        sets = list(self.exemplar_sets.values()) if self.exemplars_by else [ExemplarSet(self.preamble, self.exemplars, self.latent_exemplars)]
        return min(len(s.pool(latent)) for s in sets) if sets else 0

    def default_shots(self, latent: bool) -> int:
        """Exemplars used when ``--num-fewshot`` is not given: the task's ``num_fewshot``, else all."""
        available = self.max_shots(latent)
        return available if self.num_fewshot is None else min(self.num_fewshot, available)

    def build_prompt(self, record: Record, latent: bool, n_shots: int | None = None) -> str:
        """The preamble, ``n_shots`` exemplars (the default number when None) in file order, then
        the problem's prompt."""
        chosen = self.exemplar_set(record)
        pool = chosen.pool(latent)
        n = min(self.default_shots(latent), len(pool)) if n_shots is None else max(0, min(n_shots, len(pool)))
        parts = [self.exemplar_text(ex, latent) for ex in pool[:n]]
        parts.append(self.question_prompt(record, latent))
        return chosen.preamble + self.fewshot_delimiter.join(parts)

    def stop_strings(self, latent: bool) -> list[str]:
        stops = list(self.stops)
        if latent:
            stops.append(formats.START_OF_LATENT)
        return stops

    def evaluate(self, config, backend=None) -> dict:
        from .generation import run_generation_task

        return run_generation_task(self, config, backend)


@dataclass(frozen=True)
class ExemplarSet:
    """The exemplars one record gets: raw and latent lists and the text before them."""

    preamble: str
    exemplars: list
    latent_exemplars: list

    def pool(self, latent: bool) -> list:
        return self.latent_exemplars if latent else self.exemplars


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

    choices = obj.get("choices") or {}
    if not isinstance(choices, dict) or (choices and not (isinstance(choices.get("field"), str) and choices["field"] in input_fields)):
        raise bad("'choices' must be an object whose 'field' is one of 'input_fields'")
    for key in ("item", "separator"):
        if key in choices and (not isinstance(choices[key], str) or formats.contains_special_token(choices[key])):
            raise bad(f"choices.{key} must be a string without special tokens")
    if "item" in choices:
        try:
            choices["item"].format(label="A", text="t")
        except (KeyError, IndexError, ValueError):
            raise bad("choices.item may only use the fields {label} and {text}") from None
    choices_field = choices.get("field")

    def parse_exemplars(where: dict, prefix: str) -> tuple[list, list]:
        exemplars = where.get("exemplars", [])
        if not isinstance(exemplars, list):
            raise bad(f"'{prefix}exemplars' must be a list")
        latent_exemplars = where.get("latent_exemplars")
        if latent_exemplars is None:
            latent_exemplars = [ex for ex in exemplars if isinstance(ex, dict) and "thought" in ex]
        elif not isinstance(latent_exemplars, list):
            raise bad(f"'{prefix}latent_exemplars' must be a list")
        raw_exemplars = [ex for ex in exemplars if isinstance(ex, dict) and "target" in ex]
        for label, pool, needed in (("exemplars", raw_exemplars, ("target",)), ("latent_exemplars", latent_exemplars, ("thought", "answer_text"))):
            for i, ex in enumerate(pool):
                if not isinstance(ex, dict):
                    raise bad(f"{prefix}{label}[{i}] must be an object")
                for key in list(input_fields) + list(needed):
                    value = ex.get(key)
                    if key == choices_field and isinstance(value, list) and all(isinstance(v, str) for v in value):
                        value = "".join(value)
                    if not isinstance(value, str):
                        raise bad(f"{prefix}{label}[{i}] has no string field {key!r}")
                    if formats.contains_special_token(value):
                        raise bad(f"{prefix}{label}[{i}].{key} contains a special-token string; lt adds those itself")
        return raw_exemplars, list(latent_exemplars)

    raw_exemplars, latent_exemplars = parse_exemplars(obj, "")
    preamble = obj.get("preamble", "")
    sets_spec = obj.get("exemplar_sets")
    exemplars_by, exemplar_sets = "", {}
    if sets_spec is not None:
        if not isinstance(sets_spec, dict) or not isinstance(sets_spec.get("by"), str) or not isinstance(sets_spec.get("sets"), dict) or not sets_spec["sets"]:
            raise bad("'exemplar_sets' must be {\"by\": FIELD, \"sets\": {VALUE: {...}, ...}}")
        if raw_exemplars or latent_exemplars:
            raise bad("give either 'exemplars' or 'exemplar_sets', not both")
        exemplars_by = sets_spec["by"]
        for key, entry in sets_spec["sets"].items():
            if not isinstance(entry, dict):
                raise bad(f"exemplar_sets.sets.{key} must be an object")
            set_preamble = entry.get("preamble", preamble)
            if not isinstance(set_preamble, str) or formats.contains_special_token(set_preamble):
                raise bad(f"exemplar_sets.sets.{key}.preamble must be a string without special tokens")
            exemplar_sets[key] = ExemplarSet(set_preamble, *parse_exemplars(entry, f"exemplar_sets.sets.{key}."))
    if not isinstance(preamble, str) or formats.contains_special_token(preamble):
        raise bad("'preamble' must be a string without special tokens")
    if not isinstance(obj.get("strip_inputs", False), bool):
        raise bad("'strip_inputs' must be true or false")
    num_fewshot = obj.get("num_fewshot")
    if num_fewshot is not None and (not isinstance(num_fewshot, int) or isinstance(num_fewshot, bool) or num_fewshot < 0):
        raise bad("'num_fewshot' must be a non-negative integer")
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
        choices=dict(choices),
        strip_inputs=obj.get("strip_inputs", False),
        num_fewshot=num_fewshot,
        preamble=preamble,
        exemplars_by=exemplars_by,
        exemplar_sets=exemplar_sets,
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
