"""pip distribution of the ROS-free core and its command line (`python -m mobilesam_ros`).

colcon ignores this file: the ROS package is built by CMakeLists.txt (messages + the Python
package + node executables). This file is for machines without ROS that only need the engine —
exporting ONNX models, benchmarking, distilling an encoder on a workstation GPU:

    pip install -r requirements/core.txt && pip install .

It installs `mobilesam_ros.core`, `mobilesam_ros.distill` and the CLI (`mobilesam_ros.cli`), not the ROS adapter.
"""
from setuptools import find_packages, setup

setup(
    name="mobilesam_ros",
    version="0.1.0",
    description="MobileSAM / MobileSAMv2 SegAny and SegEvery engine (ROS-free core of mobilesam_ros)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["mobilesam_ros", "mobilesam_ros.core*", "mobilesam_ros.distill*", "mobilesam_ros.cli*"]),
    # torch is pinned in requirements/core.txt: an unpinned torch pulls the CUDA build (GBs)
    install_requires=["numpy>=1.26", "opencv-python-headless>=4.8", "tqdm", "PyYAML", "scipy"],
    extras_require={
        "torch": ["torch==2.13.0"],
        "onnx": ["onnxruntime==1.32.0", "onnx==1.23.2"],
        "onnx-gpu": ["onnxruntime-gpu", "onnx==1.23.2"],
        "bag": ["rosbags==0.11.9"],
    },
    entry_points={"console_scripts": ["mobilesam=mobilesam_ros.__main__:main"]},
)
