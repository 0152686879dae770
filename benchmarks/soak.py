"""Soak benchmark (issue 16): a deployed ppdnmf job under a flood of bad messages.

Runs a plain 16-agent ppdnmf job (``crypto.scheme=none``, secagg exchange,
min degree 2, small data) as real agent processes over gRPC + mTLS on
127.0.0.1, the way ``cipherfact deploy local`` does, twice:

* **without flood**: the job alone;
* **under flood**: the same job while this script, holding valid job
  certificates (a neighbour's own, a non-neighbour's, and an outsider
  ``agent-<n+7>`` issued by the job CA), sends every agent (or ``--victims``)
  a rate-bounded stream of bad calls, mirroring ``tests/deploy/test_dos.py``:
  junk bytes, forged senders, replays (seq 0 once the peer's seq 0 is
  consumed, also of ``abort``), wrong stage, round and job, far-future
  sequence numbers, oversized announced sizes (> 1 GiB) with 1 MiB chunks
  pushed behind the header, and stalled ``SendChunks`` streams, at most 2 at
  once per (victim, certificate): silent ones, and ones whose header passes
  every check (the next sequence number, which a replay's refusal tells the
  neighbour's certificate) followed by 1 MiB of the 8 MiB announced, then
  nothing. No bad call can be admitted: none carries a live sequence number
  in a stream that could complete. At most ``--rate`` call starts per second
  (default 150) from ``--workers`` + ``--stalls`` threads of this process.

A short unattacked calibration job first measures the rounds per second;
both jobs then get enough outer iterations to last ``--minutes`` at that
speed (the whole run takes about twice that plus start-ups; a job still
running after a generous limit is stopped and reported). Reported per job:
rounds per second from the agents' ``metrics.jsonl`` (outer 0, which holds
start-up and the key exchange, left out; also the first and last quarter of
the outer iterations), each agent's peak RSS (``VmHWM`` from
``/proc/<pid>/status``, sampled every second) and RSS growth, agent CPU,
health ``Check`` latency, retried legitimate sends from the agent logs,
whether every agent completed with factors bit-identical to the unattacked
job, and what became of every attack call. Usage::

    python benchmarks/soak.py --minutes 30 --out runs/soak
    python benchmarks/soak.py --out runs/soak --table-only   # print the table again

Writes ``soak.json`` and ``soak.md`` (Markdown tables, exact command, machine,
versions) into ``--out``; each job's own folder (``calibrate``, ``baseline``,
``flood``: job file, certificates, agent logs, ``summary.json``) too.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import platform
import re
import resource
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cipherfact.agents.envelope import Envelope
from cipherfact.deploy import envelope_v1_pb2 as pb
from cipherfact.deploy.jobfile import load_job
from cipherfact.deploy.local import LOOPBACK, gather, launch, wait_all, write_local_job
from cipherfact.deploy.tls import TlsFiles, agent_identity, cert_paths, make_agent_cert
from cipherfact.deploy.transport import check_health
from cipherfact.deploy.wire import MAX_PAYLOAD_BYTES, to_proto
from cipherfact.protocols.ppdnmf.job import prepare_job
from cipherfact.simulations.results import machine_info, package_versions

SCENARIO = "ppdnmf-synthetic"
MiB = 1 << 20
SEND = "/cipherfact.deploy.v1.AgentLink/Send"
SEND_CHUNKS = "/cipherfact.deploy.v1.AgentLink/SendChunks"
FAR_SEQ = 1 << 60  # a per-edge sequence number no job reaches: never admitted
CALL_S = 5.0  # client deadline of one attack call
STALL_S = 30.0  # client deadline of one stalled stream (the server cuts it at 5 or 10 s)
STALLS_PER_PAIR = 2  # stalled streams at once per (victim, certificate): of the 4 slots
SAMPLE_S = 1.0  # memory sampling period
HEALTH_S = 2.0  # one health Check every this many seconds
CALIBRATE_OUTER = 3
REFUSALS = {
    "PERMISSION_DENIED",
    "INVALID_ARGUMENT",
    "FAILED_PRECONDITION",
    "ALREADY_EXISTS",
    "RESOURCE_EXHAUSTED",
    "UNAUTHENTICATED",
    "OUT_OF_RANGE",
}
UNARY_KINDS = (
    "junk",
    "forged-sender",
    "replay",
    "wrong-stage",
    "wrong-round",
    "wrong-job",
    "future-seq",
    "oversized",
)
STALL_KINDS = ("stall-silent", "stall-after-header")


# --- attacker's helpers (mirroring tests/deploy/test_dos.py) ---------------------------------


def issue_cert(certs_dir: Path, agent_id: int, out: Path) -> TlsFiles:
    """A certificate for ``agent-<agent_id>`` from the job's own CA (a valid job certificate)."""
    ca_key = serialization.load_pem_private_key((certs_dir / "ca-key.pem").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((certs_dir / "ca.pem").read_bytes())
    key, cert = make_agent_cert(agent_id, ca_key, ca_cert, 1)  # type: ignore[arg-type]
    out.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        certs_dir / "ca.pem", out / f"agent-{agent_id}.pem", out / f"agent-{agent_id}-key.pem"
    )
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(files.key, 0o600)
    return files


def envelope(
    job_id: str, rnd: int, stage: str, sender: int, receiver: int, payload: bytes, seq: int
) -> bytes:
    return to_proto(
        Envelope(job_id, rnd, stage, sender, receiver, payload), seq
    ).SerializeToString()


