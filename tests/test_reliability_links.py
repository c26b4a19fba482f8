"""Links planted beside an output. The lock, partial, rejects, cache and tracking files, and the
folders lt creates for checkpoints and trackers, have predictable names, so anyone who can write
into a shared output folder can plant a symbolic link there; lt must refuse it (one ``lt: error:``
line, exit 2) and never write, truncate or remove the link's target, nor remove the link
(lt_cli/nofollow.py). Files lt rewrites whole, the model files ``save_pretrained`` writes among
them, are renamed over the name instead: the link is replaced, its target never written."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from fakes import FakeWandB
from hostile import cli, error_line
from lt_cli.errors import UsageError

DOCS = b"".join(orjson.dumps({"id": f"d{i}", "text": f"One {i}. Two {i}. Three {i}."}) + b"\n" for i in range(3))
CANDIDATES = b"".join(
    orjson.dumps({"id": f"d{i}", "chunks": [{"text": "t. ", "candidates": [{"latent": "a", "log_w": 0.5}, {"latent": "b", "log_w": 0.1}]}]}) + b"\n"
    for i in range(3)
)


def plant(link: Path, target: Path) -> None:
    os.symlink(target.name if target.parent == link.parent else target, link)


def untouched(tmp_path: Path, link: Path, victim: Path, content: bytes | None) -> None:
    assert link.is_symlink()  # the planted link is left where it was
    if content is None:
        assert not victim.exists()  # a dangling link's target is never created
    else:
        assert victim.read_bytes() == content


@pytest.mark.parametrize("dangling", [False, True])
@pytest.mark.parametrize(
    "command, side",
    [
        (["chunk"], ".lock"),  # the case as reported: lt chunk docs.jsonl -o out.jsonl
        (["select"], ".lock"),
        (["select"], ".partial"),
        (["select", "--skip-bad"], ".rejects.jsonl"),
    ],
)
def test_a_link_planted_beside_an_output_is_refused(tmp_path, command, side, dangling):
    source = tmp_path / "in.jsonl"
    data = DOCS if command[0] == "chunk" else CANDIDATES
    source.write_bytes(data + (b'{"id": "bad"}\n' if "--skip-bad" in command else b""))
    out = tmp_path / "out.jsonl"
    victim = tmp_path / "victim.txt"
    content = None if dangling else b"precious\n"
    if content is not None:
        victim.write_bytes(content)
    link = tmp_path / ("out.jsonl" + side)
    plant(link, victim)
    code, _, err = cli([*command, source, "-o", out])
    error_line(2, err, code, f"{link} is a symbolic link (to victim.txt)", "remove it")
    untouched(tmp_path, link, victim, content)
    assert not out.exists() and not list(tmp_path.glob(".out.jsonl.*"))
    assert [p for p in tmp_path.glob("out.jsonl.partial*") if p != link] == []  # refused before any work


def test_train_and_bootstrap_locks_refuse_a_link(tmp_path, tiny_model_dir):
    source = tmp_path / "docs.jsonl"
    source.write_bytes(DOCS)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    plant(tmp_path / "ckpt.lock", victim)
    code, out, err = cli(["train", "--model", tiny_model_dir, "--data", source, "--output", tmp_path / "ckpt", "--layout", "raw", "--steps", "1"])
    error_line(2, err, code, f"{tmp_path / 'ckpt.lock'} is a symbolic link")
    untouched(tmp_path, tmp_path / "ckpt.lock", victim, b"precious\n")
    assert not (tmp_path / "ckpt").exists()
    plant(tmp_path / "run.lock", victim)
    code, out, err = cli(["bootstrap", "--run-dir", tmp_path / "run", "--iters", "0"])
    error_line(2, err, code, f"{tmp_path / 'run.lock'} is a symbolic link")
    untouched(tmp_path, tmp_path / "run.lock", victim, b"precious\n")
    assert not (tmp_path / "run").exists()


def test_a_lock_with_other_hard_links_is_refused(tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_bytes(DOCS)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    os.link(victim, tmp_path / "out.jsonl.lock")
    code, _, err = cli(["chunk", source, "-o", tmp_path / "out.jsonl"])
    error_line(2, err, code, "out.jsonl.lock has other hard links")
    assert victim.read_bytes() == b"precious\n" and not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("side", ["", "-wal", "-shm", "-journal"])
def test_the_sample_cache_and_its_sqlite_files_refuse_links(tmp_path, side):
    from lt_cli.cache import SampleCache

    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    cache = tmp_path / "out.jsonl.cache.sqlite"
    plant(Path(f"{cache}{side}"), victim)
    with pytest.raises(UsageError, match=f"{Path(f'{cache}{side}').name} is a symbolic link"):
        SampleCache(cache)
    assert victim.read_bytes() == b"precious\n" and Path(f"{cache}{side}").is_symlink()


def test_files_lt_rewrites_whole_replace_a_link_instead_of_writing_through_it(tmp_path):
    """Sidecars (stats, .done, .partial.json, configs, reports) are a temporary file renamed over
    the name: a planted link is replaced, its target never written."""
    from lt_cli.files import write_bytes_atomic, write_json

    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    for name in ("out.jsonl.stats.json", "report.md"):
        plant(tmp_path / name, victim)
    os.symlink("/dev/full", tmp_path / "out.jsonl.done")  # a device behind a sidecar's name is not written either
    write_json(tmp_path / "out.jsonl.stats.json", {"a": 1})
    write_bytes_atomic(tmp_path / "report.md", b"# report\n")
    write_json(tmp_path / "out.jsonl.done", {"records": 0})
    assert victim.read_bytes() == b"precious\n" and not (tmp_path / "out.jsonl.done").is_symlink()
    assert not (tmp_path / "report.md").is_symlink() and (tmp_path / "report.md").read_bytes() == b"# report\n"
    assert orjson.loads((tmp_path / "out.jsonl.stats.json").read_bytes()) == {"a": 1}


# ------------------------------------------------------------------------------------ trackers
def victim_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "keep.txt").write_bytes(b"precious\n")
    return folder


def folder_untouched(link: Path, victim: Path) -> None:
    assert link.is_symlink() and sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    assert (victim / "keep.txt").read_bytes() == b"precious\n"


@pytest.mark.parametrize(
    "report_to, name, is_folder",
    [
        ("jsonl", "tracking.jsonl", False),  # appended by lt itself
        ("jsonl", "", True),  # the default OUTPUT.tracking folder lt creates beside the output
        ("tensorboard", "tensorboard", True),  # the folder lt creates and hands to TensorBoard
        ("wandb", "wandb", True),  # where W&B puts its files under the folder lt gives it
    ],
)
def test_a_link_at_a_tracking_path_is_refused_before_any_work(tmp_path, monkeypatch, report_to, name, is_folder):
    monkeypatch.setenv("WANDB_MODE", "offline")  # were the link followed, W&B would not go online
    source = tmp_path / "in.jsonl"
    source.write_bytes(CANDIDATES)
    out = tmp_path / "out.jsonl"
    folder = tmp_path / "out.jsonl.tracking"
    link = folder / name if name else folder
    if name:
        folder.mkdir()
    victim = victim_folder(tmp_path) if is_folder else tmp_path / "victim.txt"
    if not is_folder:
        victim.write_bytes(b"precious\n")
    os.symlink(victim, link)
    code, _, err = cli(["select", source, "-o", out, "--report-to", report_to])
    error_line(2, err, code, f"{link} is a symbolic link", "remove it")
    if is_folder:
        folder_untouched(link, victim)
    else:
        untouched(tmp_path, link, victim, b"precious\n")
    assert not out.exists() and not list(tmp_path.glob("out.jsonl.partial*"))  # refused before the selection ran


@pytest.mark.parametrize("name, report_to", [("tensorboard", "tensorboard"), ("wandb", "wandb"), ("wandb-run-id", "wandb"), ("checkpoints", "none")])
def test_train_refuses_a_link_at_a_tracker_or_checkpoint_path_before_training(tmp_path, monkeypatch, name, report_to):
    monkeypatch.setenv("WANDB_MODE", "offline")
    from test_reliability_train import TINY

    source, tiny = tmp_path / "docs.jsonl", tmp_path / "tiny.json"
    source.write_bytes(DOCS)
    tiny.write_text(orjson.dumps(TINY).decode())
    out = tmp_path / "run"
    out.mkdir()
    victim = victim_folder(tmp_path) if name != "wandb-run-id" else tmp_path / "victim.txt"
    if name == "wandb-run-id":
        victim.write_bytes(b"precious\n")  # would become the W&B run id (and be sent to W&B) if it were read
    os.symlink(victim, out / name)
    code, _, err = cli(["train", "--init-config", tiny, "--data", source, "--output", out, "--layout", "raw", "--seq-len", "32",
                        "--batch-size", "2", "--steps", "2", "--save-every", "1", "--report-to", report_to])
    error_line(2, err, code, f"{out / name} is a symbolic link", "remove it")
    if name == "wandb-run-id":
        untouched(tmp_path, out / name, victim, b"precious\n")
    else:
        folder_untouched(out / name, victim)
    assert [p.name for p in out.iterdir()] == [name] and not (tmp_path / "run.lock").exists()


@pytest.mark.parametrize("name", ["tracking", "tracking/logged.json"])
def test_bootstrap_refuses_a_link_at_its_tracking_folder_or_state(tmp_path, name):
    run = tmp_path / "run"
    (run / "tracking").mkdir(parents=True) if "/" in name else run.mkdir()
    victim = victim_folder(tmp_path) if name == "tracking" else tmp_path / "victim.txt"
    if name != "tracking":
        victim.write_bytes(b'{"jsonl": []}\n')
    os.symlink(victim, run / name)
    code, _, err = cli(["bootstrap", "--run-dir", run, "--iters", "0", "--report-to", "jsonl"])
    error_line(2, err, code, f"{run / name} is a symbolic link")
    if name == "tracking":
        folder_untouched(run / name, victim)
    else:
        untouched(tmp_path, run / name, victim, b'{"jsonl": []}\n')
    assert not (run / "manifest.json").exists() and not (tmp_path / "run.lock").exists()  # before the first stage


def test_the_wandb_run_id_is_kept_and_never_read_or_written_through_a_link(tmp_path, monkeypatch):
    """A resumed run continues the W&B run whose id lt kept; a link at the id file is refused, and
    one planted while W&B starts is replaced by the id, never written through."""
    import sys

    from lt_cli.tracking import WANDB_ID_FILE, TrackingConfig, open_tracker

    folder, victim = tmp_path / "run", tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    config = TrackingConfig(report_to=["wandb"])
    fake = FakeWandB(during_init=lambda: os.symlink(victim, folder / WANDB_ID_FILE))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    open_tracker(config, folder=folder, name="x").close()
    assert not (folder / WANDB_ID_FILE).is_symlink() and (folder / WANDB_ID_FILE).read_text() == "run-1\n"
    assert victim.read_bytes() == b"precious\n" and fake.inits[0]["dir"] == str(folder)

    fake.during_init = None
    open_tracker(config, folder=folder, name="x").close()  # resumed: the same W&B run
    assert fake.inits[1]["id"] == "run-1" and (folder / WANDB_ID_FILE).read_text() == "run-1\n"

    (folder / WANDB_ID_FILE).unlink()
    plant(folder / WANDB_ID_FILE, victim)
    with pytest.raises(UsageError, match=f"{WANDB_ID_FILE} is a symbolic link"):
        open_tracker(config, folder=folder, name="x")
    assert len(fake.inits) == 2 and victim.read_bytes() == b"precious\n"


# ------------------------------------------------------------------------------------ model folders
def test_links_in_a_model_folder_are_replaced_never_written_through(tmp_path):
    """save_pretrained opens config.json, model.safetensors... with a plain open: lt has it write
    into a fresh hidden folder and renames each file into place. The files are those a direct
    save_pretrained writes, byte for byte; shards of an earlier save are removed as it would."""
    from lt_cli.model_folder import save_model_folder
    from lt_cli.tiny import TinyModelConfig, build_byte_tokenizer, build_tiny_llama

    tokenizer = build_byte_tokenizer()
    model = build_tiny_llama(len(tokenizer), TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=64))
    direct = tmp_path / "direct"
    model.save_pretrained(direct)
    tokenizer.save_pretrained(direct)
    folder, victim = tmp_path / "model", tmp_path / "victim.txt"
    folder.mkdir()
    victim.write_bytes(b"precious\n")
    plant(folder / "config.json", victim)
    os.symlink(victim, folder / "model.safetensors")
    os.symlink(tmp_path / "absent.json", folder / "tokenizer.json")  # dangling: its target is never created
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"stale shard")
    (folder / "notes.txt").write_bytes(b"kept\n")
    save_model_folder(model, tokenizer, folder)
    assert victim.read_bytes() == b"precious\n" and not (tmp_path / "absent.json").exists()
    assert not any(p.is_symlink() for p in folder.iterdir())
    assert sorted(p.name for p in folder.iterdir()) == sorted([p.name for p in direct.iterdir()] + ["notes.txt"])  # no hidden folder left
    assert all((folder / p.name).read_bytes() == p.read_bytes() for p in direct.iterdir())


def test_train_replaces_links_at_its_model_files_and_writes_the_same_model(tmp_path):
    from test_reliability_train import TINY

    source, tiny = tmp_path / "docs.jsonl", tmp_path / "tiny.json"
    source.write_bytes(DOCS)
    tiny.write_text(orjson.dumps(TINY).decode())
    args = ["--init-config", tiny, "--data", source, "--layout", "raw", "--seq-len", "32", "--batch-size", "2", "--steps", "2"]
    assert cli(["train", *args, "--output", tmp_path / "straight"])[0] == 0
    out, victim = tmp_path / "run", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_bytes(b"precious\n")
    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        os.symlink(victim, out / name)
    (out / ".lt-model.killed.tmp").mkdir()  # left by a save killed with kill -9: removed by the rerun
    code, _, err = cli(["train", *args, "--output", out])
    assert code == 0, err
    assert victim.read_bytes() == b"precious\n" and not any(p.is_symlink() for p in out.iterdir())
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
    assert not list(out.glob(".lt-model.*"))


@pytest.mark.parametrize("name", [".step-00000002.tmp", "step-00000002"])
def test_a_link_at_a_checkpoint_name_is_refused_and_left_alone(tmp_path, name):
    from test_reliability_train import TINY

    source, tiny = tmp_path / "docs.jsonl", tmp_path / "tiny.json"
    source.write_bytes(DOCS)
    tiny.write_text(orjson.dumps(TINY).decode())
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    victim = victim_folder(tmp_path)
    os.symlink(victim, out / "checkpoints" / name)
    code, _, err = cli(["train", "--init-config", tiny, "--data", source, "--output", out, "--layout", "raw", "--seq-len", "32",
                        "--batch-size", "2", "--steps", "3", "--save-every", "2"])
    error_line(2, err, code, f"{out / 'checkpoints' / name} is a symbolic link")
    folder_untouched(out / "checkpoints" / name, victim)
    assert [p.name for p in (out / "checkpoints").iterdir()] == [name]


def test_the_command_record_of_a_run_folder_is_never_appended_through_a_link(tmp_path, monkeypatch):
    """RUN/commands.jsonl (what lt push cards name) is appended; a link planted there is refused."""
    import sys

    from lt_cli.bootstrap.runner import COMMANDS_FILE, record_invocation

    run, victim = tmp_path / "run", tmp_path / "victim.txt"
    run.mkdir()
    victim.write_bytes(b"precious\n")
    monkeypatch.setattr(sys, "argv", ["lt", "bootstrap", "--iters", "1"])
    record_invocation(run)
    record_invocation(run)
    assert [line.count(b'"bootstrap"') for line in (run / COMMANDS_FILE).read_bytes().splitlines()] == [1, 1]
    (run / COMMANDS_FILE).unlink()
    plant(run / COMMANDS_FILE, victim)
    with pytest.raises(UsageError, match=f"{COMMANDS_FILE} is a symbolic link"):
        record_invocation(run)
    untouched(tmp_path, run / COMMANDS_FILE, victim, b"precious\n")
