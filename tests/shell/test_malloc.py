"""ringmesh.ops.malloc: the daemon's glibc settings, and the operator's environment winning."""

import json
import os
import platform
import subprocess
import sys

import pytest

from ringmesh.ops import malloc

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")

PROBE = """
import json
from ringmesh.ops import malloc
print(json.dumps(malloc.tune()))
"""


def tune_in_child(env: dict[str, str]) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(out.stdout)


@glibc
def test_serve_settings_applied_on_glibc():
    assert tune_in_child({}) == {
        "MALLOC_MMAP_THRESHOLD_": malloc.MMAP_THRESHOLD,
        "MALLOC_TRIM_THRESHOLD_": malloc.TRIM_THRESHOLD,
        "MALLOC_ARENA_MAX": malloc.ARENA_MAX,
    }
    assert malloc.MMAP_THRESHOLD > 8 << 20, "a frame (gRPC messages up to 8 MiB) is not mmapped afresh"


@glibc
def test_the_environment_wins():
    assert tune_in_child({"MALLOC_ARENA_MAX": "4"}) == {
        "MALLOC_MMAP_THRESHOLD_": malloc.MMAP_THRESHOLD,
        "MALLOC_TRIM_THRESHOLD_": malloc.TRIM_THRESHOLD,
    }
    mine = {"MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "262144"}
    assert tune_in_child(mine) == {}
