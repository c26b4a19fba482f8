"""Progress that tells the truth: done/total, items/s, tokens/s and ETA when the input is a file (its
records counted up front), no total for a pipe, resumed work not counted in the rate, one printer
per stage, and the libraries' own progress bars off unless --verbose."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO
from lt_cli import console
from lt_cli.io import count_records, parse_shard


def _docs(path, n: int) -> None:
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": f"Sentence one of doc {i}. Sentence two here."}) + "\n" for i in range(n)))


def test_count_records_honours_limit_shard_gzip_and_a_last_line_without_newline(tmp_path):
    plain = tmp_path / "a.jsonl"
    plain.write_bytes(b'{"text": "a"}\n' * 9 + b'{"text": "z"}')  # 10 records, the last without a newline
    assert count_records(str(plain)) == 10
    assert count_records(str(plain), limit=7) == 7
    assert count_records(str(plain), shard=parse_shard("1/4")) == 3  # records 1, 5, 9
    assert count_records(str(plain), limit=7, shard=parse_shard("3/4")) == 1  # record 3 of the first 7
    packed = tmp_path / "a.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert count_records(str(packed)) == 10
    assert count_records(None) is None and count_records("-") is None and count_records(str(tmp_path / "missing.jsonl")) is None


def test_reporter_lines_rates_eta_and_resumed_work(monkeypatch, capsys):
    clock = [100.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: clock[0])
    monkeypatch.setenv("LT_PROGRESS_INTERVAL", "5")
    with console.progress("stage", total=None, unit="docs", token_unit="latent tokens") as bar:
        bar.resume(40)  # finished by an interrupted run: done, but not this process's rate
        bar.set_total(100)
        clock[0] += 6
        bar.advance(3, tokens=300)  # 6 s: a line is due
        clock[0] += 1
        bar.advance(3, tokens=300)  # 1 s later: not yet
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "stage: 43/100 docs (43.0%), 0.50 docs/s, 50 latent tokens/s, elapsed 6s, ETA 1m54s"
    assert lines[1] == "stage: 46/100 docs (46.0%), 0.86 docs/s, 86 latent tokens/s, elapsed 7s, ETA 1m03s"  # the closing line
    assert len(lines) == 2


def test_every_n_items_gives_one_line_per_n_and_a_status(capsys):
    with console.progress("train", total=5, unit="steps", every=2) as bar:
        for step in range(1, 6):
            bar.advance(status=f"loss {step}")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[1] for line in lines] == ["2/5", "4/5", "5/5"]
    assert lines[0].endswith("| loss 2") and "ETA" in lines[0] and "ETA" not in lines[-1]


@pytest.fixture(scope="module")
def sampled(tmp_path_factory, tiny_model_dir):
    """sample-thoughts over a file (-o FILE) and over a pipe, in this process (captured stderr)."""
    from typer.testing import CliRunner

    from lt_cli.cli import app

    folder = tmp_path_factory.mktemp("progress")
    _docs(folder / "docs.jsonl", 6)
    args = ["sample-thoughts", "--model", str(tiny_model_dir), "--k", "2", "--max-new-tokens", "4", "--docs-per-call", "2"]
    old = os.environ.get("LT_PROGRESS_INTERVAL")
    os.environ["LT_PROGRESS_INTERVAL"] = "0"
    try:
        console.reset_record_stream()
        from_file = CliRunner().invoke(app, [*args, str(folder / "docs.jsonl"), "-o", str(folder / "cand.jsonl")])
        console.reset_record_stream()
        piped = CliRunner().invoke(app, args, input=(folder / "docs.jsonl").read_text())
    finally:
        os.environ["LT_PROGRESS_INTERVAL"] = old or "3600"
    return from_file, piped


def test_sample_thoughts_over_a_file_shows_total_rates_and_eta(sampled):
    from_file, _ = sampled
    assert from_file.exit_code == 0, from_file.stderr
    lines = [line for line in from_file.stderr.splitlines() if line.startswith("sample-thoughts: ") and " docs (" in line]
    assert [line.split()[1] for line in lines] == ["1/6", "2/6", "3/6", "4/6", "5/6", "6/6"]  # one line per document, each with the total
    assert all(re.search(r" docs/s, [\d,]+ latent tokens/s, elapsed \d+s", line) for line in lines)
    assert all(", ETA " in line for line in lines[:-1]) and "ETA" not in lines[-1]


def test_a_pipe_has_no_total(sampled):
    _, piped = sampled
    assert piped.exit_code == 0, piped.stderr
    lines = [line for line in piped.stderr.splitlines() if line.startswith("sample-thoughts: ") and "docs/s" in line]
    assert lines and all(re.match(r"sample-thoughts: \d+ docs, ", line) and "ETA" not in line for line in lines)


def test_library_progress_bars_are_off_unless_verbose():
    """transformers reads HF_HUB_DISABLE_PROGRESS_BARS when it is imported: lt sets it first."""
    code = ("import os, sys; from lt_cli.console import quiet_libraries; quiet_libraries(); "
            "from transformers.utils import logging; import datasets.utils.logging as d; "
            "print(logging.is_progress_bar_enabled(), d.is_progress_bar_enabled())")
    env = {k: v for k, v in os.environ.items() if k not in ("LT_VERBOSE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")}
    env["PYTHONPATH"] = str(REPO)
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    loud = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, "LT_VERBOSE": "1"})
    assert quiet.stdout.split() == ["False", "False"], quiet.stderr
    assert loud.stdout.split() == ["True", "True"], loud.stderr
