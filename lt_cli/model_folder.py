"""Writing a Hugging Face model folder, and where lt keeps the models it converts.

Why its own module: every model folder lt writes (lt train's output, the tiny test model, the
SmolLM2 conversion) goes through :func:`save_model_folder`, which needs nothing of the loading
and resolving in :mod:`lt_cli.models`; kept apart, the converters (lt_cli/smollm2.py) import it
without importing the module that resolves their aliases.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import exception_text
from .interrupts import raise_if_received


#: the hidden folder a save writes into before its files are renamed into place (``mkdtemp``)
_STAGING_PREFIX, _STAGING_SUFFIX = ".lt-model.", ".tmp"


def model_cache_dir() -> Path:
    """Where converted models live: ``$LT_MODEL_CACHE``, else ``~/.cache/lt/models``."""
    root = os.environ.get("LT_MODEL_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "lt" / "models"


def save_model_folder(model, tokenizer, path: str | os.PathLike, *, state_dict: dict | None = None) -> None:
    """Write a Hugging Face model folder (weights, config, tokenizer) that other users can read.

    Every model folder lt writes goes through here. transformers writes into a fresh hidden folder
    lt makes inside ``path`` (``mkdtemp``: a new, unpredictable name, so nothing can be planted
    in it), and each file is then renamed to its name in ``path``. Why: ``path`` may already hold
    files (``lt train``'s output holds its checkpoints and metrics), and ``save_pretrained`` opens
    ``config.json``, ``model.safetensors``... with a plain ``open``, which would write through a
    symbolic link planted at one of those names; a rename replaces the link instead, as for every
    file lt rewrites whole (lt_cli/nofollow.py). The files are byte for byte what ``save_pretrained``
    writes; weight shards of an earlier save that this one did not write are removed, as
    ``save_pretrained`` does in place. safetensors creates its file 0600; the files get the mode a
    plain ``open`` gives (files.make_public). A failed save removes the hidden folder.
    """
    import shutil
    import tempfile

    from .errors import FileError
    from .files import make_public

    staging = None
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=_STAGING_PREFIX, suffix=_STAGING_SUFFIX, dir=path)
        model.save_pretrained(staging, state_dict=state_dict)
        tokenizer.save_pretrained(staging)
        make_public(staging)
        raise_if_received()  # an interrupt a library swallowed during the save: nothing is renamed in
        written = sorted(os.listdir(staging))
        for name in written:
            os.replace(os.path.join(staging, name), os.path.join(path, name))
        for name in os.listdir(path):
            if name not in written and _stale_shard(os.path.join(path, name)):
                os.remove(os.path.join(path, name))
    except OSError as exc:
        raise FileError.from_os(exc, path) from None
    except Exception as exc:  # safetensors reports a failed write (disk full) as its own error type
        if type(exc).__name__ != "SafetensorError":
            raise
        cause = "no space left on device" if "StorageFull" in str(exc) or "os error 28" in str(exc) else exception_text(exc)
        raise FileError(f"{path}: cannot write the model ({cause})") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def remove_stale_staging(path: str | os.PathLike) -> None:
    """Remove the hidden folders that saves into ``path`` killed with ``kill -9`` left behind. Only
    for a caller that holds ``path``'s output lock: another writer's save in progress looks the same."""
    import shutil

    for stale in Path(path).glob(f"{_STAGING_PREFIX}*{_STAGING_SUFFIX}"):
        shutil.rmtree(stale, ignore_errors=True)


def _stale_shard(path: str) -> bool:
    """A weight shard (``model-00001-of-00003.safetensors``) by the rule ``save_pretrained`` uses
    to remove an earlier save's shards from the folder it saves into."""
    name = os.path.basename(path)
    stem = name.replace(".bin", "").replace(".safetensors", "")
    return name.startswith("model") and re.fullmatch(r"(.*?)-\d{5}-of-\d{5}", stem) is not None and os.path.isfile(path)
