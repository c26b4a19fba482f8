"""Config files (--config, --print-config): keys are the config dataclass fields, flags win over the
file, unknown keys and bad values are one error naming the file line, what --print-config writes
reads back to the same config, a run started from a file equals the run started from flags, and
lt bootstrap reaches every lt train setting through its [train] section."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lt_cli import configfile, flags
from lt_cli.bootstrap import BootstrapConfig, build_plan, resolve_config
from lt_cli.bootstrap.config import SET_PER_STAGE
from lt_cli.bootstrap.stages import RunContext
from lt_cli.cli import app
from lt_cli.errors import UsageError
from lt_cli.runners import RUNNERS, config_class
from lt_cli.training import TrainConfig

runner = CliRunner()


def invoke(args: list[str], cwd: Path | None = None):
    import os

    from lt_cli import console

    console.reset_record_stream()  # each invocation writes its own stdout
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = runner.invoke(app, args)
    finally:
        os.chdir(old)
    return result


def _error(result) -> str:
    return result.output + (result.stderr if result.stderr_bytes is not None else "")


# ------------------------------------------------------------------------------------ reading
def test_keys_sections_and_flag_names_map_to_fields(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('lr = 3e-4\nmstep_tokens = "13e9"\n[train]\nweight_decay = 0.1\n[sample]\ntemperature = 0.5\n')
    found = configfile.read(str(path), BootstrapConfig)
    assert found.values == {("train", "lr"): 3e-4, ("mstep_tokens",): 13_000_000_000, ("train", "weight_decay"): 0.1, ("sample", "temperature"): 0.5}
    assert found.line(("train", "weight_decay")) == 4 and found.line(("train", "lr")) == 1
    # a flag name stands for its field at the top level only, and only a flag of this command does:
    # "tokens" is lt train's flag (bootstrap's budget is mstep_tokens)
    path.write_text('iters = 1\ntokens = "13e9"\n')
    with pytest.raises(UsageError, match=r"run.toml:2: tokens: unknown key in the top level of a BootstrapConfig"):
        configfile.read(str(path), BootstrapConfig)


@pytest.mark.parametrize("text, message", [
    ("seq_len = 64\n\n[train]\nweigth_decay = 0.1\n", r"x.toml:4: train.weigth_decay: unknown key in the \[train\] of a TrainConfig \(did you mean weight_"),
    ("[trian]\nlr = 1\n", r"x.toml:1: trian: unknown key in the top level of a BootstrapConfig \(did you mean train\?\)"),
    ("iters = 3\ntrain.lr = 'fast'\n", r"x.toml:2: train.lr: must be a number, got 'fast'"),
    ("iters = 2.5\n", r"x.toml:1: iters: must be a whole number, got 2.5"),
    ("train = 3\n", r"x.toml:1: train: is a section of settings \(TrainConfig\), not a single value"),
    ("lr = 1e-3\n[train]\nlr = 2e-3\n", r"x.toml:3: train.lr: set twice"),
    ("iters = \n", r"x.toml: invalid TOML: .*line 1"),
])
def test_bad_toml_names_the_line_and_the_key(tmp_path, text, message):
    path = tmp_path / "x.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        configfile.read(str(path), BootstrapConfig)


def test_json_and_yaml_name_lines_too(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{\n  "iters": 2,\n  "train": {\n    "lr": 0.1,\n    "bogus": 1\n  }\n}\n')
    with pytest.raises(UsageError, match=r"x.json:5: train.bogus: unknown key"):
        configfile.read(str(path), BootstrapConfig)
    path.write_text('{"iters": 2,\n "train": }')
    with pytest.raises(UsageError, match=r"x.json:2: invalid JSON"):
        configfile.read(str(path), BootstrapConfig)
    path = tmp_path / "x.yaml"
    path.write_text("iters: 2\ntrain:\n  lr: 0.1\n  bogus: 1\n")
    with pytest.raises(UsageError, match=r"x.yaml:4: train.bogus: unknown key"):
        configfile.read(str(path), BootstrapConfig)
    with pytest.raises(UsageError, match="use a .toml, .json or .yaml file"):
        configfile.read(str(tmp_path / "x.ini"), BootstrapConfig)
    with pytest.raises(UsageError, match="no such file"):
        configfile.read(str(tmp_path / "missing.toml"), BootstrapConfig)


# ------------------------------------------------------------------------------------ round trips
def _all_flags_set(command: str):
    from test_flags import CHOICES, SYNTH_CHOICES, _all_flags_set as all_set

    return all_set(config_class(command), {**CHOICES, **(SYNTH_CHOICES if command == "synthesize" else {})})


@pytest.mark.parametrize("fmt", ["toml", "json", "yaml"])
@pytest.mark.parametrize("command", sorted(RUNNERS))
def test_a_written_config_reads_back_equal(tmp_path, command, fmt):
    config = _all_flags_set(command)
    path = tmp_path / f"c.{fmt}"
    path.write_text(configfile.dumps(config, fmt))
    assert configfile.merge(configfile.defaults(type(config)), configfile.read(str(path), type(config)), set()) == config


def test_flags_win_over_the_file_which_wins_over_defaults(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('output = "out"\ndata = ["a.jsonl"]\nlr = 3e-4\nweight_decay = 0.2\n')
    printed = invoke(["train", "--config", str(path), "--lr", "1e-3", "--print-config"])
    assert printed.exit_code == 0, _error(printed)
    values = configfile.read_text(printed.stdout, "toml", TrainConfig)
    assert (values.lr, values.weight_decay, values.seq_len, values.output) == (1e-3, 0.2, 2048, "out")
    # a flag given with its default value still wins (it was given)
    printed = invoke(["train", "--config", str(path), "--weight-decay", "0.01", "--print-config"])
    assert configfile.read_text(printed.stdout, "toml", TrainConfig).weight_decay == 0.01


@pytest.mark.parametrize("command, extra", [
    ("train", ["--output", "o", "--data", "d.jsonl", "--lr", "0.5", "--val-elbo-n", "1,3", "--tokens", "2M"]),
    ("sample-thoughts", ["--model", "m", "--k", "3", "--k-max", "9", "--no-score", "docs.jsonl", "-o", "c.jsonl"]),
    ("select", ["--method", "argmax", "--k", "2", "c.jsonl"]),
    ("eval", ["--task", "elbo", "--elbo-n", "1,8", "--model", "m"]),
    ("synthesize", ["--method", "wrap", "--batch", "in.jsonl"]),
    ("finetune-eval", ["--model", "m", "--output", "o", "--train-data", "t", "--data", "d", "--seeds", "1,2"]),
    ("bootstrap", ["--lr", "0.01", "--weight-decay", "0.2", "--sweep-k", "1,4,adaptive", "--val-data", "v.jsonl", "--estep-max-model-len", "512"]),
])
def test_print_config_round_trips(tmp_path, command, extra):
    first = invoke([command, *extra, "--print-config"], cwd=tmp_path)
    assert first.exit_code == 0, _error(first)
    (tmp_path / "c.toml").write_text(first.stdout)
    second = invoke([command, "--config", str(tmp_path / "c.toml"), "--print-config"], cwd=tmp_path)
    assert second.exit_code == 0, _error(second)
    assert second.stdout == first.stdout
    assert first.stdout.startswith(f"# lt {command} config")


def test_required_settings_may_come_from_the_file_and_are_named_when_missing(tmp_path):
    result = invoke(["finetune-eval", "--model", "m", "--output", "o", "--data", "d"])
    assert result.exit_code == 2 and "--train-data is required" in _error(result)
    result = invoke(["sample-thoughts", "--k", "2", "x.jsonl"])
    assert result.exit_code == 2 and "--model is required" in _error(result)


# ------------------------------------------------------------------------------------ same runs
def test_train_from_a_config_file_equals_train_from_flags(tmp_path, tiny_model_dir):
    """Byte-identical train_config.json; and the recorded train_config.json reads back as the run."""
    import shutil

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"chunks": [{"text": f"Document {i}.", "latent": "a thought"}]}) + "\n" for i in range(8)))
    args = ["--model", str(tiny_model_dir), "--data", str(data), "--output", str(tmp_path / "out"), "--seq-len", "32", "--batch-size", "2",
            "--steps", "2", "--warmup-steps", "1", "--lr", "1e-3", "--weight-decay", "0.05", "--val-elbo-n", "1,2", "--log-every", "1"]
    flagged = invoke(["train", *args])
    assert flagged.exit_code == 0, _error(flagged)
    recorded = (tmp_path / "out" / "train_config.json").read_bytes()
    (tmp_path / "t.toml").write_text(invoke(["train", *args, "--print-config"]).stdout)
    shutil.rmtree(tmp_path / "out")
    from_file = invoke(["train", "--config", str(tmp_path / "t.toml")])
    assert from_file.exit_code == 0, _error(from_file)
    assert (tmp_path / "out" / "train_config.json").read_bytes() == recorded
    again = invoke(["train", "--config", str(tmp_path / "out" / "train_config.json"), "--print-config"])
    # printed as JSON, like the file it read
    assert again.exit_code == 0 and configfile.read_text(again.stdout, "json", TrainConfig) == TrainConfig.from_dict(json.loads(recorded))


def test_bootstrap_from_a_config_file_equals_bootstrap_from_flags(tmp_path):
    """Byte-identical config.json, and RUN/config.toml (or config.json) reruns the same run."""
    args = ["--iters", "0", "--no-raw-baseline", "--no-teacher-baseline", "--warm-steps", "2", "--seq-len", "64", "--batch-size", "4",
            "--warmup-steps", "1", "--max-new-tokens", "8", "--eval-max-new-tokens", "8", "--demo-train", "24", "--demo-heldout", "8",
            "--demo-steps", "3", "--weight-decay", "0.02", "--run-dir", str(tmp_path / "run")]
    first = invoke(["bootstrap", *args])
    assert first.exit_code == 0, _error(first)
    recorded = (tmp_path / "run" / "config.json").read_bytes()
    toml = (tmp_path / "run" / "config.toml").read_text()
    printed = invoke(["bootstrap", *args, "--print-config"])
    assert printed.stdout.split("\n", 1)[1] == toml.split("\n", 1)[1]  # the same config, another header line
    import shutil

    shutil.rmtree(tmp_path / "run")
    (tmp_path / "c.toml").write_text(toml)
    second = invoke(["bootstrap", "--config", str(tmp_path / "c.toml")])
    assert second.exit_code == 0, _error(second)
    assert (tmp_path / "run" / "config.json").read_bytes() == recorded
    # config.json itself reads back as the same settings (the rerun finds every stage done)
    third = invoke(["bootstrap", "--config", str(tmp_path / "run" / "config.json")])
    assert third.exit_code == 0 and "3/3 stages already done" in _error(third), _error(third)
    assert (tmp_path / "run" / "config.json").read_bytes() == recorded


# ------------------------------------------------------------------------------------ bootstrap reaches lt train
def _train_stage_configs(config: BootstrapConfig) -> dict[str, TrainConfig]:
    ctx = RunContext(config, Path(config.run_dir))
    return {stage.key: stage.configs(ctx)[0] for stage in build_plan(config) if stage.command == "train"}


def test_every_lt_train_setting_reaches_bootstraps_training_stages(tmp_path):
    """Walk TrainConfig: each of its flags is either set in [train] (a nested group in its own
    section) and arrives in every training stage with thought data, or is one each stage sets
    itself, and setting it in the file is an error that names the bootstrap setting to use."""
    from test_flags import CHOICES, _different

    base = {"model": "m", "data": str(tmp_path / "d.jsonl"), "warm_data": [str(tmp_path / "w.jsonl")], "run_dir": str(tmp_path / "r"), "iters": 2}
    reached, owned = [], []
    for leaf in flags.leaves(TrainConfig):
        owner = TrainConfig
        for name in leaf.path[:-1]:
            owner = typing.get_type_hints(owner)[name]
        value = _different(leaf, typing.get_type_hints(owner)[leaf.path[-1]], CHOICES)
        if leaf.name in ("output", "data", "init_config", "model"):
            value = "elsewhere.jsonl" if leaf.name != "data" else ["elsewhere.jsonl"]
        dotted = ".".join(("train",) + leaf.path)
        section, key = dotted.rsplit(".", 1)
        path = tmp_path / f"{leaf.name}.toml"
        extra = 'val_data = "v.jsonl"\n' if leaf.name in ("val_every", "val_reference_quirks") else ""
        path.write_text(f"[{section}]\n{extra}{key} = {configfile._toml_value(value)}\n")
        found = configfile.read(str(path), BootstrapConfig)
        if any(dotted == p or dotted.startswith(p + ".") for p in SET_PER_STAGE):
            with pytest.raises(UsageError, match=rf"{leaf.name}.toml:\d: {dotted}: is set by each stage; set "):
                resolve_config(base, found)
            owned.append(leaf.name)
            continue
        config = resolve_config(base, found)
        stages = _train_stage_configs(config)
        assert set(stages) == {"warm/train", "k4/iter1/train", "k4/iter2/train"}
        for key_, stage in stages.items():
            got = flags.get(stage, leaf.path)
            if leaf.name == "val_data":
                got = Path(got).name if got else got
            assert got == (list(value) if isinstance(value, tuple) else value), (leaf.name, key_, got)
        reached.append(leaf.name)
    assert set(reached) | set(owned) == {leaf.name for leaf in flags.leaves(TrainConfig)}
    assert set(owned) == {"output", "data", "model", "init_config", "seed", "dtype", "steps", "tokens"}
    assert {"weight_decay", "val_data", "gradient_checkpointing", "strategy", "adam_beta2", "data_sharding"} <= set(reached)


def test_stage_owned_fields_equal_to_the_template_are_accepted(tmp_path):
    """A recorded config.json holds the templates' own output, data, seed ... (as their defaults)."""
    path = tmp_path / "c.toml"
    path.write_text('[train]\noutput = ""\nseed = 42\n[eval]\ntask = "gsm8k"\n')
    config = resolve_config({"run_dir": str(tmp_path)}, configfile.read(str(path), BootstrapConfig))
    assert config.train.output == "" and config.demo


