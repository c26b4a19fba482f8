"""The stages of a bootstrap run: each is an ``lt`` command and the config it runs with.

A stage has a key (``warm/train``, ``k4/iter2/sample``...), a command (``train``, ``eval``,
``sample-thoughts``, ``select``, ``synthesize``) and a function that builds the command's config
when the stage runs (paths resolved then). :mod:`lt_cli.bootstrap.runner` runs that config either
in this process, through :func:`lt_cli.runners.run` (exactly what the command does after parsing its
flags), or through a launcher as the command line :func:`lt_cli.flags.to_argv` renders: one
implementation, two ways to start it. The stage's ``result`` (what the manifest keeps and the
report reads) is read back from the files the command wrote, so both ways report the same numbers.

Interrupted stages are safe to rerun: training resumes from its last checkpoint (and restarts from
its seed without one, ending with the same weights); sampling continues its ``.partial`` file and its
cache; the other stages are cheap and write their files atomically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..files import read_json, write_json
from ..io import read_all
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
    #: the ``lt`` command the stage runs; None: work done in this process only (the demo corpus)
    command: str | None
    #: the command's config(s), built when the stage runs (one per eval task; one otherwise)
    configs: Callable[[RunContext], list[Any]]
    #: the stage's result, read from the files its command(s) wrote
    result: Callable[[RunContext, list[Any]], Result]
    #: the command needs torchrun/srun when the launcher is distributed (training)
    distributed: bool = False
    #: for ``command=None``: the in-process work (returns the result)
    local: Callable[[RunContext], Result] | None = None
    #: a line describing ``local`` work in a dry run
    note: Callable[[RunContext], str] | None = None


# ------------------------------------------------------------------------------------ models
def base_model_args(ctx: RunContext) -> dict[str, str | None]:
    """Where every from-scratch training starts: ``model`` or the demo's ``init_config``."""
    if ctx.config.demo:
        return {"model": None, "init_config": str(ctx.path("data", "init_config.json"))}
    return {"model": str(ctx.config.model), "init_config": None}


def checkpoint_of(ctx: RunContext, train_key: str, folder: Path) -> str:
    result = ctx.results.get(train_key)
    if result and result.get("checkpoint"):
        return str(result["checkpoint"])
    return str(folder / "model")  # planned location (dry run, or before the stage ran)


def raw_data(ctx: RunContext) -> str:
    return str(ctx.path("data", "raw.jsonl")) if ctx.config.demo else str(ctx.config.data)


# ------------------------------------------------------------------------------------ demo corpus
def demo_corpus_stage() -> Stage:
    def local(ctx: RunContext) -> Result:
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

    return Stage(
        "demo/corpus", None, lambda ctx: [], lambda ctx, configs: {}, local=local,
        note=lambda ctx: f"# in-process: write the demo corpus and the tiny model config to {ctx.path('data')}",
    )


# ------------------------------------------------------------------------------------ synthesize
def synthesize_stage() -> Stage:
    def configs(ctx: RunContext) -> list[Any]:
        from ..session import BackendArgs
        from ..stream import StreamArgs
        from ..teacher import SynthesizeRun

        c = ctx.config
        stream = StreamArgs(input=str(c.synthesize), output=str(ctx.path("warm", "teacher.jsonl")))
        backend = BackendArgs(backend=c.teacher_backend, model=c.teacher_model)
        return [SynthesizeRun(stream=stream, backend=backend, synth=c.teacher, api=c.teacher_api)]

    def result(ctx: RunContext, configs: list[Any]) -> Result:
        out = configs[0].stream.output
        sidecar = Path(f"{out}.stats.json")
        usage = read_json(sidecar)["stats"].get("usage") if sidecar.exists() else None
        return {"teacher_data": out, "n_documents": sum(1 for _ in read_all(out)), "usage": usage}

    return Stage("warm/synthesize", "synthesize", configs, result)


