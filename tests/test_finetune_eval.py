"""`lt finetune-eval`: fine-tuning records, the completion-only layout, spread metrics, and an end
to end run on the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lt_cli import formats
from lt_cli.errors import RecordError, UsageError
from lt_cli.evaluation import get_task
from lt_cli.evaluation.finetune import FinetuneConfig, _schedule, run_finetune_eval
from lt_cli.evaluation.finetune_data import finetune_record, record_validator
from lt_cli.evaluation.graders import get_grader
from lt_cli.evaluation.metrics import accuracy_spread, mean_and_std

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TRAIN = FIXTURES / "finetune_gsm8k_train.jsonl"
TEST = FIXTURES / "finetune_gsm8k_test.jsonl"
SOL, EOL, PRIOR = formats.START_OF_LATENT, formats.END_OF_LATENT, formats.PRIOR_PREFIX


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------ records
def test_gsm8k_records_latent_and_raw():
    task, grader = get_task("gsm8k"), get_grader("gsm8k")
    record = _records(TRAIN)[0]  # "Mia has 4 boxes ...", "She has 4 * 6 = <<4*6=24>>24 pens.", "24"
    latent = finetune_record(task, grader, record, latent=True)
    assert latent == {
        "id": "ft-train-1",
        "prompt": f"Question: {record['question']}\nAnswer:{SOL}{PRIOR}",
        "completion": f"She has 4 * 6 = 24 pens.\n24{EOL} The answer is 24.",
    }
    raw = finetune_record(task, grader, record, latent=False)  # the reference's raw baselines: <SoL> only, no <EoL>
    assert raw["prompt"] == f"Question: {record['question']}\nAnswer:{SOL}"
    assert raw["completion"] == "She has 4 * 6 = 24 pens.\n24 The answer is 24."
    # the Hugging Face form: solution and answer in one field
    hf = {"question": "q?", "answer": "Half of 8 is 8 / 2 = <<8/2=4>>4.\n#### 4"}
    assert finetune_record(task, grader, hf, latent=True) == {"prompt": f"Question: q?\nAnswer:{SOL}{PRIOR}",
                                                               "completion": f"Half of 8 is 8 / 2 = 4.\n4{EOL} The answer is 4."}


def test_math_records():
    task, grader = get_task("math"), get_grader("math")
    record = {"problem": "What is $1+1$?", "solution": "Add: $1+1=\\boxed{2}$."}
    assert finetune_record(task, grader, record, latent=True) == {
        "prompt": f"Problem:\nWhat is $1+1$?\n\nSolution:{SOL}{PRIOR}",
        "completion": f"Add: $1+1=\\boxed{{2}}$.\n$2${EOL} The final answer is $\\boxed{{2}}$.",
    }
    with_answer = finetune_record(task, grader, {**record, "answer": "2.0"}, latent=False)
    assert with_answer["completion"] == "Add: $1+1=\\boxed{2}$.\n$2.0$ The final answer is $\\boxed{2.0}$."


def test_bad_training_records_name_the_line(tmp_path):
    task, grader = get_task("gsm8k"), get_grader("gsm8k")
    validate = record_validator(task, grader)
    for bad, reason in (({"question": "q", "answer": "4"}, "worked solution"),
                        ({"question": "q", "solution": "<<1+1=2>>", "answer": "2"}, "empty worked solution"),
                        ({"solution": "s", "answer": "2"}, "question")):
        with pytest.raises(ValueError, match=reason):
            validate(bad)
    train = tmp_path / "train.jsonl"
    train.write_text(TRAIN.read_text().splitlines()[0] + "\n" + json.dumps({"question": "q", "answer": "4"}) + "\n")
    config = FinetuneConfig(model="unused", output=str(tmp_path / "out"), train_data=str(train), data=str(TEST))
    with pytest.raises(RecordError, match=r"train.jsonl:2: .*worked solution"):
        run_finetune_eval(config)


def test_config_errors(tmp_path):
    base = dict(model="m", output=str(tmp_path / "o"), train_data=str(TRAIN), data=str(TEST))
    for bad, message in (({"train_data": None}, "--train-data"), ({"data": None}, "--data"), ({"seeds": ()}, "seed"),
                         ({"epochs": 0}, "--epochs"), ({"warmup_ratio": 1.0}, "--warmup-ratio"), ({"samples": 0}, "--samples"),
                         ({"temperature": 0.0}, "temperature"), ({"limit": 0}, "--limit")):
        with pytest.raises(UsageError, match=message):
            FinetuneConfig(**(base | bad)).validate()
    no_finetune = tmp_path / "task.json"
    no_finetune.write_text(json.dumps({"name": "t", "version": 1, "grader": "gsm8k", "prompt": "Q: {question}", "input_fields": ["question"]}))
    with pytest.raises(UsageError, match="no fine-tuning settings"):
        run_finetune_eval(FinetuneConfig(**base, task_file=str(no_finetune)))
    with pytest.raises(UsageError, match="no fine-tuning settings"):
        run_finetune_eval(FinetuneConfig(**(base | {"task": "nll"})))


# ------------------------------------------------------------------------------ training layout
def test_completion_layout_trains_on_the_completion_only():
    from lt_cli.tiny import build_byte_tokenizer
    from lt_cli.training.corpus import _to_document, _validator
    from lt_cli.training.data import IGNORE_INDEX, TokenStream

    tokenizer = build_byte_tokenizer()
    record = {"id": "a", "prompt": f"Q: 2+2?\nA:{SOL}{PRIOR}", "completion": f"2+2=4\n4{EOL} The answer is 4."}
    _validator("completion")(record)
    with pytest.raises(ValueError, match="'completion'"):
        _validator("completion")({"prompt": "p"})
    doc = _to_document(record)
    stream = TokenStream([[doc]], [1.0], tokenizer, layout="completion", seq_len=64, seed=1, shuffle=False, loss_on="observed")
    ids, labels = stream.next_window()
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompt, completion = encode(record["prompt"]), encode(record["completion"])
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    example = [bos] + prompt + completion + [eos]
    assert ids.tolist()[: len(example)] == example
    # labels[t] is the token after ids[t]: the prompt is masked, the completion and EOS are trained
    # on, and so is the next example's BOS (the stream is packed)
    expected = [IGNORE_INDEX] * len(prompt) + completion + [eos, bos]
    assert labels.tolist()[: len(expected)] == expected
    everything = TokenStream([[doc]], [1.0], tokenizer, layout="completion", seq_len=64, seed=1, shuffle=False, loss_on="all")
    assert (everything.next_window()[1] != IGNORE_INDEX).all()


# ------------------------------------------------------------------------------ metrics
def test_accuracy_spread_known_numbers():
    correct = [[True, True, False, True], [False, False, False, True], [True, False, True, True]]
    spread = accuracy_spread(correct)
    per_draw = [2 / 3, 1 / 3, 1 / 3, 1.0]
    per_problem = [0.75, 0.25, 0.75]
    assert spread["accuracy"] == pytest.approx(7 / 12)
    assert spread["accuracy_std_over_sample_draws"] == pytest.approx(float(np.std(per_draw, ddof=1)))
    assert spread["accuracy_stderr_over_problems"] == pytest.approx(float(np.std(per_problem, ddof=1)) / math.sqrt(3))
    single = accuracy_spread([[True]])
    assert single == {"accuracy": 1.0, "accuracy_std_over_sample_draws": None, "accuracy_stderr_over_problems": None}
    assert mean_and_std([0.5, 0.7]) == (pytest.approx(0.6), pytest.approx(math.sqrt(0.02)))
    with pytest.raises(ValueError):
        accuracy_spread([[True, False], [True]])


def test_schedule_matches_64_examples_per_step():
    config = FinetuneConfig(model="m", output="o", train_data="t", data="d")  # reference: 5 epochs, 64 examples/step
    schedule = _schedule(config, [200] * 7473)  # GSM8K train, ~200 tokens per example
    assert schedule["batch_windows"] == 6  # round(64 * 200 / 2048)
    assert schedule["steps"] == 5 * 7473 * 200 // (6 * 2048) == 608  # the reference: 5 * 7473 / 64 = 584 steps
    assert schedule["warmup_steps"] == 31  # ceil(5% of 608)
    assert _schedule(FinetuneConfig(model="m", output="o", micro_batch_size=4), [200] * 7473)["batch_windows"] == 4


# ------------------------------------------------------------------------------ end to end (tiny model)
def _cli(*args: str):
    from typer.testing import CliRunner

    from lt_cli import console
    from lt_cli.cli import app

    console.reset_record_stream()
    return CliRunner().invoke(app, list(args))


def _example_tokens(record: dict) -> int:
    from lt_cli.tiny import build_byte_tokenizer

    return len(build_byte_tokenizer()(record["prompt"] + record["completion"], add_special_tokens=False)["input_ids"]) + 2  # BOS, EOS


def test_tiny_model_memorises_one_problem_and_answers_it(tiny_model_dir, tmp_path):
    """Fine-tuned on one problem (one window = one example, so it sits at position 0 as at test
    time), the tiny model reproduces the completion from the fine-tuning prompt, <EoL> and EOS included."""
    task, grader = get_task("gsm8k"), get_grader("gsm8k")
    sft = finetune_record(task, grader, _records(TRAIN)[0], latent=True)
    test = tmp_path / "test.jsonl"
    test.write_text(TRAIN.read_text().splitlines()[0] + "\n" + TEST.read_text().splitlines()[0] + "\n")
    out = tmp_path / "ft"
    result = _cli("finetune-eval", "--model", str(tiny_model_dir), "--task", "gsm8k", "--train-data", str(TRAIN), "--train-limit", "1",
                  "--data", str(test), "--output", str(out), "--epochs", "80", "--seq-len", str(_example_tokens(sft)),
                  "--examples-per-step", "1", "--lr", "3e-3", "--samples", "3", "--max-new-tokens", "48", "--seeds", "42", "--keep-models")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics == json.loads((out / "metrics.json").read_text())
    assert metrics["variant"] == "latent" and metrics["variant_source"] == "tokenizer"  # the tiny model has the tokens
    assert metrics["finetune"]["batch_windows"] == 1 and metrics["finetune"]["steps"] == 80 and metrics["finetune"]["warmup_steps"] == 4
    assert [json.loads(line) for line in (out / "sft_train.jsonl").read_text().splitlines()] == [sft]
    row = metrics["seeds"][0]
    assert row["train"]["steps"] == 80 and row["train"]["final_loss"] < 0.05
    assert row["generation"]["temperature"] == 0.6 and row["generation"]["top_p"] == 0.9 and row["generation"]["stops"] == []
    lines = [json.loads(line) for line in (out / "seed-42" / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and [line["sample"] for line in lines] == [0, 1, 2] * 2
    assert all(line["prompt"] == f"Question: {line['question']}\nAnswer:{SOL}{PRIOR}" and line["n_shots"] == 0 for line in lines)
    assert [line["output"] for line in lines[:3]] == [sft["completion"]] * 3
    assert [line["finish_reason"] for line in lines[:3]] == ["eos"] * 3
    assert [line["correct"] for line in lines[:3]] == [True] * 3
    correct = [[line["correct"] for line in lines[:3]], [line["correct"] for line in lines[3:]]]
    assert row["accuracy"] == metrics["accuracy"] == pytest.approx(accuracy_spread(correct)["accuracy"])
    assert metrics["accuracy_std_over_seeds"] is None  # one seed
    kept = out / "seed-42" / "model"
    assert json.loads((kept / "train_config.json").read_text())["layout"] == "completion"
    from lt_cli.evaluation.provenance import trained_for

    assert trained_for(str(kept)).variant == "latent"  # lt eval --variant auto on the fine-tuned model


def test_seeds_spread_resume_and_refusal(tiny_model_dir, tmp_path):
    out = tmp_path / "ft"
    args = ["finetune-eval", "--model", str(tiny_model_dir), "--task", "gsm8k", "--train-data", str(TRAIN), "--train-limit", "2",
            "--data", str(TEST), "--limit", "2", "--output", str(out), "--epochs", "1", "--seq-len", "128", "--examples-per-step", "2",
            "--samples", "2", "--max-new-tokens", "4", "--seeds", "42,43", "--variant", "raw"]
    result = _cli(*args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["variant"] == "raw" and metrics["variant_source"] == "requested" and metrics["n_seeds"] == 2
    sft = [json.loads(line) for line in (out / "sft_train.jsonl").read_text().splitlines()]
    assert all(r["prompt"].endswith(f"Answer:{SOL}") and EOL not in r["completion"] for r in sft) and len(sft) == 2
    for row in metrics["seeds"]:
        assert not (out / f"seed-{row['seed']}" / "model").exists()  # deleted after its evaluation
        lines = [json.loads(line) for line in (out / f"seed-{row['seed']}" / "samples.jsonl").read_text().splitlines()]
        assert len(lines) == 4 and all(line["prompt"].endswith(f"Answer:{SOL}") for line in lines)
        correct = [[line["correct"] for line in lines[:2]], [line["correct"] for line in lines[2:]]]
        assert {k: row[k] for k in ("accuracy", "accuracy_std_over_sample_draws", "accuracy_stderr_over_problems")} == accuracy_spread(correct)
    accuracies = [row["accuracy"] for row in metrics["seeds"]]
    assert (metrics["accuracy"], metrics["accuracy_std_over_seeds"]) == mean_and_std(accuracies)
    again = _cli(*args)  # a rerun reuses the finished seeds
    assert again.exit_code == 0 and json.loads(again.stdout)["seeds"] == metrics["seeds"]
    assert again.stderr.count("already evaluated") == 2
    different = _cli(*[a if a != "raw" else "latent" for a in args])
    assert different.exit_code == 2 and "holds a different finetune-eval run (variant: 'raw' there, 'latent' now)" in different.stderr
