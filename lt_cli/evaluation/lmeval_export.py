"""``lt eval --export-lm-eval DIR``: a generation task as lm-evaluation-harness task YAMLs that
render exactly lt's prompts.

Why generate instead of documenting a hand-written YAML: a copied YAML drifts from the task file
(order of exemplars, delimiters, stops) the moment either changes; generated from the task file it
cannot. lm-eval (0.4.x) renders a few-shot prompt as, for each exemplar, ``doc_to_text(ex) +
target_delimiter + doc_to_target(ex) + fewshot_delimiter``, then ``doc_to_text(doc)``. lt's prompt
is ``fewshot_delimiter.join(exemplars) + fewshot_delimiter + question``, so the YAML sets:

* ``doc_to_text``: the task's ``prompt`` as a Jinja template (plus ``<SoL><PRIOR>`` for latent);
* ``fewshot_config``: sampler ``first_n`` over ``samples`` = lt's exemplars in file order, each
  with its rendered answer in ``lt_target`` (raw: ``target``; latent: thought ``<EoL>`` answer),
  ``doc_to_target: "{{lt_target}}"``, and the task's delimiters (latent: an empty target
  delimiter, the thought follows ``<PRIOR>`` directly);
* ``num_fewshot``: the task's default (``--num-fewshot`` when given); ``generation_kwargs``: greedy,
  lt's stop strings;
* ``process_results``: lt's own grader (``utils.py`` next to the YAMLs imports ``lt_cli``), with
  one metric per grader metric (``flexible``, ``strict``, ... as in ``lt eval``).

Files: ``DIR/lt_<task>_<variant>.yaml`` (variant latent and/or raw) and ``DIR/utils.py``.

Tasks that are several lm-eval tasks: a task with ``exemplar_sets`` (MMLU: the FLAN exemplars of
each subject) becomes one YAML per set, ``lt_<task>_<variant>_<set>``, with that set's exemplars
and preamble (as lm-eval's ``description``, which lm-eval puts right before the first exemplar);
its documents are the set's rows of ``--data`` (a ``process_docs`` filter on the set field) or,
from the Hub, the dataset config of the same name. A task read from several Hub configs without
``--data`` (MATH's subjects, MMLU's) becomes one YAML per config. Either way
``lt_<task>_<variant>.yaml`` is then an lm-eval group over them whose metrics are the means over
all documents (``weight_by_size``), which is ``lt eval``'s number.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from .. import formats
from ..errors import UsageError
from ..files import write_text

#: the record field whose value lm-eval logs as the target of a test document, per grader
GOLD_FIELD = {"gsm8k": "answer", "number": "answer", "math": "solution", "multiple_choice": "answer"}


def _jinja_literal(text: str) -> str:
    if any(c in text for c in "{}") or "{%" in text or "{#" in text:
        return "{% raw %}" + text + "{% endraw %}"
    return text


def _choices_jinja(field: str, item: str, separator: str) -> str:
    """lt's choice rendering (``GenerationTask.render_choices``) in Jinja: a list of texts with
    labels A, B, ...; a string (an exemplar's choices as written) as is."""
    labels = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    body = []
    for literal, name, _, _ in string.Formatter().parse(item):
        if literal:
            body.append(_jinja_literal(literal))
        if name == "label":
            body.append("{{ '" + labels + "'[loop.index0] }}")
        elif name == "text":
            body.append("{{ c }}")
    sep = "{% if not loop.first %}" + _jinja_literal(separator) + "{% endif %}" if separator else ""
    return ("{% if " + field + " is string %}{{ " + field + " }}{% else %}{% for c in " + field + " %}" + sep
            + "".join(body) + "{% endfor %}{% endif %}")


def jinja_template(template: str, *, strip: bool = False, choices: dict | None = None) -> str:
    """A ``str.format`` template (``{field}``, ``{{``/``}}`` for braces) as an equivalent Jinja one;
    ``strip``: fields are stripped (``GenerationTask.strip_inputs``); ``choices``: the task's choice
    rendering for its ``field``."""
    parts = []
    choices = choices or {}
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UsageError(f"bad prompt template: {exc}") from None
    for literal, field, spec, conversion in parsed:
        if literal:
            if any(c in literal for c in "{}") or "{%" in literal or "{#" in literal:
                parts.append("{% raw %}" + literal + "{% endraw %}")
            else:
                parts.append(literal)
        if field is not None:
            if spec or conversion or not field.isidentifier():
                raise UsageError(f"prompt field {{{field}}}: only plain {{name}} fields can be exported to lm-eval")
            if field == choices.get("field"):
                parts.append(_choices_jinja(field, choices.get("item", "({label}) {text}"), choices.get("separator", " ")))
            elif strip:
                parts.append("{{" + field + ".strip()}}")
            else:
                parts.append("{{" + field + "}}")
    return "".join(parts)


def task_name(task, variant: str, part: str | None = None) -> str:
    return f"lt_{task.name}_{variant}" + (f"_{part}" if part else "")


def _local_data(task, data: str | None, split: str | None) -> str | None:
    if data:
        from .data import resolve_data_path

        path = resolve_data_path(data, split)
        from ..paths import is_hub

        if not is_hub(path):
            return str(Path(path).resolve())
    return str((task.data or {}).get("file") or "") or None


def _hub_data_section(data: str | None, split: str | None) -> dict[str, Any] | None:
    """--data hf://datasets/...: lm-eval loads the same Hub dataset itself."""
    if not data:
        return None
    from ..paths import is_hub
    from .data import resolve_data_path

    path = resolve_data_path(data, split)
    if not is_hub(path):
        return None
    from ..hub import HubSpec

    hub = HubSpec.parse(str(path))
    section: dict[str, Any] = {"dataset_path": hub.repo, "test_split": hub.split}
    if hub.config:
        section["dataset_name"] = hub.config
    if hub.revision:
        section["dataset_kwargs"] = {"revision": hub.revision}
    return section


def _hub_section(task, split: str | None, config: str | None) -> dict[str, Any]:
    spec = task.data or {}
    out: dict[str, Any] = {"dataset_path": spec["hf_path"]}
    if config:
        out["dataset_name"] = config
    out["test_split"] = split or spec.get("split") or "test"
    return out


def _dataset_section(task, data: str | None, split: str | None) -> dict[str, Any]:
    hub = _hub_data_section(data, split)
    if hub is not None:
        return hub
    local = _local_data(task, data, split)
    if local:
        return {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": local}}, "test_split": "test"}
    spec = task.data or {}
    if spec.get("hf_path") and not spec.get("hf_configs"):
        return _hub_section(task, split, spec.get("hf_name"))
    raise UsageError(f"task {task.name} reads several dataset configs; pass --data FILE.jsonl to export it")


def parts_of(task, data: str | None, split: str | None) -> list[tuple[str | None, dict[str, Any]]]:
    """The lm-eval tasks one lt task becomes: [(part name or None, dataset section + filter)]."""
    local = _local_data(task, data, split)
    spec = task.data or {}
    if task.exemplars_by:
        configs = set(spec.get("hf_configs") or [spec.get("hf_name")])
        keys = list(task.exemplar_sets)
        if local:  # only the sets the file uses: lm-eval refuses a task without documents
            from .data import read_jsonl

            used = {record.get(task.exemplars_by) for record in read_jsonl(local, None, task.check_record)}
            keys = [key for key in keys if key in used]
        parts = []
        for key in keys:
            if local:
                section = {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": local}}, "test_split": "test",
                           "lt_filter": (task.exemplars_by, key)}
            elif spec.get("hf_path") and key in configs:
                section = _hub_section(task, split, key)
            else:
                raise UsageError(f"task {task.name}: exemplar set {key!r} is no dataset config of {spec.get('hf_path')}; pass --data FILE.jsonl")
            parts.append((key, section))
        return parts
    if not local and spec.get("hf_path") and spec.get("hf_configs"):
        return [(config, _hub_section(task, split, config)) for config in spec["hf_configs"]]
    return [(None, _dataset_section(task, data, split))]


def task_spec(task, variant: str, *, data: str | None = None, split: str | None = None, max_new_tokens: int = 1024,
              part: str | None = None, dataset: dict[str, Any] | None = None, num_fewshot: int | None = None) -> dict[str, Any]:
    """The YAML mapping of one variant (without ``process_results``, which needs a YAML tag); for a
    task with exemplar sets, of the set ``part``."""
    latent = variant == "latent"
    prompt = jinja_template(task.prompt, strip=task.strip_inputs, choices=task.choices)
    if latent:
        prompt += jinja_template(task.latent_target_delimiter.replace("{", "{{").replace("}", "}}")) + formats.latent_eval_suffix()
    if task.exemplars_by:
        if part is None:
            raise UsageError(f"task {task.name} has one exemplar set per {task.exemplars_by}: export it with export_lm_eval")
        chosen = task.exemplar_sets[part]
    else:
        from .taskfile import ExemplarSet

        chosen = ExemplarSet(task.preamble, task.exemplars, task.latent_exemplars)
    available = task.max_shots(latent)
    if num_fewshot is not None and num_fewshot > available:
        raise UsageError(f"--num-fewshot {num_fewshot}: task {task.name} has only {available} {variant} exemplars")
    pool = chosen.pool(latent)[: task.default_shots(latent) if num_fewshot is None else num_fewshot]
    samples = []
    for exemplar in pool:
        sample = {field: exemplar[field] for field in task.input_fields}
        if latent:
            sample["lt_target"] = exemplar["thought"] + formats.latent_answer_separator() + exemplar["answer_text"]
        else:
            sample["lt_target"] = exemplar["target"]
        samples.append(sample)
    stops = task.stop_strings(latent)
    if not latent:  # lt eval stops raw generations at any special token (they cannot be banned)
        stops = stops + [t for t in formats.SPECIAL_TOKENS if t not in stops]
    from .graders import get_grader

    grader = get_grader(task.grader)
    spec: dict[str, Any] = {"task": task_name(task, variant, part)}
    spec.update(dataset if dataset is not None else _dataset_section(task, data, split))
    if chosen.preamble:
        spec["description"] = chosen.preamble
    spec.update(
        {
            "output_type": "generate_until",
            "doc_to_text": prompt,
            "doc_to_target": GOLD_FIELD.get(task.grader, "answer"),
            "target_delimiter": "" if latent else task.target_delimiter,
            "fewshot_delimiter": task.fewshot_delimiter,
            "num_fewshot": len(samples),
            "fewshot_config": {
                "sampler": "first_n",
                "samples": samples,
                "doc_to_target": "{{lt_target}}",
                "target_delimiter": "" if latent else task.target_delimiter,
                "fewshot_delimiter": task.fewshot_delimiter,
            },
            "generation_kwargs": {"until": stops, "do_sample": False, "temperature": 0.0, "max_gen_toks": max_new_tokens},
            "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in grader.metrics(latent)],
            "metadata": {"version": task.version, "lt_task": task.name, "lt_variant": variant},
        }
    )
    return spec


def _python_name(text: str) -> str:
    import re

    return re.sub(r"\W", "_", text)


def _process_results_name(task, variant: str) -> str:
    return _python_name(f"process_{task.name}_{variant}")


def _filter_name(field: str, value: str) -> str:
    return _python_name(f"docs_{field}_{value}")


def _dump(data: dict[str, Any]) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value: str):  # multi-line prompts and targets as readable literal blocks
        style = "|" if "\n" in value and value.strip() else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=1_000_000, default_flow_style=False)