# ------------------------------------------------------------------------------------ training
def train_config(
    ctx: RunContext, *, output: Path, data: list[str], start: dict[str, str | None], steps: int | None, tokens: int | None, layout: str,
    batch_size: int | None = None,
):
    """The training template with one stage's fields: output, data, start, budget, layout, seed
    (and the warm start's own batch size)."""
    c = ctx.config
    return replace(
        c.train, output=str(output), data=list(data), model=start["model"], init_config=start["init_config"], layout=layout,
        seed=c.seed, dtype=c.dtype, steps=steps, tokens=tokens if steps is None else None, batch_size=batch_size or c.train.batch_size,
    )


def train_stage(key: str, config_fn: Callable[[RunContext], Any]) -> Stage:
    """A training stage; ``config_fn`` builds its TrainConfig (paths resolved at run time)."""

    def result(ctx: RunContext, configs: list[Any]) -> Result:
        from ..errors import LtError

        path = Path(configs[0].output) / "train_result.json"
        if not path.exists():
            raise LtError(f"{configs[0].output}: no train_result.json after `lt train` (did it fail?)")
        data = read_json(path)
        return {
            "checkpoint": str(data["checkpoint_dir"]),
            "n_tokens": int(data["tokens_seen"]),
            "steps": int(data["steps"]),
            "final_loss": _float(data.get("final_loss")),
        }

    return Stage(key, "train", lambda ctx: [config_fn(ctx)], result, distributed=True)


def _float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# ------------------------------------------------------------------------------------ eval
def headline(metrics: dict[str, Any]) -> tuple[str, float] | None:
    """A task's headline figure: accuracy for generation tasks, the per-token NLL, or the tightest
    per-token ELBO (largest n) for likelihood tasks (its standard error: :func:`headline_stderr`)."""
    if metrics.get("accuracy") is not None:
        return "accuracy", float(metrics["accuracy"])
    if metrics.get("nll_per_token") is not None:
        return "nll_per_token", float(metrics["nll_per_token"])
    elbos = sorted((int(k.split("_")[1]), k) for k in metrics if k.startswith("elbo_") and k.endswith("_per_token") and k.split("_")[1].isdigit())
    if elbos:
        return elbos[-1][1], float(metrics[elbos[-1][1]])
    return None


def headline_stderr(metrics: dict[str, Any]) -> float | None:
    """The standard error of an accuracy headline (:func:`lt_cli.evaluation.metrics.stderr_over_problems`)."""
    value = metrics.get("accuracy_stderr") if metrics.get("accuracy") is not None else None
    return None if value is None else float(value)


def eval_stage(key: str, folder_parts: tuple[str, ...], model_fn: Callable[[RunContext], str], variant: str) -> Stage:
    """Held-out evaluation of one checkpoint, one ``lt eval`` per task (``FOLDER/eval-TASK.json``);
    ``variant`` is ``latent``, or ``raw`` for the raw baseline."""

    def configs(ctx: RunContext) -> list[Any]:
        c = ctx.config
        folder = ctx.path(*folder_parts)
        out = []
        for task in c.eval_tasks:
            if task == "demo":
                data = c.eval.data or str(ctx.path("data", "heldout.jsonl"))
            else:
                data = c.eval.data if c.eval.data and "demo" not in c.eval_tasks else None
            out.append(replace(
                c.eval, task=task, model=model_fn(ctx), variant=variant, backend=c.backend, dtype=c.dtype, data=data,
                log_samples=str(folder / f"eval-{task}.samples.jsonl"), output=str(folder / f"eval-{task}.json"),
            ))
        return out

    def result(ctx: RunContext, configs: list[Any]) -> Result:
        tasks = {}
        for config in configs:
            metrics = read_json(config.output)
            found = headline(metrics)
            tasks[config.task] = {"metric": found[0], "value": found[1], "stderr": headline_stderr(metrics)} if found else None
        first = tasks.get(configs[0].task) if configs else None
        accuracy = first if first and first["metric"] == "accuracy" else None
        return {"accuracy": accuracy["value"] if accuracy else None, "accuracy_stderr": accuracy["stderr"] if accuracy else None, "tasks": tasks}

    return Stage(key, "eval", configs, result)


