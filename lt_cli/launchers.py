"""How a driver (``lt bootstrap``, the recipes) runs one ``lt`` stage: here, under torchrun, under
Slurm, or through any command template. lt does not schedule or rendezvous anything itself; it only
writes the command line an existing launcher understands.

``make_launcher(spec, nproc_per_node=..., nnodes=..., dry_run=...)`` with ``spec``:

* ``local`` (or None): ``python -m lt_cli ARGV`` in a subprocess; distributed stages run as one process.
* ``torchrun``: distributed stages (``lt train``) become
  ``python -m torch.distributed.run --standalone --nnodes 1 --nproc_per_node N -m lt_cli ARGV``
  (``torchrun`` is that module's console script; calling it through ``sys.executable`` makes sure the
  workers use this interpreter). Other stages run as ``local`` (sample-thoughts parallelises inside
  vLLM, not across processes).
* ``slurm``: inside an allocation (``SLURM_JOB_ID`` set) each stage is an ``srun`` job step
  (distributed stages: one task per node, each running torchrun with c10d rendezvous on the first
  node); outside one, the same step goes into a generated batch script submitted with
  ``sbatch --wait`` (script on stdin, copy next to the log). ``LT_SBATCH_ARGS`` adds options
  (``--partition gpu --time 48:00:00 --account X``); ``LT_SLURM_GPUS_PER_NODE`` overrides the GPU
  request (default ``nproc_per_node``; 0 asks for none).
* a template containing ``{cmd}``, e.g. ``"ssh node1 cd /work && {cmd}"`` or
  ``"docker exec trainer {cmd}"``, run with ``bash -c``. ``{cmd}`` is the shell-quoted command line
  (the torchrun one for distributed stages); ``{qcmd}`` is that line quoted once more, as one word
  (``ssh node1 bash -lc {qcmd}`` keeps arguments with spaces intact through ssh); ``{cwd}`` is
  the current directory and ``{stage}`` the subcommand name.

``dry_run=True`` prints each command (a copy-pasteable shell line) instead of running it; every
launcher also keeps ``history``, the shell lines it ran or printed, in order.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .errors import LtError, UsageError

LAUNCHERS = ("local", "torchrun", "slurm")
RDZV_PORT = 29500


def lt_argv(argv: list[str]) -> list[str]:
    """``python -m lt_cli ARGV`` with this interpreter (the one way lt runs itself)."""
    return [sys.executable, "-m", "lt_cli", *argv]


def torchrun_argv(argv: list[str], *, nproc_per_node: int, nnodes: int = 1, rdzv_endpoint: str | None = None, rdzv_id: str = "lt") -> list[str]:
    """torchrun for ``lt_cli ARGV``: standalone on one node, c10d rendezvous on several."""
    launcher = [sys.executable, "-m", "torch.distributed.run"]
    if nnodes == 1:
        launcher += ["--standalone", "--nnodes", "1"]
    else:
        if not rdzv_endpoint:
            raise UsageError(f"torchrun on {nnodes} nodes needs a rendezvous endpoint (set LT_RDZV_ENDPOINT=HOST:PORT or use --launcher slurm)")
        launcher += ["--nnodes", str(nnodes), "--rdzv_backend", "c10d", "--rdzv_endpoint", rdzv_endpoint, "--rdzv_id", rdzv_id]
    return [*launcher, "--nproc_per_node", str(nproc_per_node), "-m", "lt_cli", *argv]


@dataclass
class Launcher:
    """Runs ``lt`` stages; subclasses only decide the command line (``argv_for``/``shell_for``)."""

    nproc_per_node: int = 1
    nnodes: int = 1
    dry_run: bool = False
    #: where dry-run lines go (default stderr: stdout carries records only)
    echo: TextIO | None = None
    env: dict[str, str] | None = None
    history: list[str] = field(default_factory=list)

    name = "local"

    def __post_init__(self) -> None:
        if self.nproc_per_node < 1 or self.nnodes < 1:
            raise UsageError("--nproc-per-node and --nnodes must be >= 1")

    # ------------------------------------------------------------------ what to run
    def argv_for(self, argv: list[str], *, distributed: bool) -> list[str]:
        return lt_argv(argv)

    def shell_for(self, argv: list[str], *, distributed: bool) -> str:
        """The command as one shell line (what dry-run prints and ``history`` keeps)."""
        return shlex.join(self.argv_for(argv, distributed=distributed))

    def stdin_for(self, argv: list[str], *, distributed: bool, log_path: Path | None) -> str | None:
        return None

    # ------------------------------------------------------------------ running
    def run(self, argv: list[str], *, distributed: bool = False, log_path: Path | str | None = None) -> None:
        """Run ``lt ARGV`` to completion; raise LtError (with the log's last line) when it fails."""
        argv = [str(a) for a in argv]
        log_path = Path(log_path) if log_path is not None else None
        line = self.shell_for(argv, distributed=distributed)
        stdin_text = self.stdin_for(argv, distributed=distributed, log_path=log_path)
        self.history.append(line if stdin_text is None else f"{line} <<'LT_SCRIPT'\n{stdin_text}LT_SCRIPT")
        if self.dry_run:
            print(self.history[-1], file=self.echo or sys.stderr, flush=True)
            return
        command = self.argv_for(argv, distributed=distributed)
        env = None if self.env is None else {**os.environ, **self.env}
        if log_path is None:
            # The child's stdout must not mix into ours (records only): send it to stderr.
            code = subprocess.run(command, stdout=_stderr_fd(), input=stdin_text, text=True, env=env).returncode
        else:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            from .nofollow import open_no_follow

            with os.fdopen(open_no_follow(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "a", encoding="utf-8") as log:
                log.write(f"# {line}\n")
                log.flush()
                code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, input=stdin_text, text=True, env=env).returncode
        if code != 0:
            where = f" (log: {log_path}{_last_line(log_path)})" if log_path is not None else ""
            raise LtError(f"`lt {' '.join(argv[:1])}` failed with exit code {code} under the {self.name} launcher{where}")


def _stderr_fd() -> int:
    try:
        return sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        return 2


def _last_line(log_path: Path) -> str:
    try:
        lines = [ln.strip() for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return f"; last line: {lines[-1][:300]}" if lines else ""


class LocalLauncher(Launcher):
    name = "local"


class TorchrunLauncher(Launcher):
    name = "torchrun"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.rdzv_endpoint = os.environ.get("LT_RDZV_ENDPOINT")

    def argv_for(self, argv: list[str], *, distributed: bool) -> list[str]:
        if not distributed:
            return lt_argv(argv)
        return torchrun_argv(argv, nproc_per_node=self.nproc_per_node, nnodes=self.nnodes, rdzv_endpoint=self.rdzv_endpoint)


class SlurmLauncher(Launcher):
    """``srun`` inside an allocation, ``sbatch --wait`` with a generated script outside one."""

    name = "slurm"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sbatch_args = shlex.split(os.environ.get("LT_SBATCH_ARGS", ""))
        gpus = os.environ.get("LT_SLURM_GPUS_PER_NODE")
        self.gpus_per_node = int(gpus) if gpus not in (None, "") else self.nproc_per_node

    @property
    def in_allocation(self) -> bool:
        return bool((self.env or {}).get("SLURM_JOB_ID") or os.environ.get("SLURM_JOB_ID"))

    def _step(self, argv: list[str], *, distributed: bool, head: str, job_id: str) -> list[str]:
        """One job step: srun over the nodes, torchrun inside for distributed stages."""
        if distributed:
            nodes = self.nnodes
            inner = torchrun_argv(argv, nproc_per_node=self.nproc_per_node, nnodes=nodes, rdzv_endpoint=f"{head}:{RDZV_PORT}", rdzv_id=f"lt-{job_id}")
        else:
            nodes = 1
            inner = lt_argv(argv)
        return ["srun", "--nodes", str(nodes), "--ntasks-per-node", "1", "--kill-on-bad-exit=1", *inner]

    def _head_node(self) -> str:
        if self.nnodes == 1:
            return "localhost"
        if os.environ.get("MASTER_ADDR"):
            return os.environ["MASTER_ADDR"]
        if self.dry_run:
            return "$LT_HEAD_NODE"
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", os.environ.get("SLURM_JOB_NODELIST", "")], capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            raise LtError(f"cannot find the first node of the allocation for torchrun's rendezvous ({exc}); set MASTER_ADDR") from None
        return out.split()[0]

    def argv_for(self, argv: list[str], *, distributed: bool) -> list[str]:
        if self.in_allocation:
            job_id = (self.env or {}).get("SLURM_JOB_ID") or os.environ.get("SLURM_JOB_ID", "0")
            return self._step(argv, distributed=distributed, head=self._head_node(), job_id=job_id)
        return ["sbatch", "--wait", "--parsable", *self.sbatch_args]

    def shell_for(self, argv: list[str], *, distributed: bool) -> str:
        return shlex.join(self.argv_for(argv, distributed=distributed))

    def stdin_for(self, argv: list[str], *, distributed: bool, log_path: Path | None) -> str | None:
        """Outside an allocation: the batch script (sbatch reads it from stdin)."""
        if self.in_allocation:
            return None
        nodes = self.nnodes if distributed else 1
        stage = argv[0] if argv else "lt"
        lines = ["#!/bin/bash", f"#SBATCH --job-name=lt-{stage}", f"#SBATCH --nodes={nodes}", "#SBATCH --ntasks-per-node=1"]
        if self.gpus_per_node > 0:
            lines.append(f"#SBATCH --gpus-per-node={self.gpus_per_node}")
        if log_path is not None:
            lines += [f"#SBATCH --output={log_path}", "#SBATCH --open-mode=append"]
        lines += ["set -euo pipefail", f"cd {shlex.quote(os.getcwd())}"]
        head = "localhost"
        if distributed and nodes > 1:
            lines.append('LT_HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)')
            head = "$LT_HEAD_NODE"
        step = self._step(argv, distributed=distributed, head=head, job_id="$SLURM_JOB_ID")
        # Leave $VARIABLES for the job's shell to expand: quote everything else.
        lines.append(" ".join(_quote_keep_vars(word) for word in step))
        text = "\n".join(lines) + "\n"
        if log_path is not None and not self.dry_run:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            from .files import write_bytes_atomic

            write_bytes_atomic(log_path.with_suffix(".sbatch"), text.encode("utf-8"))
        return text


def _quote_keep_vars(word: str) -> str:
    return f'"{word}"' if "$" in word and '"' not in word else shlex.quote(word)


class TemplateLauncher(Launcher):
    """Any wrapper command: ``{cmd}`` in the template becomes the shell-quoted lt command."""

    name = "template"

    def __init__(self, template: str, **kwargs):
        super().__init__(**kwargs)
        if "{cmd}" not in template and "{qcmd}" not in template:
            raise UsageError(f"launcher template {template!r} must contain {{cmd}} (or {{qcmd}})")
        self.template = template
        self.rdzv_endpoint = os.environ.get("LT_RDZV_ENDPOINT")

    def _inner(self, argv: list[str], *, distributed: bool) -> list[str]:
        if distributed:
            return torchrun_argv(argv, nproc_per_node=self.nproc_per_node, nnodes=self.nnodes, rdzv_endpoint=self.rdzv_endpoint)
        return lt_argv(argv)

    def shell_for(self, argv: list[str], *, distributed: bool) -> str:
        cmd = shlex.join(self._inner(argv, distributed=distributed))
        values = {"{cmd}": cmd, "{qcmd}": shlex.quote(cmd), "{cwd}": shlex.quote(os.getcwd()), "{stage}": argv[0] if argv else ""}
        # Plain replacement, not str.format: templates may contain shell ${VAR} braces.
        text = self.template
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    def argv_for(self, argv: list[str], *, distributed: bool) -> list[str]:
        return ["bash", "-c", self.shell_for(argv, distributed=distributed)]


def make_launcher(
    spec: str | None,
    nproc_per_node: int = 1,
    nnodes: int = 1,
    dry_run: bool = False,
    *,
    echo: TextIO | None = None,
    env: dict[str, str] | None = None,
) -> Launcher:
    """The launcher for ``--launcher SPEC``: local, torchrun, slurm, or a template with {cmd}."""
    kwargs = dict(nproc_per_node=nproc_per_node, nnodes=nnodes, dry_run=dry_run, echo=echo, env=env)
    if spec is None or spec in ("", "local"):
        if nnodes > 1:
            raise UsageError("--launcher local runs on one node; use torchrun, slurm or a template for --nnodes > 1")
        return LocalLauncher(**kwargs)
    if spec == "torchrun":
        return TorchrunLauncher(**kwargs)
    if spec == "slurm":
        return SlurmLauncher(**kwargs)
    if "{cmd}" in spec or "{qcmd}" in spec:
        return TemplateLauncher(spec, **kwargs)
    raise UsageError(f"unknown launcher {spec!r}: use local, torchrun, slurm, or a command template containing {{cmd}} (e.g. 'ssh node1 {{cmd}}')")

