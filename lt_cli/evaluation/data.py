"""Where evaluation problems and documents come from.

Order of precedence: ``--data`` (a JSONL file, or a folder holding ``SPLIT.jsonl``), then the task
file's ``data.file``, then the task's Hugging Face dataset via ``datasets.load_dataset`` (needs the
network or a warm cache). ``--limit N`` keeps the first N records in file order, so two runs with
the same limit grade the same problems.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..errors import LtError, UsageError

Record = dict[str, Any]


def resolve_data_path(data: str, split: str | None) -> Path | str:
    """A JSONL file, ``FOLDER/SPLIT.jsonl``, or a Hub dataset spec (``hf://...``, returned as given)."""
    from ..io import input_exists
    from ..paths import is_hub

    if is_hub(data):
        input_exists(data)
        return data
    path = Path(data)
    if path.is_dir():
        if not split:
            raise UsageError(f"--data {data} is a folder: pass --split (reads {data}/SPLIT.jsonl)")
        for candidate in (path / f"{split}.jsonl", path / f"{split}.jsonl.gz"):
            if candidate.exists():
                return candidate
        raise UsageError(f"{path}: no {split}.jsonl in this folder")
    if not path.exists():
        raise UsageError(f"{data}: no such file")
    return path


def read_jsonl(path: str | Path, limit: int | None, validate: Callable[[Record], None] | None = None) -> list[Record]:
    """The first ``limit`` records of a JSONL file; a bad record raises ``FILE:LINE: reason``."""
    from ..io import read_records

    records = []
    if limit is not None and limit <= 0:
        return records
    for record in read_records(path, validate=validate):
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    return records


def load_hf_records(spec: dict, split: str | None, limit: int | None) -> list[Record]:
    """Records of a Hugging Face dataset described by a task file's ``data`` section."""
    hf_path = spec.get("hf_path")
    if not hf_path:
        raise UsageError("this task has no default dataset: pass --data FILE.jsonl")
    split = split or spec.get("split") or "test"
    configs = spec.get("hf_configs") or [spec.get("hf_name")]
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise LtError("the 'datasets' package is needed to download data; pass --data FILE.jsonl") from None
    records: list[Record] = []
    for name in configs:
        try:
            dataset = datasets.load_dataset(hf_path, name, split=split)
        except Exception as exc:  # network errors come in many types
            raise LtError(
                f"could not load {hf_path}{'/' + name if name else ''} split {split!r} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); offline? pass --data FILE.jsonl"
            ) from None
        for row in dataset:
            records.append(dict(row))
            if limit is not None and len(records) >= limit:
                return records
    return records


def load_task_records(data_spec: dict, config, validate: Callable[[Record], None] | None = None) -> tuple[list[Record], str]:
    """(records, where they came from) for a task, honouring ``--data``, ``--split`` and ``--limit``."""
    if config.data:
        path = resolve_data_path(config.data, config.split)
        return read_jsonl(path, config.limit, validate), str(path)
    if data_spec.get("file"):
        return read_jsonl(data_spec["file"], config.limit, validate), data_spec["file"]
    records = load_hf_records(data_spec, config.split, config.limit)
    if validate is not None:
        from ..errors import RecordError

        for i, record in enumerate(records):
            try:
                validate(record)
            except ValueError as exc:
                raise RecordError(data_spec.get("hf_path", "dataset"), i + 1, str(exc)) from None
    return records, f"hf:{data_spec.get('hf_path')}:{config.split or data_spec.get('split') or 'test'}"
