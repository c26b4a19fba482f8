"""lt select: importance resampling statistics, the other methods, ELBO_n/ESS values, bad input."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import orjson
import pytest

from conftest import REPO
from lt_cli.estep import (
    choose_index,
    effective_sample_size,
    elbo_n,
    elbo_sample_counts,
    select_document,
    softmax,
    validate_candidates_document,
)
from lt_cli.estep import SelectConfig, SelectRun, SelectionStats, read_stats, run_select
from lt_cli.files import write_json
from lt_cli.provenance import stream_identity
from lt_cli.seeding import derive_seed
from lt_cli.stream import StreamArgs

LT = [sys.executable, "-m", "lt_cli"]
ENV = {**os.environ, "LT_PROGRESS_INTERVAL": "3600"}


def select_file(source, output, **select) -> int:
    return run_select(SelectRun(stream=StreamArgs(input=str(source), output=str(output)), select=SelectConfig(**select)))


def candidate(latent: str, log_w: float | None, log_q: float = -5.0) -> dict:
    return {
        "latent": latent,
        "log_q": log_q,
        "log_p": None if log_w is None else log_q + log_w,
        "log_w": log_w,
        "finished": True,
        "n_tokens": 3,
    }


def doc_with(log_ws: list[list[float | None]], doc_id: str = "d0") -> dict:
    return {
        "id": doc_id,
        "num_chunks": len(log_ws),
        "chunks": [
            {"text": f"chunk {i}. ", "candidates": [candidate(f"z{i}_{j}", w) for j, w in enumerate(ws)]}
            for i, ws in enumerate(log_ws)
        ],
    }


def test_importance_draws_follow_softmax_chi_square():
    log_w = [0.0, -1.0, 1.5, -0.3]
    p = np.array(softmax(log_w))
    assert p.sum() == pytest.approx(1.0) and p[2] == pytest.approx(math.exp(1.5) / sum(math.exp(v) for v in log_w))
    n = 4000
    counts = np.zeros(4)
    for t in range(n):
        document = doc_with([log_w], doc_id=f"doc{t}")
        counts[select_document(document, "importance", seed=7)["chunks"][0]["selected"]] += 1
    expected = n * p
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # 3 degrees of freedom: P(chi2 > 16.27) = 0.001
    assert chi2 < 16.27, (counts, expected)
    # and the draws are not all the same (a broken seed would make them so)
    assert (counts > 0).all()


def test_importance_matches_numpy_choice_with_derived_seed():
    log_w = [0.3, -2.0, 1.0]
    document = doc_with([log_w, log_w[::-1]], doc_id="abc")
    out = select_document(document, "importance", seed=42)
    for i, chunk in enumerate(out["chunks"]):
        w = document["chunks"][i]["candidates"]
        expected = int(np.random.default_rng(derive_seed(42, "abc", i)).choice(3, p=np.array(softmax([c["log_w"] for c in w]))))
        assert chunk["selected"] == expected
        assert chunk["latent"] == f"z{i}_{expected}"


def test_uniform_draws_are_uniform_even_with_extreme_weights():
    counts = np.zeros(3)
    n = 3000
    for t in range(n):
        out = select_document(doc_with([[100.0, -100.0, -100.0]], doc_id=f"u{t}"), "uniform", seed=1)
        counts[out["chunks"][0]["selected"]] += 1
    chi2 = float(((counts - n / 3) ** 2 / (n / 3)).sum())
    assert chi2 < 13.82  # 2 dof, p = 0.001


def test_document_without_chunks_passes_through():
    out = select_document({"id": "e", "text": "", "chunks": []}, "importance", seed=1)
    assert out["chunks"] == [] and out["elbo"] is None and out["num_chunks"] == 0


def test_argmax_first_and_single_candidate():
    document = doc_with([[-3.0, 2.0, 1.0], [5.0, 5.0, -1.0]])
    argmax = select_document(document, "argmax", seed=0)
    assert [c["selected"] for c in argmax["chunks"]] == [1, 0]  # ties go to the earliest
    first = select_document(document, "first", seed=0)
    assert [c["latent"] for c in first["chunks"]] == ["z0_0", "z1_0"]
    single = select_document(doc_with([[None], [None]]), "importance", seed=3)
    assert [c["latent"] for c in single["chunks"]] == ["z0_0", "z1_0"]
    assert single["elbo"] is None and single["ess"] is None


def test_select_document_statistics_and_schema():
    log_ws = [[0.0, -1.0, -2.0, 0.5], [-4.0, -4.0, -4.0, -4.0]]
    out = select_document(doc_with(log_ws), "importance", seed=5)
    assert set(out["elbo"]) == {"1", "2", "4"}
    assert out["elbo"]["1"] == pytest.approx(0.0 + -4.0)
    lse = math.log(1 + math.exp(-1.0))
    assert out["elbo"]["2"] == pytest.approx((lse - math.log(2)) + (-4.0))
    lse4 = math.log(1 + math.exp(-1) + math.exp(-2) + math.exp(0.5))
    assert out["elbo"]["4"] == pytest.approx(lse4 - math.log(4) - 4.0)
    p = softmax(log_ws[0])
    assert out["ess"] == pytest.approx((1 / sum(x * x for x in p) + 4.0) / 2)
    assert out["mean_log_w"] == pytest.approx(sum(sum(w) for w in log_ws) / 8)
    assert all("candidates" not in c for c in out["chunks"])
    kept = select_document(doc_with(log_ws), "importance", seed=5, keep_candidates=True)
    assert len(kept["chunks"][0]["candidates"]) == 4


def test_elbo_and_ess_functions():
    assert elbo_n([-2.0], 1) == -2.0
    assert elbo_n([0.0, 0.0, 5.0], 2) == pytest.approx(0.0)
    assert effective_sample_size([1.0, 1.0, 1.0, 1.0]) == pytest.approx(4.0)
    assert effective_sample_size([0.0, -1000.0]) == pytest.approx(1.0)
    assert elbo_sample_counts(1) == [1]
    assert elbo_sample_counts(8) == [1, 2, 4, 8]
    assert elbo_sample_counts(6) == [1, 2, 4, 6]
    with pytest.raises(ValueError):
        elbo_n([0.0], 2)
    with pytest.raises(ValueError):
        choose_index([0.0, 1.0], "best", 0, 2)
    with pytest.raises(ValueError):
        choose_index(None, "importance", 0, 2)


@pytest.mark.parametrize(
    "record, message",
    [
        ({"text": "raw"}, "a 'chunks' list"),
        ({"chunks": [{"text": "a"}]}, "chunks[0] has no 'candidates'"),
        ({"chunks": [{"text": "a", "candidates": []}]}, "chunks[0] has no 'candidates'"),
        ({"chunks": [{"text": "a", "candidates": [{"latent": 3}]}]}, "needs a string 'latent'"),
        ({"chunks": [{"text": "a", "candidates": [{"latent": "z", "log_q": -1, "log_w": "x"}]}]}, "log_w must be a number"),
    ],
)
def test_validation_rejects_bad_records(record, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_candidates_document(record)


def write_jsonl(path, records):
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def test_cli_select_bad_line_is_reported_with_file_and_line(tmp_path):
    source = tmp_path / "cand.jsonl"
    good = doc_with([[0.0, 1.0]])
    source.write_bytes(orjson.dumps(good) + b"\n" + b'{"chunks": [{"text": "a"}]}\n')
    result = subprocess.run(LT + ["select", str(source)], capture_output=True, env=ENV, cwd=REPO)
    assert result.returncode == 2
    assert f"{source}:2: chunks[0] has no 'candidates'" in result.stderr.decode()
    skipped = subprocess.run(LT + ["select", str(source), "--skip-bad", "-o", str(tmp_path / "out.jsonl")], capture_output=True, env=ENV, cwd=REPO)
    assert skipped.returncode == 3
    assert len((tmp_path / "out.jsonl").read_bytes().splitlines()) == 1
    assert (tmp_path / "out.jsonl.rejects.jsonl").exists()


def test_cli_select_needs_weights_for_importance(tmp_path):
    source = tmp_path / "cand.jsonl"
    write_jsonl(source, [doc_with([[None, None]])])
    result = subprocess.run(LT + ["select", str(source)], capture_output=True, env=ENV, cwd=REPO)
    assert result.returncode == 2 and "--model" in result.stderr.decode()
    uniform = subprocess.run(LT + ["select", "--method", "uniform", str(source)], capture_output=True, env=ENV, cwd=REPO)
    assert uniform.returncode == 0
    assert orjson.loads(uniform.stdout)["chunks"][0]["latent"] in {"z0_0", "z0_1"}


def test_run_select_summary_resume_and_determinism(tmp_path, capsys):
    source = tmp_path / "cand.jsonl"
    docs = [doc_with([[0.1 * i, -0.2, 0.3], [1.0, 0.0, -1.0]], doc_id=f"d{i}") for i in range(6)]
    write_jsonl(source, docs)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert select_file(source, first, seed=9) == 0
    err = capsys.readouterr().err
    assert "ELBO_2 per document" in err and "ESS per chunk" in err and "documents" in err
    # a run interrupted after 2 records resumes to the same bytes
    partial = tmp_path / "b.jsonl.partial"
    partial.write_bytes(b"".join(first.read_bytes().splitlines(keepends=True)[:2]) + b'{"trunc')
    # what the interrupted run recorded about itself (lt_cli.provenance)
    run = SelectRun(stream=StreamArgs(input=str(source), output=str(second)), select=SelectConfig(seed=9))
    write_json(tmp_path / "b.jsonl.partial.json", stream_identity("select", run, source))
    assert select_file(source, second, seed=9) == 0
    assert second.read_bytes() == first.read_bytes()
    assert not partial.exists()
    # the resumed run's statistics cover every document, as the uninterrupted run's do
    assert read_stats(str(second)) == read_stats(str(first))
    other = tmp_path / "c.jsonl"
    select_file(source, other, seed=10)
    assert other.read_bytes() != first.read_bytes()


def test_select_k_uses_the_first_k_candidates(tmp_path, capsys):
    """--k 2 on 3 candidates gives exactly what select gives on a file that only had the first 2,
    and a chunk with too few candidates is a FILE:LINE error."""
    source, truncated = tmp_path / "cand.jsonl", tmp_path / "cand2.jsonl"
    docs = [doc_with([[0.1 * i, -0.2, 3.0], [1.0, 0.0, -1.0]], doc_id=f"d{i}") for i in range(5)]
    write_jsonl(source, docs)
    write_jsonl(truncated, [{**d, "chunks": [{**c, "candidates": c["candidates"][:2]} for c in d["chunks"]]} for d in docs])
    with_k, reference = tmp_path / "k.jsonl", tmp_path / "ref.jsonl"
    assert select_file(source, with_k, seed=3, k=2) == 0
    assert select_file(truncated, reference, seed=3) == 0
    assert with_k.read_bytes() == reference.read_bytes()
    out = [orjson.loads(line) for line in with_k.read_bytes().splitlines()]
    assert all(c["selected"] in (0, 1) and set(d["elbo"]) == {"1", "2"} for d in out for c in d["chunks"])
    assert "--k 2" in capsys.readouterr().err
    # a chunk whose suffix was cut for all 3 candidates keeps that cut under --k: said, counted
    cut = [{**d, "chunks": [{**c, "num_suffix_token_truncated": 2 if j == 1 else 0} for j, c in enumerate(d["chunks"])]} for d in docs]
    write_jsonl(source, cut)
    assert select_file(source, tmp_path / "cut.jsonl", seed=3, k=2) == 0
    assert "5 chunk(s) had their suffix cut when all their candidates were scored together" in capsys.readouterr().err
    assert select_file(source, tmp_path / "cut3.jsonl", seed=3) == 0
    assert "suffix cut" not in capsys.readouterr().err

    result = subprocess.run(LT + ["select", "--k", "4", str(source)], capture_output=True, env=ENV, cwd=REPO)
    assert result.returncode == 2 and result.stdout == b""
    assert f"{source}:1: chunks[0] has 3 candidate(s), fewer than --k 4" in result.stderr.decode()
    result = subprocess.run(LT + ["select", "--k", "0", str(source)], capture_output=True, env=ENV, cwd=REPO)
    assert result.returncode == 2 and "--k must be at least 1" in result.stderr.decode()


def test_statistics_say_what_they_average_over(tmp_path, capsys):
    """Documents with different chunk counts: log w per candidate, ESS per chunk and ELBO per
    document are three different averages; the table, the sidecar and SelectionStats agree."""
    docs = [doc_with([[0.0, 1.0]], doc_id="a"), doc_with([[2.0, -1.0], [0.5, 0.5], [3.0, 0.0]], doc_id="b")]
    source = tmp_path / "cand.jsonl"
    write_jsonl(source, docs)
    assert select_file(source, tmp_path / "out.jsonl") == 0
    stats = read_stats(str(tmp_path / "out.jsonl"))
    all_w = [w for d in docs for c in d["chunks"] for w in (x["log_w"] for x in c["candidates"])]
    chunks = [[x["log_w"] for x in c["candidates"]] for d in docs for c in d["chunks"]]
    assert stats["log_w_per_candidate"] == pytest.approx(sum(all_w) / 8)  # not the mean of per-document means
    assert stats["ess_per_chunk"] == pytest.approx(sum(effective_sample_size(w) for w in chunks) / 4)
    doc_elbo = [sum(elbo_n([x["log_w"] for x in c["candidates"]], 2) for c in d["chunks"]) for d in docs]
    assert stats["elbo_n_per_document"]["2"] == pytest.approx(sum(doc_elbo) / 2)
    assert (stats["documents"], stats["chunks"], stats["candidates"], stats["k"]) == (2, 4, 8, 2)
    err = capsys.readouterr().err
    assert f"{stats['log_w_per_candidate']:.4f}" in err and f"{stats['ess_per_chunk']:.4f}" in err
    aggregate = SelectionStats()
    for d in docs:
        aggregate.add(d)
    assert aggregate.to_json() == stats


def test_mixed_k_without_k_is_refused_with_file_and_line(tmp_path):
    source = tmp_path / "cand.jsonl"
    write_jsonl(source, [doc_with([[0.0, 1.0]], doc_id="a"), doc_with([[0.0, 1.0, 2.0, 3.0]], doc_id="b")])
    out = tmp_path / "out.jsonl"
    result = subprocess.run(LT + ["select", str(source), "-o", str(out)], capture_output=True, env=ENV, cwd=REPO)
    assert result.returncode == 2 and not out.exists()
    assert f"{source}:2: candidates per chunk differ (2, 4)" in result.stderr.decode()
    ok = subprocess.run(LT + ["select", "--k", "2", str(source)], capture_output=True, env=ENV, cwd=REPO)
    assert ok.returncode == 0 and len(ok.stdout.splitlines()) == 2
