"""Live BiFusion on a RealSense camera: ``ros2 launch bifusion_ros realsense.launch.py``.

Starts

- ``realsense2_camera_node`` as ``/camera/camera`` (namespace ``camera``, name ``camera``): colour and depth
  640x480 at 30 Hz, depth aligned to colour (``align_depth.enable``), synchronised frames, no point cloud, so
  the node's default topics ``/camera/camera/color/image_raw``,
  ``/camera/camera/aligned_depth_to_color/image_raw`` and ``.../aligned_depth_to_color/camera_info`` exist;
- a static ``world_frame -> camera_link`` identity transform (``publish_map_tf:=true``, the default) for a
  camera standing still without SLAM; set ``publish_map_tf:=false`` when a SLAM / odometry system publishes
  the camera pose;
- the ``bifusion`` node with ``config/realsense.yaml`` (or ``params_file:=...``);
- RViz2 with ``config/bifusion.rviz`` when ``rviz:=true``.

Arguments left empty keep the parameter file's value::

    ros2 launch bifusion_ros realsense.launch.py checkpoint:=/path/model.pt device:=cuda half:=true \
        classes:="[chair, table, 'office chair']" rviz:=true
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from bifusion_ros.params import NODE_NAME, bifusion_overrides, defaults, parse_bool

PACKAGE = "bifusion_ros"

REALSENSE_PARAMETERS = {
    "camera_name": "camera",
    "enable_color": True,
    "enable_depth": True,
    "rgb_camera.color_profile": "640x480x30",
    "depth_module.depth_profile": "640x480x30",
    "align_depth.enable": True,
    "enable_sync": True,
    "pointcloud.enable": False,
    "publish_tf": True,
}
"""realsense2_camera (4.5x) parameters: the aligned depth topics exist only with align_depth.enable."""

ARGUMENTS = (
    ("checkpoint", "", "model checkpoint file (empty: params file value; there empty = shipped demo checkpoint)"),
    ("device", "", "inference device auto | cpu | cuda (empty: params file value)"),
    ("half", "", "half precision true | false (empty: params file value)"),
    ("classes", "", "class names / text prompts, '[chair, table]' or 'chair, table' (empty: params file value)"),
    ("world_frame", "", "frame of the outputs (empty: params file value, 'map')"),
    ("params_file", "", "parameter file of the bifusion node (empty: <share>/config/realsense.yaml)"),
    ("camera", "true", "start realsense2_camera_node"),
    ("publish_map_tf", "true", "publish an identity world_frame -> camera_link transform (no SLAM running)"),
    ("rviz", "false", "start RViz2 with config/bifusion.rviz"),
)


def _setup(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context).strip()

    share = get_package_share_directory(PACKAGE)
    params_file = arg("params_file") or os.path.join(share, "config", "realsense.yaml")
    overrides = bifusion_overrides(arg)
    world_frame = overrides.get("world_frame", defaults()["world_frame"])
    actions = []
    if parse_bool(arg("camera")):
        actions.append(Node(
            package="realsense2_camera", executable="realsense2_camera_node", namespace="camera", name="camera",
            parameters=[REALSENSE_PARAMETERS], output="screen", emulate_tty=True,
        ))
    if parse_bool(arg("publish_map_tf")):
        actions.append(Node(
            package="tf2_ros", executable="static_transform_publisher", name="world_to_camera_link",
            arguments=["--frame-id", world_frame, "--child-frame-id", "camera_link"], output="screen",
        ))
    actions.append(Node(
        package=PACKAGE, executable="bifusion_node", name=NODE_NAME,
        parameters=[params_file, overrides], output="screen", emulate_tty=True,
    ))
    if parse_bool(arg("rviz")):
        actions.append(Node(
            package="rviz2", executable="rviz2", name="rviz2",
            arguments=["-d", os.path.join(share, "config", "bifusion.rviz"), "-f", world_frame], output="screen",
        ))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text) for name, default, text in ARGUMENTS]
        + [OpaqueFunction(function=_setup)]
    )
