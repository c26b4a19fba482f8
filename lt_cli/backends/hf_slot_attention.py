"""Attention for the slot engine's decode step (hf_engine.py), in two kernels.

Why two: the slot buffers hold ``C`` columns per row, enough for the longest prompt of the call plus
``max_new_tokens``, while a row's context is usually much shorter. Decoding is memory-bound, and
SDPA with a mask reads every column of every row (in the GPU check, 896 columns for a mean context
of about 340). ``"flex"`` builds a block mask from each row's length instead, so FlexAttention reads
only the 128-column blocks a row has written; it needs the compiled step (eager FlexAttention is a
reference implementation) and is chosen explicitly until a GPU measurement makes it the default
(docs/backends.md).

* ``"sdpa"``: each K/V head serves its group of G query heads as G queries (no repeated K/V), with
  the engine's boolean ``[S, 1, 1, C]`` mask.
* ``"flex"``: ``torch.nn.attention.flex_attention`` with grouped-query attention and a
  :class:`BlockMask` whose row ``b`` covers blocks ``[0, write_col[b] // 128]``; inside the last
  block the mask keeps columns up to the row's write column.

Both are registered under one name with transformers' ``AttentionInterface``; the step passes the
boolean mask or the block mask as ``attention_mask`` (transformers hands a 4-D mask through as it is),
and the function picks the kernel by the mask's type.
"""

from __future__ import annotations

#: the name the engine's attention function is registered under (transformers' AttentionInterface)
ATTENTION_NAME = "lt_slots"
#: attention kernels the slot engine offers (``options["attention"]``)
ATTENTIONS = ("sdpa", "flex")
#: columns per FlexAttention block (also the engine's column alignment, so blocks tile the buffer)
FLEX_BLOCK = 128


def slot_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Decode attention over the slot buffers. ``query`` is ``[S, heads, 1, head dim]``, ``key`` and
    ``value`` the layer's whole ``[S, kv heads, C, head dim]`` buffers. Returns ``[S, 1, heads, head
    dim]`` as transformers' SDPA does."""
    slots, heads, q_len, head_dim = query.shape
    if q_len != 1:
        raise RuntimeError("slot attention is for one-token decode steps")
    if not hasattr(attention_mask, "dtype"):  # a BlockMask
        from torch.nn.attention.flex_attention import flex_attention

        out = flex_attention(query, key, value, block_mask=attention_mask, scale=scaling, enable_gqa=key.shape[1] != heads)
        return out.transpose(1, 2), None
    import torch.nn.functional as F

    kv_heads = key.shape[1]
    grouped = query.reshape(slots, kv_heads, heads // kv_heads, head_dim)
    out = F.scaled_dot_product_attention(grouped, key, value, attn_mask=attention_mask, scale=scaling)
    return out.reshape(slots, heads, 1, head_dim).transpose(1, 2), None


def boolean_mask(columns, write_cols):
    """``[S, 1, 1, C]``: row ``b`` attends to columns ``<= write_cols[b]``."""
    return (columns <= write_cols.unsqueeze(1)).unsqueeze(1).unsqueeze(1)


def block_mask(torch, columns, write_cols):
    """The FlexAttention block mask of the same rule: row ``b`` reads blocks up to the one holding
    ``write_cols[b]``, and only the last of them is masked column by column."""
    from torch.nn.attention.flex_attention import BlockMask

    slots, n_blocks = write_cols.shape[0], columns.shape[0] // FLEX_BLOCK
    last = (write_cols // FLEX_BLOCK).to(torch.int32)
    blocks = torch.arange(n_blocks, device=columns.device, dtype=torch.int32)
    # partial: only the block holding the write column; full: every block before it
    partial_n = torch.ones((slots, 1, 1), device=columns.device, dtype=torch.int32)
    partial_idx = torch.cat([last.view(slots, 1, 1, 1), blocks[: n_blocks - 1].view(1, 1, 1, -1).expand(slots, 1, 1, -1)], dim=-1)
    full_n = last.view(slots, 1, 1)
    full_idx = blocks.view(1, 1, 1, -1).expand(slots, 1, 1, -1).contiguous()

    def keep(b, h, q, kv):
        return kv <= write_cols[b]

    return BlockMask.from_kv_blocks(partial_n, partial_idx.contiguous(), full_n, full_idx, BLOCK_SIZE=FLEX_BLOCK, mask_mod=keep,
                                    seq_lengths=(1, columns.shape[0]), compute_q_blocks=False)


_registered = False


def register() -> None:
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(ATTENTION_NAME, slot_attention)
        _registered = True
