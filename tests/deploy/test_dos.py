"""Denial of service by holders of a job certificate (issue 16), and clear startup errors.

Each attack runs against agent 0 of a small plain ppdnmf job (4 agents on a
ring, ``crypto.scheme=none``, pairwise exchange), whose agents run as nodes in this process, so
that agent 0's memory (this process's RSS) and its log (caplog) can be
watched. The attack starts once agent 0 is listening and before its
neighbours start, so the whole job runs under it. Each test checks that the
job completes with the factors of an unattacked run, that this process's RSS
stays within ``RSS_BOUND`` of what it was before the attack, that agent 0's
health ``Check`` answers within 1 s throughout, and that the attacker's
certificate identity is in agent 0's log.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cipherfact.agents.envelope import Envelope
from cipherfact.deploy import envelope_v1_pb2 as pb
from cipherfact.deploy import health_v1_pb2 as health_pb
from cipherfact.deploy import servicer as servicer_module
from cipherfact.deploy.jobfile import load_job
from cipherfact.deploy.local import agent_command, free_ports, write_local_job
from cipherfact.deploy.nodes import make_node
from cipherfact.deploy.servicer import ReassemblyBudget, ServerLimits
from cipherfact.deploy.tls import TlsFiles, agent_identity, cert_paths, make_agent_cert
from cipherfact.deploy.transport import GrpcTransport, StartupError, check_health
from cipherfact.deploy.wire import to_proto
from cipherfact.protocols.ppdnmf.job import prepare_job, run_inmemory
from cipherfact.simulations.scenario import load_scenario

from .conftest import FAST_RETRY, JOB, STAGES

pytestmark = pytest.mark.grpc

N = 4
SCENARIO = "ppdnmf-synthetic"
# The pairwise exchange: secagg's setup fails when a share overtakes a peer list on another
# edge ("share for round 0 before the setup finished"), which any delayed message can cause,
# attack or not, so it cannot tell an attack's harm from that race.
OVERRIDES = [
    f"n_agents={N}",
    "outer_iters=30",
    "inner_iters=3",
    "data.rows=12",
    "data.cols=40",
    "crypto.scheme=none",
    "topology.kind=ring",
    "exchange=pairwise",
]
VICTIM = 0  # on the ring, agent 0's neighbours are 1 and 3
MiB = 1 << 20
RSS_BOUND = 100 * MiB  # growth of this process's RSS while attacked (unbounded: > 800 MB)
HEALTH_S = 1.0
SEND = "/cipherfact.deploy.v1.AgentLink/Send"
SEND_CHUNKS = "/cipherfact.deploy.v1.AgentLink/SendChunks"
WATCH = "/grpc.health.v1.Health/Watch"
DATA_CHUNK = pb.EnvelopeChunk(data=bytes(MiB)).SerializeToString()


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def dial(port: int, tls: TlsFiles, server: int = VICTIM) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        tls.ca.read_bytes(), tls.key.read_bytes(), tls.cert.read_bytes()
    )
    return grpc.secure_channel(
        f"127.0.0.1:{port}",
        creds,
        options=[("grpc.ssl_target_name_override", agent_identity(server))],
    )


def header_chunk(
    job_id: str, sender: int, total: int, *, seq: int = 0, receiver: int = VICTIM
) -> bytes:
    env = Envelope(job_id, -1, "key", sender, receiver, b"")
    return pb.EnvelopeChunk(
        header=to_proto(env, seq, with_payload=False), total_size=total
    ).SerializeToString()


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
    return files


@dataclass
class Attack:
    """What an attack gets to work with, and what it reports back."""

    port: int
    job_id: str
    outsider: TlsFiles  # agent-7: signed by the job CA, not in the job
    neighbour: TlsFiles  # agent-3's own files: a neighbour of agent 0
    stranger: TlsFiles  # agent-2's own files: in the job, not a neighbour of agent 0
    done: threading.Event  # the job finished
    codes: list[grpc.StatusCode] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, exc: grpc.RpcError) -> None:
        with self.lock:
            self.codes.append(exc.code())


@dataclass
class Outcome:
    results: dict[int, Any]
    factors: list[tuple[np.ndarray, np.ndarray]]
    rss_growth: int
    health: list[tuple[str, float]]
    attack: Attack
    wall_s: float


def run_job(
    tmp_path: Path, attack: Callable[[Attack], None] | None, timeout: float = 45.0
) -> Outcome:
    """The job's nodes in threads; ``attack`` runs in its own thread from when agent 0 listens."""
    job_path = write_local_job(SCENARIO, OVERRIDES, N, tmp_path, timeouts={"peer_s": 30})
    deploy = load_job(job_path)
    nodes = [make_node(deploy, i) for i in range(N)]
    results: dict[int, Any] = {}

    def run(i: int) -> None:
        try:
            results[i] = nodes[i].run()
        except Exception as exc:  # reported by the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(N)]
    started = time.monotonic()
    threads[VICTIM].start()

    def listening() -> bool:
        t = nodes[VICTIM].transport
        return t is not None and bool(t.port)

    while not listening() and VICTIM not in results and time.monotonic() - started < 20:
        time.sleep(0.01)
    victim = nodes[VICTIM].transport
    assert victim is not None and victim.port, results
    certs = tmp_path / "certs"
    ctx = Attack(
        victim.port,
        nodes[VICTIM].job_id,
        issue_cert(certs, 7, tmp_path / "attacker"),
        cert_paths(certs, 3),
        cert_paths(certs, 2),
        threading.Event(),
    )
    address = f"127.0.0.1:{victim.port}"
    baseline = rss()
    peak = [baseline]
    health: list[tuple[str, float]] = []
    watching = threading.Event()

    def monitor() -> None:
        while not watching.is_set():
            peak[0] = max(peak[0], rss())
            t0 = time.monotonic()
            status = check_health(address, VICTIM, cert_paths(certs, 1), timeout=5.0)
            victim_role = nodes[VICTIM].role
            if VICTIM in results or (victim_role is not None and victim_role.done):
                break  # agent 0 finished: its server may be gone
            health.append((status, time.monotonic() - t0))
            peak[0] = max(peak[0], rss())
            watching.wait(0.05)

    helpers = [threading.Thread(target=monitor, daemon=True)]
    if attack is not None:
        helpers.append(threading.Thread(target=attack, args=(ctx,), daemon=True))
    for h in helpers:
        h.start()
    time.sleep(0.3)  # the attack is under way before the neighbours start
    for i, t in enumerate(threads):
        if i != VICTIM:
            t.start()
    for t in threads:
        t.join(timeout=max(0.1, timeout - (time.monotonic() - started)))
    wall = time.monotonic() - started
    ctx.done.set()
    for h in helpers[1:]:
        h.join(timeout=20)
    watching.set()
    helpers[0].join(timeout=10)
    assert not any(t.is_alive() for t in threads), "the job did not finish"
    factors = [(nodes[i].role.W, nodes[i].role.H) for i in range(N)]
    return Outcome(results, factors, peak[0] - baseline, health, ctx, wall)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[np.ndarray, np.ndarray]]:
    """Factors of an unattacked deployed run (which equal the in-memory simulation's)."""
    out = run_job(tmp_path_factory.mktemp("unattacked"), None)
    assert all(r["status"] == "completed" for r in out.results.values()), out.results
    *_, last = run_inmemory(prepare_job(load_scenario(SCENARIO, OVERRIDES)))
    for i, (W, H) in enumerate(out.factors):
        assert np.array_equal(W, last.Ws[i]) and np.array_equal(H, last.Hs[i])
    return out.factors


