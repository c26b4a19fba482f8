"""lt train and lt bootstrap under hostile conditions: checkpoints that never unpickle, data that
changed under the same path, a full disk, a second writer, bad paths, and bootstrap's checks
before its first stage."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import FIXTURES
from hostile import ENV, LT, cli, error_line, lt, tmpfs, tree

TINY = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "num_kv_heads": 2, "intermediate_size": 128}


@pytest.fixture
def inputs(tmp_path) -> tuple[Path, Path]:
    data = tmp_path / "raw.jsonl"
    shutil.copy(FIXTURES / "math_docs.jsonl", data)
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps(TINY))
    return data, tiny


def train_args(out: Path, data: Path, tiny: Path, *extra) -> list:
    return ["train", "--init-config", tiny, "--data", data, "--output", out, "--layout", "raw", "--seq-len", "64", "--batch-size", "4",
            "--steps", "4", "--warmup-steps", "1", "--log-every", "1000", *extra]


class Planted:
    """A pickle that creates ``marker`` when it is loaded (what a hostile checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _is_safetensors_or_json(path: Path) -> bool:
    data = path.read_bytes()
    if path.suffix == ".json":
        return json.loads(data) is not None
    header = int.from_bytes(data[:8], "little")
    return path.suffix == ".safetensors" and isinstance(json.loads(data[8 : 8 + header]), dict)


def test_checkpoints_hold_no_pickle_and_a_planted_pickle_never_runs(tmp_path, inputs):
    data, tiny = inputs
    out = tmp_path / "run"
    code, _, err = cli(train_args(out, data, tiny, "--save-every", "2"))
    assert code == 0, err
    step = out / "checkpoints" / "step-00000002"
    assert sorted(p.name for p in step.iterdir()) == ["model.safetensors", "optimizer.json", "optimizer.safetensors", "rng.json", "state.json"]
    assert all(_is_safetensors_or_json(p) for p in step.iterdir())
    weights = (out / "model.safetensors").read_bytes()

    marker = tmp_path / "pwned"
    (step / "rng.pt").write_bytes(pickle.dumps(Planted(marker)))  # planted beside a real checkpoint: ignored
    (out / "train_result.json").unlink()
    code, _, err = cli(train_args(out, data, tiny, "--save-every", "2"))
    assert code == 0 and "resuming from" in err and not marker.exists()
    assert (out / "model.safetensors").read_bytes() == weights  # resumed bitwise

    (out / "train_result.json").unlink()  # a checkpoint in the old pickle layout is refused unread
    (step / "model.safetensors").unlink()
    (step / "model.pt").write_bytes(pickle.dumps(Planted(marker)))
    code, _, err = cli(train_args(out, data, tiny, "--save-every", "2"))
    error_line(2, err, code, f"{step} was saved by an older lt as pickle files", "--overwrite")
    assert not marker.exists()


def test_train_refuses_data_that_changed_under_the_same_path(tmp_path, inputs, monkeypatch):
    data, tiny = inputs
    straight, out = tmp_path / "straight", tmp_path / "run"
    assert cli(train_args(straight, data, tiny, "--save-every", "2"))[0] == 0

    from lt_cli.training import checkpoint

    real = checkpoint.save_checkpoint

    def save_then_interrupt(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_interrupt)
    code, _, err = cli(train_args(out, data, tiny, "--save-every", "2"))
    monkeypatch.setattr(checkpoint, "save_checkpoint", real)
    assert code == 130
    # the failed run kept exactly its resumable state
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "metrics.jsonl", "train_config.json", "train_inputs.json"]

    original = data.read_bytes()
    data.write_bytes(original.replace(b"the", b"teh", 1))  # same path, same size, other content
    code, _, err = cli(train_args(out, data, tiny, "--save-every", "2"))
    error_line(2, err, code, f"{out} holds a run trained on other data", str(data), "--overwrite")
    code, _, err = cli(train_args(straight, data, tiny, "--save-every", "2"))  # a finished run too
    error_line(2, err, code, f"{straight} holds a run trained on other data")

    data.write_bytes(original)
    code, _, err = cli(train_args(out, data, tiny, "--save-every", "2"))
    assert code == 0 and "resuming from" in err
    assert (out / "model.safetensors").read_bytes() == (straight / "model.safetensors").read_bytes()


def test_disk_full_while_saving_the_model_leaves_nothing(tmp_path, inputs, monkeypatch):
    """Simulated in this process (a partial file, then ENOSPC), then for real on a small tmpfs."""
    import errno

    from transformers import PreTrainedModel

    data, tiny = inputs

    def full_disk(self, path, **kwargs):
        Path(path, "model.safetensors").write_bytes(b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full_disk)
    out = tmp_path / "deep" / "run"
    code, _, err = cli(train_args(out, data, tiny))
    error_line(1, err, code, f"{out}: no space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.jsonl", "tiny.json"]  # no folder, no lock
    with_checkpoint = tmp_path / "ckpt"
    code, _, err = cli(train_args(with_checkpoint, data, tiny, "--save-every", "2"))
    assert code == 1 and "model.safetensors" not in {p.name for p in with_checkpoint.iterdir()}
    assert (with_checkpoint / "checkpoints" / "step-00000002" / "state.json").exists()  # resumable
    monkeypatch.undo()

    with tmpfs(tmp_path / "small", "256k") as disk:
        result = lt(train_args(disk / "run", data, tiny))
        error_line(1, result.stderr, result.returncode, str(disk / "run"), "no space left on device")
        assert list(disk.iterdir()) == []