def test_a_stats_sidecar_is_read_as_the_config_it_records(tmp_path):
    from lt_cli.estep import SampleThoughtsRun

    config = _all_flags_set("sample-thoughts")
    path = tmp_path / "cand.jsonl.stats.json"
    path.write_text(json.dumps({"command": "sample-thoughts", "stats": {"documents": 3}, "seconds": 1.0,
                                "config": dataclasses.asdict(config)}, indent=2))
    assert configfile.merge(configfile.defaults(SampleThoughtsRun), configfile.read(str(path), SampleThoughtsRun), set()) == config


def test_the_paper_config_resolves_to_the_papers_setting():
    from conftest import REPO

    config = resolve_config({}, configfile.read(str(REPO / "runs" / "paper" / "bolt.toml"), BootstrapConfig))
    assert (config.iters, config.ks, config.mstep_tokens, config.warm_tokens, config.warm_batch_size) == (3, [4], 13_000_000_000, 800_000_000, 96)
    assert (config.train.batch_size, config.train.strategy, config.sample.reference_quirks, config.estep_max_model_len) == (192, "fsdp", True, 2048)
    assert config.raw_token_matched_tokens == 3_840_000_000 and config.teacher_api.batch and not config.continue_training
    assert dataclasses.asdict(config)["eval_tasks"] == ["math", "gsm8k"]


def test_the_papers_teacher_baseline_and_synthesis_configs():
    from conftest import REPO

    from lt_cli.bootstrap.stages import RunContext as Context
    from lt_cli.teacher import SynthesizeRun

    config = resolve_config({}, configfile.read(str(REPO / "runs" / "paper" / "teacher-baseline.toml"), BootstrapConfig))
    plan = {stage.key: stage for stage in build_plan(config)}
    assert list(plan) == ["warm/eval", "baseline-teacher/train", "baseline-teacher/eval"]
    train = plan["baseline-teacher/train"].configs(Context(config, Path(config.run_dir)))[0]
    assert (train.model, train.tokens, train.batch_size, train.layout, train.data) == (
        "TinyLlama/TinyLlama_v1.1", 13_000_000_000, 192, "random", ["lt-runs/paper/teacher/bootstrap.jsonl"])
    synth = configfile.read_text((REPO / "runs" / "paper" / "synthesize-bootstrap.toml").read_text(), "toml", SynthesizeRun)
    assert synth.api.batch and synth.backend.backend == "api" and synth.stream.input == "data/finemath/bootstrap.jsonl"