def check_outcome(out: Outcome, reference: list[tuple[np.ndarray, np.ndarray]]) -> None:
    statuses = {i: (r if isinstance(r, Exception) else r["status"]) for i, r in out.results.items()}
    assert all(s == "completed" for s in statuses.values()), statuses
    for i, ((W, H), (W0, H0)) in enumerate(zip(out.factors, reference, strict=True)):
        assert np.array_equal(W, W0) and np.array_equal(H, H0), f"agent {i}'s factors differ"
    assert out.rss_growth < RSS_BOUND, f"RSS grew by {out.rss_growth / MiB:.0f} MiB"
    assert out.health, "no health check ran"
    bad = [(k, s, t) for k, (s, t) in enumerate(out.health) if s != "SERVING"]
    assert not bad, (bad, len(out.health))
    slowest = max(t for _, t in out.health)
    assert slowest < HEALTH_S, f"a health Check took {slowest:.2f} s"


def logged(caplog: pytest.LogCaptureFixture, *patterns: str) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    return [ln for ln in lines if all(re.search(p, ln) for p in patterns)]


def run_threads(n: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(k,), daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)


# --- the four attacks, each during a live job ----------------------------------------------


def test_big_streams_from_a_certificate_that_may_not_send_are_never_buffered(
    tmp_path: Path,
    reference: list[tuple[np.ndarray, np.ndarray]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """(a) 4 x 200 MB SendChunks streams: agent-3 claiming agent 1, agent-7 (not in the job)."""
    caplog.set_level(logging.WARNING, logger="cipherfact.deploy")
    size = 200 * MiB
    pushed: list[int] = []

    def attack(ctx: Attack) -> None:
        def stream(k: int) -> None:
            tls = ctx.neighbour if k % 2 else ctx.outsider
            channel = dial(ctx.port, tls)
            call = channel.stream_unary(SEND_CHUNKS)
            try:
                for _ in range(3):  # bounded; keeps at it while the job runs
                    sent = [0]

                    def chunks(sent: list[int] = sent) -> Iterator[bytes]:
                        yield header_chunk(ctx.job_id, sender=1, total=size)
                        for _ in range(size // MiB):
                            sent[0] += MiB
                            yield DATA_CHUNK

                    try:
                        call(chunks(), timeout=30)
                    except grpc.RpcError as exc:
                        ctx.record(exc)
                    with ctx.lock:
                        pushed.append(sent[0])
                    if ctx.done.wait(0.2):
                        break
            finally:
                channel.close()

        run_threads(4, stream)

    out = run_job(tmp_path, attack)
    check_outcome(out, reference)
    assert out.attack.codes and set(out.attack.codes) == {grpc.StatusCode.PERMISSION_DENIED}
    # Refused on the first chunk: what gRPC pulled from the attacker's generator before the
    # refusal is a few flow-control windows, never the 200 MB.
    assert max(pushed) < 32 * MiB, f"the server read {max(pushed) / MiB:.0f} MiB of a stream"
    assert logged(caplog, "refused SendChunks", r"CN=agent-7", "not a neighbour")
    assert logged(caplog, "refused SendChunks", r"CN=agent-3", "may not send as agent 1")


def test_stalled_streams_do_not_stall_the_job(
    tmp_path: Path,
    reference: list[tuple[np.ndarray, np.ndarray]],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(b) 4 SendChunks streams that send a header and stall, reopened when cancelled: two
    on agent 3's own certificate with a header that passes every check (cancelled when
    idle), two on agent-7's (refused when they open). Agent 3 itself keeps free slots; for
    stalls that take all of a certificate's slots, see the next test but one."""
    caplog.set_level(logging.WARNING, logger="cipherfact.deploy")
    monkeypatch.setattr(servicer_module, "DEFAULT_LIMITS", ServerLimits(idle_s=1.0))
    opened = [0]

    def attack(ctx: Attack) -> None:
        def stream(k: int) -> None:
            tls = ctx.neighbour if k % 2 else ctx.outsider
            channel = dial(ctx.port, tls)
            call = channel.stream_unary(SEND_CHUNKS)
            try:
                for _ in range(8):  # reopen when cancelled, a bounded number of times

                    def stall() -> Iterator[bytes]:
                        yield header_chunk(ctx.job_id, sender=3, total=8 * MiB)
                        ctx.done.wait(30)

                    with ctx.lock:
                        opened[0] += 1
                    try:
                        call(stall(), timeout=30)
                    except grpc.RpcError as exc:
                        ctx.record(exc)
                    if ctx.done.wait(0.1):
                        break
            finally:
                channel.close()

        run_threads(4, stream)

    out = run_job(tmp_path, attack)
    check_outcome(out, reference)
    assert opened[0] > 4
    assert grpc.StatusCode.PERMISSION_DENIED in out.attack.codes  # agent-7, at once
    assert logged(caplog, "refused SendChunks", r"CN=agent-7", "not a neighbour")
    # agent 3's header passes until agent 3 itself has sent seq 0; its stall is then
    # cancelled after idle_s, or refused at the header as a replay.
    assert logged(
        caplog, r"(cancelled|refused) SendChunks", r"CN=agent-3", "stalled|replayed envelope"
    )


def test_many_watch_streams_leave_health_check_answering(
    tmp_path: Path,
    reference: list[tuple[np.ndarray, np.ndarray]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """(c) 12 open Health.Watch streams from two certificates: capped, Check still answers."""
    caplog.set_level(logging.WARNING, logger="cipherfact.deploy")

    def attack(ctx: Attack) -> None:
        channels = [dial(ctx.port, tls) for tls in (ctx.outsider, ctx.neighbour)]
        calls = []
        first: list[Any] = []
        for k in range(12):
            watch = channels[k % 2].unary_stream(
                WATCH,
                request_serializer=health_pb.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb.HealthCheckResponse.FromString,
            )
            calls.append(watch(health_pb.HealthCheckRequest(service=""), timeout=30))

        def consume(k: int) -> None:
            try:
                for reply in calls[k]:
                    with ctx.lock:
                        first.append(reply.status)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.CANCELLED:
                    ctx.record(exc)

        readers = [threading.Thread(target=consume, args=(k,), daemon=True) for k in range(12)]
        for r in readers:
            r.start()
        ctx.done.wait(40)
        ctx.notes["serving_watches"] = first.count(health_pb.HealthCheckResponse.SERVING)
        for c in calls:
            c.cancel()
        for r in readers:
            r.join(timeout=5)
        for ch in channels:
            ch.close()

    out = run_job(tmp_path, attack)
    check_outcome(out, reference)
    # Two Watch streams per certificate; the other eight refused at once.
    assert out.attack.notes["serving_watches"] == 4
    assert out.attack.codes == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 8
    assert logged(caplog, "refused Watch", r"CN=agent-7", "too many calls")
    assert logged(caplog, "refused Watch", r"CN=agent-3", "too many calls")


def test_flood_of_junk_envelopes_from_valid_certificates(
    tmp_path: Path,
    reference: list[tuple[np.ndarray, np.ndarray]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """(d) Garbage, forged and out-of-sequence envelopes from agent-2 (not a neighbour),
    agent-3 (a neighbour) and agent-7 (not in the job), 1200 calls in all."""
    caplog.set_level(logging.WARNING, logger="cipherfact.deploy")
    per_thread = 200

    def attack(ctx: Attack) -> None:
        def flood(k: int) -> None:
            tls = (ctx.stranger, ctx.neighbour, ctx.outsider)[k % 3]
            channel = dial(ctx.port, tls)
            send = channel.unary_unary(SEND)
            junk = [
                b"\xff\xfe garbage",
                to_proto(
                    Envelope(ctx.job_id, 0, "offer", 1, VICTIM, b"x" * 1000), 0
                ).SerializeToString(),  # forged sender
                to_proto(
                    Envelope(ctx.job_id, 5, "offer", 3, VICTIM, b"x"), 10_000
                ).SerializeToString(),  # out of sequence
            ]
            try:
                for n in range(per_thread):
                    try:
                        send(junk[n % 3], timeout=10)
                    except grpc.RpcError as exc:
                        ctx.record(exc)
            finally:
                channel.close()

        run_threads(6, flood)

    out = run_job(tmp_path, attack)
    check_outcome(out, reference)
    assert len(out.attack.codes) == 6 * per_thread  # every junk call refused
    assert grpc.StatusCode.OK not in out.attack.codes
    for cn in ("agent-2", "agent-3", "agent-7"):
        lines = logged(caplog, "refused Send from", f"CN={cn}")
        assert lines, cn
        # rate-limited: a few lines per caller per window, not one per junk call
        assert len(lines) <= 3 * servicer_module.DEFAULT_LIMITS.log_burst, (cn, len(lines))
    # The sequence state of agent 3's edge goes only to agent 3's certificate holder.
    assert logged(caplog, "CN=agent-3", "out-of-order envelope seq 10000", "expected seq")


# --- limits, one at a time ----------------------------------------------------------------


def test_reassembly_budget_is_per_process_and_refuses_before_buffering(
    make_transport: Callable[..., GrpcTransport],
    certs: list[TlsFiles],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two agents share one 3 MiB budget: a 2 MiB stream held open on agent 0 leaves no
    room for a 2 MiB stream to agent 1; a 1 MiB one still fits; the first goes on."""
    caplog.set_level(logging.WARNING, logger="cipherfact.deploy")
    budget = ReassemblyBudget(3 * MiB)
    limits = ServerLimits(budget_wait_s=0.3)
    a = make_transport(0, budget=budget, limits=limits)
    b = make_transport(1, budget=budget, limits=limits)
    release = threading.Event()
    errors: list[grpc.RpcError] = []

    def held() -> Iterator[bytes]:
        yield header_chunk(JOB, sender=2, total=2 * MiB)
        yield DATA_CHUNK
        release.wait(10)
        yield DATA_CHUNK

    def send_held() -> None:
        with dial(a.port, certs[2], server=0) as ch:
            ch.stream_unary(SEND_CHUNKS)(held(), timeout=15)

    holder = threading.Thread(target=send_held, daemon=True)
    holder.start()
    deadline = time.monotonic() + 5
    while budget.used < 2 * MiB and time.monotonic() < deadline:
        time.sleep(0.01)
    assert budget.used == 2 * MiB
    with dial(b.port, certs[2], server=1) as ch:
        call = ch.stream_unary(SEND_CHUNKS)
        with pytest.raises(grpc.RpcError) as info:
            call(iter([header_chunk(JOB, sender=2, total=2 * MiB, receiver=1)]), timeout=5)
        errors.append(info.value)
        fits = call(
            iter([header_chunk(JOB, sender=2, total=MiB, receiver=1), DATA_CHUNK]), timeout=5
        )
    assert pb.Ack.FromString(fits).seq == 0
    assert errors[0].code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "no room to reassemble" in (errors[0].details() or "")
    assert logged(caplog, "refused SendChunks", "CN=agent-2", "reassembly budget full")
    release.set()
    holder.join(timeout=10)
    assert budget.used == 0


def test_a_legitimate_peer_gets_through_while_its_certificate_is_abused(
    make_transport: Callable[..., GrpcTransport],
    certs: list[TlsFiles],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """(b), worst case: four streams stalled on agent 2's own certificate hold all its
    slots; agent 2's own large send still goes through (an idle stream yields its slot to a
    newer call), and the stalls are logged."""
    caplog.set_level(logging.WARNING, logger="cipherfact.deploy")
    limits = ServerLimits(evict_idle_s=0.3)
    server = make_transport(0, limits=limits)
    peer = make_transport(2, limits=limits)
    stop = threading.Event()

    def stall() -> Iterator[bytes]:
        stop.wait(10)
        yield b""

    channel = dial(server.port, certs[2])
    calls = [channel.stream_unary(SEND_CHUNKS).future(stall(), timeout=15) for _ in range(4)]
    deadline = time.monotonic() + 5
    while server.guard.active() < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.guard.active() == 4
    payload = bytes(range(256)) * (3 * 4096)  # 3 MiB: a chunked send
    peer.send(Envelope(JOB, -1, "key", 2, 0, payload))
    [env] = server.recv(0, timeout=5)
    assert env.payload == payload
    stop.set()
    assert any(
        c.exception() is not None and c.exception().code() == grpc.StatusCode.CANCELLED
        for c in calls
    )
    channel.close()
    assert logged(caplog, "cancelled SendChunks", "CN=agent-2", "its slot went to")


def test_stalled_streams_are_cancelled_and_their_budget_returned(
    make_transport: Callable[..., GrpcTransport],
    certs: list[TlsFiles],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stream that stops between chunks is cancelled after ``idle_s``, one that never sends
    its header after ``first_message_s``; both callers are logged; the budget is returned."""
    caplog.set_level(logging.WARNING, logger="cipherfact.deploy")
    budget = ReassemblyBudget(64 * MiB)
    server = make_transport(0, budget=budget, limits=ServerLimits(idle_s=0.5, first_message_s=0.5))
    stop = threading.Event()

    def after_header() -> Iterator[bytes]:
        yield header_chunk(JOB, sender=1, total=4 * MiB)
        yield DATA_CHUNK
        stop.wait(10)

    def nothing() -> Iterator[bytes]:
        stop.wait(10)
        yield b""

    started = time.monotonic()
    with dial(server.port, certs[1]) as ch1, dial(server.port, certs[2]) as ch2:
        calls = [
            ch1.stream_unary(SEND_CHUNKS).future(after_header(), timeout=10),
            ch2.stream_unary(SEND_CHUNKS).future(nothing(), timeout=10),
        ]
        codes = [c.exception().code() for c in calls]
    stop.set()
    assert codes == [grpc.StatusCode.CANCELLED] * 2
    assert time.monotonic() - started < 3
    # the client sees CANCELLED as the server starts unwinding the handler: its slot
    # and budget come back a moment later (under load, not always before this line)
    deadline = time.monotonic() + 5
    while (budget.used or server.guard.active()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert budget.used == 0 and server.guard.active() == 0
    assert logged(caplog, "cancelled SendChunks", "CN=agent-1", r"stalled: no chunk for")
    assert logged(caplog, "cancelled SendChunks", "CN=agent-2", "no request within 0.5 s")
    assert server.recv(0, timeout=0.1) == []


def test_sequence_state_is_not_told_to_another_certificate(
    make_transport: Callable[..., GrpcTransport],
    certs: list[TlsFiles],
) -> None:
    server = make_transport(0)
    forged = to_proto(Envelope(JOB, -1, "key", 1, 0, b"pk"), 5).SerializeToString()
    with dial(server.port, certs[2]) as ch, pytest.raises(grpc.RpcError) as info:
        ch.unary_unary(SEND)(forged, timeout=5)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "seq" not in (info.value.details() or "")
    with dial(server.port, certs[1]) as ch, pytest.raises(grpc.RpcError) as info:
        ch.unary_unary(SEND)(forged, timeout=5)
    assert "expected seq 0" in (info.value.details() or "")


def test_without_tls_sequence_state_stays_in_the_log(
    make_transport: Callable[..., GrpcTransport],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="cipherfact.deploy")
    server = make_transport(0, tls=False)
    forged = to_proto(Envelope(JOB, -1, "key", 1, 0, b"pk"), 5).SerializeToString()
    with (
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch,
        pytest.raises(grpc.RpcError) as info,
    ):
        ch.unary_unary(SEND)(forged, timeout=5)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "out-of-order envelope seq 5" in (info.value.details() or "")
    assert "expected" not in (info.value.details() or "")
    assert logged(caplog, "unauthenticated peer", "expected seq 0")


# --- startup errors: one clear line each ---------------------------------------------------


def transport(listen: str, tls: TlsFiles | None, agent_id: int = 0) -> GrpcTransport:
    peers = {j: f"127.0.0.1:{p}" for j, p in zip((1, 2), free_ports(2), strict=True)}
    return GrpcTransport(
        agent_id,
        JOB,
        listen,
        {j: a for j, a in peers.items() if j != agent_id},
        tls,
        stages=STAGES,
        max_round=10,
        retry=FAST_RETRY,
    )


def start_error(t: GrpcTransport) -> str:
    try:
        with pytest.raises(StartupError) as info:
            t.start()
    finally:
        t.close(grace=0)
    message = str(info.value)
    assert "\n" not in message and "Failed to bind" not in message
    return message


def test_port_in_use_is_named(certs: list[TlsFiles]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        message = start_error(transport(f"127.0.0.1:{port}", certs[0]))
    assert re.fullmatch(
        rf"agent 0 cannot start: cannot listen on '127\.0\.0\.1:{port}': port "
        rf"{port} is already in use \(another process, or this agent started "
        r"twice\?\)",
        message,
    ), message


def test_the_same_agent_started_twice_fails_instead_of_sharing_the_port(
    certs: list[TlsFiles],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_ports(1)[0]
    first = transport(f"127.0.0.1:{port}", certs[0])
    first.start()
    try:
        assert "already in use" in start_error(transport(f"127.0.0.1:{port}", certs[0]))
        # Without the check, gRPC itself refuses: SO_REUSEPORT is off.
        monkeypatch.setattr("cipherfact.deploy.transport.check_listen_address", lambda _: None)
        assert "gRPC could not bind" in start_error(transport(f"127.0.0.1:{port}", certs[0]))
    finally:
        first.close(grace=0)


@pytest.mark.parametrize(
    "case",
    [
        "garbage certificate",
        "garbage key",
        "cert/key mismatch",
        "missing CA",
        "another agent's certificate",
        "certificate of another CA",
    ],
)
def test_bad_tls_files_are_named(
    case: str, certs: list[TlsFiles], other_ca_certs: list[TlsFiles], tmp_path: Path
) -> None:
    own = certs[0]
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    files, expected = {
        "garbage certificate": (
            TlsFiles(own.ca, garbage, own.key),
            rf"TLS certificate file '{garbage}' is not a PEM certificate",
        ),
        "garbage key": (
            TlsFiles(own.ca, own.cert, garbage),
            rf"TLS key file '{garbage}' is not a PEM private key",
        ),
        "cert/key mismatch": (
            TlsFiles(own.ca, own.cert, certs[1].key),
            rf"TLS certificate '{own.cert}' and key '{certs[1].key}' do not "
            r"match",
        ),
        "missing CA": (
            TlsFiles(tmp_path / "nope.pem", own.cert, own.key),
            rf"TLS CA certificate file '{tmp_path / 'nope.pem'}' does not exist",
        ),
        "another agent's certificate": (certs[1], r"names \['agent-1'\], not 'agent-0'"),
        "certificate of another CA": (
            TlsFiles(own.ca, other_ca_certs[0].cert, other_ca_certs[0].key),
            r"is not issued by the CA in",
        ),
    }[case]
    message = start_error(transport(f"127.0.0.1:{free_ports(1)[0]}", files))
    assert message.startswith("agent 0 cannot start: ")
    assert re.search(expected, message), message


def test_unresolvable_and_foreign_hosts_are_named(
    certs: list[TlsFiles], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "agent-zero.invalid":  # answered here: no name server is asked
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr("cipherfact.deploy.transport.socket.getaddrinfo", resolve)
    message = start_error(transport("agent-zero.invalid:50051", certs[0]))
    assert message == (
        "agent 0 cannot start: cannot listen on 'agent-zero.invalid:50051': "
        "cannot resolve host 'agent-zero.invalid' (Name or service not known)"
    )
    port = free_ports(1)[0]
    message = start_error(transport(f"192.0.2.1:{port}", certs[0]))  # TEST-NET: not ours
    assert message.endswith("'192.0.2.1' is not an address of this machine"), message
    message = start_error(transport("127.0.0.1", certs[0]))
    assert message.endswith("address '127.0.0.1' is not HOST:PORT"), message


def test_agent_serve_says_port_in_use_in_one_line(tmp_path: Path) -> None:
    job = write_local_job(SCENARIO, OVERRIDES, N, tmp_path)
    port = int(re.findall(r'listen = "127\.0\.0\.1:(\d+)"', job.read_text())[0])
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:  # pragma: no cover - the port was taken meanwhile
            assert exc.errno == errno.EADDRINUSE
        s.listen()
        proc = subprocess.run(
            agent_command(job, 0),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Failed to bind" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert f"port {port} is already in use" in errors[0]
