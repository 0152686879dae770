"""The Python entry points: run a scenario and use what it leaves behind.

``simulate`` is ``cipherfact simulate`` as a function (a bundled scenario name,
a TOML file or a scenario object; ``--set``-style overrides; the run options
as keywords); it returns the run's summary and writes the same results folder.
A recommendation run's ``model.npz`` loads as a ``RatingsModel`` (predict,
recommend); for NMF on one's own matrix see ``DistributedNMF``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["simulate"]


def simulate(
    scenario: Any,
    out: str | Path,
    *,
    overrides: Sequence[str] = (),
    backend: str = "inmemory",
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Run ``scenario`` and write its results folder ``out``; returns ``summary.json``.

    ``scenario``: a bundled name (``"fedmf-synthetic"``), a ``.toml`` path, or a
    scenario object from ``load_scenario``. ``overrides``: ``"field=value"``
    strings, as ``--set`` takes them (only with a name or path). ``options``:
    the other ``SimOptions`` (``ray_address``, ``checkpoint_every``, ``resume``,
    ``network``, ``ray_actors``, ...).

    >>> summary = simulate("fedmf-synthetic", "runs/fedmf",
    ...                    overrides=["crypto.key_bits=512", "crypto.insecure_test_keys=true"])
    ... # doctest: +SKIP
    """
    from cipherfact.simulations import simulate as sim
    from cipherfact.simulations.scenario import ScenarioError, load_scenario

    if isinstance(scenario, str | Path):
        scenario = load_scenario(str(scenario), list(overrides))
    elif overrides:
        raise ScenarioError("overrides apply to a scenario name or file, not a scenario object")
    opts = sim.SimOptions(backend=backend, progress=progress, **options)
    return sim.simulate(scenario, out, options=opts)
