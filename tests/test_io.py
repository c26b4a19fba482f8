"""JSONL I/O: stdin/stdout, gzip, atomic writes, resume, sharding, bad records."""

from __future__ import annotations

import gzip

import orjson
import pytest

from lt_cli.errors import RecordError, UsageError
from lt_cli.io import RejectsWriter, parse_shard, read_all
from lt_cli.output import open_output
from lt_cli.chunking import ensure_chunks
from lt_cli.records import document_id, validate_raw_document


def write_lines(path, lines: list[bytes]):
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def test_round_trip_gzip_and_passthrough(tmp_path):
    records = [{"id": i, "text": f"doc {i}", "meta": {"x": [1, 2]}, "unicode": "é∑"} for i in range(5)]
    out = tmp_path / "out.jsonl.gz"
    with open_output(out) as writer:
        for r in records:
            writer.write(r)
    assert read_all(out) == records
    first = out.read_bytes()
    with open_output(out) as writer:
        for r in records:
            writer.write(r)
    assert out.read_bytes() == first  # gzip written with mtime 0: same records, same bytes
    assert gzip.decompress(first).count(b"\n") == 5


def test_blank_lines_skipped(tmp_path):
    path = write_lines(tmp_path / "in.jsonl", [b'{"text": "a"}', b"", b"   ", b'{"text": "b"}'])
    assert [r["text"] for r in read_all(path)] == ["a", "b"]


@pytest.mark.parametrize(
    "line, reason",
    [
        (b'{"text": "a"', "bad JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'{"title": "no text"}', "missing field 'text'"),
        (b'{"text": 5}', "field 'text' must be a string"),
        (b'{"text": "\xff\xfe"}', "invalid UTF-8"),
    ],
)
def test_bad_record_names_file_and_line(tmp_path, line, reason):
    path = write_lines(tmp_path / "in.jsonl", [b'{"text": "ok"}', b"", line])
    with pytest.raises(RecordError) as info:
        read_all(path, validate=validate_raw_document)
    assert str(info.value).startswith(f"{path}:3: ")
    assert reason in str(info.value)


def test_skip_bad_counts_and_writes_rejects(tmp_path):
    path = write_lines(tmp_path / "in.jsonl", [b'{"text": "ok"}', b"nope", b'{"x": 1}', b'{"text": "ok2"}'])
    rejects = RejectsWriter(tmp_path / "rejects.jsonl")
    from lt_cli.io import read_records

    reader = read_records(path, validate=validate_raw_document, skip_bad=True, rejects=rejects)
    assert [r["text"] for r in reader] == ["ok", "ok2"]
    rejects.close()
    assert reader.bad_count == 2
    rows = read_all(tmp_path / "rejects.jsonl")
    assert [(r["line"], r["raw"]) for r in rows] == [(2, "nope"), (3, '{"x": 1}')]


def test_failed_write_leaves_no_file(tmp_path):
    out = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        with open_output(out) as writer:
            writer.write({"a": 1})
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_resume_keeps_complete_records_and_drops_torn_line(tmp_path):
    out = tmp_path / "out.jsonl"
    partial = tmp_path / "out.jsonl.partial"
    partial.write_bytes(b'{"i":0}\n{"i":1}\n{"i":')
    with open_output(out, resume=True) as writer:
        assert writer.done == 2
        assert writer.resumed_records == [{"i": 0}, {"i": 1}]
        writer.write({"i": 2})
    assert out.read_bytes() == b'{"i":0}\n{"i":1}\n{"i":2}\n'
    assert not partial.exists()


def test_marker_written_after_rename(tmp_path):
    out = tmp_path / "s.jsonl"
    with open_output(out, marker=True) as writer:
        writer.write({"a": 1})
    marker = orjson.loads((tmp_path / "s.jsonl.done").read_bytes())
    assert marker["records"] == 1 and len(marker["sha256"]) == 64


def test_shards_partition_records(tmp_path):
    path = write_lines(tmp_path / "in.jsonl", [orjson.dumps({"text": str(i)}) for i in range(10)])
    shards = [read_all(path, shard=parse_shard(f"{i}/3")) for i in range(3)]
    assert [r["text"] for r in shards[1]] == ["1", "4", "7"]
    assert sorted(int(r["text"]) for s in shards for r in s) == list(range(10))
    assert parse_shard("0/1") is None
    for bad in ["3/3", "a/b", "1", "-1/2"]:
        with pytest.raises(UsageError):
            parse_shard(bad)


def test_document_id_is_stable_hash_when_missing():
    assert document_id({"id": 7, "text": "x"}) == "7"
    assert document_id({"text": "x"}) == document_id({"text": "x", "other": 1})
    assert document_id({"text": "x"}) != document_id({"text": "y"})
    assert document_id({"text": "ab"}) == document_id({"chunks": [{"text": "a"}, {"text": "b"}]})


def test_ensure_chunks_accepts_reference_suffix_field():
    chunked = ensure_chunks({"chunks": [{"suffix": "A.", "latent": "z"}]})
    assert chunked["chunks"] == [{"latent": "z", "text": "A."}]
    assert ensure_chunks({"text": "A. B."})["chunks"] == [{"text": "A. B."}]
