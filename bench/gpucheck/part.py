"""What a part sees while it runs in its own process: results, null reasons, sub-steps, time.

A part fills dotted fields (``lt.tokens_per_s``) inside named sub-steps. A sub-step that raises, or
that is skipped for lack of time, leaves its fields null with the reason, and the part goes on
with the next one; results are written to ``OUT/parts/NAME.json`` after every sub-step, so even a
part killed at its budget hands back what it had measured.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from .profile import Profile

REPO = Path(__file__).resolve().parents[2]


class StepSkipped(Exception):
    """Raised inside a sub-step that cannot run (time short, an earlier step it needs failed)."""


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    tree[keys[-1]] = value


def get_dotted(tree: dict, dotted: str, default: Any = None) -> Any:
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return default
        tree = tree[key]
    return tree


def child_env() -> dict[str, str]:
    """The environment of lt subprocesses: this checkout's lt_cli first, quiet progress."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("LT_PROGRESS_INTERVAL", "30")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class PartContext:
    def __init__(self, name: str, out: Path, profile: Profile, deadline: float):
        self.name = name
        self.out = out
        self.profile = profile
        self.deadline = deadline
        self.work = out / "work"
        self.logs = out / "logs"
        self.work.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        (out / "parts").mkdir(parents=True, exist_ok=True)
        self.results: dict[str, Any] = {}
        self.null_reasons: dict[str, str] = {}
        self.errors: dict[str, str] = {}

    # ------------------------------------------------------------------------------ results
    def set(self, dotted: str, value: Any) -> None:
        if value is None:
            raise ValueError(f"{dotted}: use ctx.null(field, reason) for a value that could not be measured")
        set_dotted(self.results, dotted, value)
        self.null_reasons.pop(dotted, None)

    def get(self, dotted: str, default: Any = None) -> Any:
        return get_dotted(self.results, dotted, default)

    def null(self, dotted: str, reason: str) -> None:
        set_dotted(self.results, dotted, None)
        self.null_reasons[dotted] = reason

    def save(self) -> None:
        path = self.out / "parts" / f"{self.name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"results": self.results, "null_reasons": self.null_reasons, "errors": self.errors}, indent=1))
        tmp.replace(path)

    @contextlib.contextmanager
    def step(self, name: str, fields: Sequence[str]) -> Iterator[None]:
        """Run a sub-step; on failure or skip its unset ``fields`` become null with the reason."""
        try:
            yield
        except StepSkipped as exc:
            self._null_unset(fields, f"{name} skipped: {exc}")
        except Exception as exc:  # recorded, and the part goes on
            message = f"{type(exc).__name__}: {exc}".strip()[:2000]
            self.errors[name] = message
            self._null_unset(fields, f"{name} failed: {message.splitlines()[0][:300]}")
            print(f"[{self.name}] {name} failed: {message}", file=sys.stderr, flush=True)
        finally:
            self.save()

    def _null_unset(self, fields: Sequence[str], reason: str) -> None:
        for dotted in fields:
            if self.get(dotted) is None:
                self.null(dotted, reason)

    def need(self, seconds: float) -> None:
        """Skip the current step when less than ``seconds`` of the part's budget is left."""
        if self.left_s() < seconds:
            raise StepSkipped(f"time short: {self.left_s():.0f} s left of the part's budget, this step needs about {seconds:.0f} s")

    def require(self, *dotted: str) -> None:
        """Skip the current step when an earlier one did not produce what it needs."""
        missing = [d for d in dotted if self.get(d) is None]
        if missing:
            raise StepSkipped(f"needs {', '.join(missing)}, which an earlier step did not produce")

    # ------------------------------------------------------------------------------ time
    def left_s(self) -> float:
        return self.deadline - time.time()

    # ------------------------------------------------------------------------------ processes
    def run(self, argv: Sequence[str], log_name: str, *, stdout_path: Path | None = None, margin_s: float = 5.0,
            cwd: Path | None = None, env: dict[str, str] | None = None, line_times: list | None = None) -> float:
        """Run ``argv`` (stderr to ``logs/LOG_NAME.log``) within the part's time; returns wall seconds.

        Killed (its whole process group) ``margin_s`` before the part's deadline, so the part can
        still record what it has; a non-zero exit raises with the log's last lines. With
        ``line_times``, each stderr line is appended as ``(seconds since start, line)`` when it
        arrives (progress lines time the phases of a run from outside).
        """
        timeout = self.left_s() - margin_s
        if timeout <= 1:
            raise StepSkipped(f"time short: {self.left_s():.0f} s left of the part's budget")
        log_path = self.logs / f"{log_name}.log"
        start = time.perf_counter()
        with open(log_path, "wb") as log, (open(stdout_path, "wb") if stdout_path else contextlib.nullcontext(log)) as out:
            log.write(("$ " + " ".join(str(a) for a in argv) + "\n").encode())
            log.flush()
            stderr = subprocess.PIPE if line_times is not None else log
            proc = subprocess.Popen([str(a) for a in argv], stdout=out, stderr=stderr, env={**child_env(), **(env or {})}, cwd=cwd,
                                    start_new_session=True)
            reader = None
            if line_times is not None:
                reader = threading.Thread(target=_collect_lines, args=(proc.stderr, log, line_times, start), daemon=True)
                reader.start()
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_group(proc)
                raise TimeoutError(f"{log_name} stopped at the part's budget after {time.perf_counter() - start:.0f} s") from None
            finally:
                if reader is not None:
                    reader.join(timeout=10)
        wall = time.perf_counter() - start
        if code != 0:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-6:]
            raise RuntimeError(f"{log_name} exited {code}: " + " | ".join(tail))
        return wall

    def lt(self, args: Sequence[str], log_name: str, **kw) -> float:
        return self.run([sys.executable, "-m", "lt_cli", *args], log_name, **kw)

    def torchrun(self, nproc: int, args: Sequence[str], log_name: str, **kw) -> float:
        return self.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                         "-m", "lt_cli", *args], log_name, **kw)


def _collect_lines(stream, log, line_times: list, start: float) -> None:
    for raw in iter(stream.readline, b""):
        line_times.append((time.perf_counter() - start, raw.decode(errors="replace").rstrip("\n")))
        log.write(raw)
        log.flush()


def kill_group(proc: subprocess.Popen) -> None:
    """End a child started with ``start_new_session`` and everything it started."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def significant(value: float, digits: int = 4) -> float:
    """``value`` rounded to ``digits`` significant digits (rates span 1e-4 to 1e5 across devices)."""
    return float(f"{value:.{digits}g}")
