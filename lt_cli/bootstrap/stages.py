"""The stages of a bootstrap run: what each one reads, writes and reports.

Every stage has a key (``warm/train``, ``k4/iter2/sample``...), a folder under the run folder, an
in-process implementation (:meth:`Stage.run`) that calls the owning library (training, estep,
evaluation, demo), and the equivalent ``lt`` command lines (:meth:`Stage.commands`) used by
``--launcher`` and printed by ``--dry-run``. A stage returns a small JSON-able ``result`` dict that
the manifest keeps and the report reads: the report never looks at anything else, so a resumed run
reports what an uninterrupted one would.

Interrupted stages are made safe to rerun: training wipes its output folder first (it restarts
from its seed, so it ends with the same weights); sampling continues its ``.partial`` file (samples
are seeded per document, chunk and index, so the file ends identical); the other stages are cheap
and write their files atomically.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..io import read_all, read_json, write_json
from .config import BootstrapConfig

Result = dict[str, Any]


@dataclass
class RunContext:
    config: BootstrapConfig
    run_dir: Path
    #: results of finished stages by key (filled as the plan executes)
    results: dict[str, Result] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.run_dir.joinpath(*parts)


@dataclass
class Stage:
    key: str
    kind: str  # corpus | synthesize | train | eval | sample | select
    run: Callable[[RunContext], Result]
    commands: Callable[[RunContext], list[list[str]]]
    #: after the commands ran through a launcher: read the outputs back into a result
    collect: Callable[[RunContext], Result] | None = None
    #: the command needs torchrun/srun when the launcher is distributed (training)
    distributed: bool = False
    #: True for a config: run in this process even under --launcher
    in_process_only: Callable[[BootstrapConfig], bool] | None = None


# ------------------------------------------------------------------------------------ models
def base_model_args(ctx: RunContext) -> dict[str, str]:
    """Where every from-scratch training starts: ``model`` or the demo's ``init_config``."""
    if ctx.config.demo:
        return {"init_config": str(ctx.path("data", "init_config.json"))}
    return {"model": str(ctx.config.model)}


def checkpoint_of(ctx: RunContext, train_key: str, folder: Path) -> str:
    result = ctx.results.get(train_key)
    if result and result.get("checkpoint"):
        return str(result["checkpoint"])
    return str(folder / "model")  # planned location (dry run, or before the stage ran)


# ------------------------------------------------------------------------------------ demo corpus
def demo_corpus_stage() -> Stage:
    def run(ctx: RunContext) -> Result:
        from ..demo import DEMO_MODEL, DemoCorpusConfig, write_demo_corpus

        corpus_config = DemoCorpusConfig(**ctx.config.demo_corpus)
        files = write_demo_corpus(ctx.path("data"), corpus_config)
        write_json(ctx.path("data", "init_config.json"), {**DEMO_MODEL, **ctx.config.demo_model})
        return {
            "raw": str(files.raw),
            "warm": str(files.warm),
            "teacher": str(files.teacher),
            "heldout": str(files.heldout),
            "n_train": corpus_config.n_train,
            "n_warm": corpus_config.n_warm,
            "n_heldout": corpus_config.n_heldout,
            "chance_accuracy": corpus_config.chance_accuracy,
        }

    def commands(ctx: RunContext) -> list[list[str]]:
        return [["# in-process: write the demo corpus and the tiny model config to", str(ctx.path("data"))]]

    return Stage("demo/corpus", "corpus", run, commands)


# ------------------------------------------------------------------------------------ synthesize
def synthesize_stage() -> Stage:
    def out(ctx: RunContext) -> Path:
        return ctx.path("warm", "teacher.jsonl")

    def commands(ctx: RunContext) -> list[list[str]]:
        c = ctx.config
        return [["synthesize", "--backend", c.teacher_backend, "--model", str(c.teacher_model), str(c.synthesize), "-o", str(out(ctx))]]

    def collect(ctx: RunContext) -> Result:
        if not out(ctx).exists():
            from ..errors import LtError

            raise LtError(f"synthesize finished but {out(ctx)} is missing")
        return {"teacher_data": str(out(ctx)), "n_documents": sum(1 for _ in read_all(out(ctx)))}

    def run(ctx: RunContext) -> Result:
        # The teacher is usually an HTTP API: run the stage's own command (it has its own cache).
        _run_cli(commands(ctx)[0])
        return collect(ctx)

    return Stage("warm/synthesize", "synthesize", run, commands, collect)


