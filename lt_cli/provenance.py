"""What wrote a resumable output: the command, the settings that change its bytes, and the input.

Why: a rerun continues a leftover ``OUTPUT.partial`` after its last complete record. That is only
right when the rerun would have written the same records: the same command, the same settings
that decide the bytes (``--k``, ``--seed``, ``--model``, ``--method``...) and the same input. A
partial written by anything else must be refused, or it silently keeps the old run's records and
skips the new input's first documents.

The identity is saved beside the partial (``OUTPUT.partial.json``) when it is created and compared
before it is resumed. Settings are the command's flags (:func:`lt_cli.flags.flat`) minus those that
cannot change the bytes (:data:`FREE_FLAGS`: paths of sidecars, batch sizes, concurrency), plus the
fingerprint of a local ``--model`` folder (its files' names, sizes and mtimes, as the sample cache
keys it), so a model retrained into the same folder does not continue the old model's partial. The input
is identified by its content (sha256 and size; its path may change), hashed once per run at several
hundred MB/s (``bench/reliability_io.py`` prints the ratio to reading it). Records read from stdin
cannot be identified, so their partial is never resumed silently.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from .files import file_sha256
from .paths import display_name, is_std

#: flags that cannot change the bytes of a stream command's output
FREE_FLAGS = frozenset(
    {"input", "output", "cache", "no_cache", "skip_bad", "rejects", "restart", "batch_size", "max_concurrency", "batch_poll_interval", "batch",
     "report_to", "wandb_project", "wandb_entity", "run_name", "tracking_dir"}
)
#: bump when the identity's layout changes (an older partial is then refused)
IDENTITY_VERSION = 1


def file_identity(path: str | os.PathLike | None) -> dict[str, Any]:
    """``{"path", "bytes", "sha256"}`` of a file; stdin and other streams (a pipe, ``<(...)``) get
    ``sha256: None``: they cannot be hashed ahead of reading without consuming them. A Hub dataset
    (``hf://``) is identified by its repository, config, split and resolved commit (``hub``)."""
    from .paths import is_hub

    if is_hub(path):
        from .hub import hub_identity

        return hub_identity(str(path))
    if is_std(path) or not stat.S_ISREG(os.stat(path).st_mode):
        return {"path": display_name(path), "bytes": None, "sha256": None}
    return {"path": str(path), "bytes": os.path.getsize(path), "sha256": file_sha256(path)}


def _plain(value: Any) -> Any:
    """A JSON-shaped copy (dataclasses to dicts, tuples to lists) so saved and current compare equal."""
    import orjson

    return orjson.loads(orjson.dumps(value, default=str))


def run_identity(command: str, config: Any) -> dict[str, Any]:
    """The command and every flag of ``config`` that can change the output's bytes."""
    from .flags import flat

    settings = {name: value for name, value in flat(config).items() if name not in FREE_FLAGS}
    if isinstance(settings.get("model"), str):
        from .cache import model_fingerprint

        # a model retrained into the same folder samples other latents: its files are part of the run
        settings["model_files"] = model_fingerprint(settings["model"])
    return {"version": IDENTITY_VERSION, "command": command, "settings": _plain(settings)}


def stream_identity(command: str, config: Any, input_path: str | os.PathLike | None) -> dict[str, Any]:
    return {**run_identity(command, config), "input": file_identity(input_path)}


def content_key(identity: dict[str, Any]) -> tuple | None:
    """What must be equal for two inputs to hold the same records (None: cannot be known)."""
    if identity.get("sha256") is not None:
        return ("file", identity["sha256"], identity.get("bytes"))
    hub = identity.get("hub") or {}
    if hub.get("commit"):
        return ("hub", hub.get("repo"), hub.get("config"), hub.get("split"), hub["commit"])
    return None


def describe_input(identity: dict[str, Any]) -> str:
    hub = identity.get("hub") or {}
    if hub.get("commit"):
        return f"{identity['path']} (commit {hub['commit'][:12]})"
    if identity.get("sha256") is None:
        return f"{identity.get('path', '?')} (not identifiable)"
    return f"{identity['path']} (sha256 {identity['sha256'][:12]}, {identity['bytes']:,} bytes)"


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two identities, in words (empty: the same run)."""
    found = []
    if saved.get("version") != current.get("version"):
        found.append(f"written by another lt version (identity {saved.get('version')!r}, now {current.get('version')!r})")
        return found
    if saved.get("command") != current.get("command"):
        found.append(f"written by lt {saved.get('command')}, this is lt {current.get('command')}")
        return found
    old, new = saved.get("settings", {}), current.get("settings", {})
    for name in sorted(set(old) | set(new)):
        if old.get(name, "<unset>") == new.get(name, "<unset>"):
            continue
        if name == "model_files":
            if old.get("model") == new.get("model"):
                found.append(f"the files of --model {new.get('model')} changed (retrained or copied since)")
            continue
        found.append(f"--{name.replace('_', '-')} {old.get(name, '<unset>')!r} there, {new.get(name, '<unset>')!r} now")
    old_input, new_input = saved.get("input"), current.get("input")
    if old_input is not None or new_input is not None:
        old_input, new_input = old_input or {}, new_input or {}
        old_key, new_key = content_key(old_input), content_key(new_input)
        if old_key is None or new_key is None:
            why = "a Hub dataset whose commit is unknown" if (old_input.get("hub") or new_input.get("hub")) else "records read from stdin"
            found.append(f"input {describe_input(old_input)} there, {describe_input(new_input)} now: {why} cannot be checked")
        elif old_key != new_key:
            found.append(f"input {describe_input(old_input)} there, {describe_input(new_input)} now")
    return found


def meta_path(partial: str | os.PathLike) -> Path:
    partial = Path(partial)
    return partial.with_name(partial.name + ".json")
