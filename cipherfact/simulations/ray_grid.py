"""``RayGrid``: the hosts of a run as Ray actors (one driver for every protocol).

The hosts are ``RoleHost`` objects (``grid.py``) made remote; what a protocol
contributes is only the factory each actor calls. Routing: the driver submits
each envelope batch to its destination actor at once, busy or not (Ray runs
one caller's calls to an actor in submission order), so a busy actor starts
its next batch without a round trip through the driver; an outer iteration
ends when no call is outstanding (quiescence is trivial at the driver,
whereas actors pushing to each other would need a distributed termination
test). A failure comes back as ``RayEngineError`` naming the actor, its
agents, the phase and the protocol round. ``ray_session`` joins a cluster
(``ray_cluster.connect``: one-line errors) or starts a local Ray for one run.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cipherfact.agents.envelope import AgentId
from cipherfact.agents.ray_transport import HostId
from cipherfact.simulations.grid import Grid, Outbox, RoleFactory, RoleHost
from cipherfact.simulations.network import NetworkModel
from cipherfact.simulations.ray_local import start_local_ray


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[bool]:
    """Join ``address``, or start a local Ray sized to this machine; yields whether
    this call started Ray (and so shuts it down on the way out, errors included).
    An already initialized Ray (a test fixture, a notebook) is used as it is."""
    import ray

    if ray.is_initialized():
        yield False
        return
    if address:
        from cipherfact.simulations.ray_cluster import connect

        connect(address)  # one-line errors: no listener, refused token, ...
    else:
        # A Ray started here, for this run: its start-up notices (the token
        # authentication it enables by default, "Started a local Ray instance")
        # are about a cluster nobody else joins; warnings after start-up still show.
        start_local_ray(
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
        logging.getLogger("ray").setLevel(logging.WARNING)
    try:
        yield True
    finally:
        ray.shutdown()


class RayEngineError(RuntimeError):
    """An actor failed or died; the message names its agents, the phase and the round."""


@dataclass(frozen=True)
class PoolSpec:
    """How many actors, and what each reserves."""

    actors: int
    num_cpus: float
    num_gpus: float = 0.0


def actor_cpus(
    count: int, cluster_cpus: float, requested: float | None, preferred: float = 1.0
) -> float:
    """CPUs each of ``count`` actors reserves. None: ``preferred`` each (what one
    host's roles keep busy), or an even share when the cluster has fewer. A
    request the cluster cannot hold is refused: Ray would leave the extra
    actors pending and the run would never start."""
    if requested is None:
        return min(preferred, cluster_cpus / count)
    if not requested > 0:
        raise ValueError(f"cpus_per_actor must be > 0, got {requested}")
    if count * requested > cluster_cpus + 1e-9:
        raise ValueError(
            f"{count} actors x {requested:g} CPUs = {count * requested:g} CPUs, but the Ray "
            f"cluster has {cluster_cpus:g}: Ray could never start them all. Use fewer actors, "
            "fewer CPUs per actor, or leave --ray-cpus-per-actor out to share the CPUs"
        )
    return requested


def pool_spec(
    n_agents: int,
    resources: Mapping[str, float],
    *,
    actors: int | None = None,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float | None = None,
    wants_gpu: bool = False,
    host_cpus: float = 1.0,
) -> PoolSpec:
    """Default: one actor per ``host_cpus`` CPUs of the cluster, each reserving
    them (``host_cpus``: the cores one host's roles keep busy, e.g. a thread
    pool and a worker process beside the actor's thread), never more actors
    than agents; a GPU solver on a cluster with GPUs shares them fractionally
    between the actors."""
    if cpus_per_actor is not None and not cpus_per_actor > 0:
        raise ValueError(f"cpus_per_actor must be > 0, got {cpus_per_actor}")
    if actors is not None and actors < 1:
        raise ValueError(f"actors must be >= 1, got {actors}")
    if gpus_per_actor is not None and gpus_per_actor < 0:
        raise ValueError(f"gpus_per_actor must be >= 0, got {gpus_per_actor}")
    if not host_cpus > 0:
        raise ValueError(f"host_cpus must be > 0, got {host_cpus}")
    cpus = float(resources.get("CPU", 1.0))
    each = cpus_per_actor or min(host_cpus, cpus)
    count = actors if actors is not None else max(1, int(cpus // each))
    count = min(count, n_agents)
    if gpus_per_actor is None:
        gpus = float(resources.get("GPU", 0.0))
        gpus_per_actor = min(1.0, gpus / count) if wants_gpu and gpus > 0 else 0.0
    return PoolSpec(count, actor_cpus(count, cpus, cpus_per_actor, host_cpus), gpus_per_actor)


class RayGrid(Grid):
    """Each host a Ray actor reserving ``pool``'s CPUs and GPUs."""

    def __init__(
        self,
        placement: Mapping[AgentId, HostId],
        pool: PoolSpec,
        network: NetworkModel | None = None,
    ) -> None:
        if not pool.num_cpus > 0:
            raise ValueError(f"num_cpus must be > 0, got {pool.num_cpus}")
        super().__init__(placement, network)
        self.pool = pool

    def add_host(self, k: HostId, factory: RoleFactory) -> None:
        """Create actor ``k``; its roles are built there, in parallel with the others."""
        import ray

        self._check_new_host(k)
        remote = ray.remote(RoleHost).options(
            num_cpus=self.pool.num_cpus,
            num_gpus=self.pool.num_gpus,
            max_restarts=0,
            max_task_retries=0,
        )
        self.hosts[k] = remote.remote(k, factory, self.placement, self.network)

    def _stalled(self, message: str) -> Exception:
        return RayEngineError(message)

    def _get(self, k: HostId, ref: Any, method: str) -> Any:
        """``ray.get`` one actor's result; a failure becomes an error naming its agents."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        try:
            return ray.get(ref)
        except RayActorError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RayEngineError(
                f"Ray actor {k} hosting agents {self.hosted[k]} died during {self.phase} "
                f"(protocol round {self._round[k]}, call {method}): {first}"
            ) from exc
        except RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            raise RayEngineError(f"{self.phase}: {cause}") from exc

    def call(self, method: str, args: Mapping[HostId, tuple[Any, ...]]) -> dict[HostId, Any]:
        """Call ``method`` on the given actors in parallel and wait for all of them."""
        refs = {k: getattr(self.hosts[k], method).remote(*a) for k, a in args.items()}
        return {k: self._get(k, ref, method) for k, ref in refs.items()}

    def _drive(self, method: str) -> None:
        import ray

        busy: dict[Any, tuple[HostId, str]] = {
            getattr(h, method).remote(): (k, method) for k, h in sorted(self.hosts.items())
        }
        while busy:
            done, _ = ray.wait(list(busy), num_returns=1)
            for ref in done:
                k, name = busy.pop(ref)
                outbox: Outbox = self._get(k, ref, name)
                for dest, envs in sorted(outbox.items()):
                    self._note_round(dest, envs)
                    busy[self.hosts[dest].deliver.remote(envs)] = (dest, "deliver")

    def info(self) -> dict[str, Any]:
        return {
            **super().info(),
            "num_cpus_per_actor": self.pool.num_cpus,
            "num_gpus_per_actor": self.pool.num_gpus,
        }

    def close(self) -> None:
        """Stop the roles' worker processes, then the actors (errors ignored: a dead
        actor has nothing left to stop)."""
        import ray

        refs = []
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                refs.append(host.close.remote())
        with contextlib.suppress(Exception):
            ray.wait(refs, num_returns=len(refs), timeout=10.0)
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                ray.kill(host)
