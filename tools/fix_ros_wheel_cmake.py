"""Point the ros-kilted wheels' exported CMake targets at this interpreter's Python and NumPy
include dirs: the wheels carry the manylinux build machine's paths, which breaks `colcon build`
of any package with messages. Idempotent; run with the venv's python after every pip install."""
import glob
import os
import re
import sys
import sysconfig

import numpy

PY_INC, NP_INC = sysconfig.get_paths()["include"], numpy.get_include()
PAT_NP = re.compile(r'[^";]*/site-packages/numpy/_core/include')
PAT_PY = re.compile(r'[^";]*/include/python3\.\d+')


def _fix(text: str) -> str:
    text = PAT_NP.sub(lambda m: m.group(0) if os.path.isdir(m.group(0)) else NP_INC, text)
    return PAT_PY.sub(lambda m: m.group(0) if os.path.isdir(m.group(0)) else PY_INC, text)


def main() -> int:
    changed = 0
    for path in glob.glob(os.path.join(sys.prefix, "share", "*", "cmake", "*.cmake")):
        with open(path) as f:
            text = f.read()
        new = _fix(text)
        if new != text:
            with open(path, "w") as f:
                f.write(new)
            changed += 1
    print(f"fix_ros_wheel_cmake: patched {changed} file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
