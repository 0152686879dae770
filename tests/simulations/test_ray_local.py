"""A local Ray start that misses Ray's fixed start-up window is cleaned up and retried."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from cipherfact.simulations import ray_local  # noqa: E402

TIMEOUT = Exception(
    "The current node timed out during startup. This could happen because some of "
    "the raylet failed to startup or the GCS has become overloaded."
)


def test_a_start_up_timeout_is_retried_and_its_daemons_killed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, Any]] = []
    left_behind: list[subprocess.Popen[bytes]] = []

    def fake_init(**kwargs: Any) -> None:
        calls.append(kwargs)
        if len(calls) == 1:  # a half-started "daemon" stays behind, like Ray's
            left_behind.append(
                subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            )
            raise TIMEOUT

    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    ray_local.start_local_ray(num_cpus=2)
    assert calls == [{"num_cpus": 2}, {"num_cpus": 2}]
    if sys.platform.startswith("linux"):
        assert left_behind[0].poll() is not None  # killed before the second start
    else:  # pragma: no cover
        left_behind[0].kill()


def test_other_errors_and_the_last_timeout_are_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0

    def always(**kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        raise TIMEOUT

    monkeypatch.setattr(ray, "init", always)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    with pytest.raises(Exception, match="timed out during startup"):
        ray_local.start_local_ray(attempts=2)
    assert calls == 2

    def refused(**kwargs: Any) -> None:
        raise ValueError("num_cpus must be positive")

    monkeypatch.setattr(ray, "init", refused)
    with pytest.raises(ValueError, match="positive"):
        ray_local.start_local_ray()


def test_a_slow_gcs_port_file_is_retried_too(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0

    def slow_gcs(**kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("Timed out waiting for file /tmp/ray/session_x/gcs_server_port_ab")

    monkeypatch.setattr(ray, "init", slow_gcs)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    ray_local.start_local_ray()
    assert calls == 2
