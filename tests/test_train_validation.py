"""lt train --val-data: held-out NLL and ELBO_n in metrics.jsonl, equal to lt eval's, training unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lt_cli.errors import UsageError
from lt_cli.io import read_all
from lt_cli.chunking import ensure_chunks
from lt_cli.training import TrainConfig, train

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RAW_DOCS = FIXTURES / "math_docs.jsonl"
TINY = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "num_kv_heads": 2, "intermediate_size": 128}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("val")
    augmented = root / "augmented.jsonl"
    with open(augmented, "w") as f:
        for record in read_all(RAW_DOCS):
            doc = ensure_chunks(record)
            for i, chunk in enumerate(doc["chunks"]):
                chunk["latent"] = f"Step {i}: " + " ".join(chunk["text"].split()[:6])
            f.write(json.dumps(doc) + "\n")
    tiny = root / "tiny.json"
    tiny.write_text(json.dumps(TINY))
    return {"augmented": augmented, "tiny": tiny}


def _config(out: Path, files, **kw) -> TrainConfig:
    base = dict(output=str(out), data=[str(files["augmented"])], init_config=str(files["tiny"]), layout="random", seq_len=64,
                batch_size=4, steps=6, lr=3e-3, warmup_steps=2, log_every=1000)
    base.update(kw)
    return TrainConfig(**base)


VAL = dict(val_data=str(RAW_DOCS), val_every=3, val_limit=3, val_elbo_n=[1, 2], val_max_latent_tokens=8)


def test_validation_records_equal_lt_eval_and_leave_training_unchanged(tmp_path, files):
    from safetensors.torch import load_file

    from lt_cli.evaluation import EvalConfig, evaluate

    with_val = train(_config(tmp_path / "val", files, **VAL))
    lines = [json.loads(line) for line in Path(with_val.metrics_path).read_text().splitlines()]
    val = [line for line in lines if "val_nll_per_token" in line]
    assert [line["step"] for line in val] == [3, 6]
    assert [line["step"] for line in lines if "loss" in line] == [1, 2, 3, 4, 5, 6]
    for line in val:
        assert set(line) >= {"val_nll_per_token", "val_elbo_1_per_token", "val_elbo_2_per_token", "val_no_latent_log_p_per_token"}
        assert line["val_n_documents"] == 3 and 0 < line["val_nll_per_token"] < 10
        assert line["val_elbo_1_per_token"] < 0 and line["val_elbo_2_per_token"] < 0
    # the step-6 validation is lt eval's nll and elbo tasks on the saved final model
    final = val[-1]
    nll = evaluate(EvalConfig(task="nll", model=str(tmp_path / "val"), data=str(RAW_DOCS), limit=3, batch_size=16, dtype="float32", device="cpu"))
    assert final["val_nll_per_token"] == pytest.approx(nll["nll_per_token"], abs=1e-5)
    assert final["val_n_tokens"] == nll["n_tokens"]
    elbo = evaluate(EvalConfig(task="elbo", model=str(tmp_path / "val"), data=str(RAW_DOCS), limit=3, batch_size=16, seed=42,
                               elbo_n=(1, 2), max_latent_tokens=8, dtype="float32", device="cpu"))
    assert final["val_elbo_1_per_token"] == pytest.approx(elbo["elbo_1_per_token"], abs=1e-4)
    assert final["val_elbo_2_per_token"] == pytest.approx(elbo["elbo_2_per_token"], abs=1e-4)
    # validating changed nothing about training: same losses, bitwise the same weights
    without = train(_config(tmp_path / "plain", files))
    assert [line["loss"] for line in lines if "loss" in line] == [
        json.loads(line)["loss"] for line in Path(without.metrics_path).read_text().splitlines()
    ]
    a, b = load_file(tmp_path / "val" / "model.safetensors"), load_file(tmp_path / "plain" / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_val_reference_quirks_logs_what_lt_eval_reference_quirks_gives(tmp_path, files):
    """--val-reference-quirks: the paper-comparable ELBO under its own name, equal to
    `lt eval --task elbo --reference-quirks` on the saved model (one implementation, run twice)."""
    from typer.testing import CliRunner

    from lt_cli import console
    from lt_cli.cli import app

    result = train(_config(tmp_path / "ref", files, steps=3, **{**VAL, "val_every": None, "val_reference_quirks": True}))
    (final,) = [json.loads(line) for line in Path(result.metrics_path).read_text().splitlines() if "val_nll_per_token" in line]
    assert final["step"] == 3 and not any(key.startswith("val_elbo") for key in final)  # lt's ELBO is not computed too
    assert final["val_n_posterior_prompts_over_1024_tokens"] == 0
    console.reset_record_stream()
    cli = CliRunner().invoke(app, ["eval", "--model", str(tmp_path / "ref"), "--task", "elbo", "--reference-quirks", "--data", str(RAW_DOCS),
                                   "--limit", "3", "--seed", "42", "--elbo-n", "1,2", "--max-latent-tokens", "8", "--device", "cpu"])
    assert cli.exit_code == 0, cli.output
    metrics = json.loads(cli.stdout)
    assert metrics["reference_quirks"] is True
    for key in ("elbo_1_per_token", "elbo_2_per_token", "no_latent_log_p_per_token"):
        assert final[f"val_reference_{key}"] == pytest.approx(metrics[key], abs=1e-4)
    lt_own = evaluate_elbo(tmp_path / "ref")  # lt's definition gives another number on the same model
    assert abs(lt_own["elbo_2_per_token"] - final["val_reference_elbo_2_per_token"]) > 1e-3
    with pytest.raises(UsageError, match="--val-reference-quirks needs --val-data"):
        _config(tmp_path / "x", files, val_reference_quirks=True).validate()


def evaluate_elbo(model: Path) -> dict:
    from lt_cli.evaluation import EvalConfig, evaluate

    return evaluate(EvalConfig(task="elbo", model=str(model), data=str(RAW_DOCS), limit=3, seed=42, elbo_n=(1, 2), max_latent_tokens=8, device="cpu"))


def test_raw_layout_validates_nll_only_after_the_last_step(tmp_path, files):
    result = train(_config(tmp_path / "raw", files, layout="raw", steps=2, val_data=str(RAW_DOCS), val_limit=2))
    val = [json.loads(line) for line in Path(result.metrics_path).read_text().splitlines() if "val_nll_per_token" in line]
    assert [line["step"] for line in val] == [2]
    assert not any(key.startswith("val_elbo") for key in val[0])


def test_validation_settings_are_checked_before_training(tmp_path, files):
    for extra, message in [
        ({"val_every": 5}, "--val-every needs --val-data"),
        ({"val_data": str(tmp_path / "missing.jsonl")}, "no such file"),
        ({**VAL, "val_elbo_n": [0]}, "positive"),
        ({**VAL, "val_limit": 0}, "--val-limit must be >= 1"),
    ]:
        with pytest.raises(UsageError, match=message):
            _config(tmp_path / "x", files, **extra).validate()
