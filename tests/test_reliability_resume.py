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
