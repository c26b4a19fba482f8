"""Model folders, numbers and credentials under hostile conditions: pickle-only weights, a truncated
safetensors file, no tokenizer, no chat template, absurd --k and log w, an API server that echoes
the key, and exit codes that mean the same thing in every command."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import orjson

from hostile import cli, error_line, lt

DOC = b'{"id": "a", "text": "One. Two. Three."}\n'


def model_copy(tiny_model_dir: Path, dest: Path, drop: tuple[str, ...] = ()) -> Path:
    dest.mkdir()
    for path in tiny_model_dir.iterdir():
        if path.name not in drop:
            shutil.copy(path, dest / path.name)
    return dest


def sample(model: Path, source: Path, *extra) -> list:
    return ["sample-thoughts", "--model", model, "--k", "1", "--max-new-tokens", "3", "--dtype", "float32", source, *extra]


def test_pickle_weights_are_refused_unless_allowed(tmp_path, tiny_model_dir, monkeypatch):
    import torch
    from safetensors.torch import load_file

    source = tmp_path / "docs.jsonl"
    source.write_bytes(DOC)
    pickled = model_copy(tiny_model_dir, tmp_path / "pickled", drop=("model.safetensors",))
    torch.save(load_file(str(tiny_model_dir / "model.safetensors")), pickled / "pytorch_model.bin")
    code, out, err = cli(sample(pickled, source))
    error_line(2, err, code, f"model folder {pickled} has weights only as pickle (pytorch_model.bin)", "LT_ALLOW_PICKLE_WEIGHTS=1")
    assert out == b""
    code, _, err = cli(["train", "--model", pickled, "--data", source, "--output", tmp_path / "t", "--layout", "raw"])
    error_line(2, err, code, "has weights only as pickle")
    monkeypatch.setenv("LT_ALLOW_PICKLE_WEIGHTS", "1")
    code, out, err = cli(sample(pickled, source))
    assert code == 0 and orjson.loads(out)["id"] == "a"


def test_damaged_model_folders_are_one_line(tmp_path, tiny_model_dir):
    source = tmp_path / "docs.jsonl"
    source.write_bytes(DOC)
    truncated = model_copy(tiny_model_dir, tmp_path / "truncated")
    size = (truncated / "model.safetensors").stat().st_size
    with open(truncated / "model.safetensors", "r+b") as f:
        f.truncate(size // 2)
    code, _, err = cli(sample(truncated, source))
    error_line(2, err, code, f"model folder {truncated}: model.safetensors is truncated ({size // 2:,} bytes, its header needs {size:,})")
    no_tokenizer = model_copy(tiny_model_dir, tmp_path / "no-tokenizer", drop=("tokenizer.json", "tokenizer_config.json"))
    for args in (sample(no_tokenizer, source), ["train", "--model", no_tokenizer, "--data", source, "--output", tmp_path / "t", "--layout", "raw"]):
        code, _, err = cli(args)
        error_line(2, err, code, f"model folder {no_tokenizer} has no tokenizer files (one of tokenizer.json")
    code, _, err = cli(["synthesize", "--backend", "transformers", "--model", tiny_model_dir, "--max-new-tokens", "3", source])
    line = error_line(2, err, code, "has no chat template", "lt synthesize asks its teacher as a chat")
    assert "(sample)" not in line  # no advice about an option synthesize does not have


def test_an_empty_or_incomplete_model_folder_names_the_missing_files(tmp_path, tiny_model_dir):
    """Reported: an empty --model folder failed inside the tokenizer library (sentencepiece, tiktoken)."""
    source = tmp_path / "docs.jsonl"
    source.write_bytes(DOC)
    empty = tmp_path / "empty"
    empty.mkdir()
    config_only = model_copy(tiny_model_dir, tmp_path / "config-only", drop=("model.safetensors", "tokenizer.json", "tokenizer_config.json"))
    for args in (sample(empty, source), ["train", "--model", empty, "--data", source, "--output", tmp_path / "t", "--layout", "raw"],
                 ["eval", "--task", "nll", "--model", empty, "--data", source]):
        code, out, err = cli(args)
        line = error_line(2, err, code, f"model folder {empty} has no config.json, weights (*.safetensors) and tokenizer files (one of tokenizer.json")
        assert "sentencepiece" not in line.lower() and "tiktoken" not in line.split("(one of")[0] and out == b""
    code, _, err = cli(sample(config_only, source))
    error_line(2, err, code, f"model folder {config_only} has no weights (*.safetensors) and tokenizer files", "interrupted copy or save")
    assert not (tmp_path / "t").exists()


def test_absurd_numbers_are_refused_before_the_model_loads(tmp_path, tiny_model_dir):
    source = tmp_path / "docs.jsonl"
    source.write_bytes(DOC)
    code, _, err = cli(["sample-thoughts", "--model", tiny_model_dir, "--k", "1000000000", source])
    error_line(2, err, code, "--k 1000000000 is more samples per chunk than lt holds in memory at once (at most 4096)")
    # --k-max sizes memory and time like --k (reported: --k-max 5000 ran 363 s; bootstrap took 100000)
    nowhere = tmp_path / "no-model"  # the limits are checked before the model folder is even looked at
    for args, words in (
        (["sample-thoughts", "--model", nowhere, "--k-max", "5000", source], "--k-max 5000 is more samples per chunk"),
        (["bootstrap", "--sweep-k", "1,adaptive", "--k-max", "100000", "--run-dir", tmp_path / "run"], "--k-max 100000 is more samples per chunk"),
        (["bootstrap", "--k", "4097", "--run-dir", tmp_path / "run"], "--k 4097 is more samples per chunk"),
        (["eval", "--task", "gsm8k", "--model", nowhere, "--samples", "5000", "--temperature", "1"], "--samples 5000 is more generations per problem"),
        (["eval", "--task", "gsm8k", "--model", nowhere, "--samples", "5000", "--temperature", "1", "--grade", source], "--samples 5000 is more"),
        (["eval", "--task", "elbo", "--model", nowhere, "--data", source, "--elbo-n", "1,5000"], "--elbo-n 5000 is more samples per chunk"),
        (["synthesize", "--passes", "5000", source], "--passes 5000 is more replies per document"),
        (["train", "--model", tiny_model_dir, "--data", source, "--output", tmp_path / "t", "--val-elbo-n", "1,9999"], "--val-elbo-n 9999 is more samples"),
    ):
        code, _, err = cli(args)
        error_line(2, err, code, words, "(at most 4096)")
    candidates = [{"latent": "a", "log_q": -1.0, "log_p": 1e308, "log_w": 1e308}, {"latent": "b", "log_q": -1.0, "log_p": -1e308, "log_w": -1e308}]
    extreme = tmp_path / "extreme.jsonl"
    extreme.write_bytes(orjson.dumps({"id": "x", "chunks": [{"text": "t", "candidates": candidates}]}) + b"\n")
    code, out, err = cli(["select", extreme, "-o", tmp_path / "sel.jsonl"])
    error_line(2, err, code, f"{extreme}:1: chunks[0].candidates[0].log_p = 1e+308 is not a log-probability in nats")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl", "extreme.jsonl"]


def test_adaptive_flags_without_an_adaptive_run_are_an_error_not_ignored(tmp_path, tiny_model_dir):
    """Reported: --stop-rule, --k-step, --stop-threshold without --k-max (and bootstrap's --k-max
    without an adaptive arm) silently gave a fixed-K run. Their defaults never trigger it."""
    source = tmp_path / "docs.jsonl"
    source.write_bytes(DOC)
    for extra, named in ((["--stop-rule", "mass"], "--stop-rule only applies"), (["--k-step", "2"], "--k-step only applies"),
                         (["--stop-threshold", "0.5", "--k-step", "1"], "--k-step and --stop-threshold only apply")):
        code, _, err = cli(sample(tiny_model_dir, source, *extra))
        error_line(2, err, code, named, "add --k-max N")
    run = tmp_path / "run"
    for extra, named in ((["--k-max", "8"], "--k-max only applies"), (["--k", "4", "--stop-rule", "mass"], "--stop-rule only applies"),
                         (["--adaptive-k", "2", "--stop-threshold", "0.2"], "--adaptive-k and --stop-threshold only apply")):
        code, _, err = cli(["bootstrap", "--dry-run", "--run-dir", run, *extra])
        error_line(2, err, code, named, "to the adaptive arm", "--sweep-k 1,4,adaptive")
    # with an adaptive arm they are taken, and only its E-step gets them
    code, out, err = cli(["bootstrap", "--dry-run", "--run-dir", run, "--sweep-k", "2,adaptive", "--k-max", "4", "--stop-rule", "repeat"])
    assert code == 0, err
    samples = [line for line in out.decode().splitlines() if " sample-thoughts " in line]
    assert samples and all(("--stop-rule repeat" in line) == ("--k-max 4" in line) for line in samples)
    assert any("--k-max 4" in line for line in samples) and any("--k 2 " in line for line in samples)
    code, out, err = cli(sample(tiny_model_dir, source, "--k-max", "2", "--stop-rule", "repeat", "--stop-threshold", "0.5"))
    assert code == 0, err
    assert orjson.loads(out)["estep"]["stop_rule"] == "repeat"
    assert not run.exists()


def test_a_device_output_fails_before_any_work_and_gets_no_cache(tmp_path, tiny_model_dir):
    """Reported: -o /dev/full failed only after all the sampling and left /dev/full.cache.sqlite."""
    source = tmp_path / "docs.jsonl"
    source.write_bytes(DOC)
    code, out, err = cli(sample(tiny_model_dir, source, "-o", "/dev/full"))
    error_line(1, err, code, "/dev/full: no space left on device")
    assert "sample-thoughts:" not in err and "cache" not in err  # no document was sampled, no cache opened
    code, out, err = cli(sample(tiny_model_dir, source, "-o", "/dev/null"))
    assert code == 0, err
    assert "sample cache" not in err  # no default cache beside a device (--cache FILE still keeps one)
    assert not list(Path("/dev").glob("full.*")) and not list(Path("/dev").glob("null.*")) and not list(Path("/dev").glob(".null.*"))


def test_eval_output_paths_are_checked_before_the_evaluation(tmp_path, tiny_model_dir):
    """Reported: lt eval -o EXISTING_DIR failed only after evaluating (the metrics lost), naming a
    hidden temporary file, leaving .od.XXXX.tmp; --log-samples DIR the same, blaming -o."""
    source = tmp_path / "docs.jsonl"
    source.write_bytes(DOC)
    folder = tmp_path / "od"
    folder.mkdir()
    nowhere = tmp_path / "no-model"  # checked before the model is even resolved
    for flag in ("-o", "--log-samples"):
        code, out, err = cli(["eval", "--task", "nll", "--model", nowhere, "--data", source, flag, folder])
        error_line(2, err, code, f"{flag} {folder}: is a directory (give a file name)")
        code, out, err = cli(["eval", "--task", "nll", "--model", nowhere, "--data", source, flag, source / "m.json"])
        error_line(2, err, code, f"{flag} {source / 'm.json'}: {source} is not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl", "od"] and list(folder.iterdir()) == []


def test_the_same_kind_of_error_has_the_same_exit_code_in_every_command(tmp_path, tiny_model_dir):
    """A missing input file, a missing model folder and a bad flag value are exit 2 everywhere."""
    missing, nowhere = tmp_path / "missing.jsonl", tmp_path / "no-model"
    source = tmp_path / "docs.jsonl"
    source.write_bytes(DOC)
    missing_input = [
        ["chunk", missing], ["synthesize", "--model", "m", missing], ["sample-thoughts", "--model", tiny_model_dir, missing], ["select", missing],
        ["train", "--init-config", missing, "--data", missing, "--output", tmp_path / "t"],
        ["eval", "--task", "nll", "--model", tiny_model_dir, "--data", missing],
        ["merge", missing, "-o", tmp_path / "m.jsonl"],
    ]
    for args in missing_input:
        code, _, err = cli(args)
        error_line(2, err, code, "missing.jsonl")
    unscored = tmp_path / "unscored.jsonl"
    unscored.write_bytes(b'{"id": "a", "chunks": [{"text": "t", "candidates": [{"latent": "x"}, {"latent": "y"}]}]}\n')
    missing_model = [
        ["sample-thoughts", "--model", nowhere, source], ["select", "--model", nowhere, unscored],
        ["train", "--model", nowhere, "--data", source, "--output", tmp_path / "t", "--layout", "raw"],
        ["eval", "--task", "nll", "--model", nowhere, "--data", source],
    ]
    for args in missing_model:
        code, _, err = cli(args)
        error_line(2, err, code, f"model folder not found: {nowhere}")
    bad_values = (["chunk", "--shard", "3/2", source], ["select", "--method", "best", source],
                  ["sample-thoughts", "--model", tiny_model_dir, "--k", "0", source])
    for args in bad_values:
        code, _, err = cli(args)
        error_line(2, err, code)
    assert not (tmp_path / "t").exists()


def test_an_api_key_echoed_by_the_server_reaches_no_output(tmp_path):
    from servers.openai_server import run_openai_server

    source = tmp_path / "docs.jsonl"
    source.write_bytes(DOC)
    out = tmp_path / "teacher.jsonl"
    key = "sk-test-secret-0123456789"
    with run_openai_server(api_key=key, faults={"echo_auth": True}) as server:
        result = lt(["synthesize", "--model", "teacher-x", "--max-new-tokens", "12", source, "-o", out], env=server.client_env())
    assert result.returncode == 0, result.stderr.decode()
    latent = orjson.loads(out.read_bytes())["chunks"][0]["latent"]
    assert latent.startswith("Bearer [redacted] ")  # the server did echo it; lt scrubbed it
    # SQLite stores text as is: the key is nowhere in the cache file's bytes
    everything = out.read_bytes() + (tmp_path / "teacher.jsonl.cache.sqlite").read_bytes() + result.stdout + result.stderr
    assert key.encode() not in everything and b"[redacted]" in everything


def test_credentials_in_the_base_url_never_appear_on_stderr(tmp_path):
    from servers.openai_server import run_openai_server

    source = tmp_path / "docs.jsonl"
    source.write_bytes(DOC)
    with run_openai_server(api_key=None, faults={"leak_key_in_error": True}) as server:
        url = server.base_url.replace("http://", "http://alice:pa55w0rd-x@")
        result = lt(["synthesize", "--model", "teacher-x", source], env={"LT_API_BASE_URL": url, "LT_API_KEY": "", "OPENAI_API_KEY": ""})
    line = error_line(1, result.stderr, result.returncode, "HTTP 400")
    assert "Basic [redacted]" in line
    for secret in ("pa55w0rd-x", base64.b64encode(b"alice:pa55w0rd-x").decode(), "alice:"):
        assert secret not in result.stderr.decode()


def test_a_model_path_that_is_a_file_is_one_line(tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_bytes(DOC)
    not_a_folder = tmp_path / "weights.safetensors"
    not_a_folder.write_bytes(b"x")
    code, _, err = cli(sample(not_a_folder, source))
    error_line(2, err, code, "is a file, not a model folder")