def _swallow_sigint() -> None:
    """What a library that catches everything does when Ctrl-C lands in it."""
    import signal
    import time

    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    except:  # noqa: E722
        pass


def test_an_interrupt_swallowed_in_training_or_in_the_save_stops_lt_train(tmp_path, inputs, monkeypatch):
    """lt_cli/interrupts.py: training stops at the next step, a save renames nothing into place;
    both exit 130 with no model in the output folder."""
    import signal

    import torch
    from transformers import PreTrainedModel

    data, tiny = inputs
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)  # however pytest was started
    try:
        clip, steps = torch.nn.utils.clip_grad_norm_, []

        def clip_and_swallow(*args, **kwargs):
            steps.append(1)
            if len(steps) == 2:
                _swallow_sigint()
            return clip(*args, **kwargs)

        monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_and_swallow)
        out = tmp_path / "run"
        code, _, err = cli(train_args(out, data, tiny))
        assert (code, len(steps)) == (130, 2) and "lt: interrupted" in err, err
        assert not (out / "model.safetensors").exists()
        monkeypatch.undo()

        save = PreTrainedModel.save_pretrained

        def save_and_swallow(self, *args, **kwargs):
            save(self, *args, **kwargs)
            _swallow_sigint()

        monkeypatch.setattr(PreTrainedModel, "save_pretrained", save_and_swallow)
        out = tmp_path / "saved"
        code, _, err = cli(train_args(out, data, tiny))
        assert code == 130 and "lt: interrupted" in err, err
        assert not (out / "model.safetensors").exists() and not list(out.glob(".lt-model.*"))
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_train_bad_paths_and_a_second_writer(tmp_path, inputs):
    from lt_cli.locks import OutputLock

    data, tiny = inputs
    a_file = tmp_path / "taken.txt"
    a_file.write_text("not a folder")
    code, _, err = cli(train_args(a_file, data, tiny))
    error_line(2, err, code, f"--output {a_file}: is a file")
    code, _, err = cli(train_args(tmp_path / "o", f"{data}:abc", tiny))
    error_line(2, err, code, f"--data {data}:abc: the weight 'abc' is not a number")
    code, _, err = cli(train_args(tmp_path / "o", tmp_path, tiny))
    error_line(2, err, code, f"--data {tmp_path}: is a directory")
    out = tmp_path / "run"
    with OutputLock(out, what="--output"):
        code, _, err = cli(train_args(out, data, tiny))
    error_line(4, err, code, f"{out} is being written by pid {os.getpid()}", "choose another --output")
    assert not out.exists()
    closed = subprocess.run([*LT, *map(str, train_args(out, data, tiny))], env=ENV, stderr=subprocess.PIPE, preexec_fn=lambda: os.close(1), timeout=300)
    error_line(2, closed.stderr, closed.returncode, "stdout is closed: the training result (JSON) goes there")
    assert not out.exists()  # refused before training, not after


# ------------------------------------------------------------------------------- bootstrap
def _bootstrap(run_dir: Path, data: Path, warm: Path, tiny_model_dir: Path, *extra) -> list:
    return ["bootstrap", "--model", tiny_model_dir, "--data", data, "--warm-data", warm, "--iters", "1", "--run-dir", run_dir, *extra]


def test_bootstrap_checks_inputs_and_tasks_before_the_first_stage(tmp_path, inputs, tiny_model_dir):
    data, _ = inputs
    warm = tmp_path / "warm.jsonl"
    warm.write_text('{"id": "w", "text": "no latents here"}\n')
    run_dir = tmp_path / "runs" / "x"
    code, _, err = cli(_bootstrap(run_dir, tmp_path / "missing.jsonl", warm, tiny_model_dir))
    error_line(2, err, code, "--data")
    assert "missing.jsonl: no such file" in err
    code, _, err = cli(_bootstrap(run_dir, data, warm, tiny_model_dir, "--eval-task", "nope"))
    error_line(2, err, code, "unknown task 'nope'")
    code, _, err = cli(_bootstrap(run_dir, data, f"{warm}:abc", tiny_model_dir))
    error_line(2, err, code, "the weight 'abc' is not a number")
    code, _, err = cli(_bootstrap(run_dir, data, warm, tiny_model_dir, "--k", "1000000000"))
    error_line(2, err, code, "--k 1000000000 is more samples per chunk")
    assert not (tmp_path / "runs").exists() and "stage 1" not in err  # nothing ran, nothing written


def test_bootstrap_refuses_changed_inputs_and_a_second_run(tmp_path, inputs, tiny_model_dir):
    from lt_cli.locks import OutputLock

    data, _ = inputs
    warm = tmp_path / "warm.jsonl"
    warm.write_text('{"id": "w", "text": "no latents here"}\n')  # the warm start fails at its first record
    run_dir = tmp_path / "run"
    code, _, err = cli(_bootstrap(run_dir, data, warm, tiny_model_dir))
    error_line(2, err, code, f"{warm}:1:")
    saved = tree(run_dir)
    assert {"config.json", "inputs.json", "manifest.json"} <= set(saved)
    data.write_bytes(data.read_bytes() + b'{"text": "One more document."}\n')
    code, _, err = cli(_bootstrap(run_dir, data, warm, tiny_model_dir))
    error_line(2, err, code, f"{run_dir} holds a run on other input data", f"--data {data}")
    assert tree(run_dir) == saved
    with OutputLock(run_dir, what="--run-dir"):
        code, _, err = cli(_bootstrap(run_dir, data, warm, tiny_model_dir))
    error_line(4, err, code, f"{run_dir} is being written by pid {os.getpid()}")
