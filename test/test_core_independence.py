"""Dependencies point one way: bifusion_core imports nothing from bifusion_ros, rosbags or rclpy.

Every module under bifusion_core is imported in a fresh interpreter whose import system refuses those packages
(a ``sys.meta_path`` finder raising ImportError), and no source file of bifusion_core names them in an import
statement, not even a lazy one inside a function.
"""
import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("bifusion_ros", "rosbags", "rclpy")

# Modules of bifusion_core that genuinely need an optional heavy dependency at import time, with the reason.
# Empty: every module imports with the runtime requirements alone (MinkowskiEngine, the one optional backend,
# is imported lazily by bifusion_core.sparse.minkowski_backend).
NEEDS_OPTIONAL: dict[str, str] = {}

_PROBE = r"""
import importlib, json, pkgutil, sys

FORBIDDEN = %r
SKIP = %r


class RefuseRos:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in FORBIDDEN:
            raise ImportError(f"{name} is not installed (refused by the test)")
        return None


sys.meta_path.insert(0, RefuseRos())
refused = []
for name in FORBIDDEN:
    try:
        importlib.import_module(name)
    except ImportError:
        refused.append(name)

import bifusion_core

errors, names = {}, ["bifusion_core"]


def onerror(name):
    errors[name] = repr(sys.exc_info()[1])


for info in pkgutil.walk_packages(bifusion_core.__path__, "bifusion_core.", onerror=onerror):
    names.append(info.name)
imported = []
for name in names:
    if name in SKIP:
        continue
    try:
        importlib.import_module(name)
        imported.append(name)
    except BaseException as exc:
        errors[name] = f"{type(exc).__name__}: {exc}"
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in FORBIDDEN)
print(json.dumps({"refused": refused, "names": names, "imported": imported, "errors": errors, "loaded": loaded}))
"""


def test_every_bifusion_core_module_imports_without_ros_and_rosbags():
    code = _PROBE % (FORBIDDEN, tuple(NEEDS_OPTIONAL))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["refused"] == list(FORBIDDEN)  # the finder really hides them (rosbags is installed here)
    assert out["errors"] == {}
    assert out["loaded"] == []
    names = set(out["names"])
    # the walk reached the whole package, sub-packages and __main__ modules included
    for name in ("bifusion_core.data.synthetic.__main__", "bifusion_core.data.synthetic.export",
                 "bifusion_core.data.frame", "bifusion_core.geometry", "bifusion_core.pipeline.processor",
                 "bifusion_core.train", "bifusion_core.eval", "bifusion_core.sparse.minkowski_backend"):
        assert name in names, name
    assert set(NEEDS_OPTIONAL) <= names  # every listed exception is a real module
    assert sorted(out["imported"]) == sorted(names - set(NEEDS_OPTIONAL))
    assert len(names) >= 50


def _imported_roots(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            yield node.lineno, node.args[0].value


def test_no_bifusion_core_source_imports_ros_packages():
    files = sorted((ROOT / "bifusion_core").rglob("*.py"))
    assert len(files) >= 50
    bad = [f"{f.relative_to(ROOT)}:{line} imports {name}"
           for f in files for line, name in _imported_roots(ast.parse(f.read_text(), str(f)))
           if name.partition(".")[0] in FORBIDDEN]
    assert bad == []