def header_chunk(
    job_id: str,
    sender: int,
    receiver: int,
    total: int,
    seq: int,
    data: bytes = b"",
    rnd: int = -1,
    stage: str = "key",
) -> bytes:
    env = Envelope(job_id, rnd, stage, sender, receiver, b"")
    return pb.EnvelopeChunk(
        header=to_proto(env, seq, with_payload=False), total_size=total, data=data
    ).SerializeToString()


DATA_CHUNK = pb.EnvelopeChunk(data=bytes(MiB)).SerializeToString()


@dataclass
class Target:
    """One attacked agent and the certificates used against it."""

    victim: int
    port: int
    neighbour: int  # its lowest neighbour: that agent's own certificate is used
    other_neighbour: int  # a second neighbour, whose identity the forged sends claim
    stranger: int  # an agent of the job that is not its neighbour
    proc: subprocess.Popen[bytes]
    metrics: Path
    result: Path
    up: bool = False  # its port accepts connections
    progressed: bool = False  # has finished an outer: every neighbour's seq 0 is consumed
    progressed_at: float | None = None
    gone: bool = False  # has written result.json (its server is closing) or exited

    @property
    def live(self) -> bool:
        return self.up and not self.gone


class Watcher(threading.Thread):
    """Which agents are listening, have finished outer 0, or are done (4 times a second)."""

    def __init__(self, targets: list[Target], t0: float) -> None:
        super().__init__(daemon=True, name="watcher")
        self.targets, self.t0 = targets, t0
        self.done = threading.Event()

    def run(self) -> None:
        for _ in range(10**8):  # bounded; ends with the job
            if self.done.wait(0.25):
                return
            for t in self.targets:
                if t.gone:
                    continue
                if t.proc.poll() is not None or t.result.exists():
                    t.gone = True
                    continue
                if not t.up:
                    with (
                        contextlib.suppress(OSError),
                        socket.create_connection((LOOPBACK, t.port), timeout=0.2),
                    ):
                        t.up = True
                if not t.progressed:
                    with contextlib.suppress(OSError):
                        if t.metrics.stat().st_size > 0:
                            t.progressed = True
                            t.progressed_at = time.monotonic() - self.t0

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)


@dataclass
class FloodStats:
    calls: Counter[str] = field(default_factory=Counter)  # by kind
    codes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    stall_held_s: list[float] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0
    first_call: float | None = None  # the first and last call's end: the flood's window
    last_call: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, code: str, held: float | None = None) -> None:
        now = time.monotonic()
        with self.lock:
            if self.first_call is None:
                self.first_call = now
            self.last_call = now
            self.calls[kind] += 1
            self.codes[kind][code] += 1
            if held is not None:
                self.stall_held_s.append(held)

    def summary(self) -> dict[str, Any]:
        total: Counter[str] = Counter()
        for c in self.codes.values():
            total.update(c)
        calls = sum(self.calls.values())
        window = self.last_call - self.first_call if self.first_call is not None else 0.0
        return {
            "calls": calls,
            "seconds": self.ended - self.started,  # flood threads running (from the launch)
            "window_s": window,  # first to last answered call (while agents listened)
            "rate_per_s": calls / window if window > 0 else 0.0,
            "refused": sum(v for k, v in total.items() if k in REFUSALS),
            "cut_off": total.get("CANCELLED", 0),  # stalled streams ended by the server
            "accepted": total.get("OK", 0),  # must be 0
            "unavailable": total.get("UNAVAILABLE", 0),  # agent not up yet, or already done
            "unanswered": total.get("DEADLINE_EXCEEDED", 0),  # the client's deadline ran out
            "other": sum(
                v
                for k, v in total.items()
                if k not in REFUSALS
                and k not in {"CANCELLED", "OK", "UNAVAILABLE", "DEADLINE_EXCEEDED"}
            ),
            "codes": dict(sorted(total.items())),
            "by_kind": {k: dict(sorted(self.codes[k].items())) for k in sorted(self.codes)},
            "stall_held_s_max": max(self.stall_held_s, default=0.0),
            "stall_held_s_median": (
                statistics.median(self.stall_held_s) if self.stall_held_s else 0.0
            ),
        }


