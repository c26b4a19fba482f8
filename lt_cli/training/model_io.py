"""The model side of a training run: loading it for training and saving the final folder.

Training keeps fp32 master weights (bf16 only inside autocast on GPUs) and adds the four latent
special tokens when the model lacks them, seeded, so the same base model always gets the same new
rows. The final model is saved in the training precision as a Hugging Face folder through
``model_folder.save_model_folder``, like every checkpoint lt writes: written into a fresh hidden folder
inside the output and renamed into place, so a link planted at ``config.json`` or another name
it writes is replaced, never written through.
"""

from __future__ import annotations

from pathlib import Path

from ..console import log
from ..errors import UsageError
from ..files import read_json
from ..model_folder import remove_stale_staging, save_model_folder
from ..models import tokenizer_with_bos
from . import checkpoint as ckpt
from .config import TrainConfig
from .distributed import DistEnv


def load_model_and_tokenizer_for_training(config: TrainConfig):
    """fp32 master weights on CPU, with the four latent tokens (added when missing, seeded)."""
    import torch

    if config.init_config is not None:
        from ..tiny import TinyModelConfig, build_byte_tokenizer, build_tiny_llama

        try:
            tiny = TinyModelConfig(**read_json(config.init_config))
        except TypeError as exc:
            raise UsageError(f"--init-config {config.init_config}: {exc}") from None
        tokenizer = build_byte_tokenizer()
        model = build_tiny_llama(len(tokenizer), tiny)
    else:
        from ..models import add_latent_tokens, load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(config.model, dtype="float32", device="cpu")
        added = add_latent_tokens(model, tokenizer, seed=42)
        if added:
            log(f"added {added} latent special token(s) to the vocabulary")
    model.to(torch.float32)
    model.config.use_cache = False
    if config.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model, tokenizer


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def save_final_model(output: Path, base_model, model, tokenizer, strategy: str, save_dtype, env: DistEnv) -> None:
    """The final weights as a Hugging Face folder at ``output`` (rank 0 writes; FSDP gathers first)."""
    import torch

    if strategy == "fsdp":
        state = ckpt.full_model_state(model)
    else:
        state = {k: v.detach().cpu() for k, v in base_model.state_dict().items()}
    if not env.is_main:
        return
    if save_dtype != torch.float32:
        state = {k: v.to(save_dtype) if v.is_floating_point() else v for k, v in state.items()}
        base_model.config.dtype = save_dtype
    remove_stale_staging(output)  # a save killed with kill -9 (the output lock keeps other writers out)
    from transformers.utils import logging as hf_logging

    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the "Writing model shards" bar; lt prints its own line
    try:
        save_model_folder(base_model, tokenizer_with_bos(tokenizer), output, state_dict=state)
    finally:
        if bar_was_enabled:
            hf_logging.enable_progress_bar()