def _header(task, variant: str) -> str:
    return (
        f"# Generated by `lt eval --export-lm-eval` from task {task.name} v{task.version} ({task.source or 'built in'}).\n"
        "# Do not edit: regenerate it. Prompts equal `lt eval --variant "
        f"{variant}`; grading is lt's (utils.py imports lt_cli).\n"
    )


def render_yaml(task, variant: str, spec: dict[str, Any]) -> str:
    spec = dict(spec)
    doc_filter = spec.pop("lt_filter", None)
    tail = f"process_results: !function utils.{_process_results_name(task, variant)}\n"
    if doc_filter:
        tail += f"process_docs: !function utils.{_filter_name(*doc_filter)}\n"
    return _header(task, variant) + _dump(spec) + tail


def render_group_yaml(task, variant: str, names: list[str]) -> str:
    """An lm-eval group over the parts: means over all their documents, as ``lt eval`` reports."""
    from .graders import get_grader

    metrics = get_grader(task.grader).metrics(variant == "latent")
    group = {
        "group": task_name(task, variant),
        "task": names,
        "aggregate_metric_list": [{"metric": m, "aggregation": "mean", "weight_by_size": True} for m in metrics],
        "metadata": {"version": task.version, "lt_task": task.name, "lt_variant": variant},
    }
    return _header(task, variant) + _dump(group)


