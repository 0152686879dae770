"""Which points ``cipherfact bench protocols`` runs, per mode (tiny, quick, full).

Why a separate, pure module: the point list is what a reader checks against the
issue (which protocols, twins and sizes), and tests can inspect ``--quick``'s
list without paying for running it. Every point is a bundled scenario plus
``--set`` overrides, so any single point can be re-run by hand with
``cipherfact simulate SCENARIO --set ...``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["MODES", "PointSpec", "plan_points"]

MODES = ("tiny", "quick", "full")

#: test-sized Paillier keys (quick/tiny only; the output says so)
_INSECURE = ("crypto.key_bits=1024", "crypto.insecure_test_keys=true")


@dataclass(frozen=True)
class PointSpec:
    """One benchmark point: a bundled scenario, its overrides, and what was swept."""

    label: str
    scenario: str
    overrides: tuple[str, ...]
    swept: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.label or any(c in self.label for c in "/\\ "):
            raise ValueError(f"label must be non-empty without '/', '\\' or spaces: {self.label!r}")


def _ppdnmf(scheme: str, agents: int, bits: int, sizes: tuple[str, ...], seed: int) -> PointSpec:
    """``bits`` < 2048 means test-sized keys (``crypto.insecure_test_keys``)."""
    crypto: tuple[str, ...] = (f"crypto.scheme={scheme}",)
    if scheme == "paillier":
        crypto += _INSECURE if bits < 2048 else (f"crypto.key_bits={bits}",)
    label = f"ppdnmf-{scheme}" + (f"{bits}" if scheme == "paillier" else "") + f"-n{agents}"
    return PointSpec(
        label=label,
        scenario="ppdnmf-synthetic",
        overrides=(f"seed={seed}", f"n_agents={agents}", *sizes, *crypto),
        swept={"n_agents": agents, "key_bits": bits if scheme == "paillier" else None},
    )


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
        )
    ]
    for fed_mode in ("full", "part"):
        points.append(
            PointSpec(
                f"fedmf-{fed_mode}-paillier-packed",
                "fedmf-synthetic",
                (*common, fed_epochs, f"mode={fed_mode}", "crypto.naive=false", *keys),
                {"n_users": users_n, "mode": fed_mode, "packing": True},
            )
        )
    points.append(
        PointSpec(
            "fedmf-full-plain",
            "fedmf-synthetic",
            (*common, fed_epochs, "mode=full", "crypto.scheme=plain"),
            {"n_users": users_n, "mode": "full"},
        )
    )
    return points


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
        points += [_ppdnmf("plain", n, 2048, sizes, seed) for n in (10, 20, 50)]
        points += [_ppdnmf("paillier", 10, bits, sizes, seed) for bits in (2048, 3072)]
    else:
        agents = (4,) if mode == "tiny" else (4, 8)
        sizes = ("outer_iters=2", "inner_iters=10") if mode == "tiny" else ("outer_iters=5",)
        for n in agents:
            points += [
                _ppdnmf("plain", n, 1024, sizes, seed),
                _ppdnmf("paillier", n, 1024, sizes, seed),
            ]
    return points + _recsys(mode, seed)
