"""Live BiFusion on a RealSense camera: ``ros2 launch bifusion_ros realsense.launch.py``.

Starts

- ``realsense2_camera_node`` as ``/camera/camera`` (namespace ``camera``, name ``camera``): colour and depth
  640x480 at 30 Hz, depth aligned to colour (``align_depth.enable``), synchronised frames, no point cloud.
  Its parameter and topic names depend on its release (:mod:`bifusion_ros.realsense`): 4.55 and newer
  publish ``/camera/camera/color/image_raw`` and ``/camera/camera/aligned_depth_to_color/...`` (the node's
  defaults), 4.51 and 4.54 ``/camera/color/image_raw`` and ``/camera/aligned_depth_to_color/...``.
  ``realsense_version:=auto`` (the default) reads the installed driver's version; give it (e.g.
  ``realsense_version:=4.54``) to override. Without ``params_file`` the node's input topics follow it;
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

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from bifusion_ros import realsense
from bifusion_ros.params import NODE_NAME, bifusion_overrides, defaults, parse_bool

PACKAGE = "bifusion_ros"

ARGUMENTS = (
    ("checkpoint", "", "model checkpoint file (empty: params file value; there empty = shipped demo checkpoint)"),
    ("device", "", "inference device auto | cpu | cuda (empty: params file value)"),
    ("half", "", "half precision true | false (empty: params file value)"),
    ("classes", "", "class names / text prompts, '[chair, table]' or 'chair, table' (empty: params file value)"),
    ("world_frame", "", "frame of the outputs (empty: params file value, 'map')"),
    ("map", "", "build the online instance map true | false (empty: params file value, true)"),
    ("params_file", "", "parameter file of the bifusion node (empty: <share>/config/realsense.yaml)"),
    ("camera", "true", "start realsense2_camera_node"),
    ("realsense_version", "auto", "realsense-ros release whose parameter and topic names to use: auto (read the "
                                  "installed realsense2_camera's package.xml) or e.g. 4.54 / 4.55"),
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
    version, how = _realsense_version(arg("realsense_version"))
    topics = realsense.camera_topics(version)
    if not arg("params_file"):  # a parameter file of the user's names its own topics
        overrides.update({k: v for k, v in topics.items() if v != defaults()[k]})
    actions = [LogInfo(msg=f"bifusion: realsense2_camera {version} ({how}): colour {topics['color_topic']}, "
                           f"depth {topics['depth_topic']}")]
    if parse_bool(arg("camera")):
        actions.append(Node(
            package="realsense2_camera", executable="realsense2_camera_node", namespace="camera", name="camera",
            parameters=[realsense.camera_parameters(version)], output="screen", emulate_tty=True,
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


def _realsense_version(value: str) -> tuple[str, str]:
    """``(version, how it was found)`` for the ``realsense_version`` argument (``ValueError`` for junk)."""
    if value and value != "auto":
        realsense.parse_version(value)
        return value, "realsense_version argument"
    try:
        xml = os.path.join(get_package_share_directory("realsense2_camera"), "package.xml")
    except PackageNotFoundError:
        xml = None
    found = realsense.detect_version(xml)
    if found:
        return found, "installed"
    return realsense.DEFAULT_VERSION, "realsense2_camera not found; assumed"


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text) for name, default, text in ARGUMENTS]
        + [OpaqueFunction(function=_setup)]
    )
