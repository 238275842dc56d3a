"""pip-installable setup for BiFusion (colcon builds the ROS package through CMakeLists.txt)."""
from glob import glob

from setuptools import find_packages, setup

setup(
    name="bifusion",
    version="0.1.0",
    description="RGB-D -> live 3D instance + semantic segmentation with CLIP / sparse 3D U-Net fusion",
    packages=find_packages(include=["bifusion_core", "bifusion_core.*", "bifusion_ros", "bifusion_ros.*"]),
    package_data={"bifusion_core": ["assets/*", "assets/**/*", "models/clip_configs/*.json"]},
    data_files=[("share/bifusion_ros/msg", glob("msg/*.msg"))],
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            # the same executables as CMakeLists.txt installs into lib/bifusion_ros for ros2 run / launch
            "bifusion_node = bifusion_ros.node_cli:main",
            "bifusion_replay = bifusion_ros.replay:main",
            "bifusion_train = bifusion_core.train.__main__:main",
        ]
    },
)
