"""What surrounds a training run: one writer per output folder, the data's identity, and no
half-written folder after a failure.

Why each:

* Two ``lt train`` with the same ``--output`` (a job submitted twice) would write one folder's
  checkpoints and weights in turn. ``OUTPUT.lock`` (:mod:`lt_cli.locks`, beside the folder) lets
  the second one stop at once, naming the first.
* A rerun resumes the folder's newest checkpoint when its settings match (``train_config.json``);
  the settings name the data by path only, so the data's content is compared too:
  ``train_inputs.json`` holds the sha256 and size of every ``--data`` file (and of
  ``--init-config``), written when the run starts. Data that changed under the same path is
  refused (``--overwrite`` starts over).
* A run that fails (disk full, out of memory, Ctrl-C, SIGTERM) removes what it created and cannot
  resume from: with no complete checkpoint, the whole folder when this run created it, else the
  files it added; with a checkpoint, only the files that are not part of the resumable state
  (the final weights it was writing). ``kill -9`` leaves the folder as it was, and the rerun
  resumes from its newest checkpoint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

from ..console import warn
from ..errors import UsageError
from ..files import read_json, write_json
from . import checkpoint as ckpt
from .config import DataSource, TrainConfig

INPUTS_FILE = "train_inputs.json"
#: what a failed run keeps when it has a checkpoint to resume from
RESUMABLE = frozenset({ckpt.CHECKPOINTS, "train_config.json", INPUTS_FILE, "metrics.jsonl"})


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def input_identity(config: TrainConfig) -> dict[str, Any]:
    """Content identity of the run's inputs (every ``--data`` file, ``--init-config``)."""
    from ..provenance import file_identity

    inputs: dict[str, Any] = {"data": [{"spec": spec, **file_identity(DataSource.parse(spec).path)} for spec in config.data]}
    if config.init_config is not None:
        inputs["init_config"] = file_identity(config.init_config)
    return inputs


def check_inputs(output: Path, config: TrainConfig, current: dict[str, Any]) -> None:
    """Refuse to continue (or report as finished) a run in ``output`` that read other data."""
    saved_path = output / INPUTS_FILE
    if config.overwrite or not (output / "train_config.json").exists():
        return
    if not saved_path.exists():
        warn(f"{output} has no {INPUTS_FILE} (written by an older lt): the content of its data cannot be checked")
        return
    from ..provenance import content_key, describe_input

    saved = read_json(saved_path)
    before, now = saved.get("data", []), current["data"]
    for item in now:
        if content_key(item) is None:
            what = "a Hub dataset whose commit is unknown" if item.get("hub") else "not a regular file (a pipe?)"
            warn(f"--data {item['path']} is {what}: its content cannot be checked against the run in {output}")
    changed = [
        f"{describe_input(old)} there; {describe_input(new)} now"
        for old, new in zip(before, now)
        if content_key(old) != content_key(new)
    ]
    if len(before) != len(now):
        changed.append(f"{len(before)} --data file(s) there, {len(now)} now")
    old_init, new_init = saved.get("init_config"), current.get("init_config")
    if (old_init or {}).get("sha256") != (new_init or {}).get("sha256"):
        changed.append("--init-config differs in content")
    if changed:
        raise UsageError(
            f"{output} holds a run trained on other data: {'; '.join(changed)}. "
            "Pass --overwrite to start over, or choose another --output"
        )


def _missing_ancestors(output: Path) -> list[Path]:
    """The folders above ``output`` that do not exist yet, nearest first (created with it)."""
    missing = []
    for parent in output.absolute().parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def _cleanup(output: Path, existed: bool, before: set[str]) -> None:
    """Remove what a failed run created and cannot resume from (see the module docstring)."""
    if not output.is_dir():
        return
    root = ckpt.checkpoint_root(output)
    if root.is_dir() and not root.is_symlink():  # never clean up inside a link's target
        for leftover in root.glob(".step-*.tmp"):
            shutil.rmtree(leftover, ignore_errors=True)
    resumable = ckpt.latest_checkpoint(output) is not None
    if not existed and not resumable:
        shutil.rmtree(output, ignore_errors=True)
        return
    for entry in output.iterdir():
        if entry.name in before or (resumable and entry.name in RESUMABLE):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def guarded_train(config: TrainConfig, run: Callable[[TrainConfig], Any]) -> Any:
    """``run(config)`` (the training loop) under the lock, the input check and the cleanup."""
    from ..locks import OutputLock

    config.validate()
    output = Path(config.output)
    if not _is_main():
        return run(config)
    created_parents = _missing_ancestors(output)  # before the lock file creates them
    failed = False
    try:
        with OutputLock(output, what="--output"):
            existed = output.is_dir()
            before = {entry.name for entry in output.iterdir()} if existed else set()
            current = input_identity(config)
            check_inputs(output, config, current)
            try:
                output.mkdir(parents=True, exist_ok=True)
                write_json(output / INPUTS_FILE, current)
                return run(config)
            except BaseException:
                failed = True
                _cleanup(output, existed, before)
                raise
    finally:
        if failed and not output.exists():
            for parent in created_parents:  # folders made for this run, if nothing else is in them
                try:
                    parent.rmdir()
                except OSError:
                    break
