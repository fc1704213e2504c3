#!/usr/bin/env bash
# The memory figure of the scale issue: a memory-mapped float32 dataset of 3.28 GB (200,000 x 4,096)
# streamed through a 3-point surface (landscape.surface(..., data_in_memory="no")), peak RSS measured
# by /usr/bin/time -v; then the same surface on the first 20,000 rows in memory and streamed, which
# must agree. The data is written first, by its own process (written pages would count in the RSS).
#
#   bash bench/bench_stream_memory.sh            # 3.28 GB in $DIR (default /tmp/ll_stream); about 2 min
#   bash bench/bench_stream_memory.sh --quick    # 20,000 rows (0.33 GB), to check the script works
#
# Needs /usr/bin/time (Debian/Ubuntu: apt-get install -y time). Delete $DIR afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
DIR=${DIR:-/tmp/ll_stream}
ROWS=200000
CHECK=20000
if [ "${1:-}" = "--quick" ]; then ROWS=20000; CHECK=5000; DIR=${DIR}_quick; fi
[ -x /usr/bin/time ] || { echo "error: /usr/bin/time is missing (apt-get install -y time)" >&2; exit 2; }
echo "# bench_stream_memory: $(date '+%F %T'), $(uname -m), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), MemAvailable $(awk '/MemAvailable/ {printf "%.1f GB", $2 / 1e6}' /proc/meminfo)"
"$PY" bench/bench_stream.py --dir "$DIR" --rows "$ROWS" --make_only
LOG=$(mktemp)
/usr/bin/time -v "$PY" bench/bench_stream.py --dir "$DIR" --rows "$ROWS" 2> "$LOG" | grep -v "it/s\|pt/s" || { cat "$LOG"; exit 1; }
grep -E "Maximum resident set size|Elapsed \(wall clock\)" "$LOG" | sed 's/^\s*/\/usr\/bin\/time -v: /'
rm -f "$LOG"
"$PY" bench/bench_stream.py --dir "$DIR" --rows "$ROWS" --check "$CHECK"
