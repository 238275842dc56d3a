"""Launch files, config/realsense.yaml, config/bifusion.rviz and the parameter table (bifusion_ros.params).

``launch`` / ``launch_ros`` cannot run here, so the launch files are compiled and then executed against a
small stand-in of the launch API (constructors with the real keyword names, unknown keywords rejected) that
records the actions; their ``OpaqueFunction`` is evaluated with given launch arguments.
"""
import ast
import importlib.util
import py_compile
import re
import sys
import types
from pathlib import Path

import pytest
import yaml

from bifusion_ros import params as P

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
CONFIG = ROOT / "config"


# ---------------------------------------------------------------------------------------------------------------
# a recording stand-in of launch / launch_ros / ament_index_python
# ---------------------------------------------------------------------------------------------------------------
class _Action:
    _allowed: tuple = ()

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(self._allowed)
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword arguments {sorted(unknown)}")
        self.kwargs = kwargs

    def __getattr__(self, name):
        try:
            return self.__dict__["kwargs"][name]
        except KeyError:
            raise AttributeError(name) from None


_PROCESS_KWARGS = ("name", "cwd", "env", "additional_env", "shell", "sigterm_timeout", "sigkill_timeout",
                   "emulate_tty", "prefix", "output", "output_format", "log_cmd", "on_exit", "respawn",
                   "respawn_delay", "cached_output")


class LaunchDescription:
    def __init__(self, initial_entities=None):
        self.entities = list(initial_entities or [])


class DeclareLaunchArgument(_Action):
    _allowed = ("name", "default_value", "description", "choices")

    def __init__(self, name, **kwargs):
        super().__init__(name=name, **kwargs)


class OpaqueFunction(_Action):
    _allowed = ("function", "args", "kwargs")


class LogInfo(_Action):
    _allowed = ("msg",)


class ExecuteProcess(_Action):
    _allowed = ("cmd",) + _PROCESS_KWARGS


class Node(_Action):
    _allowed = ("executable", "package", "name", "namespace", "exec_name", "parameters", "remappings",
                "ros_arguments", "arguments") + _PROCESS_KWARGS


class LaunchConfiguration:
    def __init__(self, variable_name, *, default=None):
        self.variable_name, self.default = variable_name, default

    def perform(self, context):
        if self.variable_name in context.launch_configurations:
            return context.launch_configurations[self.variable_name]
        if self.default is None:
            raise KeyError(f"launch configuration {self.variable_name!r} not set")
        return self.default


@pytest.fixture
def launch_api(monkeypatch):
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, m)
        return m

    module("launch", LaunchDescription=LaunchDescription)
    module("launch.actions", DeclareLaunchArgument=DeclareLaunchArgument, OpaqueFunction=OpaqueFunction,
           ExecuteProcess=ExecuteProcess, LogInfo=LogInfo)
    module("launch.substitutions", LaunchConfiguration=LaunchConfiguration)
    module("launch_ros")
    module("launch_ros.actions", Node=Node)
    module("ament_index_python")
    api = types.SimpleNamespace(shares=[], installed={"bifusion_ros": str(ROOT)})

    class PackageNotFoundError(KeyError):
        pass

    def get_package_share_directory(package_name):
        api.shares.append(package_name)
        if package_name not in api.installed:
            raise PackageNotFoundError(f"package '{package_name}' not found")
        return api.installed[package_name]  # the source tree has the installed share/ layout (launch/, config/)

    module("ament_index_python.packages", get_package_share_directory=get_package_share_directory,
           PackageNotFoundError=PackageNotFoundError)
    return api


def fake_realsense(api, tmp_path, version):
    """An installed realsense2_camera share directory whose package.xml says ``version``."""
    share = tmp_path / "realsense2_camera"
    share.mkdir()
    (share / "package.xml").write_text(f'<?xml version="1.0"?>\n<package format="3"><name>realsense2_camera</name>'
                                       f'<version>{version}</version></package>\n')
    api.installed["realsense2_camera"] = str(share)