def _run_cli(argv: list[str]) -> None:
    import subprocess

    from ..errors import LtError

    completed = subprocess.run([sys.executable, "-m", "lt_cli", *argv])
    if completed.returncode != 0:
        raise LtError(f"`lt {' '.join(argv)}` failed with exit code {completed.returncode}")


# ------------------------------------------------------------------------------------ training
def train_config_fields(ctx: RunContext, *, output: Path, data: list[str], start: dict[str, str], steps: int | None, tokens: int | None, layout: str, seed: int) -> dict[str, Any]:
    c = ctx.config
    fields_ = {
        "output": str(output),
        "data": list(data),
        **start,
        "layout": layout,
        "seq_len": c.seq_len,
        "batch_size": c.batch_size,
        "lr": c.lr,
        "seed": seed,
        "dtype": c.dtype,
        "save_every": c.save_every,
    }
    if c.warmup_steps is not None:
        fields_["warmup_steps"] = c.warmup_steps
    if steps is not None:
        fields_["steps"] = steps
    elif tokens is not None:
        fields_["tokens"] = tokens
    fields_.update(c.train_extra)
    return fields_


def _train_argv(fields_: dict[str, Any]) -> list[str]:
    argv = ["train"]
    for key, value in fields_.items():
        flag = "--" + key.replace("_", "-")
        if key == "data":
            for spec in value:
                argv += ["--data", spec]
        elif isinstance(value, bool):
            if value:
                argv.append(flag)
        elif isinstance(value, list):
            for item in value:
                argv += [flag, str(item)]
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def train_stage(key: str, folder_parts: tuple[str, ...], fields_fn: Callable[[RunContext], dict[str, Any]]) -> Stage:
    """A training stage; ``fields_fn`` builds the TrainConfig fields (paths resolved at run time)."""

    def folder(ctx: RunContext) -> Path:
        return ctx.path(*folder_parts)

    def commands(ctx: RunContext) -> list[list[str]]:
        return [_train_argv(fields_fn(ctx))]

    def collect(ctx: RunContext) -> Result:
        return _train_result_from_folder(folder(ctx) / "model")

    def run(ctx: RunContext) -> Result:
        from ..training import TrainConfig, train

        # An interrupted attempt resumes from its last checkpoint (train guarantees the same final
        # weights); a finished folder is returned as is.
        result = train(TrainConfig(**fields_fn(ctx)))
        return _train_result(result)

    return Stage(key, "train", run, commands, collect, distributed=True)


def _train_result(result: Any) -> Result:
    """The numbers the report needs from a TrainResult (checkpoint folder, tokens, loss)."""
    return {
        "checkpoint": str(result.checkpoint_dir),
        "n_tokens": int(result.tokens_seen),
        "steps": int(result.steps),
        "final_loss": _float(result.final_loss),
    }


def _train_result_from_folder(output: Path) -> Result:
    """After ``lt train`` ran through a launcher: read its ``train_result.json`` back."""
    from ..errors import LtError

    path = output / "train_result.json"
    if not path.exists():
        raise LtError(f"{output}: no train_result.json after `lt train` (did it fail?)")
    data = read_json(path)
    return {
        "checkpoint": str(data["checkpoint_dir"]),
        "n_tokens": int(data["tokens_seen"]),
        "steps": int(data["steps"]),
        "final_loss": _float(data.get("final_loss")),
    }


