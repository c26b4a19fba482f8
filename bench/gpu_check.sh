#!/usr/bin/env bash
# The device command for bench/gpu_check.py (docs/performance.md, "GPU check"): install the wheels
# carried in .whl/, run the check into $GPU_CHECK_DIR (default /tmp/gpu-check, kept while the
# machine stays warm, so a rerun reuses the built models), then copy gpu_check.json, gpu_check.md
# and logs.tar.gz (every command's log and the demo's report) to $OUT when it is set.
#   bash bench/gpu_check.sh [gpu_check.py options, e.g. --parts demo --budget-s 200]
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
    # on another Python the cp312 wheels do not install: the check then records what is missing
    if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl; then
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    else
        echo "gpu_check.sh: the wheels in .whl/ did not install; going on without them" >&2
    fi
fi
export PYTHONUNBUFFERED=1
dest=${GPU_CHECK_DIR:-/tmp/gpu-check}
python3 bench/gpu_check.py "$@" "$dest"
code=$?
if [ -n "${OUT:-}" ]; then
    cp "$dest/gpu_check.json" "$dest/gpu_check.md" "$OUT/" 2>/dev/null
    (cd "$dest" && tar czf "$OUT/logs.tar.gz" logs $(ls demo/report.* demo/manifest.json 2>/dev/null))
fi
exit $code
