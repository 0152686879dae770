"""Start a local Ray for one run, surviving Ray's fixed start-up wait.

``ray.init()`` gives its raylet a fixed 30 s to register with the GCS and then
raises "The current node timed out during startup", leaving the half-started
daemons running; a GCS that is slow to write its port file gives "Timed out
waiting for file .../gcs_server_port_...". On a loaded small machine (a
2-core CI box right after another Ray stopped) the first start can miss such a
window while a second one does not.
So a start that times out is cleaned up (the daemons it spawned are this
process's new descendants; Linux only, elsewhere they are left to Ray's reaper)
and tried again, a bounded number of times. Any other ``ray.init`` error is
raised at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from typing import Any

log = logging.getLogger(__name__)

START_ATTEMPTS = 3
#: what ``ray.init`` says when a daemon missed one of its fixed start-up waits
_STARTUP_TIMEOUTS = ("timed out during startup", "Timed out waiting for file")


def start_local_ray(attempts: int = START_ATTEMPTS, **init_kwargs: Any) -> None:
    """``ray.init(**init_kwargs)`` for a new local instance, retried after a start-up
    timeout (at most ``attempts`` starts)."""
    import ray

    for attempt in range(1, attempts + 1):
        before = _descendants(os.getpid())
        try:
            ray.init(**init_kwargs)
            return
        except Exception as exc:
            if not any(t in str(exc) for t in _STARTUP_TIMEOUTS) or attempt == attempts:
                raise
            log.warning(
                "Ray did not start in time (attempt %d of %d); trying again", attempt, attempts
            )
            with contextlib.suppress(Exception):
                ray.shutdown()
            _kill(_descendants(os.getpid()) - before)


def _descendants(root: int) -> set[int]:
    """Every live process below ``root`` (read from /proc; empty where there is none)."""
    if not sys.platform.startswith("linux"):
        return set()
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                # "pid (comm) state ppid ...": comm may hold spaces, so split after ")"
                ppid = int(stat.read().rsplit(b")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _kill(pids: set[int]) -> None:
    """SIGKILL ``pids`` and wait (briefly) until they are gone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                reaped, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not our child: gone when /proc says so
                if not os.path.exists(f"/proc/{pid}"):
                    break
            else:
                if reaped:
                    break
            time.sleep(0.05)
