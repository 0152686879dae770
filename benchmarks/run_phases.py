"""A ``cipherfact simulate`` run with its Ray phases timed: ``ray.init``, making
the actors (``add_host``), their start (imports, keys, key exchange), each outer
iteration, closing the grid and ``ray.shutdown``, printed to stderr as they end.
Usage::

    python benchmarks/run_phases.py simulate ppdnmf-synthetic --set exchange=pairwise \\
        --set outer_iters=2 --backend ray --quiet --out /tmp/phases
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import ray

from cipherfact.cli import main
from cipherfact.simulations.ray_grid import RayGrid

START = time.perf_counter()


def _timed(owner: Any, name: str) -> None:
    inner: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            took, at = time.perf_counter() - t0, t0 - START
            print(f"  {name}: {took:.2f} s (began at {at:.2f} s)", file=sys.stderr)

    setattr(owner, name, wrapper)


if __name__ == "__main__":
    for method in ("add_host", "start", "run_outer", "close"):
        _timed(RayGrid, method)
    for function in ("init", "shutdown"):
        _timed(ray, function)
    sys.exit(main(sys.argv[1:]))
