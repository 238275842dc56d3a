"""Packaging: console scripts, the ROS package manifest, colcon's view of the package, the installed layout.

What needs ROS 2 itself (``colcon build`` with ament_cmake and rosidl, ``ros2 run``, ``ros2 launch``) is in
``test_real_ros.py``; here colcon (colcon-common-extensions, from PyPI) and catkin_pkg check what they can
without ROS: package discovery and type, the manifest's validity and dependencies, and the install layout
of the Python part.
"""
import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DIST = "bifusion"


def console_scripts() -> dict[str, str]:
    """``{name: "module:function"}`` of the installed distribution (what pip wrote into the venv)."""
    eps = importlib.metadata.distribution(DIST).entry_points
    return {ep.name: ep.value for ep in eps if ep.group == "console_scripts"}


def cmake_executables() -> dict[str, str]:
    """``{name: "module:function"}`` of ``BIFUSION_EXECUTABLES`` in CMakeLists.txt (lib/bifusion_ros)."""
    text = (ROOT / "CMakeLists.txt").read_text()
    block = re.search(r"set\(BIFUSION_EXECUTABLES(.*?)\)", text, re.S).group(1)
    return dict(item.split("=", 1) for item in re.findall(r'"([^"]+)"', block))


def test_installed_console_scripts_are_the_ones_setup_py_declares():
    tree = ast.parse((ROOT / "setup.py").read_text())
    declared = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(
                r"\w+ = [\w.]+:\w+", node.value):
            name, target = node.value.split(" = ")
            declared[name] = target
    assert declared == console_scripts()
    assert {"bifusion_node", "bifusion_replay", "bifusion_train"} <= set(declared)


def test_cmake_installs_the_ros_executables_with_the_console_scripts_targets():
    """``ros2 run bifusion_ros X`` runs lib/bifusion_ros/X, which CMakeLists.txt generates: the same targets
    as the pip console scripts, and every target exists."""
    cmake = cmake_executables()
    scripts = console_scripts()
    assert set(cmake) == {"bifusion_node", "bifusion_replay"}
    for name, target in cmake.items():
        assert scripts[name] == target
    for target in scripts.values():
        module, function = target.split(":")
        source = ROOT / (module.replace(".", "/") + ".py")
        tree = ast.parse(source.read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == function for n in tree.body), target


@pytest.mark.parametrize("name", sorted(console_scripts()))
def test_every_console_script_runs_help(name):
    script = BIN / name
    assert script.is_file(), f"{script} was not installed"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.lstrip().startswith("usage:") and name.split("_")[-1] in proc.stdout
    assert "Traceback" not in proc.stderr


