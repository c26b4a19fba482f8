"""Tiny models built from a config, offline: the demo's model and the test suite's.

The tokenizer is byte-level with no merges (one token per UTF-8 byte, so every string round-trips)
plus ``<s>``, ``</s>``, ``<pad>`` and the four latent special tokens. Like Llama's (the reference's
TinyLlama), it puts ``<s>`` first when asked for its special tokens, so models built from it get a
BOS under ``models.bos_policy`` whether or not lt trained them. The model is a Llama built
with ``from_config``. Both are saved in Hugging Face format so every ``--model`` flag, vLLM and
lm-evaluation-harness can load them like any hub checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .formats import SPECIAL_TOKENS


@dataclass(frozen=True)
class TinyModelConfig:
    """A small Llama. hidden/heads >= 32 so vLLM's CPU kernels accept it."""

    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 4
    intermediate_size: int = 256
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    seed: int = 0


def build_byte_tokenizer():
    """A byte-level ``PreTrainedTokenizerFast`` (ids 0-2 specials, 3-258 bytes, then latent tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    byte_chars = list(pre_tokenizers.ByteLevel.alphabet())
    byte_chars.sort(key=lambda ch: ord(ch))
    vocab = {"<s>": 0, "</s>": 1, "<pad>": 2}
    for ch in byte_chars:
        vocab[ch] = len(vocab)
    model = models.BPE(vocab=vocab, merges=[], unk_token=None, fuse_unk=False)
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 0)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        clean_up_tokenization_spaces=False,
    )
    fast.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    return fast


def build_tiny_llama(vocab_size: int, config: TinyModelConfig = TinyModelConfig(), *, bos_token_id=0, eos_token_id=1, pad_token_id=2):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    llama_config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
    )
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(llama_config)
    model.eval()
    return model


def save_tiny_model(path: str | Path, config: TinyModelConfig = TinyModelConfig()) -> Path:
    """Build the byte tokenizer and a randomly initialised tiny Llama (seeded) and save both."""
    path = Path(path)
    tokenizer = build_byte_tokenizer()
    model = build_tiny_llama(len(tokenizer), config)
    path.mkdir(parents=True, exist_ok=True)
    from .model_folder import save_model_folder

    save_model_folder(model, tokenizer, path)
    return path
