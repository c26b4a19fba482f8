"""Trackers: --report-to parsing, W&B's precedence (flag, environment, default), a missing tracker
refused before any work, a stage's statistics in tracking.jsonl, and a tiny lt bootstrap whose
TensorBoard events (read back with tensorboard's own reader) and W&B offline run hold the E-step,
selection, eval and training numbers of every iteration."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import orjson
import pytest

from conftest import FIXTURES
from lt_cli.errors import UsageError
from lt_cli.tracking import TrackingConfig, check_installed, wandb_settings


# ------------------------------------------------------------------------------------ settings
def test_report_to_accepts_repeats_commas_and_none():
    assert TrackingConfig(report_to=["tensorboard,wandb", "jsonl", "wandb"]).report_to == ["tensorboard", "wandb", "jsonl"]
    assert TrackingConfig(report_to=["none"]).report_to == [] and not TrackingConfig(report_to=["none"]).enabled
    with pytest.raises(UsageError, match="--report-to must be none or one of tensorboard, wandb, jsonl"):
        TrackingConfig(report_to=["mlflow"])


def test_wandb_settings_flag_beats_environment_beats_default(monkeypatch):
    for name in ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_NAME"):
        monkeypatch.delenv(name, raising=False)
    assert wandb_settings(TrackingConfig(), "demo") == {"project": "lt", "entity": None, "name": "demo"}
    monkeypatch.setenv("WANDB_PROJECT", "env-project")
    monkeypatch.setenv("WANDB_ENTITY", "env-team")
    monkeypatch.setenv("WANDB_NAME", "env-name")
    assert wandb_settings(TrackingConfig(), "demo") == {"project": "env-project", "entity": "env-team", "name": "env-name"}
    flags = TrackingConfig(wandb_project="flag-project", wandb_entity="flag-team", run_name="flag-name")
    assert wandb_settings(flags, "demo") == {"project": "flag-project", "entity": "flag-team", "name": "flag-name"}


def test_a_missing_tracker_is_refused_before_any_work(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("tensorboard", "wandb") else real(name, *a))
    with pytest.raises(UsageError, match=r"pip install 'lt-cli\[wandb\]'"):
        check_installed(TrackingConfig(report_to=["wandb"]))
    from lt_cli.bootstrap import run_bootstrap

    from test_bootstrap import tiny_config

    with pytest.raises(UsageError, match="tensorboard package is not installed"):
        run_bootstrap(tiny_config(tmp_path / "run", report_to=["tensorboard"]))
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------ one stage
def test_select_and_eval_log_their_statistics_to_jsonl(tmp_path):
    from lt_cli.estep import SelectConfig, SelectRun, read_stats, run_select
    from lt_cli.evaluation import EvalConfig, run_eval
    from lt_cli.stream import StreamArgs

    from test_select import doc_with

    source = tmp_path / "cand.jsonl"
    source.write_bytes(b"".join(orjson.dumps(doc_with([[0.0, -1.0], [-2.0, 0.5]], f"d{i}")) + b"\n" for i in range(3)))
    out = tmp_path / "aug.jsonl"
    run_select(SelectRun(stream=StreamArgs(input=str(source), output=str(out)), select=SelectConfig(), tracking=TrackingConfig(report_to=["jsonl"])))
    lines = [json.loads(line) for line in (tmp_path / "aug.jsonl.tracking" / "tracking.jsonl").read_text().splitlines()]
    stats = read_stats(str(out))
    assert len(lines) == 1 and lines[0]["axis"] == "select/step" and lines[0]["step"] == 0
    logged = lines[0]["metrics"]
    assert logged["select/ess_per_chunk"] == stats["ess_per_chunk"] and logged["select/elbo_n_per_document/2"] == stats["elbo_n_per_document"]["2"]
    assert logged["select/compute/generated_tokens"] == stats["compute"]["generated_tokens"] == 3 * 2 * 2 * 3

    metrics_path = tmp_path / "gsm8k.json"
    metrics = run_eval(EvalConfig(task="gsm8k", grade=str(FIXTURES / "eval_gsm8k_predictions.jsonl"), output=str(metrics_path),
                                  tracking=TrackingConfig(report_to=["jsonl"], tracking_dir=str(tmp_path / "evaltrack"))))
    line = json.loads((tmp_path / "evaltrack" / "tracking.jsonl").read_text())
    assert line["metrics"]["eval/gsm8k/accuracy"] == metrics["accuracy"]
    assert line["metrics"]["eval/gsm8k/accuracy_stderr"] == pytest.approx(metrics["accuracy_stderr"]) and metrics["accuracy_stderr"] > 0


def test_tracking_jsonl_is_appended_across_runs(tmp_path):
    """Opened without following links (lt_cli/nofollow.py), the log still grows run after run."""
    from lt_cli.tracking import open_tracker

    for step in (0, 1):
        with open_tracker(TrackingConfig(report_to=["jsonl"]), folder=tmp_path / "out.tracking", name="x") as tracker:
            tracker.log({"a": step}, axis="s/step", step=step)
    lines = [json.loads(line) for line in (tmp_path / "out.tracking" / "tracking.jsonl").read_text().splitlines()]
    assert lines == [{"axis": "s/step", "step": 0, "metrics": {"a": 0.0}}, {"axis": "s/step", "step": 1, "metrics": {"a": 1.0}}]


# ------------------------------------------------------------------------------------ the loop
def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in ``folder``, read with tensorboard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


@pytest.mark.slow
def test_bootstrap_logs_every_stage_per_iteration_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from lt_cli.bootstrap import run_bootstrap

    from test_bootstrap import tiny_config

    run_dir = tmp_path / "run"
    report = run_bootstrap(tiny_config(run_dir, report_to=["tensorboard", "jsonl"]))
    scalars = _scalars(run_dir / "tracking" / "tensorboard")
    rows = {r["iter"]: r for r in report["iterations"]}
    # eval accuracy and its standard error at iterations 0 (warm start), 1 and 2
    assert scalars["k2/eval/demo/accuracy"] == [(t, pytest.approx(rows[t]["accuracy"])) for t in (0, 1, 2)]
    assert scalars["k2/eval/demo/accuracy_stderr"] == [(t, pytest.approx(rows[t]["accuracy_stderr"])) for t in (0, 1, 2)]
    # E-step and selection statistics per iteration
    assert scalars["k2/estep/ess_per_chunk"] == [(t, pytest.approx(rows[t]["ess_per_chunk"])) for t in (1, 2)]
    assert scalars["k2/estep/log_w_per_candidate"] == [(t, pytest.approx(rows[t]["log_w_per_candidate"])) for t in (1, 2)]
    assert scalars["k2/estep/elbo_n_per_document/2"] == [(t, pytest.approx(rows[t]["elbo_per_document"])) for t in (1, 2)]
    assert scalars["k2/estep/compute/flops"] == [(t, pytest.approx(rows[t]["estep_flops"])) for t in (1, 2)]
    assert scalars["k2/estep/true_thought_rate"] == [(t, pytest.approx(rows[t]["true_thought_rate"])) for t in (1, 2)]
    # accuracy against cumulative E-step compute: the steps are the running totals
    assert scalars["k2/eval_vs_estep_tokens/demo/accuracy"][1:] == [
        (rows[t]["estep_generated_tokens_total"], pytest.approx(rows[t]["accuracy"])) for t in (1, 2)
    ]
    assert [step for step, _ in scalars["k2/eval_vs_estep_mflops/demo/accuracy"][1:]] == [round(rows[t]["estep_flops_total"] / 1e6) for t in (1, 2)]
    # training curves of every training stage, and the baselines
    assert [step for step, _ in scalars["train/k2/iter2/loss"]] == [1, 2, 3] and [s for s, _ in scalars["train/warm/loss"]] == [1, 2, 3]
    assert scalars["k2/train/final_loss"][-1][0] == 2
    assert scalars["baseline-raw/eval/demo/accuracy"] == [(0, pytest.approx(report["baselines"]["raw"]["accuracy"]))]

    # a rerun logs nothing twice; turning a tracker on later logs the finished stages to it only
    jsonl = run_dir / "tracking" / "tracking.jsonl"
    before = jsonl.read_bytes()
    run_bootstrap(tiny_config(run_dir, report_to=["tensorboard", "jsonl"]))
    assert jsonl.read_bytes() == before
    assert _scalars(run_dir / "tracking" / "tensorboard")["k2/eval/demo/accuracy"] == scalars["k2/eval/demo/accuracy"]


def _wandb_records(run_file: Path):
    """The records of a W&B offline run file (a LevelDB-style log of protobuf records: 32 KiB blocks,
    a 7-byte header per fragment), parsed with wandb's own protobuf definitions."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    position, block, payload = 7, 32768, b""  # the file opens with a 7-byte ":W&B" header
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        payload += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            payload = b""
            yield record
        elif kind == 0:
            break


