"""Launchers: the command lines they build (dry run), and real runs through local, a fake srun /
sbatch on PATH (no Slurm here), and a command template."""

from __future__ import annotations

import io
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES

from lt_cli.errors import LtError, UsageError
from lt_cli.io import read_all
from lt_cli.launchers import LocalLauncher, SlurmLauncher, TemplateLauncher, TorchrunLauncher, make_launcher

PY = sys.executable
TRAIN = ["train", "--data", "my data.jsonl", "--output", "ckpt"]


def _dry(spec, **kwargs):
    echo = io.StringIO()
    launcher = make_launcher(spec, dry_run=True, echo=echo, **kwargs)
    return launcher, echo


def test_make_launcher_picks_the_kind_and_rejects_unknown_specs():
    assert isinstance(make_launcher(None), LocalLauncher)
    assert isinstance(make_launcher("local"), LocalLauncher)
    assert isinstance(make_launcher("torchrun", nproc_per_node=2), TorchrunLauncher)
    assert isinstance(make_launcher("slurm"), SlurmLauncher)
    assert isinstance(make_launcher("ssh node1 {cmd}"), TemplateLauncher)
    with pytest.raises(UsageError, match="unknown launcher 'mpirun'"):
        make_launcher("mpirun")
    with pytest.raises(UsageError, match=">= 1"):
        make_launcher("torchrun", nproc_per_node=0)
    with pytest.raises(UsageError, match="one node"):
        make_launcher("local", nnodes=2)


