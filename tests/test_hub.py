"""The Hugging Face Hub in and out, against a local fake Hub on loopback (tests/servers/hub_server.py):
hf://datasets/... specs, any JSONL input streamed from a dataset repository (nothing stored on
disk), lt push of a JSONL output (read back by lt train), of a checkpoint and of a run folder,
with cards naming the command. No test touches the network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from conftest import FIXTURES, REPO
from lt_cli.errors import UsageError
from lt_cli.hub import HubSpec

LT = [sys.executable, "-m", "lt_cli"]


def run_lt(args: list[str], env: dict, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(LT + [str(a) for a in args], capture_output=True, env={**os.environ, "LT_PROGRESS_INTERVAL": "3600", **env},
                          cwd=REPO, **kwargs)


@pytest.fixture
def hub(tmp_path):
    from servers.hub_server import run_hub_server

    with run_hub_server(tmp_path / "hub") as handle:
        yield handle


# ------------------------------------------------------------------------------------ specs
def test_hub_specs_parse_and_bad_ones_are_one_line():
    spec = HubSpec.parse("hf://datasets/HuggingFaceTB/finemath/finemath-4plus@v1.0:train")
    assert (spec.repo, spec.config, spec.revision, spec.split, spec.name) == ("HuggingFaceTB/finemath", "finemath-4plus", "v1.0", "train", "finemath")
    assert HubSpec.parse("hf://datasets/o/n") == HubSpec("o/n", None, None, "train")
    assert str(HubSpec.parse("hf://datasets/o/n@refs/pr/3:test")) == "hf://datasets/o/n@refs/pr/3:test"
    for bad in ("hf://datasets/onlyname", "hf://models/o/n:train", "hf://datasets/o/n:a:b"):
        with pytest.raises(UsageError, match="hf://datasets/OWNER/NAME"):
            HubSpec.parse(bad)


def test_resumes_compare_the_hub_commit():
    from lt_cli.provenance import differences

    def identity(commit):
        return {"version": 1, "command": "select", "settings": {}, "input": {
            "path": "hf://datasets/o/n:train", "bytes": None, "sha256": None, "hub": {"repo": "o/n", "config": None, "split": "train", "commit": commit}}}

    assert differences(identity("a" * 40), identity("a" * 40)) == []
    assert "(commit bbbbbbbbbbbb) now" in differences(identity("a" * 40), identity("b" * 40))[0]
    assert "a Hub dataset whose commit is unknown cannot be checked" in differences(identity("a" * 40), identity(None))[0]


# ------------------------------------------------------------------------------------ in
def test_any_jsonl_input_streams_from_a_dataset_repository(hub, tmp_path):
    """--data hf://datasets/...: lt chunk and lt train read a local dataset repository through the
    fake Hub, streamed (Range requests, no copy in the Hugging Face cache), --limit honoured."""
    docs = [json.loads(line) for line in (FIXTURES / "math_docs.jsonl").read_text().splitlines()]
    body = b"".join(orjson.dumps(d) + b"\n" for d in docs * 20)
    hub.add_file("datasets", "owner/corpus", "data/train.jsonl", body)
    hub.add_file("datasets", "owner/corpus", "data/test.jsonl", orjson.dumps(docs[0]) + b"\n")
    home = tmp_path / "hf-home"
    env = hub.client_env(home)
    streamed = run_lt(["chunk", "--limit", "4", "hf://datasets/owner/corpus:train"], env)
    assert streamed.returncode == 0, streamed.stderr.decode()
    local = tmp_path / "local.jsonl"
    local.write_bytes(body)
    expected = run_lt(["chunk", "--limit", "4", local], {})
    assert streamed.stdout == expected.stdout and streamed.stdout.count(b"\n") == 4
    assert any(path.endswith("/data/train.jsonl") and rng and rng.startswith("bytes=") for path, rng in hub.hub.ranges), "read by ranges"
    cached = sum(p.stat().st_size for p in home.rglob("*") if p.is_file())
    assert cached < len(body) / 10, f"{cached} bytes stored under HF_HOME: not streamed"
    # another split; a missing one or repository is one error line naming the spec
    test_split = run_lt(["chunk", "hf://datasets/owner/corpus:test"], env)
    assert test_split.returncode == 0 and test_split.stdout.count(b"\n") == 1
    missing = run_lt(["chunk", "hf://datasets/owner/nothing:train"], env)
    err = missing.stderr.decode().strip()
    assert missing.returncode != 0 and err.startswith("lt: error: hf://datasets/owner/nothing:train: cannot read it from the Hub") and err.count("\n") == 0
    # a resumable output identifies a Hub input by the commit its revision resolves to
    code = "import json; from lt_cli.provenance import file_identity; print(json.dumps(file_identity('hf://datasets/owner/corpus:train')))"
    identity = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, env={**os.environ, **env}, cwd=REPO, check=True).stdout)
    assert identity["hub"] == {"repo": "owner/corpus", "config": None, "split": "train", "commit": hub.hub.sha("datasets", "owner/corpus")}
    # a bad record names the spec and the row
    hub.add_file("datasets", "owner/bad", "data/train.jsonl", b'{"id": "a", "text": "fine"}\n{"id": "b", "text": 7}\n')
    bad = run_lt(["chunk", "hf://datasets/owner/bad:train"], env)
    assert bad.returncode == 2 and "hf://datasets/owner/bad:train:2:" in bad.stderr.decode()


# ------------------------------------------------------------------------------------ out
def _select_output(tmp_path: Path) -> Path:
    from lt_cli.estep import SelectConfig, SelectRun, run_select
    from lt_cli.stream import StreamArgs

    from test_select import doc_with

    source = tmp_path / "cand.jsonl"
    source.write_bytes(b"".join(orjson.dumps(doc_with([[0.0, -1.0], [-2.0, 0.5]], f"d{i}")) + b"\n" for i in range(6)))
    out = tmp_path / "augmented.jsonl"
    run_select(SelectRun(stream=StreamArgs(input=str(source), output=str(out)), select=SelectConfig(seed=7)))
    return out


def test_push_a_jsonl_output_with_a_card_naming_the_command_and_read_it_back(hub, tmp_path):
    out = _select_output(tmp_path)
    env = hub.client_env(tmp_path / "hf-home")
    result = run_lt(["push", out, "me/augmented"], env)
    assert result.returncode == 0, result.stderr.decode()
    reply = json.loads(result.stdout)
    assert reply["repo_type"] == "dataset" and reply["files"] == ["README.md", "data/augmented.jsonl", "lt/augmented.jsonl.stats.json"]
    files = hub.files("datasets", "me/augmented")
    assert files["data/augmented.jsonl"] == out.read_bytes()
    card = files["README.md"].decode()
    assert f"`lt select --output {out} --seed 7 {tmp_path / 'cand.jsonl'}`" in card
    assert "Differences from the reference code that applied" in card and "13. Importance resampling (select)" in card
    assert "7. Joint score off by one (sample-thoughts; restore: --reference-quirks)" in card
    assert "- seed: `7`" in card and "ess_per_chunk" in card and "lt 0." in card
    assert "path: data/augmented.jsonl" in card  # the split lt and datasets read back
    assert hub.commits[-1]["summary"] == "lt push augmented.jsonl (lt 0.1.0)"
    assert env["HF_TOKEN"] not in result.stderr.decode() + result.stdout.decode()
    # the pushed data trains a model straight from the Hub
    tiny = tmp_path / "tiny.json"
    from test_train import TINY

    tiny.write_text(json.dumps(TINY))
    trained = run_lt(["train", "--data", "hf://datasets/me/augmented:train", "--init-config", tiny, "--output", tmp_path / "model",
                      "--seq-len", "32", "--batch-size", "2", "--steps", "2", "--warmup-steps", "1"], env)
    assert trained.returncode == 0, trained.stderr.decode()
    assert json.loads((tmp_path / "model" / "train_config.json").read_text())["data"] == ["hf://datasets/me/augmented:train"]
    # pushing the checkpoint makes a model repository with a model card
    pushed = run_lt(["push", tmp_path / "model", "me/tiny-bolt"], env)
    assert pushed.returncode == 0, pushed.stderr.decode()
    model_files = hub.files("models", "me/tiny-bolt")
    assert {"config.json", "model.safetensors", "train_config.json", "README.md"} <= set(model_files)
    assert not any(name.startswith("checkpoints/") for name in model_files)
    card = model_files["README.md"].decode()
    assert "library_name: transformers" in card and "- me/augmented" in card and "lt train --output" in card
    assert "24. Packing and data order (train)" in card


def test_push_refuses_what_it_cannot_push_and_dry_run_sends_nothing(hub, tmp_path):
    out = _select_output(tmp_path)
    env = hub.client_env(tmp_path / "hf-home")
    dry = run_lt(["push", out, "me/data", "--dry-run"], env)
    assert dry.returncode == 0 and dry.stdout.decode().startswith("---\n") and "data/augmented.jsonl <-" in dry.stderr.decode()
    assert hub.requests() == []
    for args, message in (
        ([out, "no-owner"], "must be OWNER/NAME"),
        ([tmp_path / "nothing.jsonl", "me/x"], "no such file or folder"),
        ([out, "me/x", "--repo-type", "model"], "goes to a dataset repository"),
        ([tmp_path, "me/x"], "neither a bootstrap run folder"),
    ):
        result = run_lt(["push", *args], env)
        assert result.returncode == 2 and message in result.stderr.decode(), result.stderr.decode()
    wrong_token = run_lt(["push", out, "me/data"], {**env, "HF_TOKEN": "hf_wrong_token_99"})
    assert wrong_token.returncode == 1 and "lt push me/data:" in wrong_token.stderr.decode() and "hf_wrong_token_99" not in wrong_token.stderr.decode()


def test_a_run_folder_pushes_data_and_reports_without_weights(tmp_path):
    from lt_cli.bootstrap import resolve_config
    from lt_cli.files import write_json
    from lt_cli.push import plan_upload

    run = tmp_path / "run"
    config = resolve_config({"run_dir": str(run), "iters": 1})
    write_json(run / "config.json", config.to_dict())
    write_json(run / "manifest.json", {"version": 1, "stages": []})
    write_json(run / "report.json", {"iterations": [{"arm": "k4", "iter": 1, "accuracy": 0.5, "accuracy_stderr": 0.1, "estep_flops_total": 3e9}]})
    (run / "commands.jsonl").write_text(json.dumps({"argv": ["lt", "bootstrap", "--iters", "1"], "lt_version": "0.1.0"}) + "\n")
    for name in ("k4/iter1/augmented.jsonl", "k4/iter1/candidates.jsonl", "k4/iter1/model/model.safetensors", "k4/iter1/candidates.jsonl.cache.sqlite",
                 "k4/iter1/augmented.jsonl.lock", "tracking/wandb/run.wandb"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("{}\n")
    upload = plan_upload(str(run), "me/run")
    assert upload.repo_type == "dataset"
    assert sorted(upload.files) == ["commands.jsonl", "config.json", "k4/iter1/augmented.jsonl", "k4/iter1/candidates.jsonl", "manifest.json", "report.json"]
    assert "`lt bootstrap --iters 1` (lt 0.1.0)" in upload.card and "| k4 | 1 | 0.5 | 0.1 | 3e+09 |" in upload.card
    assert "19. The embedded demo (bootstrap; restore: --data and --model)" in upload.card
    assert "split: k4_iter1" in upload.card
