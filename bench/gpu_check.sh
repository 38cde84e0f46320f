#!/usr/bin/env bash
# The GPU check in one command (see bench/gpu_check.py): CUDA tests, fp32/fp16 RTF and SNR,
# the service with GPU fractions under Locust at 8/32/64 users, docs/gpu.md.
#   bash bench/gpu_check.sh             # on a GPU machine, within 8 minutes
#   bash bench/gpu_check.sh --dry-run   # the same steps on the CPU with tiny sizes (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  bash scripts/setup.sh
fi
. .venv/bin/activate
# Locust drives the load; it is an extra (load) that setup.sh installs.
python -c "import locust" 2>/dev/null || python -m pip install -q -e ".[serve,test,load]"
export RAY_AUTH_MODE=token  # as the README's service runs
exec timeout "${GPU_CHECK_TIMEOUT_S:-480}" python -m bench.gpu_check "$@"
