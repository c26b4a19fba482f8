"""A leftover partial output is resumed only by the run that wrote it: same command, same settings
that change the bytes, same input (lt_cli/provenance.py). Anything else is refused, nothing is
changed, and ``--restart`` starts over (reusing cached samples). Tested for sample-thoughts,
select and synthesize here; train and bootstrap in test_reliability_train.py."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from hostile import cli, error_line
from lt_cli.cache import SampleCache


def docs(path: Path, ids: list[str], bad_line: int | None = None) -> Path:
    lines = [orjson.dumps({"id": i, "text": f"First of {i}. Second of {i}. Third of {i}."}) for i in ids]
    if bad_line is not None:
        lines[bad_line - 1] = b'{"id": "broken"}'
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(out.name + ".") and not p.name.endswith((".cache.sqlite", ".stats.json")))


def test_sample_thoughts_refuses_another_input_or_k_and_restart_reuses_the_cache(tmp_path, tiny_model_dir):
    base = ["sample-thoughts", "--model", tiny_model_dir, "--max-new-tokens", "6", "--docs-per-call", "1", "--dtype", "float32"]
    ids = ["a0", "a1", "a2", "a3"]
    interrupted = docs(tmp_path / "docs.jsonl", ids, bad_line=3)
    out = tmp_path / "out.jsonl"
    code, _, err = cli(base + ["--k", "2", interrupted, "-o", out])
    error_line(2, err, code, f"{interrupted}:3: missing field 'text'")  # the run stops after 2 documents
    partial = tmp_path / "out.jsonl.partial"
    kept = partial.read_bytes()
    assert kept.count(b"\n") == 2 and leftovers(out) == ["out.jsonl.partial", "out.jsonl.partial.json"]

    other = docs(tmp_path / "other.jsonl", ["b0", "b1", "b2"])
    code, _, err = cli(base + ["--k", "2", other, "-o", out])
    error_line(2, err, code, f"{partial} holds 2 record(s) of a different run", f"{interrupted} (sha256", f"{other} (sha256", "--restart")
    fixed = docs(tmp_path / "docs.jsonl", ids)
    code, _, err = cli(base + ["--k", "4", fixed, "-o", out])
    error_line(2, err, code, "--k 2 there, 4 now")
    assert partial.read_bytes() == kept and not out.exists()  # nothing changed

    code, _, err = cli(base + ["--k", "4", fixed, "-o", out, "--restart"])
    assert code == 0, err
    assert "--restart: discarding" in err
    reference = tmp_path / "reference.jsonl"
    code, _, err2 = cli(base + ["--k", "4", fixed, "-o", reference, "--no-cache"])
    assert code == 0
    # the same samples as a fresh K=4 run (seeded per sample; log-probs computed in batches of
    # another composition may differ in the last bits)
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    fresh = [orjson.loads(line) for line in reference.read_bytes().splitlines()]
    assert [r["id"] for r in records] == ids and len(records) == len(fresh)
    for got, want in zip(records, fresh):
        for chunk, chunk_ref in zip(got["chunks"], want["chunks"]):
            assert [c["latent"] for c in chunk["candidates"]] == [c["latent"] for c in chunk_ref["candidates"]]
            assert [c["log_q"] for c in chunk["candidates"]] == pytest.approx([c["log_q"] for c in chunk_ref["candidates"]], abs=1e-3)
    # the 2 samples per chunk drawn for a0 and a1 before the interruption were reused, not redrawn
    reused = 2 * sum(len(r["chunks"]) for r in records[:2])
    cache = SampleCache(str(out) + ".cache.sqlite")
    assert cache.count("posterior_sample") == 4 * sum(len(r["chunks"]) for r in records)
    cache.close()
    assert int(re.search(r"sample cache \S+: ([\d,]+) hits", err).group(1).replace(",", "")) == reused
    assert leftovers(out) == []


def _candidates(n: int, bad_line: int | None = None) -> bytes:
    lines = []
    for i in range(n):
        candidates = [[{"latent": f"z{c}{j}", "log_q": -1.0, "log_p": -1.0 + 0.1 * (i + j), "log_w": 0.1 * (i + j)} for j in range(3)] for c in range(2)]
        chunks = [{"text": f"chunk {c}. ", "candidates": candidates[c]} for c in range(2)]
        lines.append(orjson.dumps({"id": f"d{i}", "chunks": chunks}))
    if bad_line is not None:
        lines[bad_line - 1] = b'{"id": "broken", "chunks": 3}'
    return b"\n".join(lines) + b"\n"


def test_select_refuses_another_method_resumes_the_same_run_and_restarts(tmp_path, monkeypatch):
    source = tmp_path / "cand.jsonl"
    source.write_bytes(_candidates(6))
    straight = tmp_path / "straight.jsonl"
    assert cli(["select", source, "-o", straight, "--seed", "5"])[0] == 0

    # an interruption after 2 records (Ctrl-C inside the run), then the same command resumes
    from lt_cli.estep import runs

    real, calls = runs.select_document, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "out.jsonl"
    monkeypatch.setattr(runs, "select_document", interrupted)
    code, _, err = cli(["select", source, "-o", out, "--seed", "5"])
    assert code == 130 and (tmp_path / "out.jsonl.partial").read_bytes().count(b"\n") == 2
    monkeypatch.setattr(runs, "select_document", real)
    kept = (tmp_path / "out.jsonl.partial").read_bytes()

    code, _, err = cli(["select", source, "-o", out, "--seed", "5", "--method", "argmax"])
    error_line(2, err, code, "holds 2 record(s) of a different run", "--method 'importance' there, 'argmax' now")
    source.write_bytes(_candidates(6)[:-1] + b" \n")  # one more byte: another input
    code, _, err = cli(["select", source, "-o", out, "--seed", "5"])
    error_line(2, err, code, "holds 2 record(s) of a different run", f"input {source} (sha256")
    assert (tmp_path / "out.jsonl.partial").read_bytes() == kept and not out.exists()

    source.write_bytes(_candidates(6))  # the original bytes again: the same run
    code, _, err = cli(["select", source, "-o", out, "--seed", "5"])
    assert code == 0 and "resuming after 2 finished record(s)" in err
    assert out.read_bytes() == straight.read_bytes() and leftovers(out) == []

    # a partial whose identity file is gone is not trusted either; --restart discards it
    (tmp_path / "out.jsonl.partial").write_bytes(kept)
    code, _, err = cli(["select", source, "-o", out, "--seed", "5"])
    error_line(2, err, code, "no record of what wrote it (out.jsonl.partial.json is missing)")
    code, _, err = cli(["select", source, "-o", out, "--seed", "5", "--restart"])
    assert code == 0 and out.read_bytes() == straight.read_bytes() and leftovers(out) == []


def test_a_partial_written_from_stdin_is_never_resumed_silently(tmp_path):
    out = tmp_path / "out.jsonl"
    code, _, _ = cli(["select", "-", "-o", out], input=_candidates(4, bad_line=3))
    assert code == 2 and (tmp_path / "out.jsonl.partial").read_bytes().count(b"\n") == 2
    code, _, err = cli(["select", "-", "-o", out], input=_candidates(4))
    error_line(2, err, code, "records read from stdin cannot be checked")
    code, _, err = cli(["select", "-", "-o", out, "--restart"], input=_candidates(4))
    assert code == 0 and out.read_bytes().count(b"\n") == 4


def test_synthesize_refuses_another_seed_or_input(tmp_path, monkeypatch):
    from servers.openai_server import run_openai_server

    interrupted = docs(tmp_path / "docs.jsonl", ["a0", "a1", "a2", "a3"], bad_line=3)
    out = tmp_path / "teacher.jsonl"
    base = ["synthesize", "--model", "teacher-x", "--max-new-tokens", "9", "--docs-per-call", "1", "-o", out]
    with run_openai_server() as server:
        for name, value in server.client_env().items():
            monkeypatch.setenv(name, value)
        code, _, err = cli(base + [interrupted])
        error_line(2, err, code, f"{interrupted}:3: missing field 'text'")
        kept = (tmp_path / "teacher.jsonl.partial").read_bytes()
        assert kept.count(b"\n") == 2
        code, _, err = cli(base + [interrupted, "--seed", "7"])
        error_line(2, err, code, "holds 2 record(s) of a different run", "--seed 42 there, 7 now")
        other = docs(tmp_path / "other.jsonl", ["b0", "b1"])
        code, _, err = cli(base + [other])
        error_line(2, err, code, f"input {interrupted} (sha256", f"{other} (sha256")
        assert (tmp_path / "teacher.jsonl.partial").read_bytes() == kept and not out.exists()
        code, _, err = cli(base + [other, "--restart"])
        assert code == 0, err
    assert [orjson.loads(line)["id"] for line in out.read_bytes().splitlines()] == ["b0", "b1"]
    assert leftovers(out) == []


@pytest.mark.parametrize("flag", ["--batch-size", "--cache"])
def test_flags_that_cannot_change_the_bytes_do_not_block_a_resume(tmp_path, tiny_model_dir, flag):
    """A rerun with a smaller --batch-size (after running out of memory, say) or another cache
    path resumes: these flags are not part of the identity (provenance.FREE_FLAGS)."""
    base = ["sample-thoughts", "--model", tiny_model_dir, "--k", "1", "--max-new-tokens", "4", "--docs-per-call", "1", "--dtype", "float32"]
    source = docs(tmp_path / "docs.jsonl", ["a0", "a1", "a2"], bad_line=2)
    out = tmp_path / "out.jsonl"
    assert cli(base + [source, "-o", out])[0] == 2
    source = docs(tmp_path / "docs.jsonl", ["a0", "a1", "a2"], bad_line=2)  # same bytes
    value = "3" if flag == "--batch-size" else str(tmp_path / "other.sqlite")
    code, _, err = cli(base + [source, "-o", out, flag, value, "--skip-bad"])
    assert code == 3 and "resuming after 1 finished record(s)" in err


def test_a_model_retrained_into_the_same_folder_does_not_continue_the_old_partial(tmp_path, tiny_model_dir):
    import os
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    base = ["sample-thoughts", "--model", model, "--k", "1", "--max-new-tokens", "4", "--docs-per-call", "1", "--dtype", "float32"]
    source = docs(tmp_path / "docs.jsonl", ["a0", "a1", "a2"], bad_line=2)
    out = tmp_path / "out.jsonl"
    assert cli(base + [source, "-o", out])[0] == 2
    stat = (model / "model.safetensors").stat()
    os.utime(model / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # rewritten since
    code, _, err = cli(base + [source, "-o", out])
    error_line(2, err, code, f"the files of --model {model} changed")


# ------------------------------------------------------------------------------- damaged partials
def _interrupted_select(tmp_path: Path, monkeypatch, after: int = 3) -> tuple[Path, Path, Path]:
    """``lt select`` stopped by Ctrl-C after ``after`` records: (input, output, the straight run's output)."""
    from lt_cli.estep import runs

    source = tmp_path / "cand.jsonl"
    source.write_bytes(_candidates(6))
    straight = tmp_path / "straight.jsonl"
    assert cli(["select", source, "-o", straight])[0] == 0
    real, calls = runs.select_document, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == after + 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "out.jsonl"
    monkeypatch.setattr(runs, "select_document", interrupted)
    assert cli(["select", source, "-o", out])[0] == 130
    monkeypatch.setattr(runs, "select_document", real)
    return source, out, straight


def test_a_garbage_line_in_a_partial_is_refused_naming_the_line(tmp_path, monkeypatch):
    """Decided (docs/reliability.md): a complete line of a partial that is not a JSON record stops
    the rerun with the partial's name and line; nothing is changed, --restart starts over."""
    source, out, straight = _interrupted_select(tmp_path, monkeypatch)
    partial = tmp_path / "out.jsonl.partial"
    lines = partial.read_bytes().splitlines(keepends=True)
    assert len(lines) == 3
    damaged = lines[0] + b"\x00\x00garbage\n" + lines[2]
    partial.write_bytes(damaged)
    code, _, err = cli(["select", source, "-o", out])
    error_line(2, err, code, f"{partial}:2: not a JSON record", "--restart", "cut it before line 2 to keep the 1 record(s) before it")
    assert partial.read_bytes() == damaged and not out.exists()
    partial.write_bytes(lines[0] + b"[1, 2]\n")  # JSON, but not a record
    code, _, err = cli(["select", source, "-o", out])
    error_line(2, err, code, f"{partial}:2: not a JSON record")
    code, _, err = cli(["select", source, "-o", out, "--restart"])
    assert code == 0 and out.read_bytes() == straight.read_bytes()


def test_a_torn_last_line_is_dropped_and_said_and_a_hand_edited_record_is_kept(tmp_path, monkeypatch):
    """A torn last line is what kill -9 leaves: dropped with a note, recomputed, identical result.
    A hand-edited record that is still a JSON record cannot be told from lt's own (a partial
    carries no checksum): it is kept, as documented."""
    source, out, straight = _interrupted_select(tmp_path, monkeypatch)
    partial = tmp_path / "out.jsonl.partial"
    lines = partial.read_bytes().splitlines(keepends=True)
    partial.write_bytes(b"".join(lines[:2]) + lines[2][:-9])
    code, _, err = cli(["select", source, "-o", out])
    assert code == 0, err
    assert f"{partial}: dropped its torn last line" in err and "resuming after 2 finished record(s)" in err
    assert out.read_bytes() == straight.read_bytes()

    source, out, straight = _interrupted_select(tmp_path, monkeypatch)
    edited = orjson.loads(lines[0])
    edited["hand_edited"] = True
    partial.write_bytes(orjson.dumps(edited) + b"\n" + b"".join(lines[1:]))
    code, _, err = cli(["select", source, "-o", out])
    assert code == 0, err
    assert orjson.loads(out.read_bytes().splitlines()[0]) == edited
    assert out.read_bytes().splitlines()[1:] == straight.read_bytes().splitlines()[1:]


# ------------------------------------------------------------------------------- the sample cache
def test_every_cache_error_is_one_line_naming_the_cache(tmp_path):
    """Disk full, read-only, locked, damaged: real SQLite errors, each one line naming the file."""
    import sqlite3

    from lt_cli.errors import FileError

    path = tmp_path / "c.sqlite"
    cache = SampleCache(path)
    cache.put_many("k", {"a": 1})
    pages = cache._db.execute("PRAGMA page_count").fetchone()[0]
    cache._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "database or disk is full"
    with pytest.raises(FileError, match=re.escape(f"{path}: no space left on device (the sample cache; finished records are kept")) as full:
        cache.put_many("k", {f"key{i}": "x" * 1000 for i in range(50)})
    assert full.value.exit_code == 1 and cache.get_many(["a"]) == {"a": 1}  # nothing half-written
    cache.close()

    cache = SampleCache(path)
    cache._db.execute("PRAGMA query_only = 1")
    with pytest.raises(FileError, match=re.escape(f"{path}: cannot be written (a read-only file, folder or file system)")):
        cache.put_many("k", {"b": 2})
    cache.close()

    holder = sqlite3.connect(str(path))
    holder.execute("BEGIN EXCLUSIVE")
    cache = SampleCache(path, timeout=0.05)
    with pytest.raises(FileError, match=re.escape(f"{path}: locked by another process")):
        cache.put_many("k", {"c": 3})
    holder.rollback()
    holder.close()
    cache.close()

    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(b"not a database at all" * 300)
    with pytest.raises(FileError, match=re.escape(f"{damaged}: is not a SQLite database (the sample cache; delete it")) as bad:
        SampleCache(damaged)
    assert bad.value.exit_code == 2


def test_a_full_disk_under_the_sample_cache_is_one_line_and_the_rerun_resumes(tmp_path, tiny_model_dir, monkeypatch):
    """Reported: disk full during lt sample-thoughts ended in sqlite3.OperationalError. The cache
    here can grow by one page only (SQLite's own disk-full error, as on a full disk); the finished
    documents stay in the partial, and after the space is freed the rerun matches an uninterrupted run."""
    from lt_cli import cache as cache_module

    base = ["sample-thoughts", "--model", tiny_model_dir, "--k", "2", "--max-new-tokens", "12", "--docs-per-call", "1", "--dtype", "float32"]
    source = docs(tmp_path / "docs.jsonl", [f"a{i}" for i in range(8)])
    reference = tmp_path / "reference.jsonl"
    assert cli(base + [source, "-o", reference, "--no-cache"])[0] == 0

    real_init = cache_module.SampleCache.__init__

    def small_disk(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        self._db.execute(f"PRAGMA max_page_count = {pages + 1}")

    monkeypatch.setattr(cache_module.SampleCache, "__init__", small_disk)
    out = tmp_path / "out.jsonl"
    code, _, err = cli(base + [source, "-o", out])
    error_line(1, err, code, f"{out}.cache.sqlite: no space left on device (the sample cache; finished records are kept in the output's .partial")
    kept = (tmp_path / "out.jsonl.partial").read_bytes().count(b"\n")
    assert 0 < kept < 8 and not out.exists()
    monkeypatch.setattr(cache_module.SampleCache, "__init__", real_init)  # space freed
    code, _, err = cli(base + [source, "-o", out])
    assert code == 0 and f"resuming after {kept} finished record(s)" in err
    assert out.read_bytes() == reference.read_bytes()