@pytest.mark.slow
def test_bootstrap_logs_one_wandb_run_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from lt_cli.bootstrap import run_bootstrap

    from test_bootstrap import tiny_config

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    monkeypatch.delenv("WANDB_NAME", raising=False)
    run_dir = tmp_path / "run"
    report = run_bootstrap(tiny_config(run_dir, iters=1, report_to=["wandb"], raw_baseline=False, teacher_baseline=False))
    runs = list((run_dir / "tracking" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, "one W&B run for the whole loop"
    records = list(_wandb_records(runs[0]))
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.project == "from-env" and run.display_name == report["name"]  # the environment is not overridden
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    evals = [row for row in history if "k2/eval/demo/accuracy" in row]
    assert [(row["k2/iteration"], row["k2/eval/demo/accuracy"]) for row in evals] == [(t, pytest.approx(r["accuracy"])) for t, r in
                                                                                      enumerate(report["iterations"])]
    assert evals[-1]["k2/estep/flops_total"] == pytest.approx(report["iterations"][-1]["estep_flops_total"])
    assert any("k2/estep/ess_per_chunk" in row for row in history) and any("train/k2/iter1/loss" in row for row in history)
    assert (run_dir / "tracking" / "wandb-run-id").read_text().strip() == run.run_id


def test_train_reports_its_curves_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from lt_cli.training import TrainConfig, train

    from test_train import TINY

    data = tmp_path / "raw.jsonl"
    data.write_text("".join(json.dumps({"text": f"document {i}: " + "abc " * 40}) + "\n" for i in range(8)))
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps(TINY))
    out = tmp_path / "model"
    config = TrainConfig(output=str(out), data=[str(data)], init_config=str(tiny), layout="raw", seq_len=32, batch_size=2, steps=4,
                         warmup_steps=1, tracking=TrackingConfig(report_to=["tensorboard"]))
    train(config)
    scalars = _scalars(out / "tensorboard")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert scalars["train/loss"] == [(m["step"], pytest.approx(m["loss"])) for m in metrics] and len(metrics) == 4


def test_a_train_config_saved_before_the_tracking_group_still_loads():
    from lt_cli.training import TrainConfig

    old = {**TrainConfig(output="o").to_dict(), "report_to": ["tensorboard"], "run_name": "x"}
    del old["tracking"]
    config = TrainConfig.from_dict(old)
    assert config.tracking == TrackingConfig(report_to=["tensorboard"], run_name="x")
    assert TrainConfig.from_dict(config.to_dict()) == config
