"""Hostile inputs and environments for the record streams: big integers, unusable paths, full and
read-only disks, closed stdout, SIGTERM, two writers of one output. Each failure must be one
``lt: error:`` line naming the path and the cause, a documented exit code (lt_cli/errors.py), and
no leftover under any name."""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from hostile import ENV, LT, assert_error, cli, error_line, lt, tmpfs, tree, unprivileged_prefix
from lt_cli import jsoncodec
from conftest import REPO

BIG = 2**64  # orjson alone reads it as 1.8446744073709552e+19


def write_docs(path: Path, n: int, start: int = 0) -> Path:
    path.write_bytes(b"".join(orjson.dumps({"id": f"d{i}", "text": f"Doc {i} one. Doc {i} two. Doc {i} three."}) + b"\n" for i in range(start, start + n)))
    return path


# ------------------------------------------------------------------------------- big integers
def test_integers_beyond_64_bits_pass_through_exactly(tmp_path):
    line = b'{"id":18446744073709551616,"text":"A. B.","x":{"n":-9223372036854775809,"m":[123456789012345678901234567890,1.5,-0.25]}}\n'
    twin = line.replace(b"551616", b"551617")
    source = tmp_path / "big.jsonl"
    source.write_bytes(line + twin)
    code, out, err = cli(["chunk", source])
    assert code == 0, err
    records = [jsoncodec.loads(x) for x in out.splitlines()]
    assert [r["id"] for r in records] == [BIG, BIG + 1]  # distinct, exact
    assert records[0]["x"] == {"n": -(2**63) - 1, "m": [123456789012345678901234567890, 1.5, -0.25]}
    first = b'{"id":18446744073709551616,"text":"A. B.","x":{"n":-9223372036854775809,"m":[123456789012345678901234567890,1.5,-0.25]}'
    assert out.splitlines()[0].startswith(first)


def test_codec_matches_orjson_byte_for_byte_on_ordinary_lines():
    record = {"id": "d1", "n": 2**64 - 1, "m": -(2**63), "f": [0.1, 1e-7, 1e20, -3.0], "s": "digits 1234567890123456789012 in text", "u": "é\u2028"}
    line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    assert jsoncodec.loads(line) == orjson.loads(line) == record  # a 22-digit run inside a string takes the exact path
    assert jsoncodec.dumps(record) == line
    big = {**record, "n": 2**64, "m": -(2**63) - 1}
    text = jsoncodec.dumps(big)
    assert text == line.replace(b"18446744073709551615", b"18446744073709551616").replace(b"-9223372036854775808", b"-9223372036854775809")
    assert jsoncodec.loads(text) == big
    for bad in (b'{"a": NaN}', b'{"a": 1e999999999999999999999}x', b'{"a": "\xff"} 12345678901234567890'):
        with pytest.raises(orjson.JSONDecodeError):
            jsoncodec.loads(bad)


# ------------------------------------------------------------------------------- input paths
def test_unusable_inputs_are_one_line_each(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    fake_gz = tmp_path / "plain.jsonl.gz"
    fake_gz.write_bytes(b'{"text": "not compressed"}\n')
    broken_gz = tmp_path / "broken.jsonl.gz"
    broken_gz.write_bytes(gzip.compress(b'{"text": "A. B."}\n' * 200)[:-40] + b"\x00" * 40)
    for command in (["chunk"], ["select"]):
        code, out, err = cli([*command, folder])
        error_line(2, err, code, f"{folder}: is a directory")
        code, out, err = cli([*command, fake_gz])
        error_line(2, err, code, f"{fake_gz}: not a gzip file")
        code, out, err = cli([*command, tmp_path / "missing.jsonl"])
        error_line(2, err, code, "missing.jsonl: no such file")
    code, out, err = cli(["chunk", broken_gz])
    error_line(2, err, code, f"{broken_gz}: corrupt gzip data")
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_permission_denied_names_the_file(tmp_path):
    prefix = unprivileged_prefix()
    source = write_docs(tmp_path / "docs.jsonl", 2)
    secret = tmp_path / "secret.jsonl"
    secret.write_bytes(source.read_bytes())
    secret.chmod(0o000)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert_error(lt(["chunk", secret], prefix=prefix), 1, f"{secret}: permission denied")
        assert_error(lt(["chunk", source, "-o", locked / "out.jsonl"], prefix=prefix), 1, str(locked), "permission denied")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)
        secret.chmod(0o644)


# ------------------------------------------------------------------------------- output paths
def test_output_that_is_a_directory_fails_before_any_work(tmp_path):
    source = write_docs(tmp_path / "docs.jsonl", 3)
    target = tmp_path / "out"
    target.mkdir()
    before = tree(tmp_path)
    code, out, err = cli(["chunk", source, "-o", target])
    error_line(2, err, code, f"-o {target}: is a directory")
    assert "chunk:" not in err  # nothing was processed
    code, out, err = cli(["chunk", source, "-o", source / "out.jsonl"])
    error_line(2, err, code, f"{source} is not a directory")
    assert tree(tmp_path) == before