class RateLimit:
    """At most ``rate`` call starts per second, shared by every attacker thread."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def wait(self, stop: threading.Event) -> bool:
        with self.lock:
            now = time.monotonic()
            start = max(self.next, now)
            self.next = start + self.interval
        delay = start - time.monotonic()
        if delay > 0:
            return not stop.wait(delay)
        return not stop.is_set()


class Flood:
    """Rate-bounded bad calls against every live target until ``stop`` (or the call cap)."""

    def __init__(
        self,
        targets: list[Target],
        job_id: str,
        max_round: int,
        certs_dir: Path,
        outsider: TlsFiles,
        rate: float,
        workers: int,
        stalls: int,
        limit_s: float,
    ) -> None:
        self.targets = targets
        self.job_id = job_id
        self.max_round = max_round
        self.certs_dir = certs_dir
        self.outsider = outsider
        self.outsider_id = int(outsider.cert.stem.split("-")[1])
        self.limiter = RateLimit(rate)
        self.max_calls = int(rate * limit_s) + 1  # per thread: a bound, never reached at rate
        self.n_workers, self.n_stalls = workers, stalls
        self.stop = threading.Event()
        self.stats = FloodStats()
        self._channels: dict[tuple[int, int], grpc.Channel] = {}
        self._creds: dict[int, grpc.ChannelCredentials] = {}
        self._stalling: Counter[tuple[int, int]] = Counter()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._rr = itertools.count()
        self._headers = 0

    # -- channels ------------------------------------------------------------------------

    def _tls(self, cert_id: int) -> TlsFiles:
        return self.outsider if cert_id == self.outsider_id else cert_paths(self.certs_dir, cert_id)

    def channel(self, victim: int, port: int, cert_id: int) -> grpc.Channel:
        with self._lock:
            ch = self._channels.get((victim, cert_id))
            if ch is None:
                creds = self._creds.get(cert_id)
                if creds is None:
                    tls = self._tls(cert_id)
                    creds = self._creds[cert_id] = grpc.ssl_channel_credentials(
                        tls.ca.read_bytes(), tls.key.read_bytes(), tls.cert.read_bytes()
                    )
                ch = self._channels[(victim, cert_id)] = grpc.secure_channel(
                    f"{LOOPBACK}:{port}",
                    creds,
                    options=[("grpc.ssl_target_name_override", agent_identity(victim))],
                )
            return ch

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.stats.started = time.monotonic()
        self._threads = [
            threading.Thread(target=self._worker, args=(k,), daemon=True, name=f"flood-{k}")
            for k in range(self.n_workers)
        ]
        self._threads += [
            threading.Thread(target=self._staller, args=(k,), daemon=True, name=f"stall-{k}")
            for k in range(self.n_stalls)
        ]
        for t in self._threads:
            t.start()

    def finish(self) -> dict[str, Any]:
        self.stop.set()
        for t in self._threads:
            t.join(timeout=STALL_S + 5)
        self.stats.ended = time.monotonic()
        with self._lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()
        return self.stats.summary()

    def _next_target(self) -> Target | None:
        live = [t for t in self.targets if t.live]
        return live[next(self._rr) % len(live)] if live else None

    # -- short calls ----------------------------------------------------------------------

    def _worker(self, k: int) -> None:
        kinds = itertools.cycle(
            UNARY_KINDS[k % len(UNARY_KINDS) :] + UNARY_KINDS[: k % len(UNARY_KINDS)]
        )
        for n in range(self.max_calls):
            if not self.limiter.wait(self.stop):
                return
            target = self._next_target()
            if target is None:
                continue  # nobody listening (yet): this start is skipped, not counted
            kind = next(kinds)
            try:
                self._unary(kind, target, n)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
            except ValueError:  # a channel closed under us at the end
                return
            self.stats.record(kind, code)

    def _unary(self, kind: str, t: Target, n: int) -> None:
        job, v, nb = self.job_id, t.victim, t.neighbour
        if kind == "oversized":
            if n % 2:  # the neighbour's own header, as itself: size over the 1 GiB limit
                cert, head = nb, header_chunk(job, nb, v, 4 * MAX_PAYLOAD_BYTES, FAR_SEQ)
            else:  # an outsider announcing 200 MiB: refused when the call opens
                cert, head = self.outsider_id, header_chunk(job, nb, v, 200 * MiB, 0)

            def chunks() -> Iterator[bytes]:
                yield head
                for _ in range(4):  # what the server pulls before refusing is bounded
                    if self.stop.is_set():
                        return
                    yield DATA_CHUNK

            self.channel(v, t.port, cert).stream_unary(SEND_CHUNKS)(chunks(), timeout=CALL_S)
            return
        if kind == "junk":
            cert = (nb, t.stranger, self.outsider_id)[n % 3]
            raw = b"\xff\xfe garbage " + os.urandom(32 + n % 200)
        elif kind == "forged-sender":  # the neighbour's certificate claiming another neighbour
            cert = nb
            raw = envelope(job, 0, "share", t.other_neighbour, v, b"x" * 1000, 0)
        elif kind == "replay":
            stage = ("key", "abort")[n % 2]
            payload = b"replayed" if stage == "key" else b"stop now"
            # seq 0 was consumed once the victim finished an outer; before that the replay
            # comes from the outsider (refused at the call's opening), never as a live seq 0
            cert = nb if t.progressed else self.outsider_id
            raw = envelope(job, -1, stage, nb, v, payload, 0)
        elif kind == "wrong-stage":
            cert, raw = nb, envelope(job, 0, "bogus", nb, v, b"x", FAR_SEQ)
        elif kind == "wrong-round":
            cert, raw = nb, envelope(job, self.max_round + 1000 + n, "share", nb, v, b"x", FAR_SEQ)
        elif kind == "wrong-job":
            cert, raw = nb, envelope("another-job", 0, "share", nb, v, b"x", FAR_SEQ)
        elif kind == "future-seq":
            cert, raw = nb, envelope(job, 0, "share", nb, v, b"x", FAR_SEQ + n)
        else:  # pragma: no cover - the kinds are fixed above
            raise AssertionError(kind)
        self.channel(v, t.port, cert).unary_unary(SEND)(raw, timeout=CALL_S)

    # -- stalled streams -------------------------------------------------------------------

    def _staller(self, k: int) -> None:
        kinds = itertools.cycle(STALL_KINDS[k % 2 :] + STALL_KINDS[: k % 2])
        for _ in range(self.max_calls):
            if not self.limiter.wait(self.stop):
                return
            target = self._next_target()
            if target is None:
                continue
            pair = (target.victim, target.neighbour)
            with self._lock:
                full = self._stalling[pair] >= STALLS_PER_PAIR
                if not full:
                    self._stalling[pair] += 1
            if full:
                continue
            kind = next(kinds)
            try:
                self._stall(kind, target)
            finally:
                with self._lock:
                    self._stalling[pair] -= 1

    def _expected_seq(self, t: Target) -> int:
        """The victim's next sequence number from the neighbour, as a replay's refusal tells
        the neighbour's own certificate (0 before the victim's first outer: no probe then, a
        live seq 0 is never sent in one piece)."""
        if not t.progressed:
            return 0
        code, seq = "OK", 0
        try:
            self.channel(t.victim, t.port, t.neighbour).unary_unary(SEND)(
                envelope(self.job_id, -1, "key", t.neighbour, t.victim, b"replayed", 0),
                timeout=CALL_S,
            )
        except grpc.RpcError as exc:
            code = exc.code().name
            found = re.search(r"expected seq (\d+)", exc.details() or "")
            seq = int(found.group(1)) if found else 0
        self.stats.record("replay", code)
        return seq

    def _stall(self, kind: str, t: Target) -> None:
        ended = threading.Event()
        stop = self.stop
        head = b""
        if kind == "stall-after-header":
            # A header that passes every check (the next sequence number or the one after,
            # unless the real envelope gets there first; the job's last round, never older
            # than the sender's last), 1 MiB of the 8 MiB it announces, then nothing: the
            # server holds the stream until idle_s. It can never complete.
            self._headers += 1
            seq = self._expected_seq(t)
            if t.progressed:
                head = header_chunk(
                    self.job_id,
                    t.neighbour,
                    t.victim,
                    8 * MiB,
                    seq + self._headers % 2,
                    data=bytes(MiB),
                    rnd=self.max_round,
                    stage="share",
                )
            else:
                head = header_chunk(self.job_id, t.neighbour, t.victim, 8 * MiB, 0, data=bytes(MiB))

        def requests() -> Iterator[bytes]:
            if kind == "stall-after-header":
                yield head
            for _ in range(int(STALL_S / 0.5) + 1):  # until the call ends, bounded
                if ended.wait(0.5) or stop.is_set():
                    return

        opened = time.monotonic()
        try:
            self.channel(t.victim, t.port, t.neighbour).stream_unary(SEND_CHUNKS)(
                requests(), timeout=STALL_S
            )
            code = "OK"
        except grpc.RpcError as exc:
            code = exc.code().name
        except ValueError:
            return
        finally:
            ended.set()
        self.stats.record(kind, code, held=time.monotonic() - opened)


# --- measuring the agents ------------------------------------------------------------------


def proc_status(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in kB, or None once the process is gone (or a zombie)."""
    rss = hwm = None
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        return None
    return None if rss is None or hwm is None else (rss, hwm)


