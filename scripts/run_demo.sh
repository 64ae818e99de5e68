#!/usr/bin/env bash
# The node demo: plays the bundled camera sequence through the mobilesam node and writes overlays.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. scripts/activate.sh
export MOBILESAM_WEIGHTS="${MOBILESAM_WEIGHTS:-$PWD/weights}"
exec python -P -m mobilesam_ros.ros.demo "$@"
