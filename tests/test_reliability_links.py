"""Links planted beside an output. The lock, partial, rejects and cache files have predictable
names, so anyone who can write into a shared output folder can plant a symbolic link there; lt
must refuse it (one ``lt: error:`` line, exit 2) and never write, truncate or remove the link's
target, nor remove the link (lt_cli/nofollow.py ``open_no_follow``)."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from hostile import cli, error_line
from lt_cli.errors import UsageError

DOCS = b"".join(orjson.dumps({"id": f"d{i}", "text": f"One {i}. Two {i}. Three {i}."}) + b"\n" for i in range(3))
CANDIDATES = b"".join(
    orjson.dumps({"id": f"d{i}", "chunks": [{"text": "t. ", "candidates": [{"latent": "a", "log_w": 0.5}, {"latent": "b", "log_w": 0.1}]}]}) + b"\n"
    for i in range(3)
)


def plant(link: Path, target: Path) -> None:
    os.symlink(target.name if target.parent == link.parent else target, link)


def untouched(tmp_path: Path, link: Path, victim: Path, content: bytes | None) -> None:
    assert link.is_symlink()  # the planted link is left where it was
    if content is None:
        assert not victim.exists()  # a dangling link's target is never created
    else:
        assert victim.read_bytes() == content


@pytest.mark.parametrize("dangling", [False, True])
@pytest.mark.parametrize(
    "command, side",
    [
        (["chunk"], ".lock"),  # the case as reported: lt chunk docs.jsonl -o out.jsonl
        (["select"], ".lock"),
        (["select"], ".partial"),
        (["select", "--skip-bad"], ".rejects.jsonl"),
    ],
)
def test_a_link_planted_beside_an_output_is_refused(tmp_path, command, side, dangling):
    source = tmp_path / "in.jsonl"
    data = DOCS if command[0] == "chunk" else CANDIDATES
    source.write_bytes(data + (b'{"id": "bad"}\n' if "--skip-bad" in command else b""))
    out = tmp_path / "out.jsonl"
    victim = tmp_path / "victim.txt"
    content = None if dangling else b"precious\n"
    if content is not None:
        victim.write_bytes(content)
    link = tmp_path / ("out.jsonl" + side)
    plant(link, victim)
    code, _, err = cli([*command, source, "-o", out])
    error_line(2, err, code, f"{link} is a symbolic link (to victim.txt)", "remove it")
    untouched(tmp_path, link, victim, content)
    assert not out.exists() and not list(tmp_path.glob(".out.jsonl.*"))
    assert [p for p in tmp_path.glob("out.jsonl.partial*") if p != link] == []  # refused before any work


def test_train_and_bootstrap_locks_refuse_a_link(tmp_path, tiny_model_dir):
    source = tmp_path / "docs.jsonl"
    source.write_bytes(DOCS)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    plant(tmp_path / "ckpt.lock", victim)
    code, out, err = cli(["train", "--model", tiny_model_dir, "--data", source, "--output", tmp_path / "ckpt", "--layout", "raw", "--steps", "1"])
    error_line(2, err, code, f"{tmp_path / 'ckpt.lock'} is a symbolic link")
    untouched(tmp_path, tmp_path / "ckpt.lock", victim, b"precious\n")
    assert not (tmp_path / "ckpt").exists()
    plant(tmp_path / "run.lock", victim)
    code, out, err = cli(["bootstrap", "--run-dir", tmp_path / "run", "--iters", "0"])
    error_line(2, err, code, f"{tmp_path / 'run.lock'} is a symbolic link")
    untouched(tmp_path, tmp_path / "run.lock", victim, b"precious\n")
    assert not (tmp_path / "run").exists()


def test_a_lock_with_other_hard_links_is_refused(tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_bytes(DOCS)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    os.link(victim, tmp_path / "out.jsonl.lock")
    code, _, err = cli(["chunk", source, "-o", tmp_path / "out.jsonl"])
    error_line(2, err, code, "out.jsonl.lock has other hard links")
    assert victim.read_bytes() == b"precious\n" and not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("side", ["", "-wal", "-shm", "-journal"])
def test_the_sample_cache_and_its_sqlite_files_refuse_links(tmp_path, side):
    from lt_cli.cache import SampleCache

    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    cache = tmp_path / "out.jsonl.cache.sqlite"
    plant(Path(f"{cache}{side}"), victim)
    with pytest.raises(UsageError, match=f"{Path(f'{cache}{side}').name} is a symbolic link"):
        SampleCache(cache)
    assert victim.read_bytes() == b"precious\n" and Path(f"{cache}{side}").is_symlink()


def test_files_lt_rewrites_whole_replace_a_link_instead_of_writing_through_it(tmp_path):
    """Sidecars (stats, .done, .partial.json, configs, reports) are a temporary file renamed over
    the name: a planted link is replaced, its target never written."""
    from lt_cli.files import write_bytes_atomic, write_json

    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    for name in ("out.jsonl.stats.json", "report.md"):
        plant(tmp_path / name, victim)
    os.symlink("/dev/full", tmp_path / "out.jsonl.done")  # a device behind a sidecar's name is not written either
    write_json(tmp_path / "out.jsonl.stats.json", {"a": 1})
    write_bytes_atomic(tmp_path / "report.md", b"# report\n")
    write_json(tmp_path / "out.jsonl.done", {"records": 0})
    assert victim.read_bytes() == b"precious\n" and not (tmp_path / "out.jsonl.done").is_symlink()
    assert not (tmp_path / "report.md").is_symlink() and (tmp_path / "report.md").read_bytes() == b"# report\n"
    assert orjson.loads((tmp_path / "out.jsonl.stats.json").read_bytes()) == {"a": 1}
