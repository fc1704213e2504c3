#!/usr/bin/env bash
# Install the project (editable) with its test tools and every optional extra into .venv, then run the
# whole test suite on two workers. Usage: ./run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -r requirements-test.txt
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Chromium for the HTML viewer tests (apt-get install chromium)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
  else
    echo "note: Chromium is not installed; the two browser tests of the HTML viewer will be skipped"
  fi
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1   # only matters when run as root
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}   # waiting OpenMP threads sleep: the workers share the cores
# Two workers by default (pytest-xdist; most tests start subprocesses or MPI ranks and wait on them);
# TEST_WORKERS=0 runs in one process, and a -n given on the command line wins.
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist worksteal "$@"
