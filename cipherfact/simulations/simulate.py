"""``cipherfact simulate``: run a scenario, show progress, write the results folder.

Output (in ``out_dir``): ``summary.json``, ``metrics.jsonl`` (one line per outer
iteration, flushed as it goes), the model (ppdnmf: ``factors.npz``, each
agent's W_i and H_i; csr_fhe_mf and fedmf: ``model.npz``) and plots. A run that
fails still writes ``summary.json`` with ``status`` saying why.

The protocol's entry in the registry (``cipherfact.registry``) names its
runner; every runner is the one ``runner.run`` with the protocol's ``RunApp``,
on a grid (``grid.py``: in this process, or Ray actors), so every protocol runs
on every backend with the same features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from cipherfact import registry
from cipherfact.simulations.network import NetworkModel
from cipherfact.simulations.scenario import ScenarioError

BACKENDS = ("inmemory", "ray")


@dataclass(frozen=True)
class SimOptions:
    """Run options that are not part of the scenario (where and how, not what).

    ``network``: link model charged to every envelope (simulated time, reported
    next to measured compute time; None: no emulation). ``ray_actors``: size of
    the Ray actor pool (None: one per CPU of the cluster, or per the CPUs one host
    keeps busy: two for ppdnmf with Paillier and a randomness worker);
    ``ray_cpus_per_actor`` and ``ray_gpus_per_actor`` (None: a fractional share
    of the cluster's GPUs when the solver runs on CUDA, else 0) are what each
    actor reserves.
    """

    backend: str = "inmemory"
    progress: bool = True
    ray_address: str | None = None
    checkpoint_every: int = 0  # 0: no checkpoints
    resume: bool = False
    network: NetworkModel | None = None
    ray_actors: int | None = None
    ray_cpus_per_actor: float | None = None  # None: 1, or a share when actors > CPUs
    ray_gpus_per_actor: float | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ScenarioError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.checkpoint_every < 0:
            raise ScenarioError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.ray_actors is not None and self.ray_actors < 1:
            raise ScenarioError(f"ray_actors must be >= 1, got {self.ray_actors}")
        if self.ray_cpus_per_actor is not None and not self.ray_cpus_per_actor > 0:
            raise ScenarioError(f"ray_cpus_per_actor must be > 0, got {self.ray_cpus_per_actor}")
        if self.ray_gpus_per_actor is not None and self.ray_gpus_per_actor < 0:
            raise ScenarioError(f"ray_gpus_per_actor must be >= 0, got {self.ray_gpus_per_actor}")
        if self.network is not None and not isinstance(self.network, NetworkModel):
            raise TypeError(f"network must be a NetworkModel, got {type(self.network).__name__}")


Runner = Callable[[Any, Path, SimOptions], dict[str, Any]]


def simulate(
    scenario: Any,
    out_dir: str | Path,
    *,
    backend: str = "inmemory",
    progress: bool = True,
    options: SimOptions | None = None,
) -> dict[str, Any]:
    """Run ``scenario`` and write its results folder; returns the summary."""
    if options is None:
        options = SimOptions(backend=backend, progress=progress)
    try:
        runner: Runner = registry.load(scenario.protocol, "simulate")
    except registry.UnknownProtocolError as exc:
        raise ScenarioError(str(exc)) from exc
    # One BLAS thread: agents' small products gain nothing from threads, two
    # busy processes with two threads each were measured 35x slower here, and a
    # fixed thread count keeps floating-point results reproducible.
    with threadpool_limits(limits=1):
        return runner(scenario, Path(out_dir), options)
