"""`python -m sim` as a user runs it: a separate process, exit status, JSON on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ARGS = [sys.executable, "-m", "sim", "gossip", "--nodes", "20", "--seed", "3", "--json"]


def _run(args: list[str], hash_seed: str = "0") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)


def test_cli_gossip_json_converges_and_is_byte_identical_across_processes():
    # Different string-hash seeds: no result may depend on the iteration order of a set.
    first, second = _run(ARGS, hash_seed="1"), _run(ARGS, hash_seed="2")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["converged"] is True
    assert report["params"]["nodes"] == 20 and report["params"]["seed"] == 3
    assert first.stdout == second.stdout
    assert "wall" not in first.stdout


def test_cli_reports_non_convergence_with_exit_status_1():
    r = _run([*ARGS, "--loss", "1", "--max-rounds", "3"])
    assert r.returncode == 1
    assert json.loads(r.stdout)["converged"] is False


def test_cli_human_output_and_bad_arguments():
    r = _run([sys.executable, "-m", "sim", "gossip", "--nodes", "10", "--seed", "1"])
    assert r.returncode == 0 and "CONVERGED" in r.stdout and "wall time" in r.stdout
    bad = _run([sys.executable, "-m", "sim", "gossip", "--nodes", "10", "--seed", "1", "--loss", "2"])
    assert bad.returncode == 2
