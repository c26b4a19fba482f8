"""completions/ must match what scripts/gen_completions.py generates from the current CLI."""

import subprocess
import sys

from conftest import REPO


def test_completions_are_fresh():
    sys.path.insert(0, str(REPO / "scripts"))
    import gen_completions

    for name, text in gen_completions.render().items():
        path = REPO / "completions" / name
        assert path.exists(), f"missing {path}: run python scripts/gen_completions.py"
        assert path.read_text() == text, f"{path} is stale: run python scripts/gen_completions.py"


def test_bash_completion_completes_commands_and_options():
    script = REPO / "completions" / "lt.bash"
    out = subprocess.run(
        ["bash", "-c", f'source {script}; COMP_WORDS=(lt ch); COMP_CWORD=1; _lt; echo "${{COMPREPLY[@]}}"; '
         'COMP_WORDS=(lt chunk --sk); COMP_CWORD=2; _lt; echo "${COMPREPLY[@]}"'],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    assert out == ["chunk", "--skip-bad"]


def test_zsh_and_fish_scripts_parse():
    import shutil

    import pytest

    checked = 0
    for shell, name in (("zsh", "_lt"), ("fish", "lt.fish")):
        if shutil.which(shell):
            subprocess.run([shell, "-n", str(REPO / "completions" / name)], check=True)
            checked += 1
    if not checked:
        pytest.skip("neither zsh nor fish is installed")


def _bash(words: list[str]) -> list[str]:
    script = REPO / "completions" / "lt.bash"
    quoted = " ".join(f'"{w}"' for w in words)
    out = subprocess.run(["bash", "-c", f'source {script}; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; _lt; echo "${{COMPREPLY[@]}}"'],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    return out.split()


def test_values_of_options_with_a_fixed_set_come_from_the_library():
    from lt_cli.backends import backend_names
    from lt_cli.estep.adaptive import STOP_RULES
    from lt_cli.evaluation.registry import task_names
    from lt_cli.formats import LAYOUTS

    assert _bash(["lt", "train", "--layout", ""]) == list(LAYOUTS)
    assert _bash(["lt", "train", "--layout", "pr"]) == ["prior", "prior-tagged"]
    assert _bash(["lt", "eval", "--task", ""]) == task_names()
    assert _bash(["lt", "sample-thoughts", "--backend", ""]) == backend_names()
    assert _bash(["lt", "sample-thoughts", "--stop-rule", ""]) == list(STOP_RULES)
    assert _bash(["lt", "eval", "--variant", ""]) == ["auto", "latent", "raw"]
    assert _bash(["lt", "train", "--dtype", ""]) == ["auto", "float32", "bfloat16"]
    assert _bash(["lt", "bootstrap", "--select-method", ""]) == ["importance", "uniform", "argmax"]
    assert _bash(["lt", "train", "--seq-len", ""]) == []  # a number: nothing to offer, not file names
    assert "README.md" in _bash(["lt", "train", "--data", "READ"])  # files where a file is expected
    assert _bash(["lt", "train", "--output", "benc"]) == ["bench"]  # folders where a folder is expected
    assert "README.md" in _bash(["lt", "view", "READ"])  # and the input file of a stream command


def test_every_fixed_set_option_and_file_option_completes():
    sys.path.insert(0, str(REPO / "scripts"))
    import gen_completions

    table = {c.name: {name: o for o in c.options for name in o.names} for c in gen_completions.command_table()}
    for command, option in (("train", "--layout"), ("train", "--strategy"), ("train", "--loss-on"), ("train", "--report-to"), ("eval", "--task"),
                            ("eval", "--backend"), ("eval", "--dtype"), ("sample-thoughts", "--stop-rule"), ("select", "--method"),
                            ("synthesize", "--method"), ("chunk", "--mode"), ("chunk", "--sentences"), ("bootstrap", "--launcher"),
                            ("bootstrap", "--eval-tasks"), ("finetune-eval", "--variant"), ("merge", "--order"), ("view", "--finish")):
        assert isinstance(table[command][option].values, list) and table[command][option].values, (command, option)
    for command, option in (("train", "--data"), ("train", "--val-data"), ("eval", "--log-samples"), ("bootstrap", "--warm-data"),
                            ("view", "--html"), ("train", "--config"), ("sample-thoughts", "--cache")):
        assert table[command][option].values == "file", (command, option)
    for command, option in (("train", "--model"), ("bootstrap", "--run-dir"), ("finetune-eval", "--output")):
        assert table[command][option].values == "dir", (command, option)


def test_zsh_descriptions_are_whole_sentences():
    text = (REPO / "completions" / "_lt").read_text()
    assert "'--output[Output JSONL (.gz ok), written atomically; default stdout]:file:_files'" in text
    assert "--tokens[Token budget: steps = tokens // (batch * seq_len) (e.g" in text and "13e9)]" in text
    assert "--layout[random, prior, posterior, prior-tagged, posterior-tagged, pure or raw]:value:(random prior " in text


def test_fish_completes_values():
    import shutil

    import pytest

    if not shutil.which("fish"):
        pytest.skip("fish is not installed")
    out = subprocess.run(["fish", "-c", f"source {REPO / 'completions' / 'lt.fish'}; complete -C 'lt eval --variant '"],
                         capture_output=True, text=True, check=True).stdout
    assert [line.split("\t")[0] for line in out.splitlines()] == ["auto", "latent", "raw"]