def test_dry_run_local_and_torchrun_print_exact_commands_and_run_nothing(tmp_path):
    launcher, echo = _dry("torchrun", nproc_per_node=2)
    launcher.run(TRAIN, distributed=True, log_path=tmp_path / "train.log")
    launcher.run(["select", "c.jsonl", "-o", "a.jsonl"], distributed=False)
    expected_train = [PY, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2", "-m", "lt_cli", *TRAIN]
    lines = echo.getvalue().splitlines()
    assert [shlex.split(line) for line in lines] == [expected_train, [PY, "-m", "lt_cli", "select", "c.jsonl", "-o", "a.jsonl"]]
    assert launcher.history == lines
    assert not (tmp_path / "train.log").exists()
    local, echo = _dry("local", nproc_per_node=8)
    local.run(TRAIN, distributed=True)
    assert shlex.split(echo.getvalue()) == [PY, "-m", "lt_cli", *TRAIN]


def test_torchrun_on_several_nodes_needs_a_rendezvous(monkeypatch):
    monkeypatch.delenv("LT_RDZV_ENDPOINT", raising=False)
    launcher, _ = _dry("torchrun", nproc_per_node=8, nnodes=2)
    with pytest.raises(UsageError, match="rendezvous endpoint"):
        launcher.run(TRAIN, distributed=True)
    monkeypatch.setenv("LT_RDZV_ENDPOINT", "node1:29500")
    launcher, echo = _dry("torchrun", nproc_per_node=8, nnodes=2)
    launcher.run(TRAIN, distributed=True)
    words = shlex.split(echo.getvalue())
    assert words[words.index("--rdzv_endpoint") + 1] == "node1:29500" and words[words.index("--nnodes") + 1] == "2"


def test_slurm_dry_run_outside_an_allocation_prints_the_sbatch_script(monkeypatch, tmp_path):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("LT_SBATCH_ARGS", "--partition gpu --time 48:00:00")
    launcher, echo = _dry("slurm", nproc_per_node=8, nnodes=4)
    launcher.run(TRAIN, distributed=True, log_path=tmp_path / "logs" / "train.log")
    text = echo.getvalue()
    first, script = text.split("\n", 1)
    assert shlex.split(first.split(" <<")[0]) == ["sbatch", "--wait", "--parsable", "--partition", "gpu", "--time", "48:00:00"]
    assert "#SBATCH --nodes=4\n" in script and "#SBATCH --gpus-per-node=8\n" in script
    assert f"#SBATCH --output={tmp_path / 'logs' / 'train.log'}\n" in script
    assert 'LT_HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in script
    step = [line for line in script.splitlines() if line.startswith("srun ")][0]
    assert step.startswith("srun --nodes 4 --ntasks-per-node 1 --kill-on-bad-exit=1 ")
    assert '--rdzv_endpoint "$LT_HEAD_NODE:29500"' in step and "'my data.jsonl'" in step
    assert text.rstrip().endswith("LT_SCRIPT")
    assert not (tmp_path / "logs").exists()  # dry run writes nothing


def test_template_quotes_the_command_once_or_twice():
    launcher, echo = _dry("ssh node1 cd {cwd} && {cmd}")
    launcher.run(["chunk", "a b.jsonl"], distributed=False)
    assert echo.getvalue().strip() == f"ssh node1 cd {shlex.quote(os.getcwd())} && {shlex.join([PY, '-m', 'lt_cli', 'chunk', 'a b.jsonl'])}"
    launcher, echo = _dry("ssh node1 bash -lc {qcmd}")
    launcher.run(["chunk", "a b.jsonl"], distributed=False)
    words = shlex.split(echo.getvalue())
    assert words[:3] == ["ssh", "node1", "bash"] and shlex.split(words[4]) == [PY, "-m", "lt_cli", "chunk", "a b.jsonl"]
    launcher, echo = _dry("env LT_X=${HOME} {cmd}", nproc_per_node=3)
    launcher.run(["train"], distributed=True)
    assert echo.getvalue().startswith("env LT_X=${HOME} ") and "--nproc_per_node 3" in echo.getvalue()


# ------------------------------------------------------------------------------- real runs
def _fake_bin(tmp_path: Path) -> Path:
    """srun that drops its --options and execs the rest; sbatch that runs its stdin script."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    trace = tmp_path / "trace.txt"
    (bin_dir / "srun").write_text(
        f"""#!/bin/bash
echo "srun $*" >> {shlex.quote(str(trace))}
while [[ "$1" == --* ]]; do
  if [[ "$1" == *=* ]]; then shift; else shift 2; fi
done
exec "$@"
"""
    )
    (bin_dir / "sbatch").write_text(
        f"""#!/bin/bash
echo "sbatch $*" >> {shlex.quote(str(trace))}
script=$(mktemp)
cat > "$script"
echo 4242
SLURM_JOB_ID=4242 bash "$script"
"""
    )
    for name in ("srun", "sbatch"):
        (bin_dir / name).chmod(0o755 | stat.S_IEXEC)
    return bin_dir


def test_local_run_writes_output_and_log(tmp_path):
    out = tmp_path / "chunked.jsonl"
    log = tmp_path / "logs" / "chunk.log"
    launcher = make_launcher("local")
    launcher.run(["chunk", str(FIXTURES / "math_docs.jsonl"), "-o", str(out)], distributed=False, log_path=log)
    assert len(read_all(out)) == 6
    assert log.read_text().startswith("# ") and "lt_cli chunk" in log.read_text().splitlines()[0]


def test_a_failing_stage_raises_with_exit_code_and_log_line(tmp_path):
    log = tmp_path / "chunk.log"
    launcher = make_launcher("local")
    with pytest.raises(LtError, match=r"`lt chunk` failed with exit code 2 under the local launcher \(log: .*chunk\.log; last line: lt: error: .*no such file"):
        launcher.run(["chunk", str(tmp_path / "absent.jsonl"), "-o", str(tmp_path / "x.jsonl")], distributed=False, log_path=log)


def test_slurm_inside_an_allocation_runs_through_srun(tmp_path):
    bin_dir = _fake_bin(tmp_path)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "77"}
    out = tmp_path / "chunked.jsonl"
    launcher = make_launcher("slurm", env=env)
    launcher.run(["chunk", str(FIXTURES / "math_docs.jsonl"), "-o", str(out)], distributed=False, log_path=tmp_path / "c.log")
    assert len(read_all(out)) == 6
    trace = (tmp_path / "trace.txt").read_text().splitlines()
    assert len(trace) == 1 and trace[0].startswith("srun --nodes 1 --ntasks-per-node 1 --kill-on-bad-exit=1 ") and "lt_cli chunk" in trace[0]


def test_slurm_outside_an_allocation_submits_with_sbatch_wait(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("LT_SLURM_GPUS_PER_NODE", "0")
    bin_dir = _fake_bin(tmp_path)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    out = tmp_path / "chunked.jsonl"
    log = tmp_path / "c.log"
    launcher = make_launcher("slurm", env=env)
    launcher.run(["chunk", str(FIXTURES / "math_docs.jsonl"), "-o", str(out)], distributed=False, log_path=log)
    assert len(read_all(out)) == 6
    trace = (tmp_path / "trace.txt").read_text().splitlines()
    assert trace[0] == "sbatch --wait --parsable" and trace[1].startswith("srun --nodes 1 ")
    script = (tmp_path / "c.sbatch").read_text()
    assert "--gpus-per-node" not in script and script.startswith("#!/bin/bash\n#SBATCH --job-name=lt-chunk\n")
    # the job's failure is the launcher's failure
    with pytest.raises(LtError, match="exit code 2 under the slurm launcher"):
        launcher.run(["chunk", str(tmp_path / "absent.jsonl")], distributed=False, log_path=log)


def test_template_runs_arguments_with_spaces_intact(tmp_path):
    src = tmp_path / "my docs.jsonl"
    src.write_bytes((FIXTURES / "math_docs.jsonl").read_bytes())
    for i, template in enumerate(["env LT_PROGRESS_INTERVAL=3600 {cmd}", "bash -c {qcmd}"]):
        out = tmp_path / f"out {i}.jsonl"
        make_launcher(template).run(["chunk", str(src), "-o", str(out)], distributed=False)
        assert len(read_all(out)) == 6


# ------------------------------------------------------------------------------- lt bootstrap
@pytest.mark.slow
def test_bootstrap_iteration_under_torchrun_with_two_cpu_processes(tmp_path):
    """`lt bootstrap --launcher torchrun`: one EM iteration of the demo, every training stage as
    torchrun with 2 CPU processes (gloo), every other stage as a plain subprocess."""
    import json

    run = tmp_path / "run"
    command = [PY, "-m", "lt_cli", "bootstrap", "--iters", "1", "--launcher", "torchrun", "--nproc-per-node", "2", "--run-dir", str(run),
               "--demo-train", "16", "--demo-heldout", "4", "--max-latent-tokens", "8", "--steps", "4",
               "--warm-steps", "4", "--eval-limit", "2", "--no-raw-baseline", "--no-teacher-baseline", "--batch-size", "4", "--seq-len", "128"]
    env = {**os.environ, "LT_PROGRESS_INTERVAL": "3600", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    for stage in ("warm_train", "k4_iter1_train"):
        log = (run / "logs" / f"{stage}.log").read_text()
        first = shlex.split(log.splitlines()[0][2:])
        assert first[:10] == [first[0], "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2", "-m", "lt_cli"]
        assert first[10] == "train"
        assert "on 2 x cpu (ddp" in log  # two processes, one global batch of 4 sequences
    sample_log = (run / "logs" / "k4_iter1_sample.log").read_text().splitlines()[0]
    assert "torch.distributed.run" not in sample_log and "-m lt_cli sample-thoughts" in sample_log
    result = json.loads((run / "k4" / "iter1" / "model" / "train_result.json").read_text())
    assert result["steps"] == 4 and result["tokens_seen"] == 4 * 4 * 128
    manifest = json.loads((run / "manifest.json").read_text())
    assert [s["status"] for s in manifest["stages"]] == ["done"] * len(manifest["stages"])
    assert {s["key"] for s in manifest["stages"]} >= {"warm/train", "k4/iter1/sample", "k4/iter1/select", "k4/iter1/train", "k4/iter1/eval"}
