"""Benchmarks: ``python -m bifusion_core.bench STAGE [--json FILE]`` (see ``--help``)."""
