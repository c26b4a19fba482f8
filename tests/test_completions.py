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