def _float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# ------------------------------------------------------------------------------------ eval
def eval_stage(key: str, folder_parts: tuple[str, ...], model_fn: Callable[[RunContext], str], variant: str) -> Stage:
    """Held-out evaluation of one checkpoint; ``variant`` is ``latent`` or ``raw`` (raw baseline).

    One ``lt eval`` per task, metrics in ``FOLDER/eval-TASK.json``. The ``demo`` task is registered
    by :mod:`lt_cli.demo.task`, which a fresh ``lt eval`` process does not import, so a run with the
    demo task evaluates in this process even under ``--launcher`` (it takes seconds).
    """

    def folder(ctx: RunContext) -> Path:
        return ctx.path(*folder_parts)

    def task_data(ctx: RunContext, task: str) -> str | None:
        if task != "demo":
            return ctx.config.eval_data if ctx.config.eval_data and "demo" not in ctx.config.eval_tasks else None
        return ctx.config.eval_data or str(ctx.path("data", "heldout.jsonl"))

    def eval_fields(ctx: RunContext, task: str) -> dict[str, Any]:
        c = ctx.config
        fields_: dict[str, Any] = {"task": task, "model": model_fn(ctx), "variant": variant, "backend": c.backend, "dtype": c.dtype,
                                   "log_samples": str(folder(ctx) / f"eval-{task}.samples.jsonl")}
        data = task_data(ctx, task)
        if data:
            fields_["data"] = data
        if c.eval_limit:
            fields_["limit"] = c.eval_limit
        if task == "demo":
            fields_["batch_size"] = 128
            fields_["max_new_tokens"] = c.eval_max_new_tokens or 64
        elif c.eval_max_new_tokens:
            fields_["max_new_tokens"] = c.eval_max_new_tokens
        return fields_

    def commands(ctx: RunContext) -> list[list[str]]:
        lines = []
        for task in ctx.config.eval_tasks:
            argv = ["eval"]
            for name, value in eval_fields(ctx, task).items():
                argv += ["--" + name.replace("_", "-"), str(value)]
            lines.append(argv + ["-o", str(folder(ctx) / f"eval-{task}.json")])
        return lines

    def collect(ctx: RunContext) -> Result:
        return _eval_result({task: read_json(folder(ctx) / f"eval-{task}.json") for task in ctx.config.eval_tasks})

    def run(ctx: RunContext) -> Result:
        from ..evaluation import EvalConfig, evaluate

        if "demo" in ctx.config.eval_tasks:
            from ..demo import task as _demo_task  # noqa: F401  (registers the task)
        metrics = {}
        for task in ctx.config.eval_tasks:
            metrics[task] = evaluate(EvalConfig(**eval_fields(ctx, task)))
            write_json(folder(ctx) / f"eval-{task}.json", metrics[task])
        return _eval_result(metrics)

    return Stage(key, "eval", run, commands, collect, in_process_only=lambda config: "demo" in config.eval_tasks)


def _eval_result(metrics: dict[str, Any]) -> Result:
    """Headline accuracy = the first task's ``accuracy``; every task's accuracy is kept."""
    per_task = {}
    for task, values in metrics.items():
        if isinstance(values, dict) and values.get("accuracy") is not None:
            per_task[task] = float(values["accuracy"])
    headline = next(iter(per_task.values()), None)
    return {"accuracy": headline, "tasks": per_task}


# ------------------------------------------------------------------------------------ E-step
def sample_stage(key: str, folder_parts: tuple[str, ...], model_fn: Callable[[RunContext], str], k: int, seed: int) -> Stage:
    """K posterior samples per chunk of every raw document, scored (lt sample-thoughts)."""

    def out(ctx: RunContext) -> Path:
        return ctx.path(*folder_parts, "candidates.jsonl")

    def data(ctx: RunContext) -> str:
        if ctx.config.demo:
            return str(ctx.path("data", "raw.jsonl"))
        return str(ctx.config.data)

    def commands(ctx: RunContext) -> list[list[str]]:
        c = ctx.config
        argv = [
            "sample-thoughts", "--model", model_fn(ctx), "--backend", c.backend, "--k", str(k),
            "--temperature", str(c.temperature), "--top-p", str(c.top_p), "--prefix-chunks", str(c.prefix_chunks),
            "--max-new-tokens", str(c.max_latent_tokens), "--seed", str(seed), data(ctx), "-o", str(out(ctx)),
        ]
        if c.estep_docs_per_call:
            argv += ["--docs-per-call", str(c.estep_docs_per_call)]
        return [argv]

    def collect(ctx: RunContext) -> Result:
        return _count_result(out(ctx), k)

    def run(ctx: RunContext) -> Result:
        from ..backends import load_backend
        from ..backends.base import BackendConfig
        from ..console import progress
        from ..estep import SampleConfig, sample_candidates
        from ..io import open_output
        from ..records import ensure_chunks

        c = ctx.config
        documents = [ensure_chunks(d) for d in read_all(data(ctx))]
        if c.estep_limit:
            documents = documents[: c.estep_limit]
        config = _sample_config(SampleConfig, c, k, seed)
        backend = load_backend(c.backend, BackendConfig(model=model_fn(ctx), dtype=c.dtype))
        try:
            with open_output(out(ctx), resume=True) as writer, progress(f"{key}: sample K={k}", total=len(documents), unit="docs") as bar:
                bar.advance(writer.done)
                # Whole input with skip: estep recomputes the interrupted group with the same batch.
                for document in sample_candidates(backend, documents, config, skip=writer.done):
                    writer.write(document)
                    bar.advance()
        finally:
            backend.close()
        return _count_result(out(ctx), k)

    return Stage(key, "sample", run, commands, collect)


