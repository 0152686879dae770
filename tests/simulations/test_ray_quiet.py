"""A local Ray started for one run says nothing about itself: no token-authentication
WARNING, no "Started a local Ray instance" line (issue 15), only the run's output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.ray


def test_local_ray_run_prints_no_ray_notices(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "cipherfact.cli", "simulate", "ppdnmf-quickstart", "--backend",
           "ray", "--quiet", "--out", str(tmp_path), "--set", "crypto.scheme=none",
           "--set", "outer_iters=1"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr and "Started a local Ray" not in proc.stderr, proc.stderr
    assert (tmp_path / "summary.json").exists()
