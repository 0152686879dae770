"""The one runner of ``cipherfact simulate``: every protocol, every backend.

A protocol says what is its own through a ``RunApp`` (its grid's hosts and
factories, what one outer iteration's reports become as a ``metrics.jsonl``
line, what the summary adds at the end, and which files hold the model); the
runner does the rest, the same way for all of them:

* the grid: ``LocalGrid`` in this process, or ``RayGrid`` inside a Ray session
  (started and stopped here unless one is running or ``--ray-address`` names a
  cluster);
* a progress bar with named fields, ``metrics.jsonl`` written line by line;
* checkpoints every K outer iterations and ``--resume``, one format and one
  path for every protocol (``checkpoint.py``): each role exports its own state
  (numbers, never a key), the app gives the job's identity, and a resume
  restores every role, then redoes the setup with fresh keys. Apps without a
  checkpoint identity refuse both before any key is made;
* network emulation: simulated seconds per outer iteration and for the setup,
  next to the measured ones (turn-taking stages charged edge after edge);
* on any failure or signal, ``summary.json`` with ``status = "failed: ..."``
  and the model of the last completed iteration, then the error propagates.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cipherfact.simulations.checkpoint import load_checkpoint, save_checkpoint
from cipherfact.simulations.grid import Grid
from cipherfact.simulations.progress import progress_bar
from cipherfact.simulations.ray_grid import RayGrid
from cipherfact.simulations.results import RunWriter, machine_info, package_versions
from cipherfact.simulations.scenario import ScenarioError


class RunApp(ABC):
    """What one protocol tells the runner. One instance per run, built from a
    checked job (every input check done, no key made yet)."""

    #: the outer iteration's unit in the progress bar, and its name in messages
    unit: str = "outer"
    phase: str = "outer iteration"
    #: the summary field that counts completed outer iterations
    count_key: str = "outer_iters_completed"
    #: stages in which a server serves one peer at a time, waiting for each
    #: (network emulation charges their edges one after another; ``network.py``)
    turn_stages: tuple[str, ...] = ()

    @property
    @abstractmethod
    def total(self) -> int:
        """Outer iterations (or epochs) of the run."""

    @abstractmethod
    def describe(self) -> str:
        """The progress bar's label."""

    @abstractmethod
    def header(self, backend: str) -> dict[str, Any]:
        """Summary fields known before the first outer iteration (protocol, scenario,
        sizes, ...); called once the grid is built (and if building it fails)."""

    @abstractmethod
    def build_grid(self, options: Any) -> Grid:
        """The run's hosts with their roles (keys are made here, on their hosts)."""

    def after_setup(self, grid: Grid) -> None:  # noqa: B027 - optional hook
        """Called once the setup stage (keys, uploads) is done."""

    @abstractmethod
    def record(
        self, t: int, reports: dict[int, Any], grid: Grid, wall_s: float, before: tuple[int, int]
    ) -> dict[str, Any]:
        """The ``metrics.jsonl`` line of outer iteration ``t`` (``before``: the grid's
        bytes and messages when it began). Keeps what ``save_model`` writes."""

    @abstractmethod
    def postfix(self, record: dict[str, Any]) -> dict[str, str]:
        """Named progress-bar fields of one line."""

    @abstractmethod
    def save_model(self, writer: RunWriter) -> dict[str, Any]:
        """Write the latest iteration's factors or model; summary fields naming them
        (nothing when no iteration completed)."""

    @abstractmethod
    def finish(
        self, records: list[dict[str, Any]], grid: Grid, writer: RunWriter, run: dict[str, Any]
    ) -> dict[str, Any]:
        """Summary fields of a completed run and its plots. ``records``: every
        ``metrics.jsonl`` line (those before a resume included); ``run``: setup_s,
        setup_bytes, seconds per party group and wall_s measured by the runner."""

    def checkpoint_meta(self) -> dict[str, Any] | None:
        """The checkpoint identity of this job (a JSON-able dict with ``job_id`` and
        ``n_agents``; a resume refuses a checkpoint whose identity differs, naming
        the fields; see ``checkpoint.job_meta``). None: the protocol has none."""
        return None


def refuse_checkpoints(protocol: str, options: Any) -> None:
    """The one-line refusal of ``--checkpoint-every``/``--resume`` for a protocol
    without checkpoints (a runner may call it before it reads any data)."""
    if options.checkpoint_every or options.resume:
        raise ScenarioError(f"{protocol} has no checkpoints; drop --checkpoint-every / --resume")


@contextlib.contextmanager
def _session(options: Any) -> Iterator[None]:
    if options.backend == "ray":
        from cipherfact.simulations.ray_grid import ray_session

        with ray_session(options.ray_address):
            yield
    else:
        yield


