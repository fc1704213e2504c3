#!/usr/bin/env bash
# The memory figure of the scale issue: a memory-mapped float32 dataset of 3.28 GB (200,000 x 4,096)
# streamed through a 3-point surface (landscape.surface(..., data_in_memory="no")), peak RSS measured
# by /usr/bin/time -v; then the same surface on the first 20,000 rows in memory and streamed, which
# must agree; then the same file through plot_surface.py as a user gives it (--dataset file.py:fn
# returning a plain Dataset and no test set, --model file.py:fn, --data_in_memory no), RSS measured the
# same way. The data is written first, by its own process (written pages would count in the RSS).
#
#   bash bench/bench_stream_memory.sh            # 3.28 GB in $DIR (default /tmp/ll_stream); about 2 min
#   bash bench/bench_stream_memory.sh --quick    # 20,000 rows (0.33 GB), to check the script works
#
# Needs /usr/bin/time (Debian/Ubuntu: apt-get install -y time). Delete $DIR afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=$(pwd)/.venv/bin/python; else PY=python3; fi
DIR=${DIR:-/tmp/ll_stream}
ROWS=200000
CHECK=20000
if [ "${1:-}" = "--quick" ]; then ROWS=20000; CHECK=5000; DIR=${DIR}_quick; fi
[ -x /usr/bin/time ] || { echo "error: /usr/bin/time is missing (apt-get install -y time)" >&2; exit 2; }
echo "# bench_stream_memory: $(date '+%F %T'), $(uname -m), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), MemAvailable $(awk '/MemAvailable/ {printf "%.1f GB", $2 / 1e6}' /proc/meminfo)"
MADE=$("$PY" bench/bench_stream.py --dir "$DIR" --rows "$ROWS" --make_only --cli_files)
echo "$MADE"
FLAGS=$(echo "$MADE" | sed -n 's/^cli flags: //p')
LOG=$(mktemp)
/usr/bin/time -v "$PY" bench/bench_stream.py --dir "$DIR" --rows "$ROWS" 2> "$LOG" | grep -v "it/s\|pt/s" || { cat "$LOG"; exit 1; }
grep -E "Maximum resident set size|Elapsed \(wall clock\)" "$LOG" | sed 's/^\s*/\/usr\/bin\/time -v: /'
rm -f "$LOG"
"$PY" bench/bench_stream.py --dir "$DIR" --rows "$ROWS" --check "$CHECK"
# the command line, as the user runs it: --dataset file.py:fn giving (Dataset over the memmap, None), no
# test set, --model file.py:fn, --data_in_memory no, --eval_test (which says there is no test set)
echo "# plot_surface.py $FLAGS --data_in_memory no --eval_test --x=-1:1:3 --xnorm filter --xignore biasbn --batch_size 1024"
ROOT=$(pwd); OUT=$(mktemp -d)
( cd "$OUT" && /usr/bin/time -v "$PY" "$ROOT/plot_surface.py" $FLAGS --data_in_memory no --eval_test --x=-1:1:3 \
    --xnorm filter --xignore biasbn --batch_size 1024 --threads 2 --surf_file cli.h5 ) 2> "$OUT/time.log" \
  | grep -v "it/s\|pt/s" || { cat "$OUT/time.log"; exit 1; }
grep -v "Command being timed\|^\s" "$OUT/time.log" | grep -v "pt/s" || true
grep -E "Maximum resident set size|Elapsed \(wall clock\)" "$OUT/time.log" | sed 's/^\s*/\/usr\/bin\/time -v: /'
"$PY" -c "import h5py, sys; f = h5py.File(sys.argv[1]); print('file:', sorted(f.keys()), 'test_size', f.attrs['test_size'])" "$OUT/cli.h5"
rm -rf "$OUT"
