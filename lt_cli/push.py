"""``lt push``: an lt output to the Hugging Face Hub with a card that says what produced it.

Three kinds of PATH, told apart by what lt wrote next to them:

* a JSONL output (``candidates.jsonl``, ``augmented.jsonl``, ``teacher.jsonl``...) -> a dataset
  repository: ``data/FILE`` (loadable as split ``train``: ``hf://datasets/REPO:train`` reads it
  back), its sidecars (``FILE.stats.json``, ``FILE.config.json``) under ``lt/``, and a card;
* a bootstrap run folder (``manifest.json``) -> a dataset repository: the run's JSONL, JSON and
  report files (every stage's augmented data is a split of the ``augmented`` config), without
  model weights, caches, partial files, locks or W&B files (push a checkpoint on its own);
* a checkpoint (``config.json`` + weights, as ``lt train`` writes) -> a model repository with the
  model, its ``train_config.json``, ``train_result.json`` and ``metrics.jsonl`` (not the resumable
  ``checkpoints/``), and a model card.

The card (``README.md``) records the command that produced the data, rendered from the config lt
saved beside it (:func:`lt_cli.flags.to_argv`, so it is exact), the model, K and seeds, the
statistics lt saved, the lt version, and the differences from the reference code that applied to
those settings (:mod:`lt_cli.differences`). The upload is ``huggingface_hub``'s (``HF_TOKEN`` or
``huggingface-cli login``; ``HF_ENDPOINT`` for a mirror); ``--dry-run`` prints the card and the
file list without sending anything.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LtError, UsageError
from .files import read_json

MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "model.pt")
#: never pushed from a run folder or a checkpoint (weights in a run folder: push the checkpoint itself)
IGNORED = (
    "model/", "checkpoints/", "wandb/", ".cache.sqlite", ".partial", ".partial.json", ".lock", ".tmp", "/.", "__pycache__/",
)


@dataclass
class Upload:
    """What one push sends: files (path in repo -> local path), the card, and what the card says."""

    kind: str  # "jsonl", "run" or "checkpoint"
    repo_type: str  # "dataset" or "model"
    files: dict[str, Path] = field(default_factory=dict)
    card: str = ""


# ------------------------------------------------------------------------------------ provenance
def rebuild(command: str, config: dict[str, Any]) -> Any | None:
    """The config object a command saved as JSON (None when it cannot be rebuilt)."""
    from .flags import from_json
    from .runners import config_class

    try:
        return from_json(config_class(command), config)
    except Exception:  # noqa: BLE001 - an older or hand-edited config: the card says so instead
        return None


def render_command(command: str, config: Any) -> str | None:
    """``lt COMMAND --flag value ...`` that rebuilds a config (None when it cannot be rendered)."""
    from .flags import to_argv

    try:
        return shlex.join(["lt", *to_argv(command, config)])
    except Exception:  # noqa: BLE001 - a leaf without a flag set away from its default
        return None


def settings_of(config: Any) -> dict[str, Any]:
    """A config's values by flag name (leaf names are unique in a config: :func:`lt_cli.flags.leaves`)."""
    from .flags import flat

    return flat(config) if config is not None else {}


def _lt_version() -> str:
    from . import __version__

    return __version__


def _differences_lines(command: str, settings: dict[str, Any]) -> list[str]:
    from .differences import applied, describe

    found = applied(command, settings)
    if not found:
        return ["None of the listed differences applies to these settings."]
    return [f"- {describe(d)}" for d in found]


def _yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).strip()


def _card(metadata: dict[str, Any], title: str, sections: list[tuple[str, list[str]]]) -> str:
    lines = ["---", _yaml(metadata), "---", "", f"# {title}", ""]
    for heading, body in sections:
        lines += [f"## {heading}", "", *body, ""]
    return "\n".join(lines)