def _sample_config(cls, c: BootstrapConfig, k: int, seed: int):
    """Build estep.SampleConfig from the bootstrap settings (only the fields it has)."""
    from dataclasses import fields as dc_fields

    wanted = {
        "k": k,
        "temperature": c.temperature,
        "top_p": c.top_p,
        "prefix_chunks": c.prefix_chunks,
        "max_new_tokens": c.max_latent_tokens,
        "seed": seed,
    }
    if c.estep_docs_per_call:
        wanted["docs_per_call"] = c.estep_docs_per_call
    names = {f.name for f in dc_fields(cls)}
    return cls(**{name: value for name, value in wanted.items() if name in names})


def _count_result(path: Path, k: int) -> Result:
    n_docs = n_chunks = 0
    for document in read_all(path):
        n_docs += 1
        n_chunks += sum(1 for chunk in document.get("chunks", []) if chunk.get("candidates"))
    return {"candidates": str(path), "k": k, "n_documents": n_docs, "n_chunks": n_chunks}


def _candidate_stats(path: Path, k: int) -> Result:
    """Importance-sampling diagnostics over all chunks that have candidates.

    ``elbo`` is the mean over documents of the summed per-chunk ELBO_K (logsumexp(log w) - log K);
    ``mean_log_w`` the mean over all candidates; ``ess`` the mean over chunks of 1/sum(p_j^2)
    (an addition of lt's, not in the reference).
    """
    from ..estep import effective_sample_size, elbo_n

    n_docs = n_chunks = n_candidates = n_latent_tokens = 0
    elbo_sum = log_w_sum = ess_sum = 0.0
    for document in read_all(path):
        n_docs += 1
        doc_elbo = 0.0
        for chunk in document.get("chunks", []):
            candidates = (chunk.get("candidates") or [])[:k]
            if not candidates:
                continue
            log_w = [float(cand["log_w"]) for cand in candidates]
            n_chunks += 1
            n_candidates += len(log_w)
            doc_elbo += elbo_n(log_w, len(log_w))
            log_w_sum += sum(log_w)
            ess_sum += effective_sample_size(log_w)
            n_latent_tokens += sum(int(cand.get("n_tokens", 0) or 0) for cand in candidates)
        elbo_sum += doc_elbo
    return {
        "n_documents": n_docs,
        "n_chunks": n_chunks,
        "n_candidates": n_candidates,
        "k": k,
        "elbo": elbo_sum / n_docs if n_docs else None,
        "mean_log_w": log_w_sum / n_candidates if n_candidates else None,
        "ess": ess_sum / n_chunks if n_chunks else None,
        "mean_latent_tokens": n_latent_tokens / n_candidates if n_candidates else None,
    }


def select_stage(key: str, folder_parts: tuple[str, ...], sample_key: str, candidates_fn: Callable[[RunContext], Path], seed: int, k: int | None = None) -> Stage:
    """One latent per chunk by importance resampling (lt select); ``k`` keeps the first k candidates.

    ``k`` lets a K sweep share one set of samples from the same model (``lt select --k``): samples
    are seeded by their index, so the first k of K samples are exactly what a K=k run would draw.
    """

    def out(ctx: RunContext) -> Path:
        return ctx.path(*folder_parts, "augmented.jsonl")

    def commands(ctx: RunContext) -> list[list[str]]:
        first = ["--k", str(k)] if k is not None else []
        return [["select", str(candidates_fn(ctx)), "--method", ctx.config.select_method, "--seed", str(seed), *first, "-o", str(out(ctx))]]

    def stats(ctx: RunContext) -> Result:
        k_used = k if k is not None else ctx.results.get(sample_key, {}).get("k", 10**9)
        return _candidate_stats(candidates_fn(ctx), k_used)

    def collect(ctx: RunContext) -> Result:
        return {"augmented": str(out(ctx)), **stats(ctx), "n_documents": sum(1 for _ in read_all(out(ctx)))}

    def run(ctx: RunContext) -> Result:
        from ..estep import first_candidates, select_document
        from ..io import open_output

        n = 0
        with open_output(out(ctx)) as writer:
            for document in read_all(candidates_fn(ctx)):
                if k is not None:
                    first_candidates(document, k)
                writer.write(select_document(document, ctx.config.select_method, seed))
                n += 1
        return {"augmented": str(out(ctx)), **stats(ctx), "n_documents": n}

    return Stage(key, "select", run, commands, collect)
