"""The CLI surface: no heavy imports, examples first in help, errors, pipes, sharding."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from conftest import FIXTURES, REPO

LT = [sys.executable, "-m", "lt_cli"]
ENV = {**os.environ, "LT_PROGRESS_INTERVAL": "3600"}


def run(args, **kwargs):
    return subprocess.run(LT + args, capture_output=True, env=ENV, cwd=REPO, **kwargs)


def test_cli_import_does_not_import_heavy_libraries():
    code = "import sys, lt_cli.cli; bad = [m for m in ('torch', 'transformers', 'vllm', 'datasets', 'numpy', 'httpx') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_command_help_leads_with_examples():
    from typer.testing import CliRunner

    from lt_cli.cli import COMMANDS, app

    runner = CliRunner()
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0 and "Examples:" in top.stdout
    for name, _ in COMMANDS:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, name
        text = result.stdout
        assert text.index("Examples:") < text.index("Options:"), name
        assert f"lt {name}" in text, name


def test_chunk_is_byte_identical_across_runs_and_shards_union(tmp_path):
    source = FIXTURES / "math_docs.jsonl"
    first = run(["chunk", str(source)], check=True).stdout
    second = run(["chunk", str(source)], check=True).stdout
    assert first == second and first.count(b"\n") == 6
    parts = []
    for i in range(2):
        out = tmp_path / f"part{i}.jsonl"
        run(["chunk", str(source), "--shard", f"{i}/2", "-o", str(out)], check=True)
        assert (tmp_path / f"part{i}.jsonl.done").exists()
        parts.append(out.read_bytes().splitlines())
    assert sorted(parts[0] + parts[1]) == sorted(first.splitlines())


def test_chunk_reads_stdin_and_survives_closed_pipe():
    source = FIXTURES / "math_docs.jsonl"
    big = source.read_bytes() * 2000
    proc = subprocess.run(
        f"{sys.executable} -m lt_cli chunk - | head -1",
        shell=True, input=big, capture_output=True, env=ENV, cwd=REPO,
    )
    assert proc.stdout.count(b"\n") == 1
    assert orjson.loads(proc.stdout)["id"] == "gsm-1"
    assert b"Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "bad_line, reason",
    [
        (b'{"text": "unterminated', b"bad JSON"),
        (b'"just a string"', b"expected a JSON object"),
        (b'{"body": "x"}', b"missing field 'text'"),
        (b'{"text": "\xc3\x28"}', b"invalid UTF-8"),
    ],
)
def test_malformed_line_exits_2_with_file_line_and_no_output(tmp_path, bad_line, reason):
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"text": "fine."}\n' + bad_line + b"\n")
    out = tmp_path / "out.jsonl"
    result = run(["chunk", str(source), "-o", str(out)])
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines()[-1].startswith(f"lt: error: {source}:2: ")
    assert reason in result.stderr
    assert b"Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_skip_bad_exits_3_and_writes_rejects(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"text": "fine."}\nnot json\n{"text": "also fine."}\n')
    out = tmp_path / "out.jsonl"
    result = run(["chunk", str(source), "-o", str(out), "--skip-bad"])
    assert result.returncode == 3
    assert out.read_bytes().count(b"\n") == 2
    rejects = (tmp_path / "out.jsonl.rejects.jsonl").read_bytes()
    assert orjson.loads(rejects)["line"] == 2


def test_stdout_carries_only_records():
    result = run(["chunk", str(FIXTURES / "math_docs.jsonl")], check=True)
    for line in result.stdout.splitlines():
        assert isinstance(orjson.loads(line), dict)
    assert b"chunk:" in result.stderr  # the progress summary went to stderr


def test_unknown_command_is_usage_error():
    assert run(["nope"]).returncode == 2


def test_library_noise_on_fd1_goes_to_stderr():
    """Once records flow to stdout, anything else writing to fd 1 (C code, vLLM, print) lands on stderr."""
    code = (
        "import os\n"
        "from lt_cli.output import open_output\n"
        "with open_output('-') as w:\n"
        "    print('noise from print')\n"
        "    os.write(1, b'noise from C\\n')\n"
        "    w.write({'record': 1})\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=REPO, check=True)
    assert result.stdout == b'{"record":1}\n'
    assert b"noise from print" in result.stderr and b"noise from C" in result.stderr
