"""Which packages the GPU machine lacks: lt's dependency closure minus the device image's packages.

    python bench/gpu_wheels.py            # prints NAME==VERSION per line (what fetch_gpu_wheels.sh downloads)
    python bench/gpu_wheels.py --explain  # also why each is needed and what the image already has

Why derived, not listed by hand: the first GPU check died in two of its five parts on nltk, which a
hand-kept list had forgotten. Here the list follows from pyproject.toml's dependencies, walked through
the installed packages' own requirements (the versions CI tests with), stopping at every package
the image already has (bench/gpu_image_packages.txt, copied from the device tool's package list).
tests/test_gpu_wheels.py fails when a module that lt imports would be missing on the machine.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
IMAGE_LIST = BENCH / "gpu_image_packages.txt"
#: the device's Python, for evaluating requirement markers
DEVICE_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux", "platform_system": "Linux",
              "os_name": "posix", "platform_machine": "x86_64", "implementation_name": "cpython",
              "platform_python_implementation": "CPython", "extra": ""}


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one dash."""
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages(path: Path = IMAGE_LIST) -> set[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {normalize(line) for line in lines if line}


def core_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """pyproject.toml's [project] dependencies (the base install, no extras)."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    return list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])


def _requirement_name(spec: str) -> tuple[str, bool]:
    """(normalized name, applies on the device) of one requirement string."""
    from packaging.requirements import Requirement

    requirement = Requirement(spec)
    applies = requirement.marker is None or requirement.marker.evaluate(DEVICE_ENV)
    return normalize(requirement.name), applies


def closure(requirements: list[str], image: set[str]) -> dict[str, list[str]]:
    """Every distribution the requirements need on the device that the image lacks, with the chain
    that pulls it in. Requirements of a package the image has are the image's business."""
    needed: dict[str, list[str]] = {}
    stack = [(spec, ["pyproject.toml"]) for spec in requirements]
    while stack:
        spec, chain = stack.pop()
        name, applies = _requirement_name(spec)
        if not applies or name in image or name in needed:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"gpu_wheels: {name} (needed by {' -> '.join(chain)}) is not installed here; install lt first") from None
        needed[name] = chain
        for child in dist.requires or []:
            stack.append((child, [*chain, name]))
    return needed


def wheel_pins(image: set[str] | None = None) -> list[str]:
    """NAME==VERSION of each distribution fetch_gpu_wheels.sh must carry, sorted."""
    image = image_packages() if image is None else image
    needed = closure(core_requirements(), image)
    return sorted(f"{metadata.distribution(name).metadata['Name']}=={metadata.version(name)}" for name in needed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--explain", action="store_true", help="say why each package is needed (stderr)")
    args = parser.parse_args()
    image = image_packages()
    if args.explain:
        for name, chain in sorted(closure(core_requirements(), image).items()):
            print(f"{name}: {' -> '.join(chain)}", file=sys.stderr)
    print("\n".join(wheel_pins(image)))


if __name__ == "__main__":
    main()
