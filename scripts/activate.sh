# Source me (bash): activates the venv and this package's colcon install space.
_msr_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "${MOBILESAM_VENV:-$HOME/.cache/mobilesam_ros/venv}/bin/activate"
export AMENT_PREFIX_PATH="$VIRTUAL_ENV"
# colcon's setup.sh is not `set -u` clean
case $- in *u*) _msr_u=1; set +u;; *) _msr_u=0;; esac
# the tests' vision_msgs stand-in, built by setup.sh only where no real vision_msgs exists
[ -f "$_msr_root/build/standin/install/local_setup.sh" ] && . "$_msr_root/build/standin/install/local_setup.sh"
. "$_msr_root/install/setup.sh"
[ "$_msr_u" = 1 ] && set -u
unset _msr_root _msr_u