def load_launch(name):
    path = LAUNCH / name
    spec = importlib.util.spec_from_file_location(f"_launch_{path.stem.replace('.', '_')}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_launch(mod, **args):
    """generate_launch_description() with ``args`` over the declared defaults -> (declared, actions)."""
    ld = mod.generate_launch_description()
    declared = {e.name: e for e in ld.entities if isinstance(e, DeclareLaunchArgument)}
    for key in args:
        assert key in declared, f"{key} is not a declared launch argument"
    context = types.SimpleNamespace(launch_configurations={
        name: e.kwargs["default_value"] for name, e in declared.items() if "default_value" in e.kwargs})
    context.launch_configurations.update(args)
    actions = []
    for e in ld.entities:
        if isinstance(e, OpaqueFunction):
            actions += list(e.function(context, *e.kwargs.get("args", []) or [], **(e.kwargs.get("kwargs") or {})))
    return declared, actions


def nodes(actions, package):
    return [a for a in actions if isinstance(a, Node) and a.package == package]


# ---------------------------------------------------------------------------------------------------------------
# launch files
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["realsense.launch.py", "replay.launch.py"])
def test_launch_files_compile_and_define_generate_launch_description(name, tmp_path):
    path = LAUNCH / name
    py_compile.compile(str(path), cfile=str(tmp_path / "x.pyc"), doraise=True)
    tree = ast.parse(path.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)


def test_console_script_and_install_rules():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"install\(DIRECTORY launch config DESTINATION share/\$\{PROJECT_NAME\}\)", cmake)
    assert not (LAUNCH / ".gitkeep").exists() and not (CONFIG / ".gitkeep").exists()


def test_realsense_launch_defaults(launch_api):
    declared, actions = run_launch(load_launch("realsense.launch.py"))
    assert {"checkpoint", "device", "classes", "half", "params_file", "rviz"} <= set(declared)
    assert all(e.kwargs.get("description") for e in declared.values())
    assert launch_api.shares == ["bifusion_ros", "realsense2_camera"]  # realsense2_camera is not installed here

    (cam,) = nodes(actions, "realsense2_camera")
    assert (cam.executable, cam.namespace, cam.name) == ("realsense2_camera_node", "camera", "camera")
    (cam_params,) = cam.parameters
    assert cam_params["align_depth.enable"] is True and cam_params["enable_sync"] is True
    assert cam_params["rgb_camera.color_profile"] == "640x480x30"
    assert cam_params["depth_module.depth_profile"] == "640x480x30"
    assert cam_params["pointcloud.enable"] is False

    (node,) = nodes(actions, "bifusion_ros")
    assert (node.executable, node.name) == ("bifusion_node", P.NODE_NAME)
    params_file, overrides = node.parameters
    assert Path(params_file) == CONFIG / "realsense.yaml" and Path(params_file).is_file()
    assert overrides == {}

    (tf,) = nodes(actions, "tf2_ros")
    assert tf.executable == "static_transform_publisher"
    args = tf.arguments
    assert args[args.index("--frame-id") + 1] == "map" and args[args.index("--child-frame-id") + 1] == "camera_link"
    assert nodes(actions, "rviz2") == []


@pytest.mark.parametrize("installed", ["4.51.1", "4.54.1"])
def test_realsense_launch_uses_the_names_of_older_drivers(launch_api, tmp_path, installed):
    """realsense-ros before 4.55: rgb_camera.profile / depth_module.profile and topics relative to the
    namespace (/camera/color/...); read from the installed driver's package.xml."""
    fake_realsense(launch_api, tmp_path, installed)
    _, actions = run_launch(load_launch("realsense.launch.py"))
    (cam,) = nodes(actions, "realsense2_camera")
    (cam_params,) = cam.parameters
    assert cam_params["rgb_camera.profile"] == cam_params["depth_module.profile"] == "640x480x30"
    assert "rgb_camera.color_profile" not in cam_params and "depth_module.depth_profile" not in cam_params
    (node,) = nodes(actions, "bifusion_ros")
    assert node.parameters[1] == {"color_topic": "/camera/color/image_raw",
                                  "depth_topic": "/camera/aligned_depth_to_color/image_raw",
                                  "camera_info_topic": "/camera/aligned_depth_to_color/camera_info"}
    (log,) = [a for a in actions if isinstance(a, LogInfo)]
    assert installed in log.msg and "/camera/color/image_raw" in log.msg


def test_realsense_version_argument_overrides_detection(launch_api, tmp_path):
    fake_realsense(launch_api, tmp_path, "4.54.1")
    mod = load_launch("realsense.launch.py")
    _, actions = run_launch(mod, realsense_version="4.56.1")
    (cam,) = nodes(actions, "realsense2_camera")
    assert cam.parameters[0]["rgb_camera.color_profile"] == "640x480x30"
    assert nodes(actions, "bifusion_ros")[0].parameters[1] == {}  # the node's default topics
    # a user's parameter file keeps its own topics; the camera still gets the old names
    _, actions = run_launch(mod, params_file="/tmp/mine.yaml")
    assert nodes(actions, "realsense2_camera")[0].parameters[0]["rgb_camera.profile"] == "640x480x30"
    assert nodes(actions, "bifusion_ros")[0].parameters == ["/tmp/mine.yaml", {}]
    with pytest.raises(ValueError, match="realsense-ros version"):
        run_launch(mod, realsense_version="latest")


