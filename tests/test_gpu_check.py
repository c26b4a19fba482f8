"""bench/gpu_check.py: the smoke run fills every field from real measurements; budgets, skips and
failures are recorded, never fatal; the model shapes have their published sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

from gpucheck import ceilings, contract, demo, engines, estep, training  # noqa: E402
from gpucheck.part import PartContext, StepSkipped  # noqa: E402
from gpucheck.profile import DEFAULT_PARTS, PARTS, SMOKE  # noqa: E402
from gpucheck.runner import null_fields  # noqa: E402
from gpucheck.shapes import SMOLLM2_135M, TINYLLAMA_1_1B, padded_byte_tokenizer  # noqa: E402

MODULES = {"ceilings": ceilings, "estep": estep, "contract": contract, "training": training, "demo": demo, "engines": engines}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _check(out: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), *args, str(out)], env=_env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_smoke_check_fills_every_field_from_real_measurements(tmp_path):
    out = tmp_path / "check"
    proc = _check(out, "--smoke")
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary == {"check": "gpu_check", "mode": "smoke", "passed": True, "null_fields": 0, "seconds": summary["seconds"]}
    report = json.loads((out / "gpu_check.json").read_text())
    assert null_fields(report) == []
    assert list(report["parts"]) == list(DEFAULT_PARTS)
    for name, entry in report["parts"].items():
        assert entry["status"] == "ok" and entry["null_reasons"] == {} and "errors" not in entry, (name, entry)
        for field in MODULES[name].FIELDS:  # every declared field is there, with a value
            value = entry["results"]
            for key in field.split("."):
                value = value[key]
            assert value is not None, f"{name}.{field}"

    c = report["parts"]["ceilings"]["results"]
    assert c["copy_gb_per_s"] > 0 and c["matmul_bf16_tflops"] > 0 and c["matmul_fp32_tflops"] > 0
    k = report["parts"]["contract"]["results"]
    assert all(check["passed"] for check in k["checks"].values()) and k["device"] == "cpu" and k["dtype"] == "float32"
    assert 0 < k["bf16"]["logits_rel_l2"] <= k["bf16"]["tolerance"] and k["bf16"]["passed"]

    t = report["parts"]["training"]["results"]
    assert t["model_flops_per_token"] == 6 * SMOKE.train_shape.matmul_params() + 6 * 2 * 64 * SMOKE.seq_len
    assert t["lt"]["strategy"] == "auto" and t["fsdp"]["strategy"] == "fsdp"  # FSDP2 really ran on one rank
    assert t["lt"]["dtype"] == t["fsdp"]["dtype"] == t["bare"]["dtype"] == "bfloat16"
    for run in ("lt", "fsdp"):
        r = t[run]
        assert r["mfu"] == pytest.approx(t["model_flops_per_token"] * r["tokens_per_s_per_device"] / (r["peak_tflops"] * 1e12), abs=1e-4)
        assert r["peak_tflops"] == pytest.approx(c["matmul_bf16_tflops"], rel=1e-3)  # no datasheet for a CPU: the measured rate
        assert r["ratio_to_bare"] == pytest.approx(r["tokens_per_s"] / t["bare"]["tokens_per_s"], abs=1e-3)
    assert t["fsdp"]["first_loss_abs_diff_vs_lt"] < 0.05  # same weights, same first batch, bf16 either way

    e = report["parts"]["estep"]["results"]
    for rows in SMOKE.estep_rows:
        lt, hw, static = e[f"lt_{rows}"], e[f"hw_limit_{rows}"], e[f"generate_static_{rows}"]
        assert lt["samples"] == round(e["chunks_per_doc"] * lt["docs"]) * e["k"]
        assert 0 < lt["latent_tokens"] <= lt["samples"] * e["max_new_tokens"]
        assert lt["engine"] == "dynamic loop"  # the CPU default
        seconds_per_step = (e["weight_bytes"] + hw["rows_per_step"] * e["kv_bytes_per_token"] * hw["mean_context_tokens"]) / (e["bandwidth_gb_per_s"] * 1e9)
        assert hw["tokens_per_s"] == pytest.approx(hw["rows_per_step"] / seconds_per_step, rel=1e-2)
        assert static["lt_over_static"] == pytest.approx(lt["tokens_per_s"] / static["tokens_per_s"], rel=1e-2)
        assert static["rows"] == max(1, rows // e["k"]) * e["k"]
    assert e["weight_bytes"] == SMOKE.train_shape.matmul_params() * 2  # the limit is stated for bf16 weights
    assert e["scoring"]["pairs"] == SMOKE.score_pairs and e["scoring"]["ratio"] > 0

    d = report["parts"]["demo"]["results"]
    assert d["complete"] and d["stages_done"] == d["stages_total"] > 0
    assert (out / "demo" / "report.json").exists() and (out / "logs" / "train-fsdp.log").exists()
    md = (out / "gpu_check.md").read_text()
    assert md.startswith("# gpu_check (smoke): cpu") and "null:" not in md
    assert all(f"## {name}: ok" in md for name in DEFAULT_PARTS)


@pytest.mark.slow
def test_smoke_engines_part_measures_each_step_setting(tmp_path):
    """The engines part (not a default part) runs lt sample-thoughts on the slot engine under each
    step setting and fills every field; on a CPU FlexAttention does not compile and falls back."""
    out = tmp_path / "engines"
    proc = _check(out, "--smoke", "--parts", "ceilings,engines")
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert list(report["parts"]) == ["ceilings", "engines"] and null_fields(report) == []
    e = report["parts"]["engines"]["results"]
    assert e["rows"] == max(SMOKE.estep_rows)
    assert e["graph"]["engine"].endswith("eager decode step, sdpa attention")  # no CUDA graph on a CPU
    assert e["compiled"]["engine"].endswith("compiled eager decode step, sdpa attention")
    assert e["compiled_flex"]["engine"].endswith("compiled eager decode step, sdpa attention")  # the fallback
    for name in engines.VARIANTS:
        assert e[name]["samples"] == e["graph"]["samples"] > 0
        assert e[name]["lt_fraction"] == pytest.approx(e[name]["tokens_per_s"] / e["hw_limit_tokens_per_s"], rel=1e-2, abs=1e-4)
        assert e[name]["over_graph"] == pytest.approx(e[name]["tokens_per_s"] / e["graph"]["tokens_per_s"], rel=1e-2, abs=1e-3)
    assert "could not be compiled" in (out / "logs" / "estep-compiled_flex.log").read_text()


def test_no_time_left_skips_every_part_with_the_reason(tmp_path):
    out = tmp_path / "short"
    proc = _check(out, "--smoke", "--budget-s", "1", timeout=120)
    assert proc.returncode == 1
    report = json.loads((out / "gpu_check.json").read_text())
    for name, entry in report["parts"].items():
        assert entry["status"] == "skipped" and entry["reason"].startswith("time short: 0 s of the check's 1 s budget left")
        assert entry["results"] and set(entry["null_reasons"]) == set(MODULES[name].FIELDS)
    assert list(report["parts"]) == list(DEFAULT_PARTS)
    assert len(null_fields(report)) == sum(len(MODULES[name].FIELDS) for name in DEFAULT_PARTS)
    assert "| demo claim 1: teacher beats raw | null: time short:" in (out / "gpu_check.md").read_text()
    assert json.loads(proc.stdout)["passed"] is False


def test_full_mode_without_a_gpu_skips_and_names_the_reason(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the full check would run")
    out = tmp_path / "full"
    proc = _check(out, "--parts", "ceilings,demo", timeout=180)
    assert proc.returncode == 1
    report = json.loads((out / "gpu_check.json").read_text())
    assert list(report["parts"]) == ["ceilings", "demo"] and report["environment"]["results"]["cuda_visible"] is False
    assert {e["reason"] for e in report["parts"].values()} == {"no CUDA device visible to torch (run with --smoke on a CPU)"}


def test_bad_arguments_exit_2(tmp_path):
    proc = _check(tmp_path / "x", "--parts", "training,warp", timeout=60)
    assert proc.returncode == 2 and "unknown part(s) warp" in proc.stderr


def test_a_failing_step_is_recorded_and_the_part_goes_on(tmp_path):
    ctx = PartContext("training", tmp_path, SMOKE, deadline=time.time() + 60)
    with ctx.step("first", ("a.x", "a.y")):
        ctx.set("a.x", 1.5)
        raise ValueError("boom")
    with ctx.step("second", ("b",)):
        ctx.require("a.y")
    with ctx.step("third", ("c",)):
        ctx.need(3600)
        ctx.set("c", 1)
    with ctx.step("fourth", ("d",)):
        ctx.set("d", "fine")
    saved = json.loads((tmp_path / "parts" / "training.json").read_text())
    assert saved["results"] == {"a": {"x": 1.5, "y": None}, "b": None, "c": None, "d": "fine"}
    assert saved["errors"] == {"first": "ValueError: boom"}
    assert saved["null_reasons"] == {
        "a.y": "first failed: ValueError: boom",
        "b": "second skipped: needs a.y, which an earlier step did not produce",
        "c": "third skipped: time short: 60 s left of the part's budget, this step needs about 3600 s",
    }
    with pytest.raises(ValueError, match="use ctx.null"):
        ctx.set("e", None)


def test_a_command_over_the_part_budget_is_stopped_with_its_children(tmp_path):
    ctx = PartContext("demo", tmp_path, SMOKE, deadline=time.time() + 4)
    marker = tmp_path / "child.pid"
    script = (
        "import os, subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(marker)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="sleeper stopped at the part's budget"):
        ctx.run([sys.executable, "-c", script], "sleeper", margin_s=1)
    assert time.monotonic() - start < 15
    grandchild = Path(f"/proc/{int(marker.read_text())}/stat")
    time.sleep(0.5)
    assert not grandchild.exists() or grandchild.read_text().split(") ")[1][0] == "Z"  # gone, or dead and not yet reaped
    with pytest.raises(StepSkipped, match="time short"):
        ctx.run([sys.executable, "-c", "pass"], "late")
    assert (tmp_path / "logs" / "sleeper.log").read_text().startswith("$ ")


def test_shapes_have_their_published_sizes():
    import torch

    from lt_cli.training.throughput import model_flops
    from gpucheck.shapes import build_model

    for shape, params in ((TINYLLAMA_1_1B, 1_100_048_384), (SMOLLM2_135M, 134_515_008)):
        model = build_model(shape, "meta")  # shapes only, no memory
        assert sum(p.numel() for p in model.parameters()) == params, shape.name
        flops = model_flops(model, 2048)
        assert flops.matmul_params == shape.matmul_params()
        assert flops.per_token == 6 * shape.matmul_params() + 6 * shape.num_layers * shape.hidden_size * 2048
    assert TINYLLAMA_1_1B.matmul_params() == 1_034_420_224  # 22 x 44,040,192 + the 32,000 x 2,048 head
    assert TINYLLAMA_1_1B.kv_bytes_per_token() == 2 * 22 * 4 * 64 * 2
    assert torch.device("meta").type == "meta"


def test_padded_byte_tokenizer_round_trips_every_id():
    tokenizer = padded_byte_tokenizer(600)
    assert len(tokenizer) == 600
    ids = tokenizer("hé", add_special_tokens=False)["input_ids"]
    assert len(ids) == 3 and all(3 <= i < 259 for i in ids)  # one id per UTF-8 byte
    a = tokenizer("a", add_special_tokens=False)["input_ids"]
    for ids in ([599], [263, 598, 300], a + [300] + a):  # reserved ids and text round-trip (a lone byte of a
        # multi-byte character does not, as with any byte-level tokenizer: the contract check skips those)
        text = tokenizer.decode(ids)
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids, text
    with pytest.raises(ValueError, match="smaller than the byte tokenizer"):
        padded_byte_tokenizer(100)


def test_every_part_has_its_module_and_the_default_run_leaves_out_engines():
    assert list(MODULES) == list(PARTS)
    assert DEFAULT_PARTS == tuple(p for p in PARTS if p != "engines")
    # the E-step needs the ceilings' bandwidth and goes before the parts a short check may lose
    assert DEFAULT_PARTS[:2] == ("ceilings", "estep")
