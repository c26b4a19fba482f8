"""Configs as command lines: every command that lt bootstrap runs takes a config whose leaves are its
flags. A config with every flag set away from its default, rendered by flags.to_argv and parsed by
the real CLI, must come back equal: that is what makes a stage run the same in-process and under a
launcher."""

from __future__ import annotations

import dataclasses
import importlib
import typing

import pytest
from typer.main import get_command

from lt_cli import flags
from lt_cli.cli import COMMANDS, app
from lt_cli.runners import RUNNERS, config_class

#: values for leaves whose strings must be one of a few choices
CHOICES = {
    "backend": "vllm", "dtype": "bfloat16", "method": "argmax", "layout": "prior", "loss_on": "observed", "strategy": "fsdp",
    "data_sharding": "rank", "device": "cpu", "variant": "raw", "task": "math", "shard": "1/4", "report_to": ["wandb"],
    "val_elbo_n": [1, 3], "sentences": "english", "stop_rule": "ess", "k_max": 12, "loss": "chunked",
}
SYNTH_CHOICES = {"method": "wrap", "backend": "transformers"}


def _different(leaf: flags.Leaf, hint, choices: dict):
    """A valid value different from the leaf's default, made from its type."""
    if leaf.name in choices:
        return choices[leaf.name]
    default = leaf.default()
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    kind = args[0] if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args else hint
    origin = typing.get_origin(kind)
    if kind is bool:
        return not default
    if kind is int:
        return (default or 0) + 3
    if kind is float:
        return (default or 0.0) * 0.5 + 0.25
    if kind is str:
        return f"x-{leaf.name}.jsonl"
    if origin is list:
        return ["a.jsonl", "b.jsonl"]
    if origin is tuple:
        return (1, 3)
    raise AssertionError(f"no test value for {leaf.name}: {hint}")


def _all_flags_set(cls, choices: dict):
    values = {}
    for leaf in flags.leaves(cls):
        if not leaf.enabled:
            continue
        owner = cls
        for name in leaf.path[:-1]:
            owner = typing.get_type_hints(owner)[name]
        values[leaf.name] = _different(leaf, typing.get_type_hints(owner)[leaf.path[-1]], choices)
    return flags.build(cls, values)


def _parse(argv: list[str]) -> dict:
    """The command's parameters as the command sees them (without the typer context and the
    --config/--print-config parameters, which are no fields of the config)."""
    from lt_cli.commands.common import FILE_PARAMS

    group = get_command(app)
    command = group.commands[argv[0]]
    params = command.make_context(argv[0], list(argv[1:])).params
    return {name: value for name, value in params.items() if name not in FILE_PARAMS}


@pytest.mark.parametrize("command", sorted(RUNNERS))
def test_every_flag_round_trips_through_the_cli(command):
    cls = config_class(command)
    config = _all_flags_set(cls, {**CHOICES, **(SYNTH_CHOICES if command == "synthesize" else {})})
    for leaf in flags.leaves(cls):
        if leaf.enabled:
            assert not flags._same(flags.get(config, leaf.path), leaf.default()), f"{leaf.name} kept its default"
    argv = flags.to_argv(command, config)
    module = importlib.import_module(f"lt_cli.commands.{dict(COMMANDS)[command]}")
    assert module.config_from_flags(_parse(argv)) == config, argv
    # and a config left at its defaults renders as the bare command plus its required values
    required = {leaf.name: f"r-{leaf.name}" for leaf in flags.leaves(cls) if leaf.default() is flags.NO_DEFAULT}
    expected = [command] + [word for name, value in required.items() for word in ("--" + name.replace("_", "-"), value)]
    assert flags.to_argv(command, flags.build(cls, required)) == expected


def test_leaf_names_are_unique_and_every_bootstrap_flag_is_a_leaf():
    from lt_cli.bootstrap import BootstrapConfig
    from lt_cli.commands import bootstrap as command

    for command_name in RUNNERS:
        flags.leaves(config_class(command_name))  # raises on a duplicate name
    names = {leaf.name for leaf in flags.leaves(BootstrapConfig)}
    derived = {"k", "sweep_k", "demo_train", "demo_heldout", "demo_steps", "demo_warm_fraction"}  # parsed into ks / demo_corpus
    derived |= {"config_file", "print_config", "ctx"}  # the config file, not a field of it
    params = set(typing.get_type_hints(command.command, include_extras=True)) - {"return"}
    assert params - derived <= names, params - derived - names
    assert {"select_method", "eval_limit", "temperature", "lr", "max_new_tokens", "docs_per_call"} <= params


def test_a_leaf_without_a_flag_cannot_be_rendered():
    from lt_cli.chunking import ChunkingConfig
    from lt_cli.errors import UsageError
    from lt_cli.estep import SampleThoughtsRun

    config = SampleThoughtsRun()
    config.sample = dataclasses.replace(config.sample, chunking=ChunkingConfig(mode="uniform"))
    with pytest.raises(UsageError, match="chunking"):
        flags.to_argv("sample-thoughts", config)


def test_build_refuses_unknown_names_and_from_json_restores_nesting():
    from lt_cli.bootstrap import BootstrapConfig

    with pytest.raises(TypeError, match="no flag"):
        flags.build(BootstrapConfig, {"temprature": 1.0})
    config = flags.build(BootstrapConfig, {"run_dir": "r", "temperature": 0.5, "lr": 0.01, "select_method": "uniform", "eval_limit": 5})
    assert (config.sample.temperature, config.train.lr, config.select.method, config.eval.limit) == (0.5, 0.01, "uniform", 5)
    assert config.train.output == "" and config.sample.k == 4  # templates keep the rest of their defaults
    assert BootstrapConfig.from_dict(config.to_dict()) == config