def run(app: RunApp, protocol: str, out_dir: Path, options: Any) -> dict[str, Any]:
    """Run ``app`` on ``options.backend`` and write the results folder; returns the
    summary (see the module doc)."""
    out_dir = Path(out_dir)
    emulated = options.network is not None and options.network.enabled
    meta = app.checkpoint_meta()
    if meta is None:
        refuse_checkpoints(protocol, options)
    else:  # the summary adds up every line's simulated time: all or none emulate
        meta = {**meta, "network": options.network.to_dict() if emulated else None}
    first, states = 0, None
    if options.resume and meta is not None:
        ckpt = load_checkpoint(out_dir, meta)
        if ckpt.outer >= app.total:
            raise ScenarioError(
                f"the checkpoint in {out_dir} is at {app.phase} {ckpt.outer}, the end of this run "
                f"({app.total}); nothing to resume"
            )
        first, states = ckpt.outer, ckpt.states
    writer = RunWriter(out_dir, append=options.resume)
    if options.resume:
        writer.truncate_metrics(first)
        if options.progress:
            print(
                f"resuming from the checkpoint in {out_dir} after {app.phase} {first} of "
                f"{app.total} (fresh keys; the iterations after it are redone)",
                file=sys.stderr,
            )
    if emulated and app.turn_stages:
        turns = dataclasses.replace(options.network, turns=tuple(app.turn_stages))
        options = dataclasses.replace(options, network=turns)
    started = time.perf_counter()
    done = first
    with _session(options):
        try:
            grid = app.build_grid(options)
        except BaseException as exc:  # keys, actors: nothing computed yet, but say why
            failed = {
                **app.header(options.backend),
                "status": f"failed: {type(exc).__name__}: {exc}",
            }
            writer.write_json("summary.json", {**failed, app.count_key: first})
            raise
        summary: dict[str, Any] = {
            **app.header(options.backend),
            "machine": machine_info(),
            "versions": package_versions(),
            "status": "running",
        }
        bar = progress_bar(app.total, app.describe(), app.unit, enabled=options.progress)
        bar.update(first)
        try:
            if states is not None:
                grid.restore(states)
            setup_network = grid.start()
            app.after_setup(grid)
            setup_s, setup_bytes = time.perf_counter() - started, grid.stats.bytes_total
            seconds = dict(grid.seconds)  # per party group, setup included
            for t in range(first, app.total):
                before = grid.stats.bytes_total, grid.stats.messages_total
                t0 = time.perf_counter()
                reports, network = grid.run_outer(f"{app.phase} {t}")
                record = app.record(t, reports, grid, time.perf_counter() - t0, before)
                if emulated:
                    record["simulated_network_s"] = network.seconds
                    record["retransmissions"] = network.retransmissions
                for group, s in grid.seconds.items():
                    seconds[group] = seconds.get(group, 0.0) + s
                writer.append_metrics(record)
                done = t + 1
                bar.update(1)
                bar.set_postfix(app.postfix(record))
                every = options.checkpoint_every
                if meta is not None and every and done % every == 0:
                    save_checkpoint(out_dir, done, grid.checkpoint(), meta)
        except BaseException as exc:
            summary.update(
                status=f"failed: {type(exc).__name__}: {exc}",
                wall_s=time.perf_counter() - started,
            )
            # a signal between writing an iteration's line and counting it: the
            # file is what the run kept
            summary[app.count_key] = max(done, writer.metrics_written())
            if isinstance(grid, RayGrid):
                summary["ray"] = grid.info()
            summary.update(app.save_model(writer))
            writer.write_json("summary.json", summary)
            raise
        finally:
            bar.close()
            grid.close()
    records = writer.read_all_metrics()  # includes the iterations before a resume
    summary["status"] = "completed"
    summary[app.count_key] = len(records)
    summary["wall_s"] = time.perf_counter() - started
    if isinstance(grid, RayGrid):
        summary["ray"] = grid.info()
    summary.update(app.save_model(writer))
    setup = {
        "setup_s": setup_s,
        "setup_bytes": setup_bytes,
        "seconds": seconds,
        "wall_s": summary["wall_s"],
    }
    summary.update(app.finish(records, grid, writer, setup))
    if emulated:
        network_s = sum(m["simulated_network_s"] for m in records)
        summary["network"] = {
            **options.network.to_dict(),
            "setup_s": setup_network.seconds,
            "retransmissions": sum(m["retransmissions"] for m in records),
        }
        summary["simulated_network_s"] = network_s + setup_network.seconds
        # measured compute + simulated network: the run's duration on that network
        measured = sum(m["wall_s"] for m in records)
        summary["estimated_total_s"] = measured + summary["simulated_network_s"]
    writer.write_json("summary.json", summary)
    return summary