def test_disk_full_leaves_nothing_behind(tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_bytes(b"".join(orjson.dumps({"id": i, "text": "word " * 400}) + b"\n" for i in range(100)))
    with tmpfs(tmp_path / "small", "64k") as disk:
        result = lt(["chunk", source, "-o", disk / "out.jsonl"])
        assert_error(result, 1, f"{disk / 'out.jsonl'}: no space left on device")
        assert list(disk.iterdir()) == []


def test_read_only_file_system(tmp_path):
    source = write_docs(tmp_path / "docs.jsonl", 2)
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as disk:
        assert_error(lt(["chunk", source, "-o", disk / "out.jsonl"]), 1, str(disk), "read-only file system")
        assert list(disk.iterdir()) == []


def test_stdout_full_or_closed(tmp_path):
    source = write_docs(tmp_path / "docs.jsonl", 3)
    with open("/dev/full", "wb") as full:
        result = lt(["chunk", source], stdout=full, stderr=subprocess.PIPE)
    assert_error(result, 1, "stdout: no space left on device")
    closed = subprocess.run(LT + ["chunk", str(source)], env=ENV, cwd=REPO, stderr=subprocess.PIPE, preexec_fn=lambda: os.close(1), timeout=300)
    assert_error(closed, 2, "stdout is closed: pass -o FILE")
    assert b"chunk:" not in closed.stderr  # refused before the work


def test_every_command_writing_stdout_names_it_when_the_write_fails(tmp_path):
    """`lt synthesize --estimate > /dev/full` and `lt bootstrap --dry-run > /dev/full` as reported:
    one line naming stdout (lt chunk above; lt eval, train and merge --check share files.write_stdout_json)."""
    source = write_docs(tmp_path / "docs.jsonl", 2)
    for args in (["synthesize", "--estimate", source], ["bootstrap", "--dry-run", "--run-dir", tmp_path / "run"]):
        with open("/dev/full", "wb") as full:
            result = lt(args, stdout=full, stderr=subprocess.PIPE)
        assert_error(result, 1, "stdout: no space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl"]


def test_command_line_mistakes_are_one_line_like_every_usage_error(tmp_path):
    """typer's own usage errors (a value that is not an integer, an unknown option or command, a
    missing option or argument) print one `lt: error:` line and exit 2, not a usage box."""
    source = write_docs(tmp_path / "docs.jsonl", 1)
    cases = [
        (["chunk", "--limit", "ten", source], "invalid value for '--limit'", "(see "),
        (["select", "--k", "1.5", source], "invalid value for '--k'"),
        (["chunk", "--bogus", source], "no such option: --bogus"),
        (["chunkk", source], "no such command 'chunkk'"),
        (["sample-thoughts", source], "--model is required"),  # (--config may give it, so lt checks it, not typer)
        (["merge", "-o", tmp_path / "m.jsonl"], "missing argument"),
        (["chunk", source, source], "unexpected extra argument"),
        (["select", source, "--method"], "'--method' requires an argument"),
    ]
    for args, *fragments in cases:
        code, out, err = cli(args)
        error_line(2, err, code, *fragments)
        assert "Usage:" not in err and "Error:" not in err and out == b""
    code, out, err = cli(["chunk", "--help"])
    assert code == 0 and "Usage:" in out.decode()  # help is untouched


# ------------------------------------------------------------------------------- signals
@pytest.mark.parametrize("signum, code, words", [(signal.SIGTERM, 143, "lt: terminated (SIGTERM)"), (signal.SIGINT, 130, "lt: interrupted")])
def test_sigterm_cleans_up_like_sigint(tmp_path, signum, code, words):
    out = tmp_path / "out.jsonl"
    # a shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT (as it
    # should); give the child the default disposition so the test holds however pytest was started
    proc = subprocess.Popen(LT + ["chunk", "-", "-o", str(out)], stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=REPO,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    proc.stdin.write(b'{"id": "a", "text": "One. Two."}\n')
    proc.stdin.flush()
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.jsonl.*.tmp")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code and words in err.decode() and "Traceback" not in err.decode(), err.decode()[-2000:]
    assert list(tmp_path.iterdir()) == []  # no .tmp, no lock


def test_an_interrupt_a_library_swallowed_still_stops_the_output(tmp_path):
    """A bare ``except:`` where the signal lands must not let the command run on and commit."""
    from lt_cli import interrupts
    from lt_cli.output import open_output

    out = tmp_path / "out.jsonl"
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)  # however pytest was started
    try:
        _swallow_an_interrupt_while_writing(out, interrupts, open_output)
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert list(tmp_path.iterdir()) == []  # nothing committed, no .tmp, no lock
    with interrupts.handling():  # a recorded signal does not outlive its command
        interrupts.raise_if_received()
        with open_output(out) as writer:
            writer.write({"id": "c"})
    assert out.read_bytes() == b'{"id":"c"}\n'


def _swallow_an_interrupt_while_writing(out, interrupts, open_output) -> None:
    with interrupts.handling():
        writer = open_output(out)
        with pytest.raises(KeyboardInterrupt):
            with writer:
                writer.write({"id": "a"})
                try:  # a library catching everything where Ctrl-C lands
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(5)
                except:  # noqa: E722
                    pass
                writer.write({"id": "b"})


def test_an_interrupt_caught_by_a_library_still_exits_130_after_cleanup(tmp_path):
    """Swallowed before any output is open: lt still exits 130, and writes nothing."""
    script = (
        "import os, signal, time\n"
        "from lt_cli.commands.common import run_command\n"
        "import typer\n"
        "app = typer.Typer()\n"
        "@app.command()\n"
        "@run_command\n"
        "def go() -> int:\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGINT); time.sleep(5)\n"
        "    except:\n"
        "        pass\n"
        "    print('ran on')\n"
        "    return 0\n"
        "app()\n"
    )
    proc = subprocess.run([LT[0], "-c", script], capture_output=True, env=ENV, cwd=REPO, timeout=120,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.returncode == 130 and proc.stderr.decode().strip().endswith("lt: interrupted"), proc.stderr.decode()[-2000:]
    assert proc.stdout == b"ran on\n"  # the command body ran to its end; lt refused to call that success


def test_settle_clears_cpythons_mark_of_an_unhandled_interrupt():
    """CPython marks an interrupt that left exec() of a string as unhandled, and may kill itself
    with SIGINT at exit (exit -2, not 130); settle() clears the mark."""
    import ctypes

    from lt_cli import interrupts

    try:
        mark = ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt")
    except (ValueError, AttributeError):
        pytest.skip("this Python does not export the mark")
    try:
        exec("raise KeyboardInterrupt")
    except KeyboardInterrupt:
        pass
    assert mark.value == 1
    interrupts.settle()
    assert mark.value == 0


# ------------------------------------------------------------------------------- one writer
def _hold(out: Path) -> subprocess.Popen:
    """An ``lt chunk`` writing ``out`` from a pipe that stays open: it holds OUT.lock."""
    proc = subprocess.Popen(LT + ["chunk", "-", "-o", str(out)], stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=REPO)
    deadline = time.monotonic() + 120
    while not out.with_name(out.name + ".lock").exists() or not out.with_name(out.name + ".lock").read_bytes():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    return proc


def test_a_second_writer_of_one_output_is_refused_and_names_the_first(tmp_path):
    source = write_docs(tmp_path / "docs.jsonl", 3)
    out = tmp_path / "out.jsonl"
    first = _hold(out)
    second = lt(["chunk", source, "-o", out])
    line = assert_error(second, 4, f"{out} is being written by pid {first.pid} on {socket.gethostname()}", "lt chunk - -o")
    assert "choose another -o" in line
    first.stdin.write(source.read_bytes())
    first.stdin.close()
    assert first.wait(timeout=120) == 0
    assert [orjson.loads(x)["id"] for x in out.read_bytes().splitlines()] == ["d0", "d1", "d2"]  # each record once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl", "out.jsonl"]


def test_kill_9_releases_the_lock(tmp_path):
    source = write_docs(tmp_path / "docs.jsonl", 2)
    out = tmp_path / "out.jsonl"
    holder = _hold(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert out.with_name("out.jsonl.lock").exists()  # left behind, but no longer locked
    code, _, err = cli(["chunk", source, "-o", out])
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl", "out.jsonl"]  # the killed run's .tmp is gone too


def test_a_device_or_a_pipe_as_output_is_written_never_replaced(tmp_path):
    """-o /dev/null or a FIFO is a stream: no temporary file beside it, no rename over it (as root,
    a rename would have replaced /dev/null with a regular file), no sidecars."""
    import stat

    source = write_docs(tmp_path / "docs.jsonl", 3)
    code, expected, _ = cli(["chunk", source])
    assert code == 0
    before = os.stat("/dev/null")
    code, _, err = cli(["select", "-o", "/dev/null", "-"], input=b'{"id": "a", "chunks": [{"text": "t", "candidates": [{"latent": "x", "log_w": 0.5}]}]}\n')
    assert code == 0, err
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert not any(Path("/dev").glob("null.*")) and not any(Path("/dev").glob(".null.*"))
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    code, _, err = cli(["chunk", source, "-o", fifo])
    assert code == 0, err
    assert reader.communicate(timeout=60)[0] == expected
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl", "pipe"]
