"""Helpers for the hostile-input and crash tests (tests/test_reliability_*.py): run lt as a user
would, build hostile environments (a full disk, a read-only file system, a file lt may not read),
and check that a failure is one ``lt: error:`` line with a documented exit code and no leftover.

Environments that need privileges (mounting a tmpfs, reading a 000 file as root) are built for
real when the test runs as root with ``mount``/``setpriv`` available, and skipped otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from conftest import REPO

LT = [sys.executable, "-m", "lt_cli"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "LT_PROGRESS_INTERVAL": "3600", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def lt(args, *, prefix: list[str] | None = None, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """``python -m lt_cli ARGS`` in a subprocess (stdout and stderr captured unless redirected)."""
    if "stdout" not in kwargs and "capture_output" not in kwargs:
        kwargs["capture_output"] = True
    return subprocess.run([*(prefix or []), *LT, *[str(a) for a in args]], env={**ENV, **(env or {})}, cwd=REPO, timeout=600, **kwargs)


def cli(args, input: bytes | None = None) -> tuple[int, bytes, str]:
    """The same command in this process (typer's runner): (exit code, stdout bytes, stderr text)."""
    from typer.testing import CliRunner

    from lt_cli import console
    from lt_cli.cli import app

    console.reset_record_stream()
    result = CliRunner().invoke(app, [str(a) for a in args], input=input)
    console.reset_record_stream()
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout_bytes, result.stderr


def error_line(code: int, stderr: str | bytes, returncode: int, *fragments: str) -> str:
    """Assert one ``lt: error:`` line (no traceback) with ``returncode == code``; return the line."""
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.startswith("lt: error: ")]
    assert len(lines) == 1, text
    assert returncode == code, (returncode, text)
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def assert_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    return error_line(code, result.stderr, result.returncode, *fragments)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) with its bytes: compare before and after."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------- environments
def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None and shutil.which("umount") is not None


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """A real tmpfs of ``size`` at ``path`` (``read_only``: mounted ro); skips without privileges."""
    if not _can_mount():
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def unprivileged_prefix() -> list[str]:
    """A command prefix under which file permissions apply (root bypasses them): setpriv without
    the capabilities that override them, or nothing for an ordinary user."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root without setpriv cannot test permission errors")
    caps = "-dac_override,-dac_read_search"
    probe = subprocess.run(["setpriv", "--bounding-set", caps, "--inh-caps", caps, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"setpriv cannot drop capabilities here: {probe.stderr.decode().strip()}")
    return ["setpriv", "--bounding-set", caps, "--inh-caps", caps]
