"""Train throughput of ``lt train`` against a bare PyTorch loop on the same model and batch.

    python bench/train.py [--quick] [--model M | --hidden 256 --layers 4] [--seq-len 256] [--batch-size 8]

The bare loop is the least a training step can do: fixed token tensors already on the device,
forward, summed cross-entropy, backward, grad clip, AdamW step (same hyperparameters, same
autocast). ``lt``'s loop adds rendering, tokenizing and packing (on a prefetch thread), loss
bookkeeping, metrics and the scheduler. Throughput is measured over steady-state steps (the first
``--skip`` steps of each run are excluded); the two are interleaved ``--rounds`` times and the best
of each kept, to damp noise from other processes. The last stdout line is one JSON object with
``train_ratio`` = lt tokens/s / bare tokens/s (goal >= 0.95).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_corpus(path: Path, n_docs: int = 400) -> None:
    """Augmented documents (random layout) from the test fixture, with stand-in latents."""
    from lt_cli.io import read_all
    from lt_cli.chunking import ensure_chunks

    records = read_all(REPO / "tests" / "fixtures" / "math_docs.jsonl")
    with open(path, "w") as f:
        for i in range(n_docs):
            doc = ensure_chunks(records[i % len(records)])
            doc["id"] = f"bench-{i}"
            for j, chunk in enumerate(doc["chunks"]):
                chunk["latent"] = f"Thought {i}.{j}: " + " ".join(reversed(chunk["text"].split()))
            f.write(json.dumps(doc) + "\n")


def bare_loop(model_source: dict, seq_len: int, batch_size: int, steps: int, skip: int, dtype: str | None = None) -> float:
    """Tokens/s of the minimal loop (same model construction, same optimizer settings)."""
    return bare_loop_stats(model_source, seq_len, batch_size, steps, skip, dtype)["tokens_per_s"]


def bare_loop_stats(model_source: dict, seq_len: int, batch_size: int, steps: int, skip: int, dtype: str | None = None,
                    compile: bool = False) -> dict:
    """The bare loop's steady tokens/s, its first loss, peak device memory and FLOPs per token.

    ``dtype``: None = bf16 autocast on a GPU and fp32 on a CPU (lt train's ``auto``), or
    "bfloat16" / "float32" explicitly (bf16 autocast works on a CPU too). ``compile``: each
    transformer layer compiled as ``lt train --compile`` does (training/compiling.py), so the two
    are compared under the same compile settings.
    """
    import torch
    import torch.nn.functional as F

    from lt_cli.training.config import TrainConfig
    from lt_cli.training.loop import load_model_and_tokenizer_for_training
    from lt_cli.training.throughput import model_flops

    config = TrainConfig(output="unused", data=["unused"], **model_source)
    model, tokenizer = load_model_and_tokenizer_for_training(config)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    if compile:
        from lt_cli.training.compiling import compile_layers

        compile_layers(model)
    use_bf16 = dtype == "bfloat16" or (dtype is None and device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01, fused=device.type == "cuda")
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(tokenizer), (batch_size, seq_len + 1), generator=generator).to(device)
    inputs, labels = ids[:, :-1], ids[:, 1:]
    times, losses = [], []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(input_ids=inputs, use_cache=False).logits
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), labels.reshape(-1), reduction="sum")
        (loss / labels.numel()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item() / labels.numel())  # lt reads the loss every step too
        times.append(time.perf_counter() - start)
    steady = times[skip:]
    peak_memory = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    return {
        "tokens_per_s": batch_size * seq_len * len(steady) / sum(steady),
        "first_loss": losses[0],
        "peak_memory_bytes": peak_memory,
        "model_flops_per_token": model_flops(model, seq_len).per_token,
        "params": sum(p.numel() for p in model.parameters()),
        "dtype": "bfloat16" if use_bf16 else "float32",
        "compiled": compile,
    }


def lt_loop(model_source: dict, data: Path, out: Path, seq_len: int, batch_size: int, steps: int, skip: int) -> tuple[float, float]:
    """(steady-state tokens/s from metrics.jsonl, wall seconds of the whole train() call)."""
    from lt_cli.training import TrainConfig, train

    start = time.perf_counter()
    result = train(TrainConfig(output=str(out), data=[str(data)], layout="random", seq_len=seq_len, batch_size=batch_size,
                               steps=steps, log_every=10**9, overwrite=True, **model_source))
    wall = time.perf_counter() - start
    step_times = [batch_size * seq_len / json.loads(line)["tokens_per_s"] for line in Path(result.metrics_path).read_text().splitlines()]
    steady = step_times[skip:]
    return batch_size * seq_len * len(steady) / sum(steady), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model, few steps (about 20 s on 2 CPU cores)")
    parser.add_argument("--model", help="a causal LM folder or hub id instead of a tiny Llama")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--skip", type=int, default=5, help="warm-up steps excluded from the rate")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 leaves a core for lt's data thread)")
    args = parser.parse_args()
    if args.quick:
        args.hidden, args.layers, args.seq_len, args.batch_size, args.steps, args.skip, args.rounds = 128, 3, 128, 8, 15, 3, 3

    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="lt-bench-train-") as tmp:
        tmp_path = Path(tmp)
        data = tmp_path / "augmented.jsonl"
        make_corpus(data)
        if args.model:
            model_source = {"model": args.model}
            model_name = args.model
        else:
            tiny = tmp_path / "tiny.json"
            heads = max(args.hidden // 32, 1)
            tiny.write_text(json.dumps({"hidden_size": args.hidden, "num_layers": args.layers, "num_heads": heads,
                                        "num_kv_heads": heads, "intermediate_size": 2 * args.hidden}))
            model_source = {"init_config": str(tiny)}
            model_name = f"tiny-llama(hidden={args.hidden}, layers={args.layers}, byte vocab)"
        bare_rates, lt_rates, lt_walls = [], [], []
        for round_index in range(args.rounds):
            bare_rates.append(bare_loop(model_source, args.seq_len, args.batch_size, args.steps, args.skip))
            rate, wall = lt_loop(model_source, data, tmp_path / "out", args.seq_len, args.batch_size, args.steps, args.skip)
            lt_rates.append(rate)
            lt_walls.append(wall)
            print(f"round {round_index + 1}: bare {bare_rates[-1]:,.0f} tok/s, lt {lt_rates[-1]:,.0f} tok/s", file=sys.stderr)
    bare, lt = max(bare_rates), max(lt_rates)
    print(json.dumps({
        "bench": "train",
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
        "model": model_name,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "steady_steps": args.steps - args.skip,
        "bare_tokens_per_s": round(bare, 1),
        "lt_tokens_per_s": round(lt, 1),
        "lt_wall_s_median": round(statistics.median(lt_walls), 2),
        "train_ratio": round(lt / bare, 3),
    }))


if __name__ == "__main__":
    main()
