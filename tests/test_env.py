"""lt env and the differences list: versions without imports, secrets by name only, the list in
code matching docs/formats.md item for item."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from conftest import REPO

LT = [sys.executable, "-m", "lt_cli"]


def test_differences_match_the_numbered_list_in_formats_md():
    from lt_cli.differences import DIFFERENCES

    text = (REPO / "docs" / "formats.md").read_text(encoding="utf-8")
    section = text.split("## Differences from the reference code", 1)[1]
    documented = [(int(n), title.rstrip(".")) for n, title in re.findall(r"^(\d+)\. \*\*(.+?)\*\*", section, flags=re.M)]
    assert documented == [(d.number, d.title) for d in DIFFERENCES]


def test_differences_that_apply_follow_the_settings():
    from lt_cli.differences import applied

    numbers = lambda found: [d.number for d in found]  # noqa: E731
    default = numbers(applied("select", {}))
    assert {6, 7, 8, 13} <= set(default) and 1 not in default and 12 not in default and 20 not in default  # train items are not upstream of select
    quirks = numbers(applied("sample-thoughts", {"reference_quirks": True}))
    assert 6 not in quirks and 7 not in quirks and 8 not in quirks
    assert 8 in numbers(applied("sample-thoughts", {"reference_quirks": True, "max_prompt_tokens": 512}))
    assert {1, 12} <= set(numbers(applied("sample-thoughts", {"sentences": "english", "k_max": 8})))
    demo = numbers(applied("bootstrap", {"demo": True, "continue_training": True, "warm_batch_size": None}))
    assert {15, 18, 19, 32} <= set(demo)
    paper = numbers(applied("bootstrap", {"demo": False, "continue_training": False, "warm_batch_size": 96}))
    assert not {15, 18, 19} & set(paper)
    assert numbers(applied("eval", {"task": "math", "variant": "latent"})) == [26, 31]


def test_lt_env_reports_versions_device_and_hides_secrets():
    env = {**os.environ, "LT_API_KEY": "sk-very-secret-1234", "HF_TOKEN": "hf_secret_5678", "WANDB_MODE": "offline"}
    out = subprocess.run(LT + ["env"], capture_output=True, text=True, env=env, cwd=REPO, check=True)
    text = out.stdout
    assert text.startswith("lt: ") and "python: 3." in text and "device: " in text
    assert re.search(r"^  torch: \d", text, flags=re.M) and re.search(r"^  vllm: ", text, flags=re.M)
    assert "LT_API_KEY=(set)" in text and "HF_TOKEN=(set)" in text and "WANDB_MODE=offline" in text
    assert "sk-very-secret" not in text + out.stderr and "hf_secret" not in text + out.stderr
    assert "  7. Joint score off by one (sample-thoughts; restore: --reference-quirks)" in text
    data = json.loads(subprocess.run(LT + ["env", "--json", "--no-device"], capture_output=True, text=True, cwd=REPO, check=True).stdout)
    assert data["device"] is None and data["lt"]["version"] and len(data["differences_from_reference"]) == 32


def test_absent_and_broken_optional_packages_are_reported_not_raised(monkeypatch):
    from lt_cli import envinfo

    monkeypatch.setattr(envinfo, "PACKAGES", ("torch", "no-such-package-lt-test"))
    info = envinfo.collect(device=False)
    assert info["packages"]["no-such-package-lt-test"] is None and info["packages"]["torch"]
    assert "  no-such-package-lt-test: not installed" in envinfo.lines(info)
    # a torch that fails to import is reported, not raised
    monkeypatch.setitem(sys.modules, "torch", None)
    assert envinfo.device_info()["error"].startswith("import torch failed")


def test_a_gpu_machine_is_described_on_one_line():
    """The CUDA branch's formatting (this machine has no GPU; device_info itself runs in the test above)."""
    from lt_cli import envinfo

    info = envinfo.collect(device=False)
    info["device"] = {"torch_cuda_build": "12.8", "cuda_available": True, "cpu_count": 16, "mps_available": False, "cudnn": 91000,
                      "bf16_supported": True, "gpus": [{"name": "NVIDIA H200", "memory_gib": 139.8, "capability": "9.0"}] * 2}
    line = next(line for line in envinfo.lines(info) if line.startswith("device: "))
    assert line == "device: 2 x NVIDIA H200 (139.8 GiB, sm 9.0); torch CUDA 12.8 build, cuDNN 91000, bf16 True"