def test_realsense_launch_arguments_override_parameters(launch_api):
    _, actions = run_launch(load_launch("realsense.launch.py"), checkpoint="/models/b.pt", device="cuda",
                            half="true", classes="[chair, 'coffee table']", camera="false",
                            publish_map_tf="false", rviz="true", params_file="/tmp/my.yaml", map="off")
    assert nodes(actions, "realsense2_camera") == [] and nodes(actions, "tf2_ros") == []
    (node,) = nodes(actions, "bifusion_ros")
    assert node.parameters == ["/tmp/my.yaml", {"checkpoint": "/models/b.pt", "device": "cuda", "half": True,
                                                "map": False, "classes": ["chair", "coffee table"]}]
    (rviz,) = nodes(actions, "rviz2")
    cfg = Path(rviz.arguments[rviz.arguments.index("-d") + 1])
    assert cfg == CONFIG / "bifusion.rviz" and cfg.is_file()


def test_realsense_launch_rejects_bad_arguments(launch_api):
    mod = load_launch("realsense.launch.py")
    with pytest.raises(ValueError, match="device"):
        run_launch(mod, device="tpu")
    with pytest.raises(ValueError):
        run_launch(mod, half="maybe")
    with pytest.raises(ValueError):
        run_launch(mod, map="sometimes")


def test_replay_launch(launch_api):
    mod = load_launch("replay.launch.py")
    declared, _ = run_launch(mod, bag="/data/room.mcap")
    assert "default_value" not in declared["bag"].kwargs  # required
    with pytest.raises(KeyError):
        run_launch(mod)  # no bag given
    _, actions = run_launch(mod, bag="/data/room.mcap", rate="0.5", classes="chair, table")
    (play,) = [a for a in actions if isinstance(a, ExecuteProcess)]
    assert play.cmd[:4] == ["ros2", "bag", "play", "/data/room.mcap"]
    assert "--clock" in play.cmd and play.cmd[play.cmd.index("--rate") + 1] == "0.5"
    (node,) = nodes(actions, "bifusion_ros")
    assert node.executable == "bifusion_node"
    params_file, overrides = node.parameters
    assert Path(params_file) == CONFIG / "realsense.yaml"
    assert overrides == {"use_sim_time": True, "classes": ["chair", "table"]}
    with pytest.raises(ValueError):
        run_launch(mod, bag="x", rate="0")


# ---------------------------------------------------------------------------------------------------------------
# config files
# ---------------------------------------------------------------------------------------------------------------
def test_realsense_yaml_matches_the_parameter_table():
    text = (CONFIG / "realsense.yaml").read_text()
    data = yaml.safe_load(text)
    assert list(data) == [P.NODE_NAME] and list(data[P.NODE_NAME]) == ["ros__parameters"]
    values = data[P.NODE_NAME]["ros__parameters"]
    assert values == P.yaml_parameters()[P.NODE_NAME]["ros__parameters"]
    for p in P.PARAMS:
        if p.type is list and not p.default:
            assert p.name not in values and f"# {p.name}:" in text  # ROS 2 YAML cannot hold []
            continue
        assert type(values[p.name]) is type(p.default), p.name  # 1.0 stays a double, 10 an integer
        assert P.validate(p.name, values[p.name]) is None
    assert text == P.render_yaml(), "config/realsense.yaml is stale: python -m bifusion_ros.params > config/realsense.yaml"


def test_rviz_config_shows_the_outputs():
    cfg = yaml.safe_load((CONFIG / "bifusion.rviz").read_text())
    vm = cfg["Visualization Manager"]
    assert vm["Global Options"]["Fixed Frame"] == "map" == P.defaults()["world_frame"]
    displays = vm["Displays"]
    by_class = {}
    for d in displays:
        by_class.setdefault(d["Class"], []).append(d)
    cloud_topic = P.resolve_topic(P.defaults()["cloud_topic"])
    map_topic = P.resolve_topic(P.defaults()["map_cloud_topic"])
    clouds = by_class["rviz_default_plugins/PointCloud2"]
    assert {d["Topic"]["Value"] for d in clouds} == {cloud_topic, map_topic}
    frame_clouds = [d for d in clouds if d["Topic"]["Value"] == cloud_topic]
    assert any(d["Color Transformer"] == "RGB8" and d["Enabled"] for d in frame_clouds)
    assert any(d["Color Transformer"] == "Intensity" and d["Channel Name"] == "label" for d in frame_clouds)
    # the map topics are transient local: RViz must ask for that durability to get the latest map at once
    (map_cloud,) = [d for d in clouds if d["Topic"]["Value"] == map_topic]
    assert map_cloud["Topic"]["Durability Policy"] == "Transient Local"
    markers = {d["Topic"]["Value"]: d for d in by_class["rviz_default_plugins/MarkerArray"]}
    assert set(markers) == {P.resolve_topic(P.defaults()["markers_topic"]),
                            P.resolve_topic(P.defaults()["map_markers_topic"])}
    assert markers[P.resolve_topic(P.defaults()["map_markers_topic"])]["Topic"]["Durability Policy"] == \
        "Transient Local"
    assert "rviz_default_plugins/TF" in by_class
    (alpha,) = by_class["rviz_default_plugins/Image"]
    assert alpha["Topic"]["Value"] == P.resolve_topic(P.defaults()["alpha_topic"])


