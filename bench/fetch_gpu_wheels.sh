#!/usr/bin/env bash
# Fetch the wheels of every package lt needs that the GPU machine's image lacks into .whl/
# (git-ignored), for Python 3.12 on manylinux x86_64, then print the size of what a device call
# sends (tracked files + .whl/; the limit is 64 MiB). The list is derived, not kept by hand:
# bench/gpu_wheels.py walks pyproject.toml's dependencies through the installed packages (the
# versions CI tests with) and leaves out what bench/gpu_image_packages.txt says the image holds.
#   bash bench/fetch_gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t WHEELS < <(python3 bench/gpu_wheels.py --explain)
echo "carrying ${#WHEELS[@]} packages: ${WHEELS[*]}" >&2
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
ls -l .whl >&2
whl_bytes=$(du -cb .whl/*.whl | tail -1 | cut -f1)
tree_bytes=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | grep total$ | awk '{s += $1} END {print s}')
echo "wheels $((whl_bytes / 1024)) KiB + tracked files $((tree_bytes / 1024)) KiB = $(((whl_bytes + tree_bytes) / 1024)) KiB (limit 65536 KiB)" >&2
