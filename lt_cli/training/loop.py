"""The M-step training loop: ``train(config) -> TrainResult``.

One function serves ``lt train``, ``torchrun ... -m lt_cli train`` and in-process callers (the
bootstrap driver and the CPU demo): everything heavy is imported inside, the model is passed by
path, and a world of one never touches ``torch.distributed`` process groups.

Output folder (docs/training.md): the final model in Hugging Face format at ``DIR/`` (safetensors +
tokenizer, loadable by transformers, vLLM and lm-eval), ``DIR/train_config.json`` (the resolved
config), ``DIR/metrics.jsonl`` (one line per step), ``DIR/train_result.json`` (written last: the run
is complete) and ``DIR/checkpoints/step-N/`` (resumable state every ``save_every`` steps).
Rerunning the same command resumes from the newest checkpoint; the final weights are then bitwise
identical to an uninterrupted run (same world size and micro-batch size).
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..console import log, progress, warn
from ..errors import LtError, UsageError
from ..files import read_json, write_json
from ..interrupts import raise_if_received
from . import checkpoint as ckpt
from . import validation
from .config import TrainConfig, lr_at, resolve_warmup, steps_for_tokens
from .data import IGNORE_INDEX, StreamPosition, TokenStream, load_documents
from .throughput import ThroughputMeter, model_flops, resolve_peak
from .distributed import DistEnv, all_reduce_sum, broadcast_object, gather_objects, init_distributed, resolve_strategy, shutdown, wrap_model
from .model_io import count_params, load_model_and_tokenizer_for_training, save_final_model
from .reporting import METRICS_FILE, MetricsReporter
from .compiling import compile_layers
from .loss import full_loss, head_computes_loss, resolve_loss_impl

CONFIG_FILE = "train_config.json"  # models.LT_TRAINED_MARKER: its presence marks a model lt trained
RESULT_FILE = "train_result.json"


@dataclass
class TrainResult:
    """What a finished run produced. ``checkpoint_dir`` is the final model (HF format)."""

    checkpoint_dir: str
    steps: int
    tokens_seen: int
    final_loss: float | None
    metrics_path: str
    config_path: str
    resumed_from_step: int = 0
    elapsed_s: float = 0.0
    tokens_per_s: float | None = None
    tokens_per_s_per_device: float | None = None
    mfu: float | None = None  # training/throughput.py: model FLOPs per token x tokens/s per device / peak
    model_flops_per_token: int | None = None
    peak_tflops: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------ helpers
def _resolve_total_steps(config: TrainConfig, stream: TokenStream, env: DistEnv) -> int:
    if config.steps is not None:
        return config.steps
    if config.tokens is not None:
        return steps_for_tokens(config.tokens, config.batch_size, config.seq_len)
    epochs = config.epochs if config.epochs is not None else 1.0
    epoch_tokens = stream.count_epoch_tokens(0)
    if stream.shard_count > 1:  # each rank counted its own documents
        import torch

        total = torch.tensor([epoch_tokens], dtype=torch.int64, device=env.device)
        epoch_tokens = int(all_reduce_sum(env, total).item())
    steps = int(epochs * epoch_tokens // config.tokens_per_step)
    if steps < 1:
        raise UsageError(
            f"{epochs:g} epoch(s) of {epoch_tokens:,} tokens is less than one step of {config.batch_size} x {config.seq_len} tokens; "
            "lower --batch-size/--seq-len or raise --epochs"
        )
    return steps


def _check_resume(output: Path, config: TrainConfig) -> None:
    """Refuse to mix two different runs in one folder."""
    saved_path = output / CONFIG_FILE
    if not saved_path.exists():
        return
    saved = TrainConfig.from_dict(read_json(saved_path)).trajectory_fields()
    current = config.trajectory_fields()
    for key, value in current.items():
        if value is None or value == "auto":
            continue  # resolved from the same inputs when the run started
        if saved.get(key) != value:
            raise UsageError(
                f"{output} holds a different run ({key}: {saved.get(key)!r} there, {value!r} now); "
                "pass --overwrite to start over or choose another --output"
            )


class _Prefetcher:
    """Builds the next global batches on a thread (tokenizers release the GIL) while the model
    trains; each batch carries the stream position after it, which is what checkpoints store."""

    def __init__(self, stream: TokenStream, batch_size: int, depth: int = 2):
        self.stream = stream
        self.batch_size = batch_size
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lt-train-data")
        self._thread.start()

    def _run(self) -> None:
        import numpy as np

        try:
            while not self._stop.is_set():
                windows = [self.stream.next_window() for _ in range(self.batch_size)]
                item = (np.stack([w[0] for w in windows]), np.stack([w[1] for w in windows]), self.stream.position())
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # surfaced in the training thread
            self._queue.put(exc)

    def next(self):
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# ------------------------------------------------------------------------------------ train
def train(config: TrainConfig) -> TrainResult:
    """Train (or resume, or return a finished run's result); see the module docstring."""
    config.validate()
    corpora = load_documents(config.sources, config.layout)  # bad records fail before torch loads
    import torch

    start_time = time.monotonic()
    output = Path(config.output)
    caller_rng = torch.get_rng_state()  # in-process callers get their RNG back untouched
    env = init_distributed(config.device, group_of_one=config.strategy in ("ddp", "fsdp"))
    try:
        if config.overwrite and env.is_main:
            ckpt.clear_run(output)
        if env.distributed:
            torch.distributed.barrier()
        _check_resume(output, config)
        finished = broadcast_object(env, read_json(output / RESULT_FILE) if (output / RESULT_FILE).exists() else None)
        if finished is not None:  # rank 0 decides, so every node agrees even without a shared folder
            result = TrainResult(**finished)
            if env.is_main:
                log(f"{output}: training already complete ({result.steps} steps); pass --overwrite to retrain")
            return result

        use_bf16 = config.dtype == "bfloat16" or (config.dtype == "auto" and env.device.type == "cuda")
        dtype_name = "bfloat16" if use_bf16 else "float32"

        model, tokenizer = load_model_and_tokenizer_for_training(config)
        weights = [s.weight for s in config.sources]

        rank_sharded = config.data_sharding == "rank" and env.distributed

        def make_stream(position: StreamPosition = StreamPosition()) -> TokenStream:
            return TokenStream(corpora, weights, tokenizer, layout=config.layout, seq_len=config.seq_len, seed=config.seed,
                               shuffle=config.shuffle, loss_on=config.loss_on, position=position,
                               shard_index=env.rank if rank_sharded else 0, shard_count=env.world_size if rank_sharded else 1)

        max_positions = getattr(model.config, "max_position_embeddings", None)
        if env.is_main and max_positions and config.seq_len > max_positions:
            warn(f"--seq-len {config.seq_len} exceeds the model's max_position_embeddings ({max_positions})")
        total_steps = _resolve_total_steps(config, make_stream(), env)
        warmup = resolve_warmup(config.warmup_steps, total_steps, config.max_warmup_fraction)
        if env.is_main and warmup >= total_steps > 0:
            warn(
                f"warmup ({warmup} steps) is not shorter than the run ({total_steps} steps): the learning rate only reaches "
                f"{min(total_steps / warmup, 1.0) if warmup else 1.0:.3g} x --lr and never decays, as with the reference's scheduler; "
                "pass --warmup-steps N or --max-warmup-fraction 0.1 for a short run"
            )

        if config.batch_size % env.world_size:
            raise UsageError(f"--batch-size {config.batch_size} is not divisible by the world size {env.world_size}")
        per_rank = config.batch_size // env.world_size
        micro = config.micro_batch_size or per_rank
        if per_rank % micro:
            raise UsageError(f"{per_rank} sequences per rank are not divisible by --micro-batch-size {micro}")
        accumulation = per_rank // micro

        strategy = resolve_strategy(config.strategy, env, count_params(model))
        validation.check_validation_settings(config, strategy)
        flops = model_flops(model, config.seq_len)
        peak_tflops, peak_source = resolve_peak(config.peak_tflops, env.device, dtype_name)
        loss_impl = resolve_loss_impl(config.loss, env.device.type, model)
        resolved = replace(config, micro_batch_size=micro, dtype=dtype_name, loss=loss_impl, strategy=strategy if strategy != "none" else config.strategy,
                           device=str(env.device.type), overwrite=False)
        torch.manual_seed(config.seed)
        model.to(env.device)
        wrapped = wrap_model(model, strategy, env, bf16=use_bf16)
        if config.compile:
            n_compiled = compile_layers(model)
            if env.is_main:
                log(f"--compile: {n_compiled} transformer layers compiled (the first step includes the compile time)")
        optimizer = torch.optim.AdamW(
            wrapped.parameters(), lr=config.lr, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_eps,
            weight_decay=config.weight_decay, fused=env.device.type == "cuda",  # FSDP2 too: fused AdamW takes DTensors
        )

        step, tokens_seen, last_loss, position = 0, 0, None, StreamPosition()
        latest = ckpt.latest_checkpoint(output) if env.is_main else None
        latest_name = broadcast_object(env, str(latest) if latest is not None else None)
        latest = Path(latest_name) if latest_name is not None else None
        if latest is not None and not (latest / "state.json").exists():
            raise LtError(f"rank {env.rank} cannot read checkpoint {latest}: put --output on a filesystem every node sees")
        if latest is not None:
            state = ckpt.load_checkpoint(latest, wrapped, optimizer, env)
            step, tokens_seen, last_loss = state["step"], state["tokens_seen"], state.get("loss")
            if "positions" in state:  # per-rank streams (--data-sharding rank)
                if len(state["positions"]) != env.world_size or not rank_sharded:
                    raise UsageError(
                        f"{latest} was saved by {len(state['positions'])} rank-sharded processes; "
                        "resume it with the same world size and --data-sharding rank"
                    )
                position = StreamPosition(**state["positions"][env.rank])
            else:
                if rank_sharded and state["position"] != StreamPosition().to_dict():
                    raise UsageError(f"{latest} was saved with --data-sharding global; resume it the same way")
                position = StreamPosition(**state["position"])
            if env.is_main:
                log(f"resuming from {latest} (step {step}/{total_steps})")
        resumed_from = step
        if env.is_main:
            output.mkdir(parents=True, exist_ok=True)
            write_json(output / CONFIG_FILE, resolved.to_dict())
            log(
                f"training {count_params(model) / 1e6:.2f}M params on {env.world_size} x {env.device.type} ({strategy}, {dtype_name}): "
                f"{total_steps} steps x {config.batch_size} seqs x {config.seq_len} tokens, warmup {warmup}, "
                f"accumulation {accumulation} x micro-batch {micro}, {loss_impl} loss"
            )
            log(f"MFU: {flops.per_token / 1e9:.3g} GFLOP per token against "
                + (f"{peak_tflops:g} TFLOP/s per device ({peak_source})" if peak_tflops else f"no peak ({peak_source})"))

        reporter = MetricsReporter(output, config, step, enabled=env.is_main)
        stream = make_stream(position)
        prefetcher = _Prefetcher(stream, per_rank if rank_sharded else config.batch_size) if step < total_steps else None
        autocast = (torch.autocast(device_type=env.device.type, dtype=torch.bfloat16) if use_bf16 and strategy != "fsdp" else contextlib.nullcontext())
        rank_rows = slice(None) if rank_sharded else slice(env.rank * per_rank, (env.rank + 1) * per_rank)
        trained_time, trained_tokens = 0.0, 0
        meter = ThroughputMeter(flops, peak_tflops, env.world_size, total_steps, step)
        try:
            # the one progress printer of the run: done/total steps, steps/s, tokens/s, ETA, loss
            bar_context = progress("train", total=total_steps, unit="steps", every=config.log_every) if env.is_main else contextlib.nullcontext()
            with bar_context as bar:
                if bar is not None:
                    bar.resume(step)
                while step < total_steps:
                    raise_if_received()  # an interrupt a library swallowed stops training at the next step
                    step_start = time.perf_counter()
                    input_ids, labels, position = prefetcher.next()
                    n_label_tokens = int((labels != IGNORE_INDEX).sum())
                    if rank_sharded:  # each rank holds only its rows: count the global batch's labels
                        if config.loss_on == "all":
                            n_label_tokens = config.tokens_per_step
                        else:
                            count = torch.tensor([n_label_tokens], dtype=torch.int64, device=env.device)
                            n_label_tokens = int(all_reduce_sum(env, count).item())
                    lr = lr_at(step, lr=config.lr, warmup_steps=warmup, total_steps=total_steps, min_lr_ratio=config.min_lr_ratio)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    local_ids = torch.from_numpy(input_ids[rank_rows]).to(env.device, non_blocking=True)
                    local_labels = torch.from_numpy(labels[rank_rows]).to(env.device, non_blocking=True)
                    loss_sum = torch.zeros((), dtype=torch.float32, device=env.device)
                    # DDP/FSDP average gradients over ranks; scale so the result is sum / n_label_tokens.
                    scale = env.world_size / max(n_label_tokens, 1)
                    for m in range(accumulation):
                        rows = slice(m * micro, (m + 1) * micro)
                        sync = m == accumulation - 1
                        if strategy == "fsdp":
                            wrapped.set_requires_gradient_sync(sync)
                        no_sync = wrapped.no_sync() if (strategy == "ddp" and not sync) else contextlib.nullcontext()
                        with no_sync, autocast:
                            if loss_impl == "chunked":  # the LM head returns the summed loss (training/loss.py)
                                with head_computes_loss(model, local_labels[rows], config.loss_chunk_tokens):
                                    micro_loss = wrapped(input_ids=local_ids[rows], use_cache=False).logits
                            else:
                                micro_loss = full_loss(wrapped(input_ids=local_ids[rows], use_cache=False).logits, local_labels[rows])
                        (micro_loss * scale).backward()
                        loss_sum += micro_loss.detach()
                    grad_norm = torch.nn.utils.clip_grad_norm_(wrapped.parameters(), config.grad_clip)
                    if hasattr(grad_norm, "full_tensor"):
                        grad_norm = grad_norm.full_tensor()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    all_reduce_sum(env, loss_sum)
                    last_loss = loss_sum.item() / max(n_label_tokens, 1)
                    if not math.isfinite(last_loss):
                        raise LtError(f"loss is {last_loss} at step {step + 1}; lower --lr or check the data")
                    step += 1
                    tokens_seen += config.tokens_per_step
                    elapsed = time.perf_counter() - step_start
                    trained_time += elapsed
                    trained_tokens += config.tokens_per_step
                    record = {
                        "step": step, "loss": round(last_loss, 6), "lr": lr, "grad_norm": round(float(grad_norm), 6),
                        "tokens_seen": tokens_seen, "tokens_per_s": round(config.tokens_per_step / elapsed, 1),
                        **meter.step(config.tokens_per_step, elapsed),
                        "epoch": position.epoch, "elapsed_s": round(time.monotonic() - start_time, 3),
                    }
                    reporter.write(record)
                    if env.is_main:
                        bar.advance(tokens=config.tokens_per_step, status=f"loss {last_loss:.4f} lr {lr:.3g} {meter.describe(eta=False)}")
                    if validation.due(config, step, total_steps):
                        if env.is_main:
                            val_record = validation.validate(model, tokenizer, config, step, autocast=autocast if use_bf16 else None)
                            reporter.write(val_record)
                            log(f"step {step}/{total_steps} " + " ".join(f"{k} {v:.4f}" for k, v in val_record.items() if k.endswith("_per_token")))
                        if env.distributed:
                            torch.distributed.barrier()
                    if config.save_every and step % config.save_every == 0 and step < total_steps:
                        where = ({"positions": gather_objects(env, position.to_dict())} if rank_sharded else {"position": position.to_dict()})
                        ckpt.save_checkpoint(output, step, wrapped, optimizer,
                                             {"tokens_seen": tokens_seen, "loss": last_loss, **where, "total_steps": total_steps},
                                             env, keep=config.keep_checkpoints)
        finally:
            if prefetcher is not None:
                prefetcher.close()
            reporter.close()

        save_final_model(output, model, wrapped, tokenizer, strategy, torch.bfloat16 if use_bf16 else torch.float32, env)
        result = TrainResult(
            checkpoint_dir=str(output), steps=step, tokens_seen=tokens_seen, final_loss=last_loss,
            metrics_path=str(output / METRICS_FILE), config_path=str(output / CONFIG_FILE), resumed_from_step=resumed_from,
            elapsed_s=round(time.monotonic() - start_time, 3),
            tokens_per_s=round(trained_tokens / trained_time, 1) if trained_time > 0 else None,
            tokens_per_s_per_device=meter.totals()[0], mfu=meter.totals()[1], model_flops_per_token=flops.per_token, peak_tflops=peak_tflops,
        )
        if env.is_main:
            write_json(output / RESULT_FILE, result.to_dict())
            log(f"saved {output} ({step} steps, {tokens_seen:,} tokens, final loss {last_loss:.4f})" if last_loss is not None else f"saved {output}")
        if env.distributed:
            torch.distributed.barrier()
        return result
    finally:
        shutdown(env)
        torch.set_rng_state(caller_rng)
