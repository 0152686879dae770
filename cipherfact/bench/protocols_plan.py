"""Which points ``cipherfact bench protocols`` runs, per mode (tiny, quick, full).

Why a separate, pure module: the point list is what a reader checks against the
issue (which protocols, twins and sizes), and tests can inspect ``--quick``'s
list without paying for running it. Every point is a bundled scenario plus
``--set`` overrides, so any single point can be re-run by hand with
``cipherfact simulate SCENARIO --set ...`` (ppdnmf points add
``--latency-ms 50 --bandwidth-mbps 10``: see ``NETWORK``).

Sweeps (``PointSpec.sweep`` names the parameter a point varies; every sweep
includes its base point): ``agents`` and ``key_bits`` (ppdnmf, plain vs
Paillier), ``topology`` (ring / geometric / complete), ``data_size`` and
``rank`` (ppdnmf, plain scheme: the network and compute cost, not the crypto),
``packing`` (FedMF naive vs packed, full mode only), ``ckks_params``
(csr_fhe_mf parameter sets, full mode only), ``protocol`` (the recsys
comparison). Ring and complete graphs are spelled ``small_world`` with k=2 and
no rewiring, and ``erdos_renyi`` with degree n-1 (p=1), which draw the same
graphs as ``ring``/``complete``; the spelling is kept so that earlier sweep
results stay comparable point for point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["MODES", "NETWORK", "SWEEPS", "PointSpec", "plan_points"]

MODES = ("tiny", "quick", "full")

#: what a point varies (the ``sweep`` column of points.csv)
SWEEPS = (
    "agents",
    "key_bits",
    "topology",
    "data_size",
    "rank",
    "packing",
    "ckks_params",
    "protocol",
)

#: (latency ms, bandwidth Mb/s) charged to every ppdnmf message: a 10 Mb/s, 50 ms WAN
NETWORK = (50.0, 10.0)

#: test-sized Paillier keys (quick/tiny only; the output says so)
_INSECURE = ("crypto.key_bits=1024", "crypto.insecure_test_keys=true")


@dataclass(frozen=True)
class PointSpec:
    """One benchmark point: a bundled scenario, its overrides, and what was swept."""

    label: str
    scenario: str
    overrides: tuple[str, ...]
    swept: dict[str, Any] = field(default_factory=dict)
    sweep: str = "agents"
    #: (latency ms, bandwidth Mb/s) of a simulated network, or None for none
    network: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not self.label or any(c in self.label for c in "/\\ "):
            raise ValueError(f"label must be non-empty without '/', '\\' or spaces: {self.label!r}")
        if self.sweep not in SWEEPS:
            raise ValueError(f"sweep must be one of {SWEEPS}, got {self.sweep!r}")
        if self.network is not None and (
            len(self.network) != 2 or not (self.network[0] >= 0 and self.network[1] > 0)
        ):
            raise ValueError(
                f"network must be (latency_ms >= 0, bandwidth_mbps > 0), got {self.network!r}"
            )


def _ppdnmf(
    scheme: str,
    agents: int,
    bits: int,
    sizes: tuple[str, ...],
    seed: int,
    *,
    sweep: str = "agents",
    extra: tuple[str, ...] = (),
    tag: str = "",
    swept: dict[str, Any] | None = None,
) -> PointSpec:
    """``bits`` < 2048 means test-sized keys (``crypto.insecure_test_keys``).

    ``extra`` overrides (topology, data size, rank) follow ``sizes``; ``tag``
    names them in the label; ``swept`` adds what they vary to the row.
    """
    crypto: tuple[str, ...] = (f"crypto.scheme={scheme}",)
    if scheme == "paillier":
        crypto += _INSECURE if bits < 2048 else (f"crypto.key_bits={bits}",)
    label = f"ppdnmf-{scheme}" + (f"{bits}" if scheme == "paillier" else "") + f"-n{agents}"
    return PointSpec(
        label=label + (f"-{tag}" if tag else ""),
        scenario="ppdnmf-synthetic",
        overrides=(f"seed={seed}", f"n_agents={agents}", *sizes, *extra, *crypto),
        swept={
            "n_agents": agents,
            "key_bits": bits if scheme == "paillier" else None,
            **(swept or {}),
        },
        sweep=sweep,
        network=NETWORK,
    )


#: topology sweep at 8 agents: name -> (overrides, nominal degree)
_TOPOLOGIES: dict[str, tuple[tuple[str, ...], int]] = {
    "ring": (("topology.kind=small_world", "topology.degree=2", "topology.rewire=0.0"), 2),
    "geometric": (("topology.kind=geometric", "topology.degree=3"), 3),
    "complete": (("topology.kind=erdos_renyi", "topology.degree=7"), 7),
}


def _ppdnmf_shape_sweeps(mode: str, sizes: tuple[str, ...], seed: int) -> list[PointSpec]:
    """Plain-scheme ppdnmf over topology, data size and rank (8 agents)."""
    points = []
    topologies = ("ring", "complete") if mode == "quick" else tuple(_TOPOLOGIES)
    for name in topologies:  # quick: geometric degree 3 is the agents sweep's n8 point
        extra, degree = _TOPOLOGIES[name]
        if mode == "full" and name == "geometric":
            extra = (*extra[:1], "topology.degree=5")
            degree, name = 5, "geometric5"
        points.append(
            _ppdnmf(
                "plain",
                8,
                1024,
                sizes,
                seed,
                sweep="topology",
                extra=extra,
                tag=name,
                swept={"topology": name, "degree": degree},
            )
        )
    shapes = ((60, 400),) if mode == "quick" else ((60, 400), (120, 800))
    for rows, cols in shapes:
        points.append(
            _ppdnmf(
                "plain",
                8,
                1024,
                sizes,
                seed,
                sweep="data_size",
                extra=(f"data.rows={rows}", f"data.cols={cols}"),
                tag=f"{rows}x{cols}",
                swept={"rows": rows, "cols": cols},
            )
        )
    ranks = (10,) if mode == "quick" else (3, 10)
    for rank in ranks:
        points.append(
            _ppdnmf(
                "plain",
                8,
                1024,
                sizes,
                seed,
                sweep="rank",
                extra=(f"rank={rank}",),
                tag=f"rank{rank}",
                swept={"rank": rank},
            )
        )
    return points


#: csr_fhe_mf CKKS sets (full mode) -> mask bits that fit the set (see plan_csr_params)
_CKKS_SETS = {
    "n8192-depth2": 14,
    "n8192-depth2-s30": 20,
    "n8192-depth3": 20,
    "n8192-depth3-s30": 20,
    "n16384-depth4": 14,
}


def _recsys_full_extras(seed: int) -> list[PointSpec]:
    """Full mode: csr_fhe_mf over CKKS parameter sets; FedMF naive vs packed."""
    data = ("data.n_users=100", "data.n_items=300")
    points = [
        PointSpec(
            f"csr_fhe_mf-ckks-{name}",
            "csr-fhe-mf-synthetic",
            (
                f"seed={seed}",
                *data,
                "epochs=3",
                f"crypto.params={name}",
                f"crypto.mask_bits={mask_bits}",
            ),
            {"n_users": 100, "mode": None, "ckks_params": name, "mask_bits": mask_bits},
            sweep="ckks_params",
        )
        for name, mask_bits in _CKKS_SETS.items()
    ]
    tiny = (f"seed={seed}", "data.n_users=20", "data.n_items=40", "epochs=1", "mode=full")
    for naive in (True, False):
        points.append(
            PointSpec(
                "fedmf-full-paillier-" + ("naive" if naive else "packed") + "-u20",
                "fedmf-synthetic",
                (*tiny, f"crypto.naive={str(naive).lower()}", "crypto.key_bits=2048"),
                {"n_users": 20, "mode": "full", "packing": not naive},
                sweep="packing",
            )
        )
    return points


def _recsys(mode: str, seed: int) -> list[PointSpec]:
    """csr_fhe_mf (its plaintext twin runs inside the same simulation) vs FedMF."""
    keys: tuple[str, ...]
    if mode == "full":
        data = ("data.n_users=100", "data.n_items=300")
        csr_epochs, fed_epochs, keys = "epochs=10", "epochs=3", ("crypto.key_bits=2048",)
    else:
        users = 20 if mode == "tiny" else 30
        data = (f"data.n_users={users}", f"data.n_items={2 * users}")
        csr_epochs = "epochs=2" if mode == "tiny" else "epochs=3"
        fed_epochs, keys = "epochs=2", _INSECURE
    users_n = int(data[0].split("=")[1])
    common = (f"seed={seed}", *data)
    points = [
        PointSpec(
            "csr_fhe_mf-ckks",
            "csr-fhe-mf-synthetic",
            (*common, csr_epochs),
            {"n_users": users_n, "mode": None},
            sweep="protocol",
        )
    ]
    for fed_mode in ("full", "part"):
        points.append(
            PointSpec(
                f"fedmf-{fed_mode}-paillier-packed",
                "fedmf-synthetic",
                (*common, fed_epochs, f"mode={fed_mode}", "crypto.naive=false", *keys),
                {"n_users": users_n, "mode": fed_mode, "packing": True},
                sweep="protocol",
            )
        )
    points.append(
        PointSpec(
            "fedmf-full-plain",
            "fedmf-synthetic",
            (*common, fed_epochs, "mode=full", "crypto.scheme=plain"),
            {"n_users": users_n, "mode": "full"},
            sweep="protocol",
        )
    )
    return points + (_recsys_full_extras(seed) if mode == "full" else [])


def plan_points(mode: str, seed: int) -> list[PointSpec]:
    """The points of one mode, in run order (labels are unique folder names)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    points: list[PointSpec] = []
    sizes: tuple[str, ...]
    if mode == "full":
        sizes = ("outer_iters=20",)
        # Scaling: same columns per agent; a small-world graph of degree 4 stays
        # connected at any size (a geometric graph of degree 3 does not at 50+).
        points += [
            _ppdnmf(
                "plain",
                n,
                2048,
                sizes,
                seed,
                extra=(
                    "topology.kind=small_world",
                    "topology.degree=4",
                    "topology.rewire=0.1",
                    f"data.cols={20 * n}",
                ),
                swept={"topology": "small_world", "data_cols": 20 * n},
            )
            for n in (10, 20, 50, 100, 200)
        ]
        points += [
            _ppdnmf("paillier", 10, bits, sizes, seed, sweep="key_bits") for bits in (2048, 3072)
        ]
    else:
        agents = (4,) if mode == "tiny" else (4, 8)
        sizes = ("outer_iters=2", "inner_iters=10") if mode == "tiny" else ("outer_iters=5",)
        for n in agents:
            points += [
                _ppdnmf("plain", n, 1024, sizes, seed),
                _ppdnmf("paillier", n, 1024, sizes, seed),
            ]
    if mode != "tiny":
        points += _ppdnmf_shape_sweeps(mode, sizes, seed)
    return points + _recsys(mode, seed)
