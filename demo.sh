#!/usr/bin/env bash
# The quick start: create .venv, install the requirements, run the flat-vs-sharp demo (demo.py).
# Usage: ./demo.sh [--out demo_out] [--ranks 2] [--quick]
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ -n "${TORCH_SPEC:-}" ]; then   # e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
  .venv/bin/python -m pip install -q $TORCH_SPEC
fi
.venv/bin/python -m pip install -q -r requirements.txt
echo "installed; running the demo"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1   # only matters when run as root
exec .venv/bin/python demo.py "$@"
