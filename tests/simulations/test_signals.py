"""SIGTERM stops ``cipherfact simulate`` the way Ctrl-C does: exit 143, a
``summary.json`` saying so, and the metrics written so far kept (in memory and
for every protocol runner, since the signal reaches the runner as an exception)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

LONG = [
    "--set", "n_agents=4", "--set", "outer_iters=100000", "--set", "inner_iters=2",
    "--set", "data.rows=8", "--set", "data.cols=20", "--set", "crypto.scheme=none",
]  # fmt: skip


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    "sig, rc, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")]
)
def test_signal_ends_an_inmemory_run_with_a_summary(
    tmp_path: Path, sig: int, rc: int, word: str
) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cipherfact.cli", "simulate", "ppdnmf-synthetic", "--out", str(out),
         "--quiet", *LONG],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        # a shell's background job (`cmd &`) starts with SIGINT ignored, and so
        # would this child: Python then never raises KeyboardInterrupt
        preexec_fn=_default_sigint,
    )  # fmt: skip
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == rc, err
    assert word in err and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"].startswith("failed: ")
    done = summary["outer_iters_completed"]
    assert done >= 2 and len(metrics.read_text().splitlines()) == done
    assert (out / "factors.npz").exists()  # the last completed iteration's factors
