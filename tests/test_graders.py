"""Graders, task files and `lt eval --grade` (no model needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from lt_cli import formats
from lt_cli.cli import app
from lt_cli.errors import UsageError
from lt_cli.evaluation import get_task, parse_task_file
from lt_cli.evaluation.graders import (
    MathVerifyGrader,
    NumberGrader,
    extract_last_number,
    extract_stated_number,
    gsm8k_gold,
    last_boxed,
    normalize_number,
    split_latent_output,
)
from lt_cli.evaluation.metrics import aggregate_samples, k_values, majority_correct, pass_at_k

FIXTURES = Path(__file__).resolve().parent / "fixtures"
runner = CliRunner()

SOL, EOL, PRIOR = formats.START_OF_LATENT, formats.END_OF_LATENT, formats.PRIOR_PREFIX


def invoke(*args: str):
    from lt_cli import console

    console.reset_record_stream()  # each CliRunner invocation has its own stdout
    return runner.invoke(app, list(args))


def run_eval(*args: str) -> tuple[int, dict | None, str]:
    result = invoke("eval", *args)
    out = result.stdout
    try:
        metrics = json.loads(out) if out.strip() else None
    except json.JSONDecodeError:
        metrics = None
    return result.exit_code, metrics, result.stderr if hasattr(result, "stderr") else ""


# ------------------------------------------------------------------------------ extraction
@pytest.mark.parametrize(
    "raw, expected",
    [("$1,234.", "1234"), ("#### 72", "72"), ("  18 ", "18"), ("3.50", "3.50"), ("ABC", "abc"), (None, None), ("-7.", "-7")],
)
def test_normalize_number(raw, expected):
    assert normalize_number(raw) == expected


def test_last_and_stated_number():
    text = "She buys 3 packs of 12, so 3 * 12 = 36. The answer is 1,036. Later 5 more."
    assert extract_last_number(text) == "5"
    assert extract_stated_number(text) == "1,036"
    assert extract_last_number("no digits here") is None
    assert extract_stated_number("it is 4") is None
    assert extract_stated_number("So THE FINAL ANSWER IS $2.50.") == "2.50"
    assert extract_stated_number("work\n#### 1,000") == "1,000"
    assert extract_last_number("costs $-3 or -4.25") == "-4.25"


def test_gsm8k_gold_both_schemas():
    assert gsm8k_gold({"answer": "work <<2*3=6>>6\n#### 6,000"}) == "6000"
    assert gsm8k_gold({"answer": "18", "solution": "..."}) == "18"
    assert gsm8k_gold({"answer": 42}) == "42"
    with pytest.raises(ValueError):
        gsm8k_gold({"question": "no answer"})
    with pytest.raises(ValueError):
        gsm8k_gold({"answer": "text ####   "})


def test_split_latent_output():
    assert split_latent_output(f"a 1{EOL} The answer is 2.") == ("a 1", " The answer is 2.")
    assert split_latent_output("never closed 3") == ("never closed 3", "")
    # only the first <EoL> splits; later special tokens are stripped
    assert split_latent_output(f"x{EOL}y{SOL}{PRIOR}z{EOL}w") == ("x", "yzw")


def test_number_grader_latent_parts():
    grader = NumberGrader()
    result = grader.grade(f"3 * 4 = 10\n10{EOL} The answer is 12.", "12", latent=True)
    assert result.correct == {
        "flexible": True, "strict": True,
        "thought_flexible": False, "thought_strict": False,
        "answer_flexible": True, "answer_strict": True,
    }
    assert result.extracted["thought_flexible"] == "10"
    assert grader.metrics(False) == ["flexible", "strict"]


def test_last_boxed_nested():
    assert last_boxed(r"first \boxed{1} then \boxed{\frac{a}{b}}") == r"\frac{a}{b}"
    assert last_boxed(r"\fbox{ 7 }") == "7"
    assert last_boxed("none") is None
    assert last_boxed(r"\boxed{unclosed") is None


def test_math_grader_equivalence():
    grader = MathVerifyGrader()
    gold = grader.gold({"solution": r"So $f(5) = \boxed{\frac{11}{2}}$."})
    assert grader.grade(r"The final answer is $\frac{11}{2}$.", gold).correct["math_verify"]
    assert grader.grade(r"so it is $\boxed{5.5}$", gold).correct["math_verify"]
    assert not grader.grade(r"The final answer is $\frac{11}{3}$.", gold).correct["math_verify"]
    assert not grader.grade("", gold).correct["math_verify"]
    # falls back to the 'answer' field
    gold2 = grader.gold({"answer": r"2\sqrt{3}"})
    assert grader.grade(r"$\boxed{\sqrt{12}}$", gold2).correct["math_verify"]
    with pytest.raises(ValueError):
        grader.check({"problem": "no gold"})


# ------------------------------------------------------------------------------ metrics
def test_pass_at_k_and_majority():
    assert k_values(8) == [1, 2, 4, 8]
    assert k_values(6) == [1, 2, 4, 6]
    assert k_values(1) == [1]
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(4, 3, 2) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(2, 3, 1)
    assert majority_correct(["5", "6", "6", None], [True, False, False, False]) is False
    assert majority_correct(["5", "6", "5", "6"], [True, False, True, False]) is True  # tie: first seen
    assert majority_correct([None, None], [False, False]) is False
    agg = aggregate_samples([["1", "2"], ["3", "3"]], [[True, False], [False, False]])
    assert agg == {"maj@1": 0.5, "maj@2": 0.5, "pass@1": 0.25, "pass@2": 0.5}


# ------------------------------------------------------------------------------ task files
def _exemplar_arithmetic(text: str) -> list[tuple[str, str]]:
    return re.findall(r"((?:\d[\d.]*\s*[-+*/]\s*)+\d[\d.]*)\s*=\s*\$?(\d[\d.]*)", text)


def test_builtin_gsm8k_exemplars_are_correct():
    task = get_task("gsm8k")
    grader = NumberGrader()
    assert task.version >= 1 and len(task.exemplars) == 8 and len(task.latent_exemplars) == 8
    for ex in task.exemplars:
        gold = normalize_number(ex["answer"])
        assert grader.grade(ex["target"], gold).correct == {"flexible": True, "strict": True}
        latent_output = ex["thought"] + EOL + ex["answer_text"]
        assert grader.grade(latent_output, gold, latent=True).correct["answer_strict"]
        assert grader.grade(latent_output, gold, latent=True).correct["thought_flexible"]
        equations = _exemplar_arithmetic(ex["target"])
        assert equations, ex["target"]
        for lhs, rhs in equations:
            assert eval(lhs) == pytest.approx(float(rhs)), f"{lhs} = {rhs}"


def test_builtin_math_exemplars_are_correct():
    task = get_task("math")
    grader = MathVerifyGrader()
    assert len(task.exemplars) == 4 and len(task.latent_exemplars) == 4
    for ex in task.exemplars:
        gold = grader.gold({"answer": ex["answer"]})
        assert grader.grade(ex["target"], gold).correct["math_verify"], ex["target"]
        latent = grader.grade(ex["thought"] + EOL + ex["answer_text"], gold, latent=True).correct
        assert latent["math_verify"] and latent["answer_math_verify"] and latent["thought_math_verify"]


def test_exemplars_not_in_shared_data(shared_data):
    """Our exemplars are our own: none is a GSM8K or MATH problem."""
    questions = {orjson.loads(line)["question"] for name in ("train", "test") for line in open(shared_data / "gsm8k" / f"{name}.jsonl", "rb")}
    assert not any(ex["question"] in questions for ex in get_task("gsm8k").exemplars)
    problems = {orjson.loads(line)["problem"] for line in open(shared_data / "math" / "train.jsonl", "rb")}
    assert not any(ex["problem"] in problems for ex in get_task("math").exemplars)


def _minimal_task(**overrides) -> dict:
    obj = {
        "format": "lt-eval-task", "version": 2, "name": "demo", "grader": "gsm8k", "prompt": "Q: {question}\nA:",
        "exemplars": [{"question": "1+1?", "target": "1+1=2. The answer is 2.", "thought": "1+1=2", "answer_text": " The answer is 2."}],
    }
    obj.update(overrides)
    return obj


def test_task_file_prompts_exact():
    task = parse_task_file(_minimal_task(stops=["Q:"]))
    assert task.build_prompt({"question": "2+2?"}, latent=False) == "Q: 1+1?\nA: 1+1=2. The answer is 2.\n\nQ: 2+2?\nA:"
    assert task.build_prompt({"question": "2+2?"}, latent=True) == (
        f"Q: 1+1?\nA:{SOL}{PRIOR}1+1=2{EOL} The answer is 2.\n\nQ: 2+2?\nA:{SOL}{PRIOR}"
    )
    assert task.build_prompt({"question": "{x}"}, latent=False, n_shots=0) == "Q: {x}\nA:"
    assert task.stop_strings(latent=False) == ["Q:"]
    assert task.stop_strings(latent=True) == ["Q:", SOL]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"format": "other"}, "format"),
        ({"grader": "nope"}, "unknown grader"),
        ({"version": "1"}, "version"),
        ({"prompt": "Q: {question} {missing}", "input_fields": ["question"]}, "not listed"),
        ({"prompt": "Q: {question"}, "bad prompt template"),
        ({"exemplars": [{"question": "x", "target": f"y{EOL}"}]}, "special-token"),
        ({"exemplars": [{"question": "x", "thought": "t"}]}, "answer_text"),
        ({"stops": [""]}, "stops"),
    ],
)
def test_task_file_errors(overrides, message):
    with pytest.raises(UsageError, match=message):
        parse_task_file(_minimal_task(**overrides), source="demo.json")


def test_task_file_via_cli(tmp_path):
    path = tmp_path / "demo.json"
    path.write_text(json.dumps(_minimal_task(data={"file": "problems.jsonl"})))
    (tmp_path / "problems.jsonl").write_text(json.dumps({"question": "3+4?", "answer": "7"}) + "\n")
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"question": "3+4?", "answer": "7", "output": " 3+4=7. The answer is 7."}) + "\n")
    code, metrics, _ = run_eval("--task-file", str(path), "--grade", str(preds))
    assert code == 0 and metrics["task"] == "demo" and metrics["task_version"] == 2 and metrics["accuracy"] == 1.0
    assert get_task(str(path)).data["file"] == str((tmp_path / "problems.jsonl").resolve())


# ------------------------------------------------------------------------------ --grade
def test_grade_gsm8k_fixture(tmp_path):
    log = tmp_path / "samples.jsonl"
    code, metrics, _ = run_eval("--task", "gsm8k", "--grade", str(FIXTURES / "eval_gsm8k_predictions.jsonl"), "--log-samples", str(log))
    assert code == 0
    assert metrics["variant"] == "raw" and metrics["n_problems"] == 8
    assert metrics["accuracy"] == metrics["metrics"]["flexible"] == pytest.approx(5 / 8)
    assert metrics["metrics"]["strict"] == pytest.approx(5 / 8)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["correct"] for line in lines] == [True, True, False, True, False, False, True, True]
    assert lines[2]["extracted"] == "6" and lines[2]["grades"]["strict"] == {"extracted": "30", "correct": True}
    assert lines[0]["gold"] == "12" and lines[0]["question"].startswith("Ana")
    # the sample log is itself a --grade input and grades the same
    code, again, _ = run_eval("--task", "gsm8k", "--grade", str(log))
    assert code == 0 and again["metrics"] == metrics["metrics"]


def test_grade_latent_fixture():
    code, metrics, _ = run_eval("--task", "gsm8k", "--grade", str(FIXTURES / "eval_gsm8k_latent_predictions.jsonl"))
    assert code == 0 and metrics["variant"] == "latent"
    assert metrics["metrics"] == {
        "flexible": 0.75, "strict": 0.5, "thought_flexible": 0.75, "thought_strict": 0.0,
        "answer_flexible": 0.5, "answer_strict": 0.5,
    }
    code, raw, _ = run_eval("--task", "gsm8k", "--variant", "raw", "--grade", str(FIXTURES / "eval_gsm8k_latent_predictions.jsonl"))
    assert code == 0 and set(raw["metrics"]) == {"flexible", "strict"} and raw["accuracy"] == 0.75


def test_grade_math_fixture():
    code, metrics, _ = run_eval("--task", "math", "--grade", str(FIXTURES / "eval_math_predictions.jsonl"))
    assert code == 0 and metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["headline_metric"] == "math_verify"


def test_grade_multi_sample(tmp_path):
    preds = tmp_path / "preds.jsonl"
    rows = [
        {"question": "a", "answer": "4", "outputs": ["The answer is 4.", "The answer is 5.", "The answer is 5.", "The answer is 4."]},
        {"question": "b", "answer": "1", "outputs": ["The answer is 2.", "The answer is 3.", "The answer is 2.", "The answer is 1."]},
    ]
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, metrics, _ = run_eval("--task", "gsm8k", "--grade", str(preds))
    assert code == 0 and metrics["n_samples"] == 8
    assert metrics["accuracy"] == pytest.approx(3 / 8)
    assert metrics["sampling"]["maj@1"] == 0.5 and metrics["sampling"]["maj@4"] == 0.5
    assert metrics["sampling"]["maj@2"] == 0.5  # problem a: tie 4/5 -> 4 first
    assert metrics["sampling"]["pass@4"] == 1.0
    assert metrics["sampling"]["pass@1"] == pytest.approx((0.5 + 0.25) / 2)


def test_grade_bad_inputs(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "1", "output": "1"}) + "\n" + json.dumps({"question": "q", "answer": "2"}) + "\n")
    result = invoke("eval", "--task", "gsm8k", "--grade", str(bad))
    assert result.exit_code == 2 and f"{bad}:2:" in result.output and "output" in result.output
    nogold = tmp_path / "nogold.jsonl"
    nogold.write_text(json.dumps({"question": "q", "output": "1"}) + "\n")
    result = invoke("eval", "--task", "gsm8k", "--grade", str(nogold))
    assert result.exit_code == 2 and "answer" in result.output
    result = invoke("eval", "--task", "nope", "--grade", str(nogold))
    assert result.exit_code == 2 and "unknown task" in result.output
    result = invoke("eval", "--task", "gsm8k", "--grade", str(tmp_path / "missing.jsonl"))
    assert result.exit_code == 2 and "no such file" in result.output
    result = invoke("eval", "--task", "gsm8k", "--variant", "sideways", "--grade", str(FIXTURES / "eval_gsm8k_predictions.jsonl"))
    assert result.exit_code == 2 and "--variant" in result.output


# ------------------------------------------------------------------------------ real data
def _write_predictions(path: Path, records: list[dict], outputs: list[str]) -> None:
    with open(path, "wb") as f:
        for record, output in zip(records, outputs):
            f.write(orjson.dumps({**record, "output": output}) + b"\n")


def test_gsm8k_gold_solutions_grade_100(shared_data, tmp_path):
    """Gold solutions in GSM8K's own format ("... #### N") score 100%; shuffled, about 1%."""
    records = [orjson.loads(line) for line in open(shared_data / "gsm8k" / "test.jsonl", "rb")]
    outputs = [f"{r['solution']}\n#### {r['answer']}" for r in records]
    gold = tmp_path / "gold.jsonl"
    _write_predictions(gold, records, outputs)
    code, metrics, _ = run_eval("--task", "gsm8k", "--grade", str(gold))
    assert code == 0 and metrics["n_problems"] == len(records) == 1319
    assert metrics["accuracy"] == 1.0 and metrics["metrics"]["strict"] == 1.0
    shuffled = tmp_path / "shuffled.jsonl"
    _write_predictions(shuffled, records, outputs[1:] + outputs[:1])
    code, metrics, _ = run_eval("--task", "gsm8k", "--grade", str(shuffled))
    assert code == 0 and metrics["accuracy"] < 0.03


def test_math_gold_solutions_grade_99(shared_data, tmp_path):
    """A fixed 1,000-problem subset of MATH train (every 7th record; all 7,500 pass too, ~30 s)."""
    records = [orjson.loads(line) for line in open(shared_data / "math" / "train.jsonl", "rb")][::7][:1000]
    assert len(records) == 1000
    gold = tmp_path / "gold.jsonl"
    _write_predictions(gold, records, [r["solution"] for r in records])
    code, metrics, _ = run_eval("--task", "math", "--grade", str(gold))
    assert code == 0 and metrics["accuracy"] >= 0.99
    answers = tmp_path / "answers.jsonl"
    _write_predictions(answers, records, [f"The final answer is ${r['answer']}$." for r in records])
    code, metrics, _ = run_eval("--task", "math", "--grade", str(answers))
    assert code == 0 and metrics["accuracy"] >= 0.99
    shuffled = tmp_path / "shuffled.jsonl"
    solutions = [r["solution"] for r in records]
    _write_predictions(shuffled, records, solutions[1:] + solutions[:1])
    code, metrics, _ = run_eval("--task", "math", "--grade", str(shuffled))
    assert code == 0 and metrics["accuracy"] < 0.03
