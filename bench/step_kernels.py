"""Kernels per decode step of the slot engine, eager against compiled, on this machine's device.

    python bench/step_kernels.py [--layers 22] [--rows 8]

Why: on a GPU the uncompiled decode step is bound by its number of small kernels, not by memory
(docs/performance.md). This counts them for a model with the TinyLlama-1.1B structure (22 layers,
32 query / 4 key-value heads; narrow, so it runs anywhere): the leaf aten operations of one eager
step (views and metadata left out), and for the compiled step the fused kernels inductor generates
plus the calls it leaves to external kernels (matrix products, attention, cumsum, searchsorted),
read from inductor's generated code. Prints one JSON line on stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: aten operations that launch no kernel of their own (views, metadata, allocation)
NO_KERNEL = {
    "aten::view", "aten::reshape", "aten::transpose", "aten::unsqueeze", "aten::squeeze", "aten::select", "aten::slice", "aten::expand",
    "aten::as_strided", "aten::t", "aten::_unsafe_view", "aten::permute", "aten::alias", "aten::detach", "aten::empty", "aten::empty_strided",
    "aten::resolve_conj", "aten::resolve_neg", "aten::split", "aten::unbind", "aten::contiguous", "aten::_reshape_alias", "aten::empty_like",
    "aten::result_type", "aten::item", "aten::_local_scalar_dense", "aten::to", "aten::_to_copy", "aten::lift_fresh",
}


def build_model(folder: Path, layers: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lt_cli.tiny import save_tiny_model

    save_tiny_model(folder)  # the byte tokenizer; the model is replaced below
    config = LlamaConfig(hidden_size=256, intermediate_size=704, num_hidden_layers=layers, num_attention_heads=32, num_key_value_heads=4,
                         vocab_size=263, max_position_embeddings=2048, bos_token_id=0, eos_token_id=1, pad_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def decoder_for(folder: Path, rows: int, compiled: bool):
    from lt_cli.backends import load_backend
    from lt_cli.backends.base import BackendConfig, SamplingParams

    backend = load_backend("transformers", BackendConfig(model=str(folder), batch_size=rows, max_model_len=256,
                                                         options={"engine": "slots", "compile": compiled}))
    backend.sample(["hello", "abc"], SamplingParams(n=2, max_new_tokens=4))
    return backend._decoder_cache[1]


def eager_ops(decoder) -> Counter:
    """Leaf aten operations of one step that launch a kernel."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        decoder.step()
    leaves = [e.name for e in prof.events() if e.name.startswith("aten::") and e.name not in NO_KERNEL
              and all(c.name in NO_KERNEL or not c.name.startswith("aten::") for c in e.cpu_children)]
    return Counter(leaves)


def compiled_kernels(code: str) -> Counter:
    """Kernel launches in inductor's generated ``call``: fused kernels and external calls."""
    calls = Counter()
    for line in code.splitlines():
        if m := re.match(r"\s+(cpp_fused_\w+|triton_\w+)(?:\.run)?\(", line):
            calls["fused"] += 1
        elif m := re.search(r"(extern_kernels\.\w+|torch\.ops\.aten\.\w+(?:\.\w+)?)\(", line):
            if not line.lstrip().startswith(("#", "def ")):
                calls[m.group(1)] += 1
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=22)
    parser.add_argument("--rows", type=int, default=8)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    folder = build_model(Path(tempfile.mkdtemp(prefix="lt-step-kernels-")), args.layers)
    eager = eager_ops(decoder_for(folder, args.rows, compiled=False))
    os.environ["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"  # generate the code, so it can be read
    from torch._inductor import codecache

    captured: list[str] = []
    original = codecache.PyCodeCache.load_by_key_path

    def capture(key, path, *a, **kw):
        captured.append(Path(path).read_text())
        return original(key, path, *a, **kw)

    codecache.PyCodeCache.load_by_key_path = capture
    decoder = decoder_for(folder, args.rows, compiled=True)
    compiled = Counter()
    for code in captured:
        compiled.update(compiled_kernels(code))
    n_eager, n_compiled = sum(eager.values()), sum(compiled.values())
    print(f"eager: {n_eager} kernel-launching ops per step; compiled ({decoder.mode}): {n_compiled}", file=sys.stderr)
    print(json.dumps({"benchmark": "step_kernels", "layers": args.layers, "rows": args.rows, "device": str(decoder.backend.device),
                      "eager_ops": n_eager, "compiled_kernels": n_compiled, "ratio": round(n_eager / max(1, n_compiled), 2),
                      "eager_top": dict(eager.most_common(8)), "compiled_by_kind": dict(compiled.most_common(8))}))


if __name__ == "__main__":
    main()
