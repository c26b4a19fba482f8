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
* ``num_fewshot``: all exemplars; ``generation_kwargs``: greedy, lt's stop strings;
* ``process_results``: lt's own grader (``utils.py`` next to the YAMLs imports ``lt_cli``), with
  one metric per grader metric (``flexible``, ``strict``, ... as in ``lt eval``).

Files: ``DIR/lt_<task>_<variant>.yaml`` (variant latent and/or raw) and ``DIR/utils.py``.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from .. import formats
from ..errors import UsageError

#: the record field whose value lm-eval logs as the target of a test document, per grader
GOLD_FIELD = {"gsm8k": "answer", "number": "answer", "math": "solution"}


def jinja_template(template: str) -> str:
    """A ``str.format`` template (``{field}``, ``{{``/``}}`` for braces) as an equivalent Jinja one."""
    parts = []
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
            parts.append("{{" + field + "}}")
    return "".join(parts)


def task_name(task, variant: str) -> str:
    return f"lt_{task.name}_{variant}"


def _dataset_section(task, data: str | None, split: str | None) -> dict[str, Any]:
    if data:
        from .data import resolve_data_path

        path = resolve_data_path(data, split)
        return {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(Path(path).resolve())}}, "test_split": "test"}
    spec = task.data or {}
    if spec.get("file"):
        return {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(spec["file"])}}, "test_split": "test"}
    if spec.get("hf_path") and not spec.get("hf_configs"):
        out = {"dataset_path": spec["hf_path"]}
        if spec.get("hf_name"):
            out["dataset_name"] = spec["hf_name"]
        out["test_split"] = split or spec.get("split") or "test"
        return out
    raise UsageError(f"task {task.name} reads several dataset configs; pass --data FILE.jsonl to export it")


def task_spec(task, variant: str, *, data: str | None = None, split: str | None = None, max_new_tokens: int = 1024) -> dict[str, Any]:
    """The YAML mapping of one variant (without ``process_results``, which needs a YAML tag)."""
    latent = variant == "latent"
    prompt = jinja_template(task.prompt)
    if latent:
        prompt += jinja_template(task.latent_target_delimiter.replace("{", "{{").replace("}", "}}")) + formats.latent_eval_suffix()
    pool = task.latent_exemplars if latent else task.exemplars
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
    spec: dict[str, Any] = {"task": task_name(task, variant)}
    spec.update(_dataset_section(task, data, split))
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


def _process_results_name(task, variant: str) -> str:
    import re

    return re.sub(r"\W", "_", f"process_{task.name}_{variant}")


def render_yaml(task, variant: str, spec: dict[str, Any]) -> str:
    import yaml

    header = (
        f"# Generated by `lt eval --export-lm-eval` from task {task.name} v{task.version} ({task.source or 'built in'}).\n"
        "# Do not edit: regenerate it. Prompts equal `lt eval --variant "
        f"{variant}`; grading is lt's (utils.py imports lt_cli).\n"
    )
    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value: str):  # multi-line prompts and targets as readable literal blocks
        style = "|" if "\n" in value and value.strip() else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    body = yaml.dump(spec, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=1_000_000, default_flow_style=False)
    return header + body + f"process_results: !function utils.{_process_results_name(task, variant)}\n"


def _utils_source(lines: list[str]) -> str:
    head = [
        '"""lm-eval hooks generated by `lt eval --export-lm-eval`: grade with lt\'s own graders."""',
        "",
        "from lt_cli.evaluation.lmeval_hooks import make_process_results",
        "",
    ]
    return "\n".join(head + sorted(lines)) + "\n"


def _write_text(path: Path, text: str) -> None:
    from ..io import write_bytes_atomic

    write_bytes_atomic(path, text.encode("utf-8"))


def export_lm_eval(task, out_dir: str, *, variants: tuple[str, ...] = ("latent", "raw"), data: str | None = None,
                   split: str | None = None, max_new_tokens: int = 1024) -> dict[str, Any]:
    """Write the YAMLs and ``utils.py``; returns the lm-eval task names, the files and the include path."""
    if getattr(task, "kind", None) != "generation":
        raise UsageError(f"--export-lm-eval needs a generation task (gsm8k, math or a task file), not {task.name!r}")
    for variant in variants:
        if variant not in ("latent", "raw"):
            raise UsageError(f"--variant must be latent, raw or auto (both), got {variant!r}")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    files, names, entries = [], [], []
    for variant in variants:
        spec = task_spec(task, variant, data=data, split=split, max_new_tokens=max_new_tokens)
        path = folder / f"{spec['task']}.yaml"
        _write_text(path, render_yaml(task, variant, spec))
        files.append(str(path))
        names.append(spec["task"])
        entries.append((_process_results_name(task, variant), task.grader, variant == "latent"))
    # utils.py keeps the hooks of earlier exports into the same folder (gsm8k, then math, ...)
    utils = folder / "utils.py"
    lines = {line for line in (utils.read_text().splitlines() if utils.exists() else []) if " = make_process_results(" in line}
    lines |= {f"{name} = make_process_results({grader!r}, latent={latent!r})" for name, grader, latent in entries}
    _write_text(utils, _utils_source(sorted(lines)))
    files.append(str(utils))
    return {"lm_eval_tasks": names, "files": files, "include_path": str(folder)}
