"""bifusion_core sets libgomp's spin count before torch loads it, and only then; a user's value is kept."""
import os
import subprocess
import sys

from bifusion_core import openmp


def _env_after(code: str, **env) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                         check=True, timeout=120)
    return out.stdout.strip()


def test_configure_sets_the_spin_count_only_before_torch_and_when_unset():
    env = {}
    assert openmp.configure(env, modules={}) and env == {"GOMP_SPINCOUNT": openmp.SPINCOUNT}
    env = {}
    assert not openmp.configure(env, modules={"torch": object()}) and env == {}  # too late: libgomp is loaded
    env = {"GOMP_SPINCOUNT": "300000"}
    assert not openmp.configure(env, modules={}) and env == {"GOMP_SPINCOUNT": "300000"}
    env = {"OMP_WAIT_POLICY": "active"}
    assert not openmp.configure(env, modules={}) and "GOMP_SPINCOUNT" not in env


def test_importing_the_packages_first_sets_it_for_the_torch_that_follows():
    code = "import {pkg}, os, torch; print(os.environ.get('GOMP_SPINCOUNT'))"
    assert _env_after(code.format(pkg="bifusion_core")) == openmp.SPINCOUNT
    assert _env_after(code.format(pkg="bifusion_ros.replay")) == openmp.SPINCOUNT  # ROS entry points import bifusion_core before torch
    assert _env_after(code.format(pkg="bifusion_core"), GOMP_SPINCOUNT="1000") == "1000"
    assert _env_after("import torch, bifusion_core, os; print(os.environ.get('GOMP_SPINCOUNT'))") == "None"
