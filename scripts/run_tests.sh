#!/usr/bin/env bash
# Run the test suite in the built environment (run scripts/setup.sh first; `make test` does).
# Extra arguments go to pytest, e.g. `-m "not slow"`, `-k segevery` or test paths; they run in one
# plain pass. Without arguments the whole suite runs in two passes (why: see below).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. scripts/activate.sh
# -P: the repo root must not be on sys.path, or the source package (without the generated msg/)
# would shadow the installed one.
PYTEST=(python -P -m pytest -q -p no:cacheprovider --timeout 900 -rs --durations=25)
if [ $# -gt 0 ]; then
    if [[ "$1" == -* ]]; then set -- test "$@"; fi
    exec "${PYTEST[@]}" "$@"
fi

# One ONNX export cache for both passes and every xdist worker (test/conftest.py reads it; the
# cache's per-key lock lets processes share it), outside the user's ~/.cache.
MOBILESAM_TEST_CACHE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/mobilesam_test_cache.XXXXXX")"
export MOBILESAM_TEST_CACHE_DIR

# Two passes at once, both started now:
# * The ROS pass (tests marked `ros`: they run rclpy processes; and `timing`) in the foreground,
#   one test at a time, at normal priority: they measure rates, waits and fairness against the
#   wall clock.
# * The other pass (everything else) in the background at nice 19, on 2 xdist workers of 1 thread
#   each. The ROS tests leave about a quarter of the 2 cores idle (waits on DDS, sleeps between
#   frames); at nice 19 the other pass takes those cycles and yields the CPU whenever a ROS
#   process wants it (CFS weight 15 vs 1024), then has the whole machine once the ROS pass is
#   done. Much of it is single-threaded (16-bit convolutions on CPU, ONNX export, imports, child
#   processes); one thread per worker and passive OpenMP waiting, or the workers' OpenMP pools
#   spin against each other. Files stay whole (loadfile): module fixtures run once; they are sent
#   in collection order, which test/conftest.py starts with the longest files.
# The other pass's output goes to a file, printed after the ROS pass's.
other_log="$(mktemp "${TMPDIR:-/tmp}/mobilesam_tests.XXXXXX")"
other=""
trap '[ -n "$other" ] && kill "$other" 2>/dev/null; rm -rf "$MOBILESAM_TEST_CACHE_DIR" "$other_log"' EXIT
# Its own session, whose autogroup gets nice 19 too: with the kernel's autogroups on (the default
# on desktop kernels, and here), nice only ranks processes within one session, and every node a
# ROS test starts has a session of its own, so process nice alone still took the niced pass about
# a third of the CPU from them (measured: 2 busy loops ran at 0.67x beside it; 1.0x with the group
# at nice 19). Without autogroups the write fails quietly and process nice does the work.
OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE setsid -w nice -n 19 bash -c \
    'echo 19 2>/dev/null >/proc/self/autogroup; exec "$@"' _ \
    "${PYTEST[@]}" test -m "not ros and not timing" -n 2 --dist loadfile --no-loadscope-reorder >"$other_log" 2>&1 &
other=$!
status=0
echo "== ROS pass: the tests marked ros or timing, one at a time (the rest run beside it at nice 19) =="
"${PYTEST[@]}" test -m "ros or timing" || status=$?
echo "== ROS pass done; the other tests (2 workers at nice 19) =="
wait "$other" || status=$?
other=""
cat "$other_log"
exit "$status"
