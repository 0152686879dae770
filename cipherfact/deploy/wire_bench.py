"""Bytes on the wire: a small job over gRPC + mTLS, next to the simulation's count.

Runs ``deploy local``'s agents with a byte-counting TCP relay in front of every
agent (peers dial the relay, the relay forwards to the agent), so the TCP
figure is everything that crossed the sockets: TLS handshakes and records,
HTTP/2 framing, protobuf fields and acks. Usage::

    python -m cipherfact.deploy.wire_bench --out runs/wire-bench --set ...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import threading
import time
from pathlib import Path

from cipherfact.deploy.local import (
    LOOPBACK,
    free_ports,
    gather,
    launch,
    local_parties,
    wait_all,
    write_local_job,
)
from cipherfact.protocols.ppdnmf.job import prepare_job, run_inmemory
from cipherfact.simulations.scenario import load_scenario


class CountingRelay:
    """Loopback TCP relay that counts bytes in each direction."""

    def __init__(self, listen_port: int, target_port: int) -> None:
        self.listen_port, self.target_port = listen_port, target_port
        self.to_server = 0
        self.to_client = 0
        self._lock = threading.Lock()
        self._sock = socket.create_server((LOOPBACK, listen_port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection((LOOPBACK, self.target_port))
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                with self._lock:
                    if upstream:
                        self.to_server += len(data)
                    else:
                        self.to_client += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._sock.close()


def simulated_traffic(scenario: str, overrides: list[str], out: Path) -> tuple[int, int]:
    """(payload bytes, messages) the in-memory simulation counts for the same job."""
    sc = load_scenario(scenario, overrides)
    if sc.protocol == "ppdnmf":
        last = None
        for last in run_inmemory(prepare_job(sc)):  # noqa: B007 - only the final state counts
            pass
        if last is None:
            raise RuntimeError("the simulation produced no outer iteration")
        return last.stats.bytes_total, last.stats.messages_total
    from cipherfact.simulations.simulate import SimOptions, simulate

    summary = simulate(sc, out / "simulation", options=SimOptions(progress=False))
    return summary["bytes_total"], summary["traffic"]["messages_total"]


def run(scenario: str, overrides: list[str], n_agents: int | None, out: Path) -> dict[str, object]:
    overrides, n_agents = local_parties(scenario, overrides, n_agents)
    sim_bytes, sim_msgs = simulated_traffic(scenario, overrides, out)

    ports = free_ports(2 * n_agents)
    listen, dial = ports[:n_agents], ports[n_agents:]
    job_path = write_local_job(
        scenario,
        overrides,
        n_agents,
        out,
        dial_ports=dial,
        listen_ports=listen,
        timeouts={"peer_s": 60},
    )
    relays = [CountingRelay(d, ll) for d, ll in zip(dial, listen, strict=True)]
    started = time.perf_counter()
    codes = wait_all(launch(job_path, n_agents), timeout=600)
    summary = gather(job_path, time.perf_counter() - started, codes)
    for r in relays:
        r.close()
    return {
        "status": summary["status"],
        "simulation_payload_bytes": sim_bytes,
        "simulation_messages": sim_msgs,
        "grpc_payload_bytes": summary["bytes_total"],
        "grpc_messages": summary.get(
            "messages_total", summary.get("traffic", {}).get("messages_total")
        ),
        "grpc_message_bytes": summary["grpc_bytes_total"],
        "tcp_bytes_to_server": sum(r.to_server for r in relays),
        "tcp_bytes_to_client": sum(r.to_client for r in relays),
        "wall_s": summary["wall_s"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="ppdnmf-synthetic")
    p.add_argument(
        "--agents",
        type=int,
        default=None,
        help="ppdnmf agents (default the scenario's); csr_fhe_mf: fixed by the data",
    )
    p.add_argument("--out", default="runs/wire-bench")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args(argv)
    result = run(args.scenario, args.overrides, args.agents, Path(args.out))
    print(json.dumps(result, indent=2))
    return 0 if result["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
