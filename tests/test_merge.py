"""lt merge: sharded outputs back into the unsharded order; incomplete shards are errors."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from conftest import FIXTURES, REPO

from lt_cli.errors import LtError, UsageError
from lt_cli.files import read_json
from lt_cli.io import read_all
from lt_cli.output import open_output
from lt_cli.merge import ShardError, expand_shard_paths, merge_shards
from lt_cli.chunking import run_chunk
from lt_cli.stream import StreamArgs

LT = [sys.executable, "-m", "lt_cli"]
ENV = {**os.environ, "LT_PROGRESS_INTERVAL": "3600"}


def _docs(tmp_path: Path, n: int = 23) -> Path:
    """n small raw documents with distinct texts (chunking depends on the text)."""
    path = tmp_path / "docs.jsonl"
    with open(path, "wb") as f:
        for i in range(n):
            text = f"Document {i} starts here. It has {i % 5 + 2} apples. Then {i} pears appear!\n\nA second paragraph of doc {i}."
            f.write(orjson.dumps({"id": f"d{i}", "text": text}) + b"\n")
    return path


def _chunk_shards(docs: Path, out_dir: Path, n: int, suffix: str = ".jsonl") -> list[Path]:
    paths = []
    for i in range(n):
        path = out_dir / f"chunked.{i}{suffix}"
        assert run_chunk(StreamArgs(input=str(docs), output=str(path), shard=f"{i}/{n}")) == 0
        paths.append(path)
    return paths


@pytest.mark.parametrize("num_shards", [2, 3, 5])
def test_merged_chunk_shards_equal_unsharded_run_byte_for_byte(tmp_path, num_shards):
    docs = _docs(tmp_path)
    full = tmp_path / "full.jsonl"
    run_chunk(StreamArgs(input=str(docs), output=str(full)))
    shards = _chunk_shards(docs, tmp_path, num_shards)
    marker = read_json(str(shards[1]) + ".done")
    assert marker["shard"] == f"1/{num_shards}" and marker["records"] == len(range(1, 23, num_shards))
    merged = tmp_path / "merged.jsonl"
    result = merge_shards([str(p) for p in shards], str(merged))
    assert result.records == 23
    assert merged.read_bytes() == full.read_bytes()
    # the merged file is itself complete-marked
    assert read_json(str(merged) + ".done")["records"] == 23


def test_more_shards_than_records_leaves_empty_shards_that_still_merge(tmp_path):
    docs = _docs(tmp_path, 3)
    full = tmp_path / "full.jsonl"
    run_chunk(StreamArgs(input=str(docs), output=str(full)))
    shards = _chunk_shards(docs, tmp_path, 5)
    assert [read_json(str(p) + ".done")["records"] for p in shards] == [1, 1, 1, 0, 0]
    merged = tmp_path / "merged.jsonl"
    assert merge_shards([str(p) for p in shards], str(merged)).records == 3
    assert merged.read_bytes() == full.read_bytes()


def test_shards_given_out_of_order_are_put_in_order_by_their_markers(tmp_path):
    docs = _docs(tmp_path, 10)
    full = tmp_path / "full.jsonl"
    run_chunk(StreamArgs(input=str(docs), output=str(full)))
    shards = _chunk_shards(docs, tmp_path, 3)
    merged = tmp_path / "merged.jsonl"
    merge_shards([str(p) for p in reversed(shards)], str(merged))
    assert merged.read_bytes() == full.read_bytes()


def test_pattern_glob_and_gzip_shards(tmp_path):
    docs = _docs(tmp_path, 12)
    full = tmp_path / "full.jsonl"
    run_chunk(StreamArgs(input=str(docs), output=str(full)))
    _chunk_shards(docs, tmp_path, 4, suffix=".jsonl.gz")
    out1, out2 = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    merge_shards([str(tmp_path / "chunked.{i}.jsonl.gz")], str(out1), num_shards=4)
    merge_shards([str(tmp_path / "chunked.*.jsonl.gz")], str(out2))
    assert out1.read_bytes() == full.read_bytes() == out2.read_bytes()


def test_glob_sorts_naturally_when_markers_name_no_shard(tmp_path):
    # 11 shards written with a plain marker (no shard field): order comes from the names, and
    # x.10 must come after x.9, not after x.1.
    for i in range(11):
        with open_output(tmp_path / f"x.{i}.jsonl", marker=True) as w:
            w.write({"i": i})
    paths = expand_shard_paths([str(tmp_path / "x.*.jsonl")])
    assert [p.name for p in paths] == [f"x.{i}.jsonl" for i in range(11)]
    out = tmp_path / "out.jsonl"
    merge_shards([str(tmp_path / "x.*.jsonl")], str(out), order="concat")
    assert [r["i"] for r in read_all(out)] == list(range(11))


def test_missing_marker_is_an_error_and_writes_nothing(tmp_path):
    docs = _docs(tmp_path, 9)
    shards = _chunk_shards(docs, tmp_path, 2)
    os.unlink(str(shards[1]) + ".done")
    out = tmp_path / "merged.jsonl"
    with pytest.raises(ShardError, match=r"chunked\.1\.jsonl: no completion marker"):
        merge_shards([str(p) for p in shards], str(out))
    assert not out.exists()


def test_missing_shard_reports_which_and_hints_at_partial(tmp_path):
    docs = _docs(tmp_path, 9)
    shards = _chunk_shards(docs, tmp_path, 3)
    shards[2].unlink()
    pattern = str(tmp_path / "chunked.{i}.jsonl")
    with pytest.raises(ShardError, match=r"chunked\.2\.jsonl: shard missing$"):
        merge_shards([pattern], str(tmp_path / "m.jsonl"), num_shards=3)
    (tmp_path / "chunked.2.jsonl.partial").write_text('{"id": 1}\n')
    with pytest.raises(ShardError, match=r"partial exists: that job was interrupted"):
        merge_shards([pattern], str(tmp_path / "m.jsonl"), num_shards=3)
    # two of three shards given explicitly: the markers say 3 exist
    with pytest.raises(ShardError, match=r"shard\(s\) 2/3 missing: got 2 of 3"):
        merge_shards([str(shards[0]), str(shards[1])], str(tmp_path / "m.jsonl"))
    with pytest.raises(ShardError, match=r"expected 4 shards"):
        merge_shards([str(shards[0]), str(shards[1])], str(tmp_path / "m.jsonl"), num_shards=4)


def test_changed_or_truncated_shard_fails_its_hash_and_leaves_no_output(tmp_path):
    docs = _docs(tmp_path, 8)
    shards = _chunk_shards(docs, tmp_path, 2)
    out = tmp_path / "merged.jsonl"
    data = shards[0].read_bytes()
    shards[0].write_bytes(data.replace(b"apples", b"apricots", 1))  # same line count, other bytes
    with pytest.raises(ShardError, match=r"chunked\.0\.jsonl: contents differ from its completion marker"):
        merge_shards([str(p) for p in shards], str(out))
    assert not out.exists()
    shards[0].write_bytes(data.split(b"\n", 1)[1])  # first record lost
    with pytest.raises(ShardError, match=r"has 3 records but its marker says 4"):
        merge_shards([str(p) for p in shards], str(out))
    assert not out.exists()


def test_counts_that_cannot_be_round_robin_are_refused_for_interleave(tmp_path):
    # shard 0 lost a record (as --skip-bad would do): 3 and 4 records cannot interleave back
    for i, n in enumerate([3, 4]):
        with open_output(tmp_path / f"s.{i}.jsonl", shard=f"{i}/2") as w:
            for j in range(n):
                w.write({"shard": i, "j": j})
    paths = [str(tmp_path / "s.0.jsonl"), str(tmp_path / "s.1.jsonl")]
    with pytest.raises(ShardError, match=r"cannot come from one --shard I/N run"):
        merge_shards(paths, str(tmp_path / "m.jsonl"))
    result = merge_shards(paths, str(tmp_path / "m.jsonl"), order="concat")
    assert result.records == 7
    assert [(r["shard"], r["j"]) for r in read_all(tmp_path / "m.jsonl")] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (1, 3)]


def test_shards_of_different_runs_or_duplicates_are_refused(tmp_path):
    for name, shard in [("a", "0/2"), ("b", "1/3"), ("c", "0/2")]:
        with open_output(tmp_path / f"{name}.jsonl", shard=shard) as w:
            w.write({"x": name})
    with pytest.raises(ShardError, match="different N"):
        merge_shards([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")], None)
    with pytest.raises(ShardError, match=r"are both shard 0/2"):
        merge_shards([str(tmp_path / "a.jsonl"), str(tmp_path / "c.jsonl")], None)
    with pytest.raises(UsageError, match="--order"):
        merge_shards([str(tmp_path / "a.jsonl")], None, order="zip")
    with pytest.raises(UsageError, match="needs --num-shards"):
        merge_shards([str(tmp_path / "x.{i}.jsonl")], None)
    with pytest.raises(UsageError, match="also one of the shards"):
        merge_shards([str(tmp_path / "a.jsonl")], str(tmp_path / "a.jsonl"))
    with pytest.raises(UsageError, match="listed twice"):
        merge_shards([str(tmp_path / "a.jsonl")] * 2, None)
    (tmp_path / "bad.jsonl").write_text("{}\n")
    (tmp_path / "bad.jsonl.done").write_text("not json")
    with pytest.raises(ShardError, match="unreadable completion marker"):
        merge_shards([str(tmp_path / "bad.jsonl")], None)
    assert issubclass(ShardError, LtError)


def test_cli_merge_then_remove_a_marker(tmp_path):
    """The acceptance check through the command line: `lt chunk --shard` x2, `lt merge`."""
    source = FIXTURES / "math_docs.jsonl"
    full = subprocess.run(LT + ["chunk", str(source)], capture_output=True, env=ENV, check=True).stdout
    for i in range(2):
        subprocess.run(LT + ["chunk", str(source), "--shard", f"{i}/2", "-o", str(tmp_path / f"part.{i}.jsonl")], env=ENV, check=True, capture_output=True)
    merged = tmp_path / "merged.jsonl"
    done = subprocess.run(LT + ["merge", "-o", str(merged), "-n", "2", str(tmp_path / "part.{i}.jsonl")], capture_output=True, env=ENV, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert merged.read_bytes() == full
    to_stdout = subprocess.run(LT + ["merge", str(tmp_path / "part.0.jsonl"), str(tmp_path / "part.1.jsonl")], capture_output=True, env=ENV)
    assert to_stdout.returncode == 0 and to_stdout.stdout == full
    check = subprocess.run(LT + ["merge", "--check", str(tmp_path / "part.*.jsonl")], capture_output=True, env=ENV)
    summary = orjson.loads(check.stdout)
    assert summary["records"] == 6 and [s["shard"] for s in summary["shards"]] == ["0/2", "1/2"]
    os.unlink(tmp_path / "part.1.jsonl.done")
    failed = subprocess.run(
        LT + ["merge", "-o", str(tmp_path / "again.jsonl"), str(tmp_path / "part.0.jsonl"), str(tmp_path / "part.1.jsonl")], capture_output=True, env=ENV
    )
    assert failed.returncode == 2  # an unusable input (docs/reliability.md)
    assert failed.stderr.decode().strip().endswith("rerun that shard")
    assert "lt: error: " in failed.stderr.decode() and "part.1.jsonl: no completion marker" in failed.stderr.decode()
    assert not (tmp_path / "again.jsonl").exists()


def test_gzip_shard_cut_short_is_reported(tmp_path):
    docs = _docs(tmp_path, 6)
    shards = _chunk_shards(docs, tmp_path, 2, suffix=".jsonl.gz")
    data = shards[1].read_bytes()
    shards[1].write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardError, match=r"chunked\.1\.jsonl\.gz: (unreadable|has \d+ records|contents differ)"):
        merge_shards([str(p) for p in shards], str(tmp_path / "m.jsonl"))
    assert gzip.decompress(shards[0].read_bytes()).count(b"\n") == 3


def test_two_shard_sample_thoughts_merged_equals_the_unsharded_run(tmp_path, tiny_model_dir):
    """The E-step at scale: `sample-thoughts --shard I/2` twice, merged, is the unsharded output.

    Byte-identical when scoring batches do not depend on the sharding (docs_per_call=1: one
    document's chunks per backend call). With the default groups of 8 documents a shard batches
    other documents together, and padded fp32 forward passes move log q and log p in the 9th digit: the latents
    and token counts are still identical, and log q / log p / log w agree within 1e-4 nats (the backend contract's tolerance).
    """
    from lt_cli.estep import SampleConfig, SampleThoughtsRun, run_sample_thoughts
    from lt_cli.session import BackendArgs

    docs = FIXTURES / "math_docs.jsonl"

    def sample(output: Path, shard: str | None, docs_per_call: int) -> None:
        config = SampleThoughtsRun(
            stream=StreamArgs(input=str(docs), output=str(output), shard=shard),
            backend=BackendArgs(model=str(tiny_model_dir), dtype="float32"),
            sample=SampleConfig(k=2, max_new_tokens=6, seed=7, docs_per_call=docs_per_call),
        )
        assert run_sample_thoughts(config) == 0

    for docs_per_call in (1, 8):
        run = tmp_path / f"g{docs_per_call}"
        sample(run / "full.jsonl", None, docs_per_call)
        for i in range(2):
            sample(run / f"cand.{i}.jsonl", f"{i}/2", docs_per_call)
        assert read_json(run / "cand.1.jsonl.done")["shard"] == "1/2"
        merged = run / "merged.jsonl"
        assert merge_shards([str(run / "cand.{i}.jsonl")], str(merged), num_shards=2).records == 6
        full, got = read_all(run / "full.jsonl"), read_all(merged)
        assert all(len(chunk["candidates"]) == 2 for doc in full for chunk in doc["chunks"])
        if docs_per_call == 1:
            assert merged.read_bytes() == (run / "full.jsonl").read_bytes()
            continue
        assert [d["text"] for d in got] == [d["text"] for d in full]
        for doc_a, doc_b in zip(full, got):
            for chunk_a, chunk_b in zip(doc_a["chunks"], doc_b["chunks"]):
                for a, b in zip(chunk_a["candidates"], chunk_b["candidates"], strict=True):
                    assert {k: a[k] for k in ("latent", "n_tokens", "finished")} == {k: b[k] for k in ("latent", "n_tokens", "finished")}
                    for key in ("log_q", "log_p", "log_w"):
                        assert b[key] == pytest.approx(a[key], abs=1e-4), key
    os.unlink(tmp_path / "g1" / "cand.0.jsonl.done")
    with pytest.raises(ShardError, match=r"cand\.0\.jsonl: no completion marker"):
        merge_shards([str(tmp_path / "g1" / "cand.{i}.jsonl")], str(tmp_path / "again.jsonl"), num_shards=2)