def finetune_stage(key: str, folder_parts: tuple[str, ...], model_fn: Callable[[RunContext], str]) -> Stage:
    """``lt finetune-eval`` of one checkpoint (``FOLDER/finetune/metrics.json``): fine-tune on the
    task's training problems, sample several answers per test problem, mean accuracy and spread."""

    def configs(ctx: RunContext) -> list[Any]:
        c = ctx.config
        return [replace(c.finetune, model=model_fn(ctx), output=str(ctx.path(*folder_parts, "finetune")), backend=c.backend, dtype=c.dtype)]

    def result(ctx: RunContext, configs: list[Any]) -> Result:
        metrics = read_json(Path(configs[0].output) / "metrics.json")
        return {key: metrics.get(key) for key in ("task", "accuracy", "accuracy_std_over_seeds", "accuracy_stderr_over_problems", "n_seeds", "n_problems")}

    return Stage(key, "finetune-eval", configs, result)


# ------------------------------------------------------------------------------------ E-step
def sample_stage(key: str, folder_parts: tuple[str, ...], model_fn: Callable[[RunContext], str], k: int, seed: int, k_max: int | None = None) -> Stage:
    """K posterior samples per chunk of every raw document, scored (``lt sample-thoughts``); with
    ``k_max``, adaptive: k in the first round, then rounds until the stopping rule or k_max."""

    def configs(ctx: RunContext) -> list[Any]:
        from ..estep import SampleThoughtsRun
        from ..session import BackendArgs
        from ..stream import StreamArgs

        c = ctx.config
        stream = StreamArgs(input=raw_data(ctx), output=str(ctx.path(*folder_parts, "candidates.jsonl")), limit=c.estep_limit)
        sample = c.sample.for_arm(k, k_max, seed=seed)
        backend = BackendArgs(backend=c.backend, model=model_fn(ctx), dtype=c.dtype, max_model_len=c.estep_max_model_len)
        if c.estep_batch_size is not None:
            backend = replace(backend, batch_size=c.estep_batch_size)
        return [SampleThoughtsRun(stream=stream, backend=backend, sample=sample)]

    def result(ctx: RunContext, configs: list[Any]) -> Result:
        from ..estep import read_stats

        out = configs[0].stream.output
        return {"candidates": out, "k": k, **read_stats(out)}

    return Stage(key, "sample-thoughts", configs, result)


def select_stage(key: str, folder_parts: tuple[str, ...], candidates_fn: Callable[[RunContext], Path], seed: int, k: int | None = None) -> Stage:
    """One latent per chunk by importance resampling (``lt select``); ``k`` keeps the first k candidates.

    ``k`` lets a K sweep share one set of samples from the same model (``lt select --k``): samples
    are seeded by their index, so the first k of K samples are exactly what a K=k run would draw.
    """

    def configs(ctx: RunContext) -> list[Any]:
        from ..estep import SelectRun
        from ..stream import StreamArgs

        stream = StreamArgs(input=str(candidates_fn(ctx)), output=str(ctx.path(*folder_parts, "augmented.jsonl")))
        return [SelectRun(stream=stream, select=replace(ctx.config.select, seed=seed, k=k))]

    def result(ctx: RunContext, configs: list[Any]) -> Result:
        from ..estep import read_stats

        out = configs[0].stream.output
        found = {"augmented": out, **read_stats(out)}
        if ctx.config.demo:  # the demo knows every true thought: how often the E-step picked it
            from ..demo.thoughts import true_thought_rate

            found["true_thought_rate"] = true_thought_rate(out, ctx.path("data", "teacher.jsonl"))
        return found

    return Stage(key, "select", configs, result)
