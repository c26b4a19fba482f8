"""torchrun on CPU (gloo): two processes train the same global batches as one process.

The data stream is global and each rank takes its slice of every global batch, so a 2-process run
sees exactly the sequences a 1-process run sees; only the order of floating-point reductions
differs. Stated tolerance: per-step losses within 1e-4 nats and final weights within 1e-4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lt_cli.io import read_all
from lt_cli.chunking import ensure_chunks

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "num_kv_heads": 2, "intermediate_size": 128}
LOSS_TOLERANCE = 1e-4
WEIGHT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("dist")
    data = folder / "augmented.jsonl"
    with open(data, "w") as f:
        for record in read_all(FIXTURES / "math_docs.jsonl"):
            doc = ensure_chunks(record)
            for i, chunk in enumerate(doc["chunks"]):
                chunk["latent"] = f"Note {i}: " + chunk["text"][:30][::-1]
            f.write(json.dumps(doc) + "\n")
    tiny = folder / "tiny.json"
    tiny.write_text(json.dumps(TINY))
    return data, tiny


def _env() -> dict[str, str]:
    # faulthandler: a worker that aborts (SIGABRT) prints every thread's Python stack into the log
    return {**os.environ, "OMP_NUM_THREADS": "1", "LT_PROGRESS_INTERVAL": "3600", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONFAULTHANDLER": "1"}


def _train_args(data: Path, tiny: Path, out: Path) -> list[str]:
    return ["train", "--init-config", str(tiny), "--data", str(data), "--output", str(out), "--seq-len", "64",
            "--batch-size", "4", "--steps", "8", "--lr", "3e-3", "--warmup-steps", "0", "--log-every", "1000"]


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines() if "loss" in json.loads(line)]


def _weights(out: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(out / "model.safetensors"))


def _run_pair(tmp_path: Path, data: Path, tiny: Path, extra: list[str]) -> tuple[Path, Path]:
    single = tmp_path / "single"
    proc = subprocess.run([sys.executable, "-m", "lt_cli", *_train_args(data, tiny, single)], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    double = tmp_path / "double"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "lt_cli", *_train_args(data, tiny, double), *extra],
        env=_env(), capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-8000:]
    assert "on 2 x cpu" in proc.stderr
    assert json.loads(proc.stdout)["steps"] == 8  # only rank 0 writes the result
    return single, double


def _assert_match(single: Path, double: Path) -> None:
    a, b = _losses(single), _losses(double)
    assert len(a) == len(b) == 8
    assert a[-1] < a[0] - 0.5  # it trained
    assert np.max(np.abs(np.array(a) - np.array(b))) < LOSS_TOLERANCE
    wa, wb = _weights(single), _weights(double)
    assert wa.keys() == wb.keys()
    assert max(float(np.max(np.abs(wa[k] - wb[k]))) for k in wa) < WEIGHT_TOLERANCE


def test_torchrun_ddp_two_processes_match_one(tmp_path, inputs):
    data, tiny = inputs
    # rank 0 also validates after the last step while rank 1 waits; the trajectory is unchanged
    validation = ["--val-data", str(FIXTURES / "math_docs.jsonl"), "--val-limit", "2", "--val-elbo-n", "1", "--val-max-latent-tokens", "4"]
    # the two-process run also uses the chunked loss (training/loss.py) inside DDP's forward
    single, double = _run_pair(tmp_path, data, tiny, ["--strategy", "ddp", "--micro-batch-size", "1", "--loss", "chunked", *validation])
    config = json.loads((double / "train_config.json").read_text())
    assert config["strategy"] == "ddp" and config["micro_batch_size"] == 1
    _assert_match(single, double)
    val = [json.loads(line) for line in (double / "metrics.jsonl").read_text().splitlines() if "val_nll_per_token" in line]
    assert [line["step"] for line in val] == [8] and val[0]["val_n_documents"] == 2 and "val_elbo_1_per_token" in val[0]


@pytest.mark.slow
def test_torchrun_fsdp2_two_processes_match_one_and_resume_single(tmp_path, inputs):
    data, tiny = inputs
    single, double = _run_pair(tmp_path, data, tiny, ["--strategy", "fsdp", "--save-every", "4", "--loss", "chunked", "--loss-chunk-tokens", "48"])
    assert json.loads((double / "train_config.json").read_text())["strategy"] == "fsdp"
    assert json.loads((double / "train_config.json").read_text())["loss"] == "chunked"  # inside FSDP2's forward, against the full loss
    _assert_match(single, double)
    # an FSDP checkpoint (full state dicts) resumes in a single process
    (double / "train_result.json").unlink()
    (double / "model.safetensors").unlink()
    proc = subprocess.run([sys.executable, "-m", "lt_cli", *_train_args(data, tiny, double)], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "resuming from" in proc.stderr and json.loads(proc.stdout)["resumed_from_step"] == 4
    assert np.max(np.abs(np.array(_losses(single)) - np.array(_losses(double)))) < LOSS_TOLERANCE


@pytest.mark.slow
def test_torchrun_rank_sharded_data_trains_and_resumes_bitwise(tmp_path, inputs):
    """--data-sharding rank: each rank packs its own documents (batches depend on the world size,
    so no comparison with one process); resuming from a checkpoint is still exact."""
    data, tiny = inputs
    out = tmp_path / "sharded"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lt_cli",
            *_train_args(data, tiny, out), "--data-sharding", "rank", "--loss-on", "observed"]
    proc = subprocess.run([*argv, "--save-every", "4"], env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = _losses(out)
    assert losses[-1] < losses[0] - 0.5
    state = json.loads(next((out / "checkpoints").iterdir()).joinpath("state.json").read_text())
    assert len(state["positions"]) == 2 and state["positions"][0] != state["positions"][1]
    first = (out / "model.safetensors").read_bytes()
    (out / "train_result.json").unlink()
    (out / "model.safetensors").unlink()
    proc = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stderr
    assert (out / "model.safetensors").read_bytes() == first
    assert _losses(out) == losses
