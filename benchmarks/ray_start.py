"""What a local Ray costs a run before and after its work: ``ray.init`` as
``ray_session`` calls it, making one 2-CPU actor, the daemons' CPU while that
actor exists, and ``ray.shutdown``.

Options try what Ray itself offers to start faster or idle cheaper (none is
used by ``cipherfact``: see BENCHMARKS.md, issue 13, fifth part). Usage::

    python benchmarks/ray_start.py
    python benchmarks/ray_start.py --object-store-mb 128
    python benchmarks/ray_start.py --system-config '{"enable_worker_prestart": false}'
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from typing import Any


def _ray_ticks(exclude: int) -> dict[int, int]:
    """CPU ticks (user + system) of every Ray process on this machine, this one included."""
    ticks = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == exclude:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"ray" in cmd or b"gcs" in cmd or int(entry) == os.getpid():
            ticks[int(entry)] = int(fields[11]) + int(fields[12])
    return ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--object-store-mb", type=int, default=None)
    parser.add_argument("--system-config", type=json.loads, default=None)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args()
    import ray

    shown = json.dumps({k: v for k, v in vars(args).items() if k != "idle_seconds"})
    extra: dict[str, Any] = {}
    if args.object_store_mb:
        extra["object_store_memory"] = args.object_store_mb * 2**20
    if args.system_config:
        extra["_system_config"] = dict(args.system_config)  # ray.init adds to it
    t0 = time.perf_counter()
    ray.init(
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        **extra,
    )
    t1 = time.perf_counter()

    @ray.remote(num_cpus=2)
    class Actor:
        def pid(self) -> int:
            return os.getpid()

    actor = Actor.remote()  # type: ignore[attr-defined]
    actor_pid = ray.get(actor.pid.remote())
    t2 = time.perf_counter()
    time.sleep(3)  # the start's own work settles
    before = _ray_ticks(actor_pid)
    time.sleep(args.idle_seconds)
    after = _ray_ticks(actor_pid)
    ticks = sum(t - before.get(pid, 0) for pid, t in after.items())
    t3 = time.perf_counter()
    ray.shutdown()
    t4 = time.perf_counter()
    print(
        f"options {shown}: "
        f"init {t1 - t0:.2f} s, actor {t2 - t1:.2f} s, shutdown {t4 - t3:.2f} s, "
        f"daemons {ticks} ticks ({os.sysconf('SC_CLK_TCK')}/s) in {args.idle_seconds:g} s "
        f"beside the actor"
    )


if __name__ == "__main__":
    main()
