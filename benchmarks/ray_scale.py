"""Ray engine benchmarks: many agents on one machine, and Ray vs in-memory speed.

    python benchmarks/ray_scale.py scale --scheme plain --agents 200 --outer 3 --inner 10
    python benchmarks/ray_scale.py ratio --outer 10 --rounds 1
    python benchmarks/ray_scale.py cores

``scale`` runs one ``cipherfact simulate`` command with the ray backend and
samples the memory of its whole process tree (driver, Ray's services and every
worker) every 0.5 s from /proc: the peak of the summed PSS (proportional set
size: shared pages split between the processes that map them, so libraries are
not counted once per worker) and of the summed RSS (an upper bound).
``ratio`` runs the 10-agent ``ppdnmf-synthetic`` scenario with both backends
back to back (alternating, ``--rounds`` times) and reports wall times of the
whole command and of the protocol (``protocol_s``: outer iterations only, no
Ray start-up or key generation). Load average is recorded before and after,
because the machine is shared. ``cores`` measures what two processes gain over
one on this machine for the Paillier-like work (gmpy2 ``powmod``), the ceiling
for any 2-process speedup.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _tree(root: int) -> list[int]:
    tree, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(tree.get(pid, []))
    return out


def _memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in kB; zeros when it is gone."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss


class TreeSampler(threading.Thread):
    """Peak summed PSS/RSS and peak process count of a process tree."""

    def __init__(self, root: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_pss_kb = self.peak_rss_kb = self.peak_processes = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            pids = _tree(self.root)
            mem = [_memory_kb(p) for p in pids]
            self.peak_pss_kb = max(self.peak_pss_kb, sum(m[0] for m in mem))
            self.peak_rss_kb = max(self.peak_rss_kb, sum(m[1] for m in mem))
            self.peak_processes = max(self.peak_processes, sum(1 for m in mem if m[1]))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_simulate(args: list[str], out: Path) -> dict[str, Any]:
    """One ``cipherfact simulate`` command; returns timings, memory and summary facts."""
    cmd = [sys.executable, "-m", "cipherfact.cli", "simulate", *args, "--quiet", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    load_before = _load()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    _stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {stderr.decode()[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {
        "command": "cipherfact simulate " + " ".join(args),
        "wall_s": wall,
        "protocol_s": summary["protocol_s"],
        "rel_error": summary["rel_error"],
        "outer_iters": summary["outer_iters_completed"],
        "bytes_total": summary["bytes_total"],
        "peak_pss_mb": sampler.peak_pss_kb / 1024,
        "peak_rss_mb": sampler.peak_rss_kb / 1024,
        "peak_processes": sampler.peak_processes,
        "load_before": load_before,
        "load_after": _load(),
        "ray": {k: v for k, v in (summary.get("ray") or {}).items() if k != "agents_per_actor"},
    }


def scale(ns: argparse.Namespace) -> None:
    args = [
        "ppdnmf-synthetic",
        "--backend",
        "ray",
        "--set",
        f"n_agents={ns.agents}",
        "--set",
        f"data.cols={ns.cols}",
        "--set",
        f"outer_iters={ns.outer}",
        "--set",
        f"inner_iters={ns.inner}",
        "--set",
        f"crypto.scheme={ns.scheme}",
    ]
    for item in ns.set:
        args += ["--set", item]
    with tempfile.TemporaryDirectory() as tmp:
        result = run_simulate(args, Path(tmp) / "run")
    print(json.dumps(result, indent=2))


def ratio(ns: argparse.Namespace) -> None:
    base = ["ppdnmf-synthetic", "--set", f"outer_iters={ns.outer}"]
    configs = {"inmemory": ["--backend", "inmemory"], "ray": ["--backend", "ray"]}
    if ns.single_process_baseline:
        configs["inmemory-1proc"] = ["--backend", "inmemory", "--set", "crypto.processes=1"]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(ns.rounds):
            for name, extra in configs.items():
                res = run_simulate([*base, *extra], Path(tmp) / f"{name}{r}")
                res["config"], res["round"] = name, r
                rows.append(res)
                print(json.dumps(res), flush=True)
    for r in range(ns.rounds):
        by = {row["config"]: row for row in rows if row["round"] == r}
        ray_ = by["ray"]
        for name, row in by.items():
            if name == "ray":
                continue
            print(
                f"round {r}: {name} vs ray: wall {row['wall_s']:.1f} s / {ray_['wall_s']:.1f} s "
                f"= {row['wall_s'] / ray_['wall_s']:.2f}x; protocol {row['protocol_s']:.1f} s / "
                f"{ray_['protocol_s']:.1f} s = {row['protocol_s'] / ray_['protocol_s']:.2f}x"
            )


def _powmods(count: int) -> float:
    import secrets

    import gmpy2

    modulus = gmpy2.mpz(secrets.randbits(4096)) | 1
    x = gmpy2.mpz(secrets.randbits(4000))
    start = time.perf_counter()
    for _ in range(count):
        x = gmpy2.powmod(x, 2**448 + 12345, modulus)
    return time.perf_counter() - start


def cores(ns: argparse.Namespace) -> None:
    from multiprocessing import get_context

    for _ in range(ns.rounds):
        alone = _powmods(ns.count)
        with get_context("spawn").Pool(2) as pool:
            start = time.perf_counter()
            pool.map(_powmods, [ns.count, ns.count])
            both = time.perf_counter() - start
        print(
            f"one process {alone:.2f} s; two in parallel {both:.2f} s for twice the work: "
            f"speedup {2 * alone / both:.2f}x (load {_load()})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("scale", help="one large ray run with peak memory")
    s.add_argument("--scheme", choices=["plain", "paillier"], default="plain")
    s.add_argument("--agents", type=int, default=200)
    s.add_argument("--cols", type=int, default=2000)
    s.add_argument("--outer", type=int, default=3)
    s.add_argument("--inner", type=int, default=30)
    s.add_argument(
        "--set",
        action="append",
        default=["topology.kind=small_world", "topology.degree=4", "topology.rewire=0.1"],
        metavar="KEY=VALUE",
        help="more scenario overrides (default: a small-world graph, degree 4, since a "
        "200-agent geometric graph of degree 3 is rarely connected)",
    )
    s.set_defaults(func=scale)
    r = sub.add_parser("ratio", help="ray vs in-memory, 10-agent paillier scenario")
    r.add_argument("--outer", type=int, default=10)
    r.add_argument("--rounds", type=int, default=1)
    r.add_argument(
        "--single-process-baseline",
        action="store_true",
        help="also run the in-memory backend with crypto.processes=1 (no worker pool)",
    )
    r.set_defaults(func=ratio)
    c = sub.add_parser("cores", help="two processes vs one on gmpy2 powmod")
    c.add_argument("--count", type=int, default=400)
    c.add_argument("--rounds", type=int, default=2)
    c.set_defaults(func=cores)
    ns = parser.parse_args(argv)
    ns.func(ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
