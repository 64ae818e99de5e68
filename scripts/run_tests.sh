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
trap 'rm -rf "$MOBILESAM_TEST_CACHE_DIR"' EXIT

# Pass 1: everything that starts no ROS process, on 2 xdist workers of 1 thread each. Much of it
# is single-threaded (16-bit convolutions on CPU, ONNX export, imports, child processes), which a
# serial run leaves one core idle for. One thread per worker and passive OpenMP waiting, or the
# workers' OpenMP pools spin against each other (2 workers x 2 spinning threads on 2 cores took
# longer than the serial run). Files stay whole (loadfile): module fixtures run once.
status=0
OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE "${PYTEST[@]}" test -m "not ros" -n 2 --dist loadfile \
    || status=$?
# Pass 2: the tests that run rclpy processes (marked `ros`), one at a time on the whole machine:
# they measure rates, waits and fairness against the wall clock.
"${PYTEST[@]}" test -m ros || status=$?
exit "$status"
