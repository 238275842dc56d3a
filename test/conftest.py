import os

import pytest

# Frame processors keep one thread count here: tests compare runs, and a count that followed the machine's load
# could change float rounding between them (the governor itself is tested in test_threads.py).
os.environ.setdefault("BIFUSION_ADAPTIVE_THREADS", "0")


@pytest.fixture(scope="session")
def ME():
    """MinkowskiEngine, or a skip where it is not installed. CI sets BIFUSION_REQUIRE_MINKOWSKI=1 (after
    `make minkowski`) so that a missing install fails instead of skipping there."""
    from bifusion_core.sparse.minkowski_backend import import_minkowski

    try:
        return import_minkowski()
    except ImportError as exc:
        if os.environ.get("BIFUSION_REQUIRE_MINKOWSKI") == "1":
            pytest.fail(f"MinkowskiEngine required but not importable: {exc}")
        pytest.skip("MinkowskiEngine not installed (run `make minkowski`)")
