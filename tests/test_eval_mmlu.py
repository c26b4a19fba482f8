"""MMLU-STEM chain of thought (`lt eval --task mmlu_stem_cot_flan|mmlu_stem_cot_synthetic`): the
reference's prompt layout and exemplars, its strict/flexible answer extraction, per-subject
exemplar sets, data from a local file or the Hub, and the lm-eval export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lt_cli import formats
from lt_cli.errors import UsageError
from lt_cli.evaluation import EvalConfig, evaluate, get_task, parse_task_file
from lt_cli.evaluation.graders import extract_choice, extract_stated_letter, get_grader, multiple_choice_gold

FIXTURES = Path(__file__).resolve().parent / "fixtures"
QUESTIONS = FIXTURES / "mmlu_stem_questions.jsonl"  # our own MMLU-style questions, not MMLU's
DELIMITER = "\n\n\n\n##Problem\n"  # the reference's fewshot_delimiter
STEM_SUBJECTS = {
    "abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry", "college_computer_science", "college_mathematics",
    "college_physics", "computer_security", "conceptual_physics", "electrical_engineering", "elementary_mathematics", "high_school_biology",
    "high_school_chemistry", "high_school_computer_science", "high_school_mathematics", "high_school_physics", "high_school_statistics",
    "machine_learning",
}


def _records() -> list[dict]:
    return [json.loads(line) for line in QUESTIONS.read_text().splitlines()]


# ------------------------------------------------------------------------------------ prompts
def test_flan_prompt_uses_the_subjects_exemplars_and_the_reference_layout():
    task = get_task("mmlu_stem_cot_flan")
    physics, _, maths = _records()[:3]
    prompt = task.build_prompt(physics, latent=False)
    assert prompt.startswith("The following are multiple choice questions (with answers) about college physics.Question: A refracting telescope")
    assert prompt.count(DELIMITER) == 4 and prompt.count("Let's think step by step.") == 4  # 4-shot, FLAN answers
    assert prompt.endswith(DELIMITER + "Question: A stone is dropped from rest and falls freely for 3 s. Taking g = 10 m/s^2, how far does it fall?\n"
                           "(A) 15 m (B) 30 m (C) 45 m (D) 90 m\nAnswer:")
    assert "The answer is (A).\n\n\n\n##Problem\nQuestion: The muon decays" in prompt  # raw: " " + target + delimiter
    other = task.build_prompt(maths, latent=False)
    assert other.startswith("The following are multiple choice questions (with answers) about high school mathematics.Question: ")
    latent = task.build_prompt(physics, latent=True)
    assert latent.endswith("(D) 90 m\nAnswer:" + formats.latent_eval_suffix())
    assert f"or 4. The answer is (A).{formats.END_OF_LATENT} The answer is (A).{DELIMITER}" in latent
    assert task.max_shots(True) == task.default_shots(True) == 4
    assert set(task.exemplar_sets) == STEM_SUBJECTS and task.data["hf_configs"] == sorted(STEM_SUBJECTS)
    assert task.data["hf_path"] == "cais/mmlu"


def test_synthetic_prompt_lists_choices_on_lines_and_strips_the_question():
    task = get_task("mmlu_stem_cot_synthetic")
    record = _records()[4]  # its question ends with a space, which the reference strips
    prompt = task.build_prompt(record, latent=True)
    assert prompt.startswith("Question: Which expression is equivalent to 5 x 9?\n(A) (5 x 4) x (6 x 5)\n(B) (5 x 5) + (5 x 4)\n")
    assert prompt.endswith(DELIMITER + "Question: Which of these numbers is prime?\n(A) 21\n(B) 27\n(C) 31\n(D) 35\nAnswer:"
                           + formats.latent_eval_suffix())
    assert prompt.count(DELIMITER) == 4 and task.max_shots(True) == 5 and task.default_shots(True) == 4  # 4 of the 5, in file order
    assert task.build_prompt(record, latent=True, n_shots=5).count(DELIMITER) == 5
    assert task.build_prompt(record, latent=False) == task.build_prompt(record, latent=False, n_shots=4)


def test_task_file_checks_for_choices_and_exemplar_sets():
    base = {"name": "mc", "version": 1, "grader": "multiple_choice", "prompt": "Q: {question}\n{choices}\nA:", "input_fields": ["question", "choices"],
            "choices": {"field": "choices", "item": "{label}) {text}", "separator": "; "}}
    task = parse_task_file({**base, "exemplars": [{"question": "1+1?", "choices": ["1", "2"], "target": "It is 2. The answer is (B)."}]})
    assert task.build_prompt({"question": "2+2?", "choices": ["4", "5"], "answer": 0}, latent=False) == (
        "Q: 1+1?\nA) 1; B) 2\nA: It is 2. The answer is (B).\n\nQ: 2+2?\nA) 4; B) 5\nA:")
    with pytest.raises(ValueError, match="list of strings or string field 'choices'"):
        task.check_record({"question": "q", "choices": 3, "answer": 0})
    sets = {"by": "subject", "sets": {"a": {"preamble": "About a.", "exemplars": []}}}
    with_sets = parse_task_file({**base, "exemplar_sets": sets})
    with pytest.raises(ValueError, match="'subject' = 'b' names no exemplar set"):
        with_sets.check_record({"question": "q", "choices": ["x", "y"], "subject": "b"})
    assert with_sets.build_prompt({"question": "q", "choices": ["x", "y"], "subject": "a"}, latent=False) == "About a.Q: q\nA) x; B) y\nA:"
    for bad, message in [
        ({"choices": {"field": "options"}}, "'field' is one of 'input_fields'"),
        ({"choices": {"field": "choices", "item": "{letter}"}}, "{label} and {text}"),
        ({"exemplar_sets": {"by": "subject"}}, "exemplar_sets"),
        ({"exemplar_sets": sets, "exemplars": [{"question": "q", "choices": "x", "target": "t"}]}, "not both"),
        ({"num_fewshot": -1}, "num_fewshot"),
        ({"preamble": formats.START_OF_LATENT}, "preamble"),
    ]:
        with pytest.raises(UsageError, match=message):
            parse_task_file({**base, **bad})


# ------------------------------------------------------------------------------------ grading
def test_strict_and_flexible_extraction_follow_the_reference_filters():
    choices = ["Error", "abc", "cba", "c"]
    # strict: the first "answer is (X)", case as written
    assert extract_stated_letter("so the answer is (B). Wait, the answer is (C).") == "B"
    assert extract_stated_letter("The Answer Is (B)") is None and extract_stated_letter("answer is B") is None
    # flexible: the last "(X)", else the last choice text (case and punctuation ignored), else "...: X"
    assert extract_choice("(A) is wrong and (C) is right", choices) == "C"
    assert extract_choice("It prints ERROR!", choices) == "A"
    assert extract_choice("the result: D", ["x1", "y1", "z1", "w1"]) == "D"
    assert extract_choice("nothing to see", ["x1", "y1", "z1", "w1"]) is None
    assert extract_choice("(b) in lower case is no letter", ["x1", "y1"]) is None
    grader = get_grader("multiple_choice")
    gold = grader.gold({"choices": ["3", "6", "9", "18"], "answer": 2})
    assert gold == ("C", ["3", "6", "9", "18"]) and grader.gold_display(gold) == "(C)"
    result = grader.grade(f"KE = 9 J, so (C).{formats.END_OF_LATENT} The answer is (C).", gold, latent=True)
    assert result.correct == {"flexible": True, "strict": True, "thought_flexible": True, "thought_strict": False,
                              "answer_flexible": True, "answer_strict": True}
    assert result.extracted["flexible"] == "(C)"
    assert grader.grade("The answer is (B).", gold).correct == {"flexible": False, "strict": False}


@pytest.mark.parametrize("answer, letter", [(0, "A"), (3, "D"), ("B", "B"), ("(C)", "C"), (" d ", None)])
def test_gold_answer_is_an_index_or_a_letter(answer, letter):
    record = {"choices": ["a", "b", "c", "d"], "answer": answer}
    if letter is None:
        with pytest.raises(ValueError, match="index or letter"):
            multiple_choice_gold(record)
    else:
        assert multiple_choice_gold(record)[0] == letter


@pytest.mark.parametrize("record, message", [
    ({"choices": ["a", "b"], "answer": 2}, "not one of the 2 choices"),
    ({"choices": "a b", "answer": 0}, "list of strings"),
    ({"choices": ["a", "b"], "answer": True}, "answer"),
    ({"choices": ["a", "b"]}, "answer"),
])
def test_bad_gold_records(record, message):
    with pytest.raises(ValueError, match=message):
        multiple_choice_gold(record)


def test_grade_saved_outputs(tmp_path):
    rows = _records()
    outputs = ["Distance = 45 m. The answer is (C).",  # both right
               "So (A)... no, 18 J is 2 x 9. The answer is (C).",  # both right (last "(X)" is C)
               "720 degrees",  # flexible right through the choice text, strict empty
               "The answer is (B). Hmm (A)",  # strict right, flexible wrong (last "(X)")
               "Answer: C",  # flexible right through the colon rule
               "I do not know"]  # neither
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps({**row, "output": out}) + "\n" for row, out in zip(rows, outputs)))
    metrics = evaluate(EvalConfig(task="mmlu_stem_cot_flan", grade=str(predictions)))
    assert metrics["metrics"]["flexible"] == pytest.approx(4 / 6) and metrics["metrics"]["strict"] == pytest.approx(3 / 6)
    assert metrics["accuracy"] == metrics["metrics"]["flexible"] and metrics["variant"] == "raw"


# ------------------------------------------------------------------------------------ runs
@pytest.mark.parametrize("name, variant", [("mmlu_stem_cot_flan", "latent"), ("mmlu_stem_cot_synthetic", "raw")])
def test_runs_on_a_tiny_model_from_a_local_file(tiny_model_dir, tmp_path, name, variant):
    from typer.testing import CliRunner

    from lt_cli import console
    from lt_cli.cli import app

    log = tmp_path / "samples.jsonl"
    console.reset_record_stream()
    result = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir), "--task", name, "--data", str(QUESTIONS), "--variant", variant,
                                      "--max-new-tokens", "6", "--log-samples", str(log)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["task"] == name and metrics["n_problems"] == 6 and metrics["variant"] == variant
    assert set(metrics["metrics"]) >= {"flexible", "strict"} and 0 <= metrics["accuracy"] <= 1
    assert metrics["prompts"]["n_shots"] == 4 and metrics["prompts"]["n_prompts_skipped"] == 0
    task = get_task(name)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    # the byte-level tiny model (2,048 tokens = bytes) drops exemplars from the longest prompts: counted
    assert [line["prompt"] for line in lines] == [task.build_prompt(r, variant == "latent", line["n_shots"]) for r, line in zip(_records(), lines)]
    assert metrics["prompts"]["n_exemplars_dropped"] == sum(4 - line["n_shots"] for line in lines)
    assert [line["gold"] for line in lines] == ["(C)", "(C)", "(B)", "(B)", "(C)", "(D)"]


def test_a_record_without_its_subject_names_file_and_line(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from lt_cli import console
    from lt_cli.cli import app

    rows = _records()[:2]
    del rows[1]["subject"]
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    console.reset_record_stream()
    result = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir), "--task", "mmlu_stem_cot_flan", "--data", str(data)])
    assert result.exit_code == 2
    assert f"{data}:2:" in result.output and "'subject' = None names no exemplar set" in result.output
    # the synthetic family has one set for every subject: no subject needed
    result = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir), "--task", "mmlu_stem_cot_synthetic", "--data", str(data),
                                      "--max-new-tokens", "2"])
    assert result.exit_code == 0, result.output


def test_hub_data_is_loaded_by_subject(monkeypatch):
    """Without --data the 19 STEM subjects of cais/mmlu are read with datasets.load_dataset."""
    import datasets

    from lt_cli.evaluation.data import load_task_records

    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return [{"question": f"q {name}", "subject": name, "choices": ["a", "b", "c", "d"], "answer": 1}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = get_task("mmlu_stem_cot_flan")
    records, source = load_task_records(task.data, EvalConfig(task=task.name), task.check_record)
    assert [c[0] for c in calls] == ["cais/mmlu"] * 19 and {c[1] for c in calls} == STEM_SUBJECTS and {c[2] for c in calls} == {"test"}
    assert len(records) == 19 and source == "hf:cais/mmlu:test"


# ------------------------------------------------------------------------------------ lm-eval export
def _load_yaml(path: Path) -> dict:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: {"!function": loader.construct_scalar(node)})
    return yaml.load(path.read_text(), Loader=Loader)


def _render(spec: dict, doc: dict) -> str:
    """lm-eval 0.4's plain-text context: description, then per exemplar doc_to_text +
    target_delimiter + doc_to_target + fewshot_delimiter, then doc_to_text(doc)."""
    from jinja2 import BaseLoader, Environment, StrictUndefined

    env = Environment(loader=BaseLoader, undefined=StrictUndefined, keep_trailing_newline=True)
    few = spec["fewshot_config"]
    text, target = env.from_string(spec["doc_to_text"]), env.from_string(few["doc_to_target"])
    parts = [text.render(**ex) + few["target_delimiter"] + target.render(**ex) + few["fewshot_delimiter"] for ex in few["samples"][: spec["num_fewshot"]]]
    return spec.get("description", "") + "".join(parts) + text.render(**doc)


def test_export_one_task_per_subject_and_a_group(tmp_path):
    out = tmp_path / "lt_tasks"
    result = evaluate(EvalConfig(task="mmlu_stem_cot_flan", data=str(QUESTIONS), export_lm_eval=str(out), max_new_tokens=64))
    assert result["lm_eval_tasks"] == ["lt_mmlu_stem_cot_flan_latent", "lt_mmlu_stem_cot_flan_raw"]
    task = get_task("mmlu_stem_cot_flan")
    for variant in ("latent", "raw"):
        group = _load_yaml(out / f"lt_mmlu_stem_cot_flan_{variant}.yaml")
        subjects = sorted({r["subject"] for r in _records()})  # the file's subjects only: lm-eval refuses empty tasks
        assert group["group"] == f"lt_mmlu_stem_cot_flan_{variant}" and sorted(group["task"]) == [f"lt_mmlu_stem_cot_flan_{variant}_{s}" for s in subjects]
        assert {m["metric"] for m in group["aggregate_metric_list"]} >= {"flexible", "strict"}
        assert all(m["weight_by_size"] for m in group["aggregate_metric_list"])
        for record in _records():
            spec = _load_yaml(out / f"lt_mmlu_stem_cot_flan_{variant}_{record['subject']}.yaml")
            assert spec["process_docs"] == {"!function": f"utils.docs_subject_{record['subject']}"}
            assert spec["num_fewshot"] == 4 and spec["fewshot_config"]["sampler"] == "first_n"
            assert _render(spec, record) == task.build_prompt(record, variant == "latent")
    utils = (out / "utils.py").read_text()
    assert "docs_subject_college_physics = make_docs_filter('subject', 'college_physics')" in utils
    from lt_cli.evaluation.lmeval_hooks import make_docs_filter

    class Rows(list):
        def filter(self, keep):
            return Rows(row for row in self if keep(row))

    assert [r["id"] for r in make_docs_filter("subject", "college_physics")(Rows(_records()))] == ["phys-1", "phys-2"]
    # from the Hub: each subject's YAML reads its own dataset config, no filter
    hub = evaluate(EvalConfig(task="mmlu_stem_cot_flan", export_lm_eval=str(tmp_path / "hub"), variant="raw"))
    spec = _load_yaml(tmp_path / "hub" / "lt_mmlu_stem_cot_flan_raw_anatomy.yaml")
    assert (spec["dataset_path"], spec["dataset_name"], spec["test_split"]) == ("cais/mmlu", "anatomy", "test") and "process_docs" not in spec
    assert hub["lm_eval_tasks"] == ["lt_mmlu_stem_cot_flan_raw"]
    assert len(_load_yaml(tmp_path / "hub" / "lt_mmlu_stem_cot_flan_raw.yaml")["task"]) == 19


def test_export_synthetic_family(tmp_path):
    evaluate(EvalConfig(task="mmlu_stem_cot_synthetic", data=str(QUESTIONS), export_lm_eval=str(tmp_path), max_new_tokens=64))
    task = get_task("mmlu_stem_cot_synthetic")
    for variant in ("latent", "raw"):
        spec = _load_yaml(tmp_path / f"lt_mmlu_stem_cot_synthetic_{variant}.yaml")
        assert spec["num_fewshot"] == 4 and len(spec["fewshot_config"]["samples"]) == 4
        for record in _records():
            assert _render(spec, record) == task.build_prompt(record, variant == "latent")


def test_lm_eval_builds_the_same_mmlu_prompts(tmp_path, monkeypatch):
    """lm-eval itself (when installed) loads the exported group and subject YAMLs and builds lt's
    prompts character for character (the subject's description right before the first exemplar)."""
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from lm_eval.tasks import TaskManager

    out = tmp_path / "lt_tasks"
    for name in ("mmlu_stem_cot_flan", "mmlu_stem_cot_synthetic"):
        evaluate(EvalConfig(task=name, data=str(QUESTIONS), export_lm_eval=str(out), max_new_tokens=8))
    manager = TaskManager(include_path=str(out), include_defaults=False)
    checked = 0
    for name in ("mmlu_stem_cot_flan", "mmlu_stem_cot_synthetic"):
        task = get_task(name)
        for variant in ("latent", "raw"):
            loaded = manager.load([f"lt_{name}_{variant}"])["tasks"] if hasattr(manager, "load") else None
            if loaded is None:
                from lm_eval.tasks import get_task_dict

                loaded = get_task_dict([f"lt_{name}_{variant}"], manager)
            from lm_eval.api.task import Task

            def leaves(obj):
                if isinstance(obj, Task):
                    yield obj
                elif isinstance(obj, dict):
                    for value in obj.values():
                        yield from leaves(value)

            for lm_task in leaves(loaded):
                lm_task.build_all_requests(limit=None, rank=0, world_size=1)
                for instance in lm_task.instances:
                    doc = instance.doc
                    assert instance.args[0] == task.build_prompt(doc, variant == "latent")
                    checked += 1
    assert checked == 4 * len(_records())