def _utils_source(lines: list[str]) -> str:
    head = [
        '"""lm-eval hooks generated by `lt eval --export-lm-eval`: grade with lt\'s own graders."""',
        "",
        "from lt_cli.evaluation.lmeval_hooks import make_docs_filter, make_process_results  # noqa: F401",
        "",
    ]
    return "\n".join(head + sorted(lines)) + "\n"


def export_lm_eval(task, out_dir: str, *, variants: tuple[str, ...] = ("latent", "raw"), data: str | None = None,
                   split: str | None = None, max_new_tokens: int = 1024, num_fewshot: int | None = None) -> dict[str, Any]:
    """Write the YAMLs and ``utils.py``; returns the lm-eval task names, the files and the include path."""
    if getattr(task, "kind", None) != "generation":
        raise UsageError(f"--export-lm-eval needs a generation task (gsm8k, math or a task file), not {task.name!r}")
    for variant in variants:
        if variant not in ("latent", "raw"):
            raise UsageError(f"--variant must be latent, raw or auto (both), got {variant!r}")
    parts = parts_of(task, data, split)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    files, names, hooks = [], [], set()
    for variant in variants:
        part_names = []
        for part, dataset in parts:
            spec = task_spec(task, variant, data=data, split=split, max_new_tokens=max_new_tokens, part=part, dataset=dataset,
                             num_fewshot=num_fewshot)
            path = folder / f"{spec['task']}.yaml"
            write_text(path, render_yaml(task, variant, spec))
            files.append(str(path))
            part_names.append(spec["task"])
            if dataset.get("lt_filter"):
                field, value = dataset["lt_filter"]
                hooks.add(f"{_filter_name(field, value)} = make_docs_filter({field!r}, {value!r})")
        if part_names == [task_name(task, variant)]:
            names.append(part_names[0])
        else:  # several lm-eval tasks: one group under the variant's name
            path = folder / f"{task_name(task, variant)}.yaml"
            write_text(path, render_group_yaml(task, variant, part_names))
            files.append(str(path))
            names.append(task_name(task, variant))
        hooks.add(f"{_process_results_name(task, variant)} = make_process_results({task.grader!r}, latent={variant == 'latent'!r})")
    # utils.py keeps the hooks of earlier exports into the same folder (gsm8k, then math, ...)
    utils = folder / "utils.py"
    kept = {line for line in (utils.read_text().splitlines() if utils.exists() else []) if " = make_" in line and not line.startswith("from ")}
    write_text(utils, _utils_source(sorted(kept | hooks)))
    files.append(str(utils))
    return {"lm_eval_tasks": names, "files": files, "include_path": str(folder)}
