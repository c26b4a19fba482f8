"""Model shapes for the check, and the tokenizer they use.

No pretrained weights reach the GPU machine, so the models are built from a config with seeded
random weights. The full check uses the published architecture numbers of SmolLM2-135M (the
contract) and TinyLlama-1.1B (training and the E-step, the paper's model); the smoke check uses
tiny shapes with the same features (GQA, tied and untied heads).

Tokenizer: lt's byte tokenizer (lt_cli/tiny.py) padded with reserved tokens ``<|r0|>``,
``<|r1|>``, ... up to the shape's vocabulary. Why: the embedding, the LM head and the
cross-entropy then have the real model's size (the head is 6% of TinyLlama's FLOPs and its fp32
logits are gigabytes at seq 2048), and every id decodes to a string that encodes back to the same
id, so sampled text round-trips through scoring as the backend contract requires. A trained BPE
would need a corpus on the device and would rarely land on the exact vocabulary size; the padded
byte tokenizer needs nothing and is built in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Shape:
    key: str  # folder name
    name: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    max_position_embeddings: int
    rope_theta: float
    tie_word_embeddings: bool

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def matmul_params(self) -> int:
        """Weights that take part in a matrix multiply (lt_cli/training/throughput.py's N)."""
        d, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        per_layer = d * d * 2 + d * kv * 2 + 3 * d * self.intermediate_size
        return self.num_layers * per_layer + self.vocab_size * d

    def decode_weight_bytes(self, bytes_per_value: int = 2) -> int:
        """Bytes a decode step reads for the weights: every matrix once (the embedding table is a
        lookup of a few rows, so only the LM head's copy counts when untied)."""
        return self.matmul_params() * bytes_per_value

    def kv_bytes_per_token(self, bytes_per_value: int = 2) -> int:
        """K and V of every layer for one cached token."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * bytes_per_value


#: SmolLM2-135M (HuggingFaceTB), as published in its config.json.
SMOLLM2_135M = Shape("smollm2-135m", "SmolLM2-135M shape", 576, 1536, 30, 9, 3, 49152, 8192, 100000.0, True)
#: TinyLlama-1.1B (the paper's model), as published in its config.json.
TINYLLAMA_1_1B = Shape("tinyllama-1.1b", "TinyLlama-1.1B shape", 2048, 5632, 22, 32, 4, 32000, 2048, 10000.0, False)
#: Smoke stand-ins: the same features, CPU-sized.
TINY_TIED = Shape("tiny-tied", "tiny tied (smoke)", 64, 128, 2, 4, 2, 512, 512, 10000.0, True)
TINY_UNTIED = Shape("tiny-untied", "tiny untied (smoke)", 64, 160, 2, 4, 2, 640, 512, 10000.0, False)


def padded_byte_tokenizer(vocab_size: int):
    """lt's byte tokenizer plus reserved tokens up to ``vocab_size`` (see the module docstring)."""
    from tokenizers import AddedToken

    from lt_cli.tiny import build_byte_tokenizer

    tokenizer = build_byte_tokenizer()
    missing = vocab_size - len(tokenizer)
    if missing < 0:
        raise ValueError(f"vocabulary {vocab_size} is smaller than the byte tokenizer ({len(tokenizer)})")
    tokenizer.add_tokens([AddedToken(f"<|r{i}|>", special=False, normalized=False) for i in range(missing)])
    assert len(tokenizer) == vocab_size
    return tokenizer


def build_model(shape: Shape, device: str, seed: int = 0):
    """A Llama of ``shape`` with seeded random weights, built directly on ``device`` in fp32."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers, num_attention_heads=shape.num_heads, num_key_value_heads=shape.num_kv_heads,
        max_position_embeddings=shape.max_position_embeddings, rope_theta=shape.rope_theta,
        tie_word_embeddings=shape.tie_word_embeddings, rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=1, pad_token_id=2,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.eval()


def model_folder(shape: Shape, root: Path, device: str, *, dtype: str = "bfloat16") -> Path:
    """Build (once) and save ``shape`` as a Hugging Face folder under ``root``; returns the folder.

    Weights are saved in ``dtype`` (bf16 halves the bytes written and read; ``lt train`` upcasts to
    fp32 master weights anyway). An existing folder is reused.
    """
    import torch

    from lt_cli.model_folder import save_model_folder

    folder = root / shape.key
    if folder.is_dir():  # written under a temporary name and renamed: present means complete
        return folder
    model = build_model(shape, device)
    model.to(getattr(torch, dtype))
    model.config.dtype = getattr(torch, dtype)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_model_folder(model, padded_byte_tokenizer(shape.vocab_size), tmp)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    tmp.rename(folder)
    return folder
