"""Command line of ``bifusion_node`` (``ros2 run bifusion_ros bifusion_node [--ros-args ...]``).

``--help`` works without ROS 2 (it lists the node's parameters from :data:`bifusion_ros.params.PARAMS`);
everything from ``--ros-args`` on is rclpy's (``-p name:=value``, ``-r from:=to``, ``--params-file F``,
``--log-level``). Without a sourced ROS 2 the command says so in one line and exits with status 1.
"""
from __future__ import annotations

import argparse
import sys

from bifusion_ros.params import NODE_NAME, PARAMS

__all__ = ["build_parser", "main", "split_ros_args"]

_ROS_ARGS = "--ros-args"


def split_ros_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(own arguments, rclpy arguments)``: rclpy's start at ``--ros-args`` (up to a matching ``--``, after
    which arguments are ours again, as rclpy reads them)."""
    own, ros, inside = [], [], False
    for a in argv:
        if a == _ROS_ARGS:
            inside = True
            ros.append(a)
        elif inside and a == "--":
            inside = False
            ros.append(a)
        elif inside:
            ros.append(a)
        else:
            own.append(a)
    return own, ros


def _parameter_table() -> str:
    rows = []
    for p in PARAMS:
        default = "[]" if p.type is list and not p.default else repr(p.default)
        kind = "string[]" if p.type is list else p.type.__name__
        flags = f" [{p.constraints}]" if p.constraints else ""
        rows.append(f"  {p.name} ({kind}, default {default}){flags}\n      {p.description}")
    return "\n".join(rows)


def build_parser(prog: str = "bifusion_node") -> argparse.ArgumentParser:
    """The parser of the node's own (non-ROS) arguments."""
    return argparse.ArgumentParser(
        prog=prog,
        usage=f"{prog} [-h] [--ros-args -p NAME:=VALUE ... --params-file FILE ...]",
        description="BiFusion ROS 2 node: colour + aligned depth + camera info -> labelled PointCloud2, "
                    "MarkerArray, InstanceArray, alpha image and /diagnostics. Needs a sourced ROS 2 "
                    "(rclpy, message_filters, tf2_ros) and the built bifusion_ros package.",
        epilog=f"node name: {NODE_NAME}; parameters (set with --ros-args -p NAME:=VALUE):\n{_parameter_table()}\n\n"
               "examples:\n"
               f"  ros2 run bifusion_ros {prog} --ros-args -p device:=cuda -p \"classes:=[chair, table]\"\n"
               f"  ros2 run bifusion_ros {prog} --ros-args --params-file config/realsense.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: list[str] | None = None) -> int:
    """``bifusion_node`` entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    own, ros = split_ros_args(argv)
    build_parser().parse_args(own)  # --help exits 0 here; an unknown argument exits 2 with usage
    try:
        from bifusion_ros import node
    except ImportError as exc:
        print(f"bifusion_node: ROS 2 is not available ({exc}); source your ROS 2 setup "
              "(/opt/ros/<distro>/setup.bash) and this workspace's install/setup.bash", file=sys.stderr)
        return 1
    return node.main(["bifusion_node", *argv])


if __name__ == "__main__":
    sys.exit(main())