def proc_cpu_s(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """Every agent's VmRSS, VmHWM and CPU time, every ``SAMPLE_S`` until ``stop``."""

    def __init__(self, procs: Sequence[subprocess.Popen[bytes]], t0: float) -> None:
        super().__init__(daemon=True, name="sampler")
        self.procs, self.t0 = procs, t0
        n = len(procs)
        self.peak_hwm_kb = [0] * n
        self.cpu_s = [0.0] * n
        self.series: list[list[tuple[float, int]]] = [[] for _ in range(n)]  # (t, VmRSS kB)
        self.done = threading.Event()

    def sample(self) -> None:
        now = time.monotonic() - self.t0
        for i, p in enumerate(self.procs):
            status = proc_status(p.pid)
            if status is None:
                continue
            rss, hwm = status
            self.peak_hwm_kb[i] = max(self.peak_hwm_kb[i], hwm)
            self.series[i].append((now, rss))
            cpu = proc_cpu_s(p.pid)
            if cpu is not None:
                self.cpu_s[i] = cpu

    def run(self) -> None:
        for _ in range(10**7):  # bounded; ends with the job
            self.sample()
            if self.done.wait(SAMPLE_S):
                return

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=10)


class HealthProbe(threading.Thread):
    """A health ``Check`` on one listening target every ``HEALTH_S`` (round robin)."""

    def __init__(self, targets: list[Target], certs_dir: Path) -> None:
        super().__init__(daemon=True, name="health")
        self.targets, self.certs_dir = targets, certs_dir
        self.results: list[tuple[int, str, float]] = []  # (victim, status, seconds)
        self.done = threading.Event()

    def run(self) -> None:
        for n in range(10**7):
            if self.done.wait(HEALTH_S):
                return
            live = [t for t in self.targets if t.live]
            if not live:
                continue
            t = live[n % len(live)]
            started = time.monotonic()
            status = check_health(
                f"{LOOPBACK}:{t.port}",
                t.victim,
                cert_paths(self.certs_dir, t.neighbour),
                timeout=5.0,
            )
            if not t.gone and not t.result.exists():  # from an agent that is still running
                self.results.append((t.victim, status, time.monotonic() - started))

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=15)

    def summary(self) -> dict[str, Any]:
        times = [s for _, _, s in self.results]
        return {
            "checks": len(self.results),
            "not_serving": sum(1 for _, st, _ in self.results if st != "SERVING"),
            "statuses": dict(Counter(st for _, st, _ in self.results)),
            "median_ms": 1000 * statistics.median(times) if times else None,
            "max_ms": 1000 * max(times) if times else None,
        }


def read_metrics(path: Path) -> dict[int, dict[str, Any]]:
    out = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                rec = json.loads(line)
                out[int(rec["outer"])] = rec
    return out


