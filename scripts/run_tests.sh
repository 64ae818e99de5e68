#!/usr/bin/env bash
# Run the test suite in the built environment (run scripts/setup.sh first; `make test` does).
# Extra arguments go to pytest, e.g. `-m "not slow"` or `-k segevery`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. scripts/activate.sh
# -P: the repo root must not be on sys.path, or the source package (without the generated msg/)
# would shadow the installed one.
exec python -P -m pytest -q -p no:cacheprovider --timeout 900 -rs test "$@"
