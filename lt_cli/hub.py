"""Hugging Face Hub datasets as lt inputs: ``hf://datasets/OWNER/NAME[/CONFIG][@REVISION][:SPLIT]``.

Why here: every JSONL input of lt goes through :mod:`lt_cli.io`, which hands a spec starting with
``hf://`` to :func:`open_lines`; so ``lt chunk``, ``lt sample-thoughts --limit 100``, ``lt train
--data``, ``lt eval --data`` and ``lt bootstrap --data`` all take a Hub dataset, with nothing per
command. Rows are read with ``datasets.load_dataset(..., streaming=True)``: nothing is downloaded
ahead, a corpus larger than the disk streams through, and ``--limit N`` reads N rows. Each row
becomes one JSON line, so validation, ``--shard``, ``--skip-bad`` and error messages
(``SPEC:ROW: reason``) work as for a file. Any format ``datasets`` reads works (JSONL, Parquet...);
``datasets`` gives every row the columns of the whole split, so a field some rows lack arrives as
``null`` in them (lt's record fields treat null as absent).

The split defaults to ``train``; CONFIG is the dataset's configuration (subset) name; REVISION a
branch, tag or commit. Authentication, mirrors and offline use are ``datasets``' own
(``HF_TOKEN``, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``). A resumable output records the commit the
revision resolved to (:func:`hub_identity`), so a partial is continued only on the same data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator

from .errors import LtError, UsageError

PREFIX = "hf://"
_SPEC = re.compile(r"hf://datasets/(?P<owner>[^/@:]+)/(?P<name>[^/@:]+)(?:/(?P<config>[^@:]+))?(?:@(?P<revision>[^:]+))?(?::(?P<split>[^:]+))?")


def is_hub(path: Any) -> bool:
    return isinstance(path, str) and path.startswith(PREFIX)


@dataclass(frozen=True)
class HubSpec:
    repo: str
    config: str | None
    revision: str | None
    split: str

    @classmethod
    def parse(cls, spec: str) -> "HubSpec":
        found = _SPEC.fullmatch(spec)
        if not found:
            raise UsageError(f"{spec}: a Hub input looks like hf://datasets/OWNER/NAME[/CONFIG][@REVISION][:SPLIT]")
        return cls(f"{found['owner']}/{found['name']}", found["config"], found["revision"], found["split"] or "train")

    @property
    def name(self) -> str:
        return self.repo.split("/", 1)[1]

    def __str__(self) -> str:
        config = f"/{self.config}" if self.config else ""
        revision = f"@{self.revision}" if self.revision else ""
        return f"{PREFIX}datasets/{self.repo}{config}{revision}:{self.split}"


def iter_rows(spec: str) -> Iterator[dict[str, Any]]:
    """The rows of a Hub dataset split, streamed (one error line naming the spec on failure)."""
    parsed = HubSpec.parse(spec)
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise LtError(f"{spec}: reading from the Hub needs the datasets package") from None
    try:
        rows = datasets.load_dataset(parsed.repo, parsed.config, revision=parsed.revision, split=parsed.split, streaming=True)
        yield from rows
    except (LtError, GeneratorExit):
        raise
    except Exception as exc:  # noqa: BLE001 - datasets and the Hub raise many types; the user needs one line
        message = " ".join(str(exc).split())[:400]
        raise LtError(f"{spec}: cannot read it from the Hub ({type(exc).__name__}: {message})") from None


class HubLines:
    """A Hub dataset split as JSON lines, for :class:`lt_cli.io.RecordReader` (iterable, closable)."""

    def __init__(self, spec: str):
        HubSpec.parse(spec)
        self.spec = spec
        self._rows: Iterator[dict[str, Any]] | None = None

    def __iter__(self) -> Iterator[bytes]:
        from .jsoncodec import dumps

        self._rows = iter_rows(self.spec)
        for row in self._rows:
            yield dumps(row, default=str)  # dates and other non-JSON values as text

    def close(self) -> None:
        if self._rows is not None:
            self._rows.close()  # type: ignore[attr-defined]


def open_lines(spec: str) -> HubLines:
    return HubLines(spec)


def resolve_commit(spec: str) -> str | None:
    """The commit the spec's revision points at now (None when the Hub cannot be asked)."""
    parsed = HubSpec.parse(spec)
    if parsed.revision and re.fullmatch(r"[0-9a-f]{40}", parsed.revision):
        return parsed.revision
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(parsed.repo, revision=parsed.revision).sha
    except Exception:  # noqa: BLE001 - offline, no access: the input is then not identifiable
        return None


def hub_identity(spec: str) -> dict[str, Any]:
    """What identifies a Hub input's content: repository, config, split and the resolved commit."""
    parsed = HubSpec.parse(spec)
    return {"path": spec, "bytes": None, "sha256": None, "hub": {"repo": parsed.repo, "config": parsed.config, "split": parsed.split,
                                                                  "commit": resolve_commit(spec)}}