def rounds_per_s(
    per_agent: list[dict[int, dict[str, Any]]], outers: Sequence[int], inner: int
) -> float | None:
    """Rounds over the slowest agent's summed outer wall time, over ``outers``."""
    if not outers or any(any(t not in m for t in outers) for m in per_agent):
        return None
    slowest = max(sum(m[t]["wall_s"] for t in outers) for m in per_agent)
    return inner * len(outers) / slowest if slowest > 0 else None


def log_facts(path: Path) -> dict[str, int]:
    """Retried legitimate sends (after the key exchange), and refusal lines, from agent.log."""
    retried = warned = suppressed = 0
    size = 0
    if path.exists():
        size = path.stat().st_size
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if "retrying in" in line and "round -1" not in line:
                    retried += 1
                elif " WARNING " in line:
                    if "were not logged" in line:
                        with contextlib.suppress(ValueError, IndexError):
                            suppressed += int(line.split(" WARNING ", 1)[1].split()[0])
                    else:
                        warned += 1
    return {
        "retried_sends": retried,
        "warning_lines": warned,
        "unlogged_refusals": suppressed,
        "log_bytes": size,
    }


def rss_quarters(series: list[tuple[float, int]], start: float, end: float) -> list[float]:
    """VmRSS (MiB) at 1/4, 1/2, 3/4 and the end of [start, end] (the last sample before)."""
    out = []
    for q in (0.25, 0.5, 0.75, 1.0):
        at = start + q * (end - start)
        before = [rss for t, rss in series if start <= t <= at]
        if before:
            out.append(before[-1] / 1024)
    return out


