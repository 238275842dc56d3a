"""Replay a recording through BiFusion: ``ros2 launch bifusion_ros replay.launch.py bag:=/path/to/bag``.

Runs ``ros2 bag play BAG --clock`` (the bag's ``/clock`` drives the node: ``use_sim_time:=true``) and the
``bifusion`` node with ``config/realsense.yaml``; the bag must hold the RealSense topics the node subscribes
(colour, aligned depth and its camera info) and ``/tf`` + ``/tf_static`` with the camera pose in the world
frame (as ``python -m bifusion_ros.synthetic_bag --out FILE.mcap`` writes). Without ROS, ``bifusion_replay`` evaluates
a bag offline instead.

    ros2 launch bifusion_ros replay.launch.py bag:=room.mcap rate:=0.5 device:=cuda rviz:=true
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from bifusion_ros.params import NODE_NAME, bifusion_overrides, defaults, parse_bool

PACKAGE = "bifusion_ros"

ARGUMENTS = (
    ("bag", None, "rosbag2 to play (directory or .mcap / .db3 file)"),
    ("rate", "1.0", "playback rate factor"),
    ("checkpoint", "", "model checkpoint file (empty: params file value; there empty = shipped demo checkpoint)"),
    ("device", "", "inference device auto | cpu | cuda (empty: params file value)"),
    ("half", "", "half precision true | false (empty: params file value)"),
    ("classes", "", "class names / text prompts, '[chair, table]' or 'chair, table' (empty: params file value)"),
    ("world_frame", "", "frame of the outputs (empty: params file value, 'map')"),
    ("map", "", "build the online instance map true | false (empty: params file value, true)"),
    ("params_file", "", "parameter file of the bifusion node (empty: <share>/config/realsense.yaml)"),
    ("rviz", "false", "start RViz2 with config/bifusion.rviz"),
)


def _setup(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context).strip()

    share = get_package_share_directory(PACKAGE)
    params_file = arg("params_file") or os.path.join(share, "config", "realsense.yaml")
    overrides = {"use_sim_time": True, **bifusion_overrides(arg)}  # the bag's clock
    rate = float(arg("rate"))
    if not rate > 0:
        raise ValueError(f"launch argument rate must be > 0, got {rate}")
    world_frame = overrides.get("world_frame", defaults()["world_frame"])
    actions = [
        ExecuteProcess(cmd=["ros2", "bag", "play", arg("bag"), "--rate", str(rate), "--clock"], output="screen"),
        Node(package=PACKAGE, executable="bifusion_node", name=NODE_NAME,
             parameters=[params_file, overrides], output="screen", emulate_tty=True),
    ]
    if parse_bool(arg("rviz")):
        actions.append(Node(
            package="rviz2", executable="rviz2", name="rviz2", parameters=[{"use_sim_time": True}],
            arguments=["-d", os.path.join(share, "config", "bifusion.rviz"), "-f", world_frame], output="screen",
        ))
    return actions


def generate_launch_description():
    declared = []
    for name, default, text in ARGUMENTS:
        if default is None:
            declared.append(DeclareLaunchArgument(name, description=text))
        else:
            declared.append(DeclareLaunchArgument(name, default_value=default, description=text))
    return LaunchDescription(declared + [OpaqueFunction(function=_setup)])