def _facts(settings: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [f"- {key}: `{settings[key]}`" for key in keys if settings.get(key) is not None]


# ------------------------------------------------------------------------------------ the three kinds
def _jsonl_upload(path: Path, repo_id: str) -> Upload:
    upload = Upload("jsonl", "dataset")
    data_name = f"data/{path.name}"
    upload.files[data_name] = path
    sidecars = [p for p in (Path(f"{path}.stats.json"), Path(f"{path}.config.json")) if p.exists()]
    for sidecar in sidecars:
        upload.files[f"lt/{sidecar.name}"] = sidecar
    stats_path = Path(f"{path}.stats.json")
    saved = read_json(stats_path) if stats_path.exists() else {}
    command = saved.get("command")
    config = rebuild(command, saved.get("config") or {}) if command else None
    settings = settings_of(config)
    rendered = render_command(command, config) if config is not None else None
    produced = [f"`{rendered}`" if rendered else "not recorded (no FILE.stats.json beside the file)"]
    facts = _facts(settings, ("model", "backend", "k", "k_max", "method", "seed", "temperature", "max_new_tokens", "prefix_chunks", "reference_quirks"))
    from .tracking import flat_metrics

    stats = flat_metrics("", saved.get("stats") or {})
    numbers = [f"- {key}: {value:.6g}" if isinstance(value, float) else f"- {key}: {value}" for key, value in stats.items()]
    metadata = {
        "tags": ["lt", "latent-thoughts", "bolt"] + ([command] if command else []),
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": data_name}]}],
    }
    sections = [
        ("What produced it", [f"Written by {'`lt ' + command + '`' if command else 'lt'} (lt {saved.get('lt_version') or 'version not recorded'});"
                              f" pushed with lt {_lt_version()}.", "", "Command:", "", *produced]),
        ("Settings", facts or ["not recorded"]),
        ("Statistics", numbers or ["not recorded"]),
        ("Differences from the reference code that applied",
         _differences_lines(command, settings) if command else ["unknown (the command is not recorded)"]),
        ("Use", [f"Any lt command reads it as `hf://datasets/{repo_id}:train` (`lt train --data hf://datasets/{repo_id}:train`); "
                 f"`datasets.load_dataset(\"{repo_id}\", split=\"train\")` loads it."]),
    ]
    upload.card = _card(metadata, f"{repo_id}: {path.name}", sections)
    return upload


def _pushable(path: Path, root: Path) -> bool:
    rel = "/" + str(path.relative_to(root))
    return not any(marker in rel for marker in IGNORED)


def _run_upload(folder: Path, repo_id: str) -> Upload:
    upload = Upload("run", "dataset")
    for path in sorted(folder.rglob("*")):
        if path.is_file() and _pushable(path, folder) and path.suffix in (".jsonl", ".json", ".md", ".png", ".gz", ".log"):
            upload.files[str(path.relative_to(folder))] = path
    config = read_json(folder / "config.json") if (folder / "config.json").exists() else {}
    from .bootstrap.config import BootstrapConfig

    try:
        settings = settings_of(BootstrapConfig.from_dict(config))
    except Exception:  # noqa: BLE001 - a config.json lt cannot read back: list every difference
        settings = {}
    if config.get("eval_tasks"):  # the eval items depend on the task (the first one leads the report)
        settings["task"] = config["eval_tasks"][0]
    commands = []
    if (folder / "commands.jsonl").exists():
        from .io import read_all

        commands = [f"`{shlex.join(line['argv'])}` (lt {line.get('lt_version', '?')})" for line in read_all(folder / "commands.jsonl")]
    splits = [{"split": p.replace("/augmented.jsonl", "").replace("/", "_").replace("-", "_"), "path": p}
              for p in upload.files if p.endswith("/augmented.jsonl")]
    metadata: dict[str, Any] = {"tags": ["lt", "latent-thoughts", "bolt", "bootstrap"]}
    if splits:
        metadata["configs"] = [{"config_name": "augmented", "data_files": splits}]
    report = read_json(folder / "report.json") if (folder / "report.json").exists() else {}
    rows = [f"| {r.get('arm')} | {r.get('iter')} | {_num(r.get('accuracy'))} | {_num(r.get('accuracy_stderr'))} | {_num(r.get('estep_flops_total'))} |"
            for r in report.get("iterations", [])]
    facts = [f"- model: `{config.get('model') or 'the embedded demo model'}`", f"- data: `{config.get('data') or 'the embedded demo corpus'}`",
             f"- K: {config.get('ks')}{' + adaptive' if config.get('adaptive') else ''}, iterations: {config.get('iters')}, seed: {config.get('seed')}"]
    sections = [
        ("What produced it", ["`lt bootstrap` runs (each invocation in this folder):", "",
                              *(f"- {c}" for c in commands or ["not recorded (an lt older than commands.jsonl)"]),
                              "", f"Pushed with lt {_lt_version()}; `config.json` holds every setting."]),
        ("Settings", facts),
        ("Held-out accuracy", ["| arm | iteration | accuracy | ± s.e. | E-step FLOPs so far |", "|---|---|---|---|---|", *rows]
         if rows else ["no report.json (the run has not finished)"]),
        ("Differences from the reference code that applied", _differences_lines("bootstrap", settings)),
        ("Layout", ["docs/bootstrap.md in lt describes the run folder; model weights are not included (push a checkpoint folder with `lt push`)."]),
    ]
    upload.card = _card(metadata, f"{repo_id}: lt bootstrap run {config.get('name', folder.name)}", sections)
    return upload


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _checkpoint_upload(folder: Path, repo_id: str) -> Upload:
    upload = Upload("checkpoint", "model")
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and rel.parts[0] not in ("checkpoints", "tensorboard", "wandb") and path.name != "wandb-run-id" and _pushable(path, folder):
            upload.files[str(rel)] = path
    config = read_json(folder / "train_config.json") if (folder / "train_config.json").exists() else {}
    result = read_json(folder / "train_result.json") if (folder / "train_result.json").exists() else {}
    train_config = None
    if config:
        from .training.config import TrainConfig

        try:
            train_config = TrainConfig.from_dict(config)
        except Exception:  # noqa: BLE001 - written by another lt version: the card says so
            train_config = None
    settings = settings_of(train_config)
    rendered = render_command("train", train_config) if train_config is not None else None
    metadata: dict[str, Any] = {"library_name": "transformers", "tags": ["lt", "latent-thoughts", "bolt"]}
    base = config.get("model")
    if base and not Path(str(base)).exists():  # a hub id, not a local folder
        metadata["base_model"] = base
    hub_data = sorted({_hub_repo(spec) for spec in config.get("data", []) if _hub_repo(spec)})
    if hub_data:
        metadata["datasets"] = hub_data
    facts = _facts(settings, ("model", "init_config", "layout", "seq_len", "batch_size", "lr", "steps", "tokens", "epochs", "seed"))
    facts += [f"- data: `{d}`" for d in config.get("data", [])]
    numbers = [f"- {key}: {result[key]}" for key in ("steps", "tokens_seen", "final_loss") if result.get(key) is not None]
    sections = [
        ("What produced it", [f"`{rendered}`" if rendered else "not recorded (no train_config.json)", "",
                              f"Trained by `lt train` (BoLT's M-step); pushed with lt {_lt_version()}. "
                              "The model has four special tokens for latent thoughts (docs/formats.md in lt)."]),
        ("Settings", facts or ["not recorded"]),
        ("Result", numbers or ["not recorded"]),
        ("Differences from the reference code that applied", _differences_lines("train", settings)),
    ]
    upload.card = _card(metadata, repo_id, sections)
    return upload


def _hub_repo(spec: str) -> str | None:
    from .paths import is_hub
    from .training.config import DataSource

    path = DataSource.parse(str(spec)).path
    if not is_hub(path):
        return None
    from .hub import HubSpec

    return HubSpec.parse(path).repo




def plan_upload(path: str, repo_id: str, repo_type: str = "auto") -> Upload:
    """What ``lt push PATH REPO_ID`` would send (nothing is sent)."""
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UsageError(f"{repo_id}: the repository must be OWNER/NAME")
    target = Path(path)
    if not target.exists():
        raise UsageError(f"{path}: no such file or folder")
    if target.is_dir():
        if (target / "manifest.json").exists():
            upload = _run_upload(target, repo_id)
        elif (target / "config.json").exists() and any((target / name).exists() for name in MODEL_WEIGHTS):
            upload = _checkpoint_upload(target, repo_id)
        else:
            raise UsageError(f"{path}: neither a bootstrap run folder (manifest.json) nor a checkpoint (config.json and weights)")
    else:
        if not (target.name.endswith(".jsonl") or target.name.endswith(".jsonl.gz")):
            raise UsageError(f"{path}: lt push takes a JSONL output, a run folder or a checkpoint folder")
        upload = _jsonl_upload(target, repo_id)
    if repo_type != "auto" and repo_type != upload.repo_type:
        raise UsageError(f"{path} is a {upload.kind} and goes to a {upload.repo_type} repository, not a {repo_type} one")
    return upload


def push(path: str, repo_id: str, *, repo_type: str = "auto", private: bool = False, message: str | None = None) -> dict[str, Any]:
    """Create (or reuse) the repository and commit the files and the card in one commit."""
    from .console import log

    upload = plan_upload(path, repo_id, repo_type)
    try:
        from huggingface_hub import CommitOperationAdd, HfApi
    except ImportError:  # pragma: no cover - huggingface_hub comes with datasets and transformers
        raise LtError("lt push needs huggingface_hub (pip install huggingface_hub)") from None
    api = HfApi()
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(local)) for name, local in upload.files.items()]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=upload.card.encode("utf-8")))
    log(f"pushing {len(upload.files)} file(s) and a {upload.repo_type} card to {repo_id}")
    try:
        url = api.create_repo(repo_id, repo_type=upload.repo_type, private=private, exist_ok=True)
        commit = api.create_commit(repo_id, operations=operations, repo_type=upload.repo_type,
                                   commit_message=message or f"lt push {Path(path).name} (lt {_lt_version()})")
    except Exception as exc:  # noqa: BLE001 - the Hub's errors, as one line (huggingface_hub never puts the token in them)
        text = " ".join(str(exc).split())[:400]
        raise LtError(f"lt push {repo_id}: {type(exc).__name__}: {text}") from None
    return {"repo_id": repo_id, "repo_type": upload.repo_type, "url": str(url), "commit": commit.oid, "commit_url": commit.commit_url,
            "files": sorted([*upload.files, "README.md"])}