# ---------------------------------------------------------------------------------------------------------------
# the parameter table
# ---------------------------------------------------------------------------------------------------------------
def test_parameter_table_is_consistent():
    names = [p.name for p in P.PARAMS]
    assert len(names) == len(set(names))
    for p in P.PARAMS:
        assert p.description.strip(), p.name
        assert P.validate(p.name, p.default) is None, p.name
        if p.type in (int, float):
            assert p.range is not None and p.range[0] <= p.default <= p.range[1], p.name
            assert p.choices is None
        else:
            assert p.range is None
        if p.choices:
            assert p.default in p.choices and p.type is str
    assert P.spec("device").choices == ("auto", "cpu", "cuda")
    assert P.spec("on_missing_tf").choices == ("skip", "identity")
    d = P.defaults()
    assert d["sync_slop"] == 0.05 and d["sync_queue_size"] == 10 and d["tf_timeout"] == 0.1
    assert d["depth_scale"] == 0.001 and d["world_frame"] == "map" and d["classes"] == []
    assert d["color_topic"] == "/camera/camera/color/image_raw"
    assert d["depth_topic"] == "/camera/camera/aligned_depth_to_color/image_raw"
    assert d["camera_info_topic"] == "/camera/camera/aligned_depth_to_color/camera_info"
    d["classes"].append("x")
    assert P.defaults()["classes"] == []


def test_validate():
    assert P.validate("tf_timeout", 1) is None  # an int is a fine double
    assert "[0.0, 5.0]" in P.validate("tf_timeout", 9.0)
    assert P.validate("tf_timeout", float("nan"))
    assert P.validate("tf_timeout", True)
    assert P.validate("sync_queue_size", 2.0)
    assert P.validate("half", 1)
    assert P.validate("device", "tpu")
    assert P.validate("classes", ["a", 3])
    assert P.validate("classes", [""])
    assert P.validate("classes", ("a", "b")) is None
    assert P.validate("nope", 1) == "unknown parameter 'nope'"


def test_launch_argument_parsers_and_topic_resolution():
    assert P.parse_string_list("") == []
    assert P.parse_string_list("[chair, 'coffee table']") == ["chair", "coffee table"]
    assert P.parse_string_list(" chair ,table") == ["chair", "table"]
    for bad in ("[1, 2]", "chair,,table", "[chair, '']"):
        with pytest.raises(ValueError):
            P.parse_string_list(bad)
    assert P.parse_bool("True") is True and P.parse_bool("off") is False
    with pytest.raises(ValueError):
        P.parse_bool("maybe")
    assert P.resolve_topic("~/cloud") == "/bifusion/cloud"
    assert P.resolve_topic("~/cloud", "b", "/robot") == "/robot/b/cloud"
    assert P.resolve_topic("cloud", "b", "robot") == "/robot/cloud"
    assert P.resolve_topic("/abs") == "/abs"


def test_launch_argument_overrides_are_parsed_and_validated():
    import pytest

    from bifusion_ros.params import bifusion_overrides

    given = {"device": "cpu", "half": "true", "classes": "[chair, table]"}
    out = bifusion_overrides(lambda name: given.get(name, ""))
    assert out == {"device": "cpu", "half": True, "classes": ["chair", "table"]}
    with pytest.raises(ValueError, match="launch argument device"):
        bifusion_overrides(lambda name: {"device": "tpu"}.get(name, ""))


def test_classes_parameter_follows_the_one_class_list_rule_set():
    """The node's ``classes`` parameter is checked by the same rules as --classes and set_classes: empty,
    repeated and over-long names are refused with the reason; [] (the checkpoint's classes) is accepted."""
    from bifusion_ros.params import validate

    assert validate("classes", []) is None and validate("classes", ["chair", "table"]) is None
    assert "given twice" in validate("classes", ["chair", "chair"])
    assert "empty" in validate("classes", ["chair", " "])
    assert "characters" in validate("classes", ["x" * 500])