def test_bifusion_node_help_lists_every_parameter_and_needs_no_ros():
    from bifusion_ros.params import PARAMS

    proc = subprocess.run([str(BIN / "bifusion_node"), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for p in PARAMS:
        assert f"  {p.name} (" in proc.stdout
    bad = subprocess.run([str(BIN / "bifusion_node"), "--no-such-option"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "unrecognized arguments" in bad.stderr


_WITHOUT_ROS = """
import sys
class NoRos:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("rclpy", "message_filters", "tf2_ros") or name == "bifusion_ros.msg":
            raise ImportError(f"No module named {name!r}")
sys.meta_path.insert(0, NoRos())
from bifusion_ros.node_cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_bifusion_node_without_ros_says_so_in_one_line():
    """bifusion_node's entry point in an interpreter where ROS 2 cannot be imported (refused by a meta-path
    finder, so this runs the same with or without a sourced ROS 2)."""
    proc = subprocess.run([sys.executable, "-c", _WITHOUT_ROS, "--ros-args", "-p", "device:=cpu"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "ROS 2 is not available" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_split_ros_args():
    from bifusion_ros.node_cli import split_ros_args

    assert split_ros_args(["-h"]) == (["-h"], [])
    assert split_ros_args(["--ros-args", "-p", "a:=1", "--", "-h"]) == (["-h"], ["--ros-args", "-p", "a:=1", "--"])
    assert split_ros_args(["x", "--ros-args", "-r", "a:=b"]) == (["x"], ["--ros-args", "-r", "a:=b"])


# ---------------------------------------------------------------------------------------------------------------
# the ROS package manifest, through catkin_pkg and colcon
# ---------------------------------------------------------------------------------------------------------------
def manifest():
    from catkin_pkg.package import parse_package

    pkg = parse_package(str(ROOT / "package.xml"))
    pkg.validate()  # format 3 rules: name, version, maintainers, licenses, build type
    return pkg


def test_package_xml_is_valid_and_builds_with_ament_cmake():
    pkg = manifest()
    assert pkg.name == "bifusion_ros" and pkg.package_format == 3
    assert pkg.get_build_type() == "ament_cmake"
    assert "rosidl_interface_packages" in [g.name for g in pkg.member_of_groups]
    setup = (ROOT / "setup.py").read_text()
    assert f'version="{pkg.version}"' in setup


# module a Python file imports -> the ROS package that provides it
_ROS_MODULES = {
    "rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces", "message_filters": "message_filters",
    "tf2_ros": "tf2_ros_py", "sensor_msgs": "sensor_msgs", "std_msgs": "std_msgs", "geometry_msgs": "geometry_msgs",
    "visualization_msgs": "visualization_msgs", "diagnostic_msgs": "diagnostic_msgs", "launch": "launch",
    "launch_ros": "launch_ros", "ament_index_python": "ament_index_python", "builtin_interfaces": "builtin_interfaces",
    "tf2_msgs": "tf2_msgs", "sensor_msgs_py": "sensor_msgs_py", "cv_bridge": "cv_bridge",
}


def _imported_ros_packages(paths) -> set[str]:
    found = set()
    for path in paths:
        for n in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(n, ast.Import):
                names = [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                names = [n.module]
            found |= {_ROS_MODULES[m.split(".")[0]] for m in names if m.split(".")[0] in _ROS_MODULES}
    return found


def test_every_ros_package_the_code_imports_is_declared_and_nothing_unused_is():
    pkg = manifest()
    run = {d.name for d in pkg.exec_depends}  # format 3: <depend> counts as build, build_export and exec
    test = {d.name for d in pkg.test_depends}
    shipped = list((ROOT / "bifusion_ros").rglob("*.py")) + list((ROOT / "launch").glob("*.py"))
    used = _imported_ros_packages(shipped)
    assert used - run == set(), "imported but not declared in package.xml"
    tests = _imported_ros_packages((ROOT / "test").glob("*.py"))
    assert tests - run - test == set(), "imported by tests but not declared"
    python_ros = {v for v in _ROS_MODULES.values()}
    # the interface packages msg/ builds on are used by the generated code
    interfaces = set(re.search(r"DEPENDENCIES ([\w ]+)", (ROOT / "CMakeLists.txt").read_text()).group(1).split())
    assert interfaces == {"std_msgs", "geometry_msgs"}
    unused = {d for d in run | test if d in python_ros} - used - tests - interfaces
    assert unused == set(), "declared but never imported"
    assert "tf2_ros_py" in run and "cv_bridge" not in run | test


def test_launch_files_only_start_declared_packages():
    pkg = manifest()
    run = {d.name for d in pkg.exec_depends}
    started = set()
    for path in (ROOT / "launch").glob("*.py"):
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Node":
                for kw in n.keywords:
                    if kw.arg == "package" and isinstance(kw.value, ast.Constant):
                        started.add(kw.value.value)
    started.discard("rviz2")  # optional (rviz:=true); a desktop install has it, a robot may not
    assert started - run - {pkg.name} == set()
    assert {"realsense2_camera", "tf2_ros"} <= run
    assert {"ros2bag", "rosbag2_storage_mcap"} <= run  # replay.launch.py runs `ros2 bag play`


def _colcon(*args, cwd) -> str:
    colcon = BIN / "colcon"
    assert colcon.is_file(), "colcon-common-extensions is a test requirement (requirements.txt)"
    proc = subprocess.run([str(colcon), *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**os.environ, "COLCON_HOME": str(cwd / ".colcon")})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_colcon_discovers_one_ament_cmake_package_in_a_workspace(tmp_path):
    """A workspace with this repository under src/ (as a user clones it): colcon finds exactly one package,
    bifusion_ros, of type ament_cmake, and reads its dependencies from package.xml."""
    src = tmp_path / "ws" / "src"
    src.mkdir(parents=True)
    (src / "bifusion").symlink_to(ROOT, target_is_directory=True)
    out = _colcon("list", "--base-paths", "src", cwd=tmp_path / "ws")
    rows = [line.split("\t") for line in out.strip().splitlines()]
    assert rows == [["bifusion_ros", "src/bifusion", "(ros.ament_cmake)"]]
    info = _colcon("info", "--base-paths", "src", "--packages-select", "bifusion_ros", cwd=tmp_path / "ws")
    build = re.search(r"build: (.*)", info).group(1).split()
    run = re.search(r"run: (.*)", info).group(1).split()
    assert {"ament_cmake", "ament_cmake_python", "rosidl_default_generators", "std_msgs"} <= set(build)
    assert {"rclpy", "tf2_ros_py", "message_filters", "rosidl_default_runtime"} <= set(run)
    # what colcon would build first: the interface dependencies before this package
    order = _colcon("list", "--base-paths", "src", "--topological-order", "--names-only", cwd=tmp_path / "ws")
    assert order.split() == ["bifusion_ros"]


# ---------------------------------------------------------------------------------------------------------------
# install layout of the Python part
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel pip builds from a copy of the source tree (a build writes build/ and *.egg-info beside setup.py;
    the copy keeps them out of the checkout)."""
    src = tmp_path_factory.mktemp("src") / "bifusion"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "install", "log", "*.egg-info", "__pycache__", "demo_out", "bench_results", "runs"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (whl,) = out.glob("bifusion-*.whl")
    return zipfile.ZipFile(whl)


def test_wheel_holds_every_module_and_the_shipped_assets(wheel):
    names = set(wheel.namelist())
    for base in ("bifusion_core", "bifusion_ros"):
        for path in (ROOT / base).rglob("*.py"):
            assert path.relative_to(ROOT).as_posix() in names
    assert "bifusion_core/assets/demo/synthetic_small.pt" in names
    clip_configs = {p.relative_to(ROOT).as_posix() for p in (ROOT / "bifusion_core/models/clip_configs").glob("*.json")}
    assert clip_configs and clip_configs <= names
    assert not any("__pycache__" in n or n.startswith("test/") for n in names)
    msgs = {n for n in names if n.endswith(".msg")}
    assert {Path(n).name for n in msgs} == {p.name for p in (ROOT / "msg").glob("*.msg")}


def test_cmake_installs_every_python_module_of_bifusion_ros():
    """CMakeLists.txt installs bifusion_ros' modules with install(DIRECTORY ... FILES_MATCHING PATTERN "*.py")
    (rosidl owns ament_python_install_package(bifusion_ros)) and bifusion_core with
    ament_python_install_package; no module of bifusion_ros may be anything but a .py file, and bifusion_ros
    may not have a msg/ subpackage of its own (the generated one goes there)."""
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert "ament_python_install_package(${PROJECT_NAME}" not in cmake  # rosidl_generator_py already calls it
    assert re.search(r'install\(DIRECTORY \$\{PROJECT_NAME\}/\s+DESTINATION "\$\{PYTHON_INSTALL_DIR\}/\$\{PROJECT_NAME\}"'
                     r'\s+FILES_MATCHING PATTERN "\*\.py"', cmake)
    assert "ament_python_install_package(bifusion_core)" in cmake
    files = [p for p in (ROOT / "bifusion_ros").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert files and all(p.suffix == ".py" for p in files)
    assert not (ROOT / "bifusion_ros" / "msg").exists()
    assert (ROOT / "bifusion_ros" / "__init__.py").read_text().strip() == ""  # the generated one is empty too
