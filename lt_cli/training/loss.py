"""The training loss: summed next-token cross-entropy, with or without the full logits in memory.

Why a chunked loss: at the paper's shape (TinyLlama, seq 2048, 8 sequences per micro-batch) the fp32
logits of one micro-batch are 8 x 2048 x 32,000 x 4 bytes = 2.1 GB, and the plain path writes and
reads them several times (upcast, log-softmax, its gradient). The chunked loss takes the final hidden
states instead and, ``chunk_tokens`` positions at a time, computes the logits, the loss and both
gradients (for the hidden states and the LM head) at once, so only one chunk's logits exist at any
moment and the backward pass only scales the stored gradients. Same FLOPs, same values up to the
rounding of a differently shaped matrix product (tests/test_train_speed.py compares both).

How it reaches the model: :func:`head_computes_loss` makes the LM head's forward return the summed
loss instead of logits while a micro-batch runs, so the computation happens inside the wrapped
model's forward and DDP's and FSDP2's hooks see the LM head's weight as usual; nothing else in the
model or its saved state changes.
"""

from __future__ import annotations

import contextlib

from ..models import text_config

IGNORE_INDEX = -100  # the label of positions without a loss (torch's default; training/data.py writes it)
LOSS_IMPLS = ("auto", "full", "chunked")


def resolve_loss_impl(requested: str, device_type: str, model) -> str:
    """"chunked" or "full": auto = chunked on a GPU, for models whose LM head is a plain linear map."""
    if requested == "full":
        return "full"
    head = model.get_output_embeddings()
    config = text_config(model.config)
    plain = type(head).__name__ == "Linear" and not getattr(config, "final_logit_softcapping", None)
    if requested == "chunked":
        if not plain:
            from ..errors import UsageError

            raise UsageError("--loss chunked needs a plain linear LM head without logit soft-capping; use --loss full")
        return "chunked"
    return "chunked" if plain and device_type == "cuda" else "full"


def full_loss(logits, labels):
    """The plain path: fp32 logits for every position, summed cross-entropy."""
    import torch.nn.functional as F

    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")


def _chunked_function():
    import torch

    class ChunkedLinearCrossEntropy(torch.autograd.Function):
        """sum over positions of CE(hidden @ weight.T, labels), gradients computed in the forward."""

        @staticmethod
        def forward(ctx, hidden, weight, bias, labels, chunk_tokens: int, compute_dtype):
            flat = hidden.reshape(-1, hidden.shape[-1])
            targets = labels.reshape(-1)
            grad_hidden = torch.empty_like(flat)
            grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            grad_bias = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if bias is not None else None
            total = torch.zeros((), dtype=torch.float32, device=flat.device)
            w = weight.to(compute_dtype)
            with torch.autocast(device_type=flat.device.type, enabled=False):
                for start in range(0, flat.shape[0], chunk_tokens):
                    h = flat[start : start + chunk_tokens].to(compute_dtype)
                    logits = h @ w.t()
                    if bias is not None:
                        logits = logits + bias.to(compute_dtype)
                    logits = logits.float()
                    y = targets[start : start + chunk_tokens]
                    valid = (y != IGNORE_INDEX).unsqueeze(1)
                    safe = y.clamp(min=0).unsqueeze(1)
                    log_z = torch.logsumexp(logits, dim=-1, keepdim=True)
                    total += ((log_z - logits.gather(1, safe)) * valid).sum()
                    grad = torch.exp(logits - log_z)  # softmax, then minus one-hot, masked
                    grad.scatter_add_(1, safe, -torch.ones_like(safe, dtype=grad.dtype))
                    grad = (grad * valid).to(compute_dtype)
                    grad_hidden[start : start + chunk_tokens] = (grad @ w).to(flat.dtype)
                    grad_weight += (grad.t() @ h).float()
                    if grad_bias is not None:
                        grad_bias += grad.float().sum(0)
            ctx.save_for_backward(grad_hidden, grad_weight, grad_bias if grad_bias is not None else torch.empty(0))
            ctx.shapes = (hidden.shape, weight.dtype, bias.dtype if bias is not None else None)
            return total

        @staticmethod
        def backward(ctx, grad_total):
            grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
            hidden_shape, weight_dtype, bias_dtype = ctx.shapes
            d_hidden = (grad_hidden * grad_total).reshape(hidden_shape)
            d_weight = (grad_weight * grad_total).to(weight_dtype)
            d_bias = (grad_bias * grad_total).to(bias_dtype) if bias_dtype is not None else None
            return d_hidden, d_weight, d_bias, None, None, None

    return ChunkedLinearCrossEntropy


_FUNCTION = None


def chunked_loss(hidden, weight, bias, labels, chunk_tokens: int):
    """Summed CE of ``hidden @ weight.T (+ bias)`` against ``labels``, ``chunk_tokens`` rows at a time.

    Under autocast the products run in the autocast dtype (as the plain path's LM head does), the
    softmax in fp32."""
    import torch

    global _FUNCTION
    if _FUNCTION is None:
        _FUNCTION = _chunked_function()
    device_type = hidden.device.type
    compute_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else weight.dtype
    return _FUNCTION.apply(hidden, weight, bias, labels, chunk_tokens, compute_dtype)


@contextlib.contextmanager
def head_computes_loss(model, labels, chunk_tokens: int):
    """While active, ``model``'s LM head returns the summed chunked loss against ``labels``."""
    head = model.get_output_embeddings()

    def forward(hidden):
        return chunked_loss(hidden, head.weight, head.bias, labels, chunk_tokens)

    head.forward = forward
    try:
        yield
    finally:
        del head.forward  # back to the class's forward
