#!/usr/bin/env bash
# Run the test suite in the built environment (run scripts/setup.sh first; `make test` does).
# Extra arguments go to pytest, e.g. `-m "not slow"`, `-k segevery` or test paths.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. scripts/activate.sh
# -P: the repo root must not be on sys.path, or the source package (without the generated msg/)
# would shadow the installed one.
# Paths given (`run_tests.sh test/core/test_x.py -k y`) run just those; otherwise the whole suite.
if [ $# -eq 0 ] || [[ "$1" == -* ]]; then set -- test "$@"; fi
exec python -P -m pytest -q -p no:cacheprovider --timeout 900 -rs --durations=25 "$@"
