"""``lt train --compile``: each transformer layer's forward compiled by torch.compile.

Why per layer (as torchtitan does) rather than the whole model: every layer has the same code, so
torch.compile builds one graph and reuses it for all of them (compile time is that of one layer,
seconds to a minute), while the embedding, the final norm and the loss stay eager. Why the forward
method rather than the module: the module's hooks (DDP's and FSDP2's gather and reduce) then run
outside the compiled code, and parameter names, checkpoints and saved models are unchanged.
What it buys: fused normalisation, rotary and activation kernels and fewer launches; the matrix
products are the same cuBLAS calls (docs/performance.md has the measured effect).
"""

from __future__ import annotations


def compile_layers(model) -> int:
    """Compile each layer's forward in place; returns how many layers were compiled."""
    import torch

    from .distributed import decoder_layers

    layers = decoder_layers(model)
    if not layers:
        from ..errors import UsageError

        raise UsageError(f"--compile: found no transformer layers in {type(model).__name__} (its _no_split_modules)")
    for layer in layers:
        layer.forward = torch.compile(layer.forward)
    return len(layers)