def machine_busy_s() -> float:
    """CPU seconds all cores of this machine have been busy since boot (/proc/stat)."""
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def rss_growth_kb(series: list[tuple[float, int]], since: float) -> int | None:
    """RSS at the end of the protocol minus RSS early in it (medians of the first and last
    tenth of the samples from ``since`` on)."""
    s = [rss for t, rss in series if t >= since]
    if len(s) < 10:
        return None
    tenth = max(1, len(s) // 10)
    return int(statistics.median(s[-tenth:]) - statistics.median(s[:tenth]))


# --- one job -------------------------------------------------------------------------------


def run_job(
    name: str,
    out: Path,
    overrides: list[str],
    n_agents: int,
    limit_s: float,
    inner: int,
    flood_args: dict[str, Any] | None,
    victims: list[int] | None,
) -> dict[str, Any]:
    folder = out / name
    job_path = write_local_job(SCENARIO, overrides, n_agents, folder)
    deploy = load_job(job_path)
    job = prepare_job(deploy.scenario)
    graph = job.graph
    certs_dir = folder / "certs"
    print(
        f"[{time.strftime('%H:%M:%S')}] {name}: {n_agents} agents, "
        f"{deploy.scenario.outer_iters} x {inner} rounds, limit {limit_s:.0f} s"
        + (" (under flood)" if flood_args else ""),
        file=sys.stderr,
        flush=True,
    )
    load_before = os.getloadavg()
    cpu_self = resource.getrusage(resource.RUSAGE_SELF)
    cpu_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before = machine_busy_s()
    t0 = time.monotonic()
    procs = launch(job_path, n_agents)
    targets = []
    for i in range(n_agents):
        nbrs = sorted(graph.neighbors(i))
        others = [j for j in range(n_agents) if j != i and j not in nbrs]
        port = int(deploy.agent(i).address.rsplit(":", 1)[1])
        targets.append(
            Target(
                i,
                port,
                nbrs[0],
                nbrs[1] if len(nbrs) > 1 else nbrs[0],
                others[0] if others else nbrs[0],
                procs[i],
                deploy.agent_out(i) / "metrics.jsonl",
                deploy.agent_out(i) / "result.json",
            )
        )
    attacked = targets if victims is None else [targets[i] for i in victims]
    sampler = Sampler(procs, t0)
    watcher = Watcher(targets, t0)
    probe = HealthProbe(attacked, certs_dir)
    flood = None
    if flood_args is not None:
        outsider = issue_cert(certs_dir, n_agents + 7, folder / "attacker")
        flood = Flood(
            attacked,
            job.config.job_id,
            job.config.total_rounds,
            certs_dir,
            outsider,
            limit_s=limit_s,
            **flood_args,
        )
    try:
        sampler.start()
        watcher.start()
        probe.start()
        if flood is not None:
            flood.start()
        waiter: dict[str, list[int]] = {}
        th = threading.Thread(
            target=lambda: waiter.setdefault("codes", wait_all(procs, limit_s)), daemon=True
        )
        th.start()
        th.join(timeout=limit_s + 120)  # wait_all stops the job at limit_s
        codes = waiter.get("codes") or [
            p.returncode if p.returncode is not None else -1 for p in procs
        ]
    finally:
        attack = flood.finish() if flood is not None else None
        probe.stop()
        watcher.stop()
        sampler.stop()
        for p in procs:  # only on an error here: wait_all has already ended them
            if p.poll() is None:
                p.terminate()
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=15)
            if p.poll() is None:
                p.kill()
                p.wait()
    wall = time.monotonic() - t0
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    busy = machine_busy_s() - busy_before
    script_cpu = cpu_after.ru_utime + cpu_after.ru_stime - cpu_self.ru_utime - cpu_self.ru_stime
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    agents_cpu = (
        children_after.ru_utime
        + children_after.ru_stime
        - cpu_children.ru_utime
        - cpu_children.ru_stime
    )
    summary: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        summary = gather(job_path, wall, codes)
    results = []
    for i in range(n_agents):
        path = deploy.agent_out(i) / "result.json"
        try:
            results.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            results.append({"status": "no result.json"})
    per_agent = [read_metrics(deploy.agent_out(i) / "metrics.jsonl") for i in range(n_agents)]
    outer = deploy.scenario.outer_iters
    steady = list(range(1, outer))
    quarters = [steady[q * len(steady) // 4 : (q + 1) * len(steady) // 4] for q in range(4)]
    progressed = [t.progressed_at for t in targets]
    started_all = None if None in progressed else max(p for p in progressed if p is not None)
    ends = [max((t for t, _ in sampler.series[i]), default=0.0) for i in range(n_agents)]
    agents = []
    for i in range(n_agents):
        first = progressed[i] or 0.0
        growth = rss_growth_kb(sampler.series[i], first)
        agents.append(
            {
                "agent": i,
                "degree": len(graph.neighbors(i)),
                "attacked": flood is not None and any(t.victim == i for t in attacked),
                "status": results[i].get("status"),
                "exit_code": codes[i],
                "peak_rss_mib": sampler.peak_hwm_kb[i] / 1024,
                "rss_growth_mib": None if growth is None else growth / 1024,
                "cpu_s": sampler.cpu_s[i],
                "rss_quarters_mib": rss_quarters(sampler.series[i], first, ends[i]),
                **log_facts(deploy.agent_out(i) / "agent.log"),
                "rss_series_mib": [
                    (round(t, 1), round(r / 1024, 1)) for t, r in sampler.series[i][::10]
                ],
            }
        )
    return {
        "name": name,
        "folder": str(folder),
        "overrides": [*overrides, f"n_agents={n_agents}"],
        "outer_iters": outer,
        "inner_iters": inner,
        "rounds": outer * inner,
        "graph_edges": len(graph.edges),
        "min_degree": min(len(graph.neighbors(i)) for i in range(n_agents)),
        "status": summary.get("status")
        or ("completed" if all(r.get("status") == "completed" for r in results) else "failed"),
        "completed_agents": sum(1 for r in results if r.get("status") == "completed"),
        "statuses": {str(i): r.get("status") for i, r in enumerate(results)},
        "exit_codes": codes,
        "limit_s": limit_s,
        "wall_s": wall,
        "startup_s": started_all,  # launch -> every agent has finished outer 0
        "rounds_per_s": rounds_per_s(per_agent, steady, inner),
        "rounds_per_s_quarters": [
            rounds_per_s(per_agent, q, inner) for q in quarters if len(steady) >= 4
        ],
        "rel_error": summary.get("rel_error"),
        "health": probe.summary(),
        "script_cpu_s": script_cpu,
        "agents_cpu_s": agents_cpu,  # exact: the reaped agent processes' rusage
        "other_cpu_s": max(0.0, busy - agents_cpu - script_cpu),  # the rest of the machine
        "machine_cpu_s": busy,
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
        "attack": attack,
        "victims": None if flood is None else [t.victim for t in attacked],
        "agents": agents,
    }


def factors(folder: Path, n_agents: int) -> list[tuple[np.ndarray, np.ndarray] | None]:
    out: list[tuple[np.ndarray, np.ndarray] | None] = []
    for i in range(n_agents):
        path = folder / "agents" / f"agent-{i}" / "factors.npz"
        try:
            with np.load(path, allow_pickle=False) as f:
                out.append((f["W"], f["H"]))
        except (OSError, KeyError, ValueError):
            out.append(None)
    return out


def same_factors(a: Path, b: Path, n_agents: int) -> list[int]:
    """Agents whose W_i and H_i are bit-identical in both jobs."""
    fa, fb = factors(a, n_agents), factors(b, n_agents)
    return [
        i
        for i, (x, y) in enumerate(zip(fa, fb, strict=True))
        if x is not None
        and y is not None
        and np.array_equal(x[0], y[0])
        and np.array_equal(x[1], y[1])
    ]


# --- report --------------------------------------------------------------------------------


def _f(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def _spread(values: list[float], fmt: str = ".0f") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{min(values):{fmt}} / {statistics.median(values):{fmt}} / {max(values):{fmt}}"


def table(report: dict[str, Any]) -> str:
    base, flood = report["phases"]["baseline"], report["phases"]["flood"]
    m, v = report["machine"], report["versions"]
    atk = flood.get("attack") or {}
    n = report["config"]["agents"]
    lines = [
        "# Soak: a 16-agent ppdnmf job over gRPC + mTLS under a flood of bad messages",
        "",
        "Command:",
        "",
        "```",
        report["command"],
        "```",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['platform']}; load average "
        f"{report['load_before'][0]:.2f} before, {report['load_after'][0]:.2f} after. "
        f"Python {m['python']}, " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        f"Job: `{SCENARIO}` with {', '.join('`' + o + '`' for o in base['overrides'])}; "
        f"{base['outer_iters']} outer x {base['inner_iters']} inner = {base['rounds']} rounds "
        f"per job (sized from a {CALIBRATE_OUTER}-outer calibration job at "
        f"{_f(report['calibrate']['rounds_per_s'])} rounds/s to last "
        f"{report['config']['minutes']:g} min); graph: {base['graph_edges']} edges, min degree "
        f"{base['min_degree']}. Agents are separate processes (mTLS on 127.0.0.1), "
        "started the way `cipherfact deploy local` starts them. Flood: "
        f"{report['config']['rate']:g} call starts/s at most ({report['config']['workers']} "
        f"short-call threads, {report['config']['stalls']} stall threads) against agents "
        f"{_victims(flood, n)}, from this script's process on the same cores.",
        "",
        "| | without flood | under flood |",
        "|---|---:|---:|",
        f"| status | {base['status']} ({base['completed_agents']}/{n}) "
        f"| {flood['status']} ({flood['completed_agents']}/{n}) |",
        f"| factors bit-identical to the unattacked job | - "
        f"| {len(report['identical_agents'])}/{n} agents |",
        f"| rounds / s (outer 0 excluded) | {_f(base['rounds_per_s'], '.2f')} "
        f"| {_f(flood['rounds_per_s'], '.2f')} |",
        f"| rounds / s, first / last quarter | {_quarters(base)} | {_quarters(flood)} |",
        f"| wall s (launch to last exit; start-up s) | {base['wall_s']:.0f} "
        f"({_f(base['startup_s'], '.0f')}) | {flood['wall_s']:.0f} "
        f"({_f(flood['startup_s'], '.0f')}) |",
        f"| peak RSS per agent, MiB (min / median / max) "
        f"| {_spread([a['peak_rss_mib'] for a in base['agents']])} "
        f"| {_spread([a['peak_rss_mib'] for a in flood['agents']])} |",
        f"| RSS growth during the protocol per agent, MiB (min / median / max) "
        f"| {_spread([a['rss_growth_mib'] for a in base['agents']], '.1f')} "
        f"| {_spread([a['rss_growth_mib'] for a in flood['agents']], '.1f')} |",
        f"| median RSS per agent at 1/4, 1/2, 3/4, end of the protocol, MiB "
        f"| {_rss_quarters(base)} | {_rss_quarters(flood)} |",
        f"| CPU s: all agents / this script / other processes on the machine "
        f"| {_cpu(base)} | {_cpu(flood)} |",
        f"| health Check ms, median / max (not SERVING) | {_health(base)} | {_health(flood)} |",
        f"| legitimate sends retried (agent logs, after the key exchange) "
        f"| {sum(a['retried_sends'] for a in base['agents'])} "
        f"| {sum(a['retried_sends'] for a in flood['agents'])} |",
        f"| refusal lines logged / suppressed by the rate limit "
        f"| {sum(a['warning_lines'] for a in base['agents'])} / "
        f"{sum(a['unlogged_refusals'] for a in base['agents'])} "
        f"| {sum(a['warning_lines'] for a in flood['agents'])} / "
        f"{sum(a['unlogged_refusals'] for a in flood['agents'])} |",
        f"| attack calls (achieved rate while the agents listened) | - "
        f"| {atk.get('calls', 0):,} ({atk.get('rate_per_s', 0):.0f}/s over "
        f"{atk.get('window_s', 0):.0f} s) |",
        f"| refused with an error status | - | {atk.get('refused', 0):,} |",
        f"| stalled streams cut off by the server (CANCELLED) | - | {atk.get('cut_off', 0):,} |",
        f"| **accepted (OK)** | - | **{atk.get('accepted', 0):,}** |",
        f"| unavailable (agent not yet up or already done) / unanswered (client deadline) / "
        f"other | - | {atk.get('unavailable', 0):,} / {atk.get('unanswered', 0):,} / "
        f"{atk.get('other', 0):,} |",
        "",
        "Attack calls by kind (status codes as the attacker saw them):",
        "",
        "| kind | calls | status codes |",
        "|---|---:|---|",
    ]
    for kind, codes in (atk.get("by_kind") or {}).items():
        total = sum(codes.values())
        lines.append(
            f"| {kind} | {total:,} | "
            + ", ".join(f"{c} {k:,}" for c, k in sorted(codes.items(), key=lambda x: -x[1]))
            + " |"
        )
    if atk:
        lines.append(
            f"\nStalled streams were held {atk['stall_held_s_median']:.1f} s "
            f"(median), {atk['stall_held_s_max']:.1f} s at most."
        )
    lines += [
        "",
        "Per agent (without flood -> under flood):",
        "",
        "| agent | degree | attacked | peak RSS MiB | RSS growth MiB | CPU s | retried sends "
        "| refusal lines (+ suppressed) | log KiB |",
        "|---:|---:|:---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a, b in zip(base["agents"], flood["agents"], strict=True):
        lines.append(
            f"| {a['agent']} | {a['degree']} | {'yes' if b['attacked'] else 'no'} "
            f"| {a['peak_rss_mib']:.0f} -> {b['peak_rss_mib']:.0f} "
            f"| {_f(a['rss_growth_mib'])} -> {_f(b['rss_growth_mib'])} "
            f"| {a['cpu_s']:.0f} -> {b['cpu_s']:.0f} "
            f"| {a['retried_sends']} -> {b['retried_sends']} "
            f"| {b['warning_lines']} (+{b['unlogged_refusals']}) "
            f"| {a['log_bytes'] / 1024:.0f} -> {b['log_bytes'] / 1024:.0f} |"
        )
    bad = {k: s for k, s in flood["statuses"].items() if s != "completed"}
    if bad or base["status"] != "completed":
        lines += [
            "",
            "Agents that did not complete: "
            + json.dumps(
                {
                    "baseline": {k: s for k, s in base["statuses"].items() if s != "completed"},
                    "flood": bad,
                }
            ),
        ]
    return "\n".join(lines)


def _victims(flood: dict[str, Any], n: int) -> str:
    v = flood.get("victims") or []
    return f"all {n}" if len(v) == n else ", ".join(map(str, v))


def _quarters(phase: dict[str, Any]) -> str:
    q = phase["rounds_per_s_quarters"]
    return f"{_f(q[0], '.2f')} / {_f(q[-1], '.2f')}" if q else "-"


def _rss_quarters(phase: dict[str, Any]) -> str:
    cols = [a["rss_quarters_mib"] for a in phase["agents"] if len(a["rss_quarters_mib"]) == 4]
    if not cols:
        return "-"
    return " / ".join(f"{statistics.median(c[q] for c in cols):.0f}" for q in range(4))


def _cpu(phase: dict[str, Any]) -> str:
    return f"{phase['agents_cpu_s']:.0f} / {phase['script_cpu_s']:.0f} / {phase['other_cpu_s']:.0f}"


def _health(phase: dict[str, Any]) -> str:
    h = phase["health"]
    text = (
        f"{_f(h['median_ms'], '.0f')} / {_f(h['max_ms'], '.0f')} ({h['not_serving']} "
        f"of {h['checks']})"
    )
    odd = {k: v for k, v in h.get("statuses", {}).items() if k != "SERVING"}
    return text + (" " + ", ".join(f"{k} x{v}" for k, v in odd.items()) if odd else "")


def versions() -> dict[str, str]:
    out = dict(package_versions())
    for name in ("grpcio", "protobuf", "cryptography"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=30.0,
        help="how long each job runs (at the unattacked speed); default 30",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/soak"))
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--inner", type=int, default=10, help="inner iterations per outer")
    parser.add_argument(
        "--rate",
        type=float,
        default=150.0,
        help="attack call starts per second at most (<= 500); default 150",
    )
    parser.add_argument("--workers", type=int, default=12, help="short-call attacker threads")
    parser.add_argument("--stalls", type=int, default=4, help="stalled-stream threads")
    parser.add_argument(
        "--victims", default="all", help="agents to attack: 'all' or a comma list (default all)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="more scenario overrides"
    )
    parser.add_argument(
        "--table-only", action="store_true", help="print the table of an earlier run in --out"
    )
    args = parser.parse_args(argv)
    if args.table_only:
        report = json.loads((args.out / "soak.json").read_text(encoding="utf-8"))
        print(table(report))
        return 0
    if not 0 < args.rate <= 500:
        parser.error("--rate must be in (0, 500]")
    if not 0 < args.minutes <= 24 * 60 or args.agents < 3 or args.inner < 1:
        parser.error("--minutes in (0, 1440], --agents >= 3, --inner >= 1")
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out} is not empty (each run needs a fresh folder)")
    victims = (
        None
        if args.victims == "all"
        else sorted({int(x) for x in args.victims.split(",") if x.strip()})
    )
    if victims is not None and (not victims or not all(0 <= i < args.agents for i in victims)):
        parser.error(f"--victims: agent ids in 0..{args.agents - 1}")
    args.out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(
        ["python", "benchmarks/soak.py", *(argv if argv is not None else sys.argv[1:])]
    )
    base = [
        "crypto.scheme=none",
        "topology.min_degree=2",
        "data.rows=30",
        "data.cols=320",
        "rank=5",
        f"inner_iters={args.inner}",
        *args.set,
    ]
    load_before = os.getloadavg()
    started = time.monotonic()

    cal = run_job(
        "calibrate",
        args.out,
        [*base, f"outer_iters={CALIBRATE_OUTER}"],
        args.agents,
        limit_s=900,
        inner=args.inner,
        flood_args=None,
        victims=None,
    )
    rate = cal["rounds_per_s"]
    if cal["status"] != "completed" or not rate:
        print(f"calibration job failed: {cal['status']}", file=sys.stderr)
        return 1
    seconds = args.minutes * 60
    outer = max(8, math.ceil(seconds * rate / args.inner))
    startup = cal["startup_s"] or cal["wall_s"]
    limit = 2 * startup + 60 + max(4 * seconds, seconds + 300)
    overrides = [*base, f"outer_iters={outer}"]
    phases = {}
    phases["baseline"] = run_job(
        "baseline", args.out, overrides, args.agents, limit, args.inner, None, victims
    )
    flood_args = {"rate": args.rate, "workers": args.workers, "stalls": args.stalls}
    phases["flood"] = run_job(
        "flood", args.out, overrides, args.agents, limit, args.inner, flood_args, victims
    )
    identical = same_factors(args.out / "baseline", args.out / "flood", args.agents)
    report = {
        "command": command,
        "machine": {**machine_info(), "node": platform.node()},
        "versions": versions(),
        "config": {
            "agents": args.agents,
            "minutes": args.minutes,
            "inner": args.inner,
            "outer": outer,
            "rate": args.rate,
            "workers": args.workers,
            "stalls": args.stalls,
            "victims": victims or "all",
            "scenario": SCENARIO,
            "overrides": overrides,
        },
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
        "total_wall_s": time.monotonic() - started,
        "calibrate": {
            k: cal[k] for k in ("status", "rounds_per_s", "startup_s", "wall_s", "outer_iters")
        },
        "phases": phases,
        "identical_agents": identical,
        "all_completed_identical": (
            phases["baseline"]["status"] == "completed"
            and phases["flood"]["status"] == "completed"
            and len(identical) == args.agents
        ),
    }
    (args.out / "soak.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    text = table(report)
    (args.out / "soak.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return (
        0
        if report["all_completed_identical"]
        and not (phases["flood"]["attack"] or {}).get("accepted")
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
