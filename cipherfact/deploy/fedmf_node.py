"""One deployed FedMF party: the server (agent 0) or user u (agent 1 + u).

The roles are the simulation's (``protocols/fedmf/roles.py``); what deployment adds
is where the users' shared Paillier key comes from. In one process the users
share the key object; here user 0, the *key leader*, generates the pair in
its own process, sends the public key to the server and hands the secret key
to every other user in a key box through the server (``protocols/fedmf/keys.py``:
encrypted to the recipient's job certificate, signed by the leader's). So
FedMF needs the job certificates: it refuses ``insecure`` jobs. The server
begins epoch 0 once every box has been passed on.

After the last epoch the server sends every user the final Enc(V),
re-randomized per user (stage ``model``, round ``epochs``): FedMF users hold V
anyway (they decrypt it every epoch), and a user without the final model
could not recommend. This is the only traffic beyond the simulation's, with
the key boxes.

What each party writes: ``metrics.jsonl`` (one line per epoch: its seconds,
its bytes of that round) and ``result.json``; each user ``factors.npz`` with
its own vector after every epoch (``u_<e>``) and the final V; the leader also
V after every epoch (``V_<e>``, measured by decrypting the Enc(V) of the next
epoch once more: ``measure_s``, not ``crypto_s``). No key is written anywhere.

With ``checkpoint_every``, every party keeps its own checkpoints
(``party_checkpoint.py``): the server the epoch only, each user its vector u,
the epoch and its earlier vectors, the last user in turn order also V, the
leader also its earlier V's. A resumed job makes a fresh key pair and hands
it over again (new boxes); the last user sends Enc(V) under it (stage
``restore``), so the factors are bit-identical to an uninterrupted run's.
"""

from __future__ import annotations

import datetime
import io
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.crypto.base import Scheme
from cipherfact.crypto.errors import CryptoError
from cipherfact.deploy.jobfile import DeployJob, JobFileError, insecure_refusal
from cipherfact.deploy.node_base import BaseNode, NodeError, write_atomic
from cipherfact.deploy.party_checkpoint import truncate_metrics
from cipherfact.deploy.servicer import PayloadCheck
from cipherfact.deploy.tls import agent_identity, check_tls_files
from cipherfact.protocols.base import Profiler, ProtocolError, StateMachine
from cipherfact.protocols.csr_fhe_mf.layout import decode_parts, encode_parts
from cipherfact.protocols.fedmf import keys
from cipherfact.protocols.fedmf import roles as fedmf

log = logging.getLogger("cipherfact.deploy")

__all__ = ["FACTORS_FILE", "FedMFNode", "ServerParty", "UserParty", "load_identity"]

STAGE_MODEL = "model"
FACTORS_FILE = "factors.npz"
LEADER: AgentId = fedmf.user_id(0)
MAX_KEY_BYTES = 1024 * 1024


def load_identity(deploy: DeployJob, agent_id: AgentId) -> tuple[keys.Identity, keys.Trust]:
    """This party's certificate and key, and the job CA, for the key boxes."""
    files = deploy.tls_files(agent_id)
    if files is None:
        raise JobFileError(insecure_refusal("fedmf"))
    ca, cert, key_pem = check_tls_files(files, agent_identity(agent_id))
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise JobFileError(f"fedmf key boxes need EC certificate keys; {files.key} is not one")
    now = datetime.datetime.now(datetime.timezone.utc)
    return keys.Identity(agent_id, cert, key), keys.Trust(ca, agent_identity, now)


class JobKeys:
    """The job's Paillier (or plain twin) key rules, as ``simulate`` applies them."""

    def __init__(self, crypto: Any, codec: Any) -> None:
        from cipherfact.crypto import PaillierOptions

        self.crypto, self.codec = crypto, codec
        self.options = PaillierOptions(packing=not crypto.naive)
        paillier = crypto.scheme == "paillier"
        self.extra = {"insecure_test_keys": crypto.insecure_test_keys} if paillier else {}

    def generate(self) -> Scheme:
        """A fresh key pair from the OS's randomness (the key leader only)."""
        from cipherfact.crypto import generate_scheme

        c = self.crypto
        return generate_scheme(
            c.scheme,
            codec=self.codec,
            key_bits=c.key_bits,
            insecure_test_keys=c.insecure_test_keys,
            options=self.options,
        )

    def load_public(self, data: bytes) -> Scheme:
        """A public key, refused below the job's key size (``check_peer_key``)."""
        from cipherfact.crypto import load_public_scheme

        c = self.crypto
        return load_public_scheme(
            c.scheme,
            data,
            codec=self.codec,
            options=self.options,
            min_key_bits=c.key_bits,
            **self.extra,
        )

    def load_shared(self, secret: bytes, public: bytes, who: str) -> Scheme:
        """The key pair from a key box: the job's scheme, and the signed public key's pair."""
        from cipherfact.crypto.registry import load_secret_scheme

        try:
            opts = {"codec": self.codec, "options": self.options, **self.extra}
            scheme = load_secret_scheme(secret, **opts)
            named = self.load_public(public)
        except (CryptoError, ValueError, TypeError) as exc:
            raise ProtocolError(f"{who}: unusable shared key: {exc}") from exc
        if scheme.name != self.crypto.scheme or scheme.fingerprint != named.fingerprint:
            raise ProtocolError(
                f"{who}: the shared {scheme.name} key does not match the "
                f"{self.crypto.scheme} public key the leader signed"
            )
        return scheme


class ServerParty(StateMachine):
    """The FedMF server plus the key relay and the final model download."""

    def __init__(self, server: fedmf.FedMFServer, relay: keys.KeyRelay) -> None:
        self.server, self.relay = server, relay
        self.model_sent = False

    @property
    def epoch(self) -> int:
        return self.server.epoch

    @property
    def done(self) -> bool:
        return self.server.done and self.model_sent

    @property
    def at_boundary(self) -> bool:
        if self.server.done:  # resumed after the last epoch: once Enc(V) is restored
            return not self.model_sent and self.relay.complete and bool(self.server.encrypted_v)
        return self.server.at_boundary and self.relay.complete

    def start(self) -> list[Envelope]:
        return self.server.start()

    def step(self, env: Envelope) -> list[Envelope]:
        if env.stage in keys.KEY_STAGES:
            return self.relay.step(env)
        return self.server.step(env)

    def begin_outer(self) -> list[Envelope]:
        if not self.server.done:
            return self.server.begin_outer()
        scheme = self.server.scheme
        assert scheme is not None  # epochs ran
        out = []
        cfg = self.server.config
        with self.server.profiler.section("crypto"):
            for u in range(cfg.n_users):
                blobs = [scheme.to_bytes(scheme.rerandomize(c)) for c in self.server.encrypted_v]
                out.append(
                    Envelope(
                        cfg.job_id,
                        cfg.epochs,
                        STAGE_MODEL,
                        0,
                        fedmf.user_id(u),
                        encode_parts(blobs),
                    )
                )
        self.model_sent = True
        return out


class UserParty(StateMachine):
    """A FedMF user plus its part of the key exchange and the final model."""

    def __init__(
        self,
        u: int,
        config: fedmf.FedMFConfig,
        *,
        user: fedmf.FedMFUser | None = None,
        leader: keys.KeyLeader | None = None,
        follower: keys.KeyFollower | None = None,
        make_user: Callable[[bytes, bytes], fedmf.FedMFUser] | None = None,
        measure: Profiler | None = None,
    ) -> None:
        self.u, self.config = u, config
        self.user, self.leader, self.follower = user, leader, follower
        self._make_user = make_user
        self.measure = measure
        self.V: np.ndarray | None = None  # the final model
        self.V_by_epoch: list[np.ndarray] = []  # the leader's measurement

    @property
    def done(self) -> bool:
        return self.user is not None and self.user.done and self.V is not None

    @property
    def rounds_done(self) -> int:
        return self.user.rounds_done if self.user is not None else -1

    def start(self) -> list[Envelope]:
        if self.follower is not None:
            return self.follower.start()
        assert self.user is not None
        return self.user.start()  # the leader: the public key to the server

    def step(self, env: Envelope) -> list[Envelope]:
        if env.stage == keys.STAGE_CERT and self.leader is not None:
            return self.leader.step(env)
        if env.stage == keys.STAGE_KEYBOX and self.follower is not None:
            assert self._make_user is not None
            self.user = self._make_user(*self.follower.step(env))
            return self.user.start()
        user = self.user
        if user is None:
            raise ProtocolError(
                f"user {self.u}: {env.stage!r} for round {env.round} before the shared key"
            )
        if env.stage == STAGE_MODEL:
            if env.sender != fedmf.SERVER_ID or not user.done or self.V is not None:
                raise ProtocolError(f"user {self.u}: unexpected final model at round {env.round}")
            self.V = self._decrypt(user.scheme, env)
            if self.measure is not None:
                self.V_by_epoch.append(self.V)
            return []
        if self.measure is not None and env.stage == fedmf.STAGE_ITEMS and env.round > 0:
            with self.measure.section("measure"):
                self.V_by_epoch.append(self._decrypt(user.scheme, env))
        return user.step(env)

    def _decrypt(self, scheme: Scheme, env: Envelope) -> np.ndarray:
        cfg, blocks = self.config, self.user.blocks  # type: ignore[union-attr]
        who = f"user {self.u}: {env.stage!r} for round {env.round}"
        try:
            parts = decode_parts(bytes(env.payload), who, blocks.count)
            values = [scheme.decrypt(scheme.from_bytes(b)) for b in parts]
        except (CryptoError, ValueError, TypeError) as exc:
            raise ProtocolError(f"{who}: {exc}") from exc
        flat = np.concatenate(values)
        if flat.size != cfg.n_items * cfg.n_factors:
            raise ProtocolError(
                f"{who}: {flat.size} values, expected {cfg.n_items * cfg.n_factors}"
            )
        return flat.reshape(cfg.n_items, cfg.n_factors)


class FedMFPayloadFormat:
    """Framing checks before a payload reaches the role (the role parses the rest)."""

    def __call__(self, env: Envelope) -> None:
        data = bytes(env.payload)
        if env.stage == fedmf.STAGE_KEY:
            if not data or len(data) > MAX_KEY_BYTES:
                raise ValueError(f"a public key of {len(data)} bytes")
        elif env.stage in keys.KEY_STAGES:
            if not data or len(data) > keys.MAX_MESSAGE_BYTES:
                raise ValueError(f"a {env.stage} message of {len(data)} bytes")
        else:
            decode_parts(data, f"{env.stage} payload")


def _series(past: dict[str, Any], name: str, count: int, agent_id: AgentId) -> list[np.ndarray]:
    """``name_0 .. name_<count-1>`` from a checkpoint's past (one line if one is missing)."""
    try:
        return [np.asarray(past[f"{name}_{e}"]) for e in range(count)]
    except KeyError as exc:
        raise NodeError(f"agent {agent_id}: checkpoint lacks {exc}") from exc


def party_name(agent_id: AgentId) -> str:
    if agent_id == fedmf.SERVER_ID:
        return "server"
    u = agent_id - fedmf.user_id(0)
    return "user 0 (key leader)" if u == 0 else f"user {u}"


class FedMFNode(BaseNode):
    """One FedMF party over gRPC (mTLS only); which one is fixed by its agent id."""

    gatherer = "cipherfact.deploy.recsys_gather:gather_ratings"

    needs_certificates = True
    supports_resume = True
    stages = frozenset(
        {
            fedmf.STAGE_KEY,
            fedmf.STAGE_ITEMS,
            fedmf.STAGE_GRADS,
            fedmf.STAGE_RESTORE,
            STAGE_MODEL,
            *keys.KEY_STAGES,
        }
    )

    @classmethod
    def party_count(cls, scenario: Any) -> int:
        from cipherfact.protocols.ratings.job import load_split

        return load_split(scenario.data, scenario.seed).train.n_users + 1

    @classmethod
    def describe_parties(cls, n: int) -> str:
        return f"{n - 1} users, so the server (0) and users (1..)"

    @classmethod
    def role_title(cls, agent_id: AgentId) -> str:
        if agent_id == fedmf.SERVER_ID:
            return "the server (holds Enc(V) and the public key only)"
        u = agent_id - fedmf.user_id(0)
        return "user 0, the key leader (generates the shared key)" if u == 0 else f"user {u}"

    def __init__(
        self,
        deploy: DeployJob,
        agent_id: AgentId,
        *,
        resume_from: int | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        super().__init__(deploy, agent_id, resume_from=resume_from, stop=stop)
        self.config: Any = None
        self.profiler = Profiler()
        self.vectors: list[np.ndarray] = []
        self._reported = 0
        self._epoch_started = 0.0
        self._info: dict[str, Any] = {}
        self._setup_s: dict[str, float] = {}

    # -- building --------------------------------------------------------------------

    def prepare(self) -> None:
        from cipherfact.protocols.ratings.job import fedmf_config, load_split

        scenario = self.deploy.scenario
        train = load_split(scenario.data, scenario.seed).train
        cfg = self.config = fedmf_config(scenario, train)
        self.job_id = cfg.job_id
        if not 0 <= self.agent_id <= cfg.n_users:
            raise JobFileError(
                f"agent id {self.agent_id} is not a party of this job (0 = server, "
                f"1..{cfg.n_users} = users)"
            )
        me, trust = load_identity(self.deploy, self.agent_id)
        config = self.checkpoint_config(scenario, len(self.deploy.agents))
        state, past = self.open_checkpoints(config, int(cfg.epochs)) or (None, {})  # before keys
        jk = JobKeys(scenario.crypto, fedmf.fedmf_codec(cfg))
        self._info = {"slot_bits": jk.codec.slot_bits}
        followers = [fedmf.user_id(u) for u in range(1, cfg.n_users)]
        if self.agent_id == fedmf.SERVER_ID:
            server = fedmf.FedMFServer(cfg, jk.load_public, self.profiler)
            if state is not None:
                server.restore_state(state)  # Enc(V) comes from the last user, fresh key
            self.role = ServerParty(server, keys.KeyRelay(cfg.job_id, 0, LEADER, followers))
        else:
            u = self.agent_id - fedmf.user_id(0)
            mask = train.users == u
            items, values = train.items[mask], train.values[mask]

            def make_user(scheme: Scheme, send_key: bool = False) -> fedmf.FedMFUser:
                user = fedmf.FedMFUser(
                    u, items, values, cfg, scheme, send_key=send_key, profiler=self.profiler
                )
                if state is not None:  # u, the epoch (the last user: V to send again)
                    user.restore_state(state)
                return user

            if self.agent_id == LEADER:
                key = jk.generate()  # here, in the leader's process, from the OS
                secret = key.export_secret_key_bytes  # type: ignore[attr-defined]
                leader = keys.KeyLeader(
                    cfg.job_id, me, trust, 0, followers, secret, key.public_bytes()
                )
                user = make_user(key, send_key=True)
                self.role = UserParty(u, cfg, user=user, leader=leader, measure=Profiler())
                if state is not None:  # V after each epoch before the last one it decrypted
                    epochs = int(state["epoch"])
                    self.role.V_by_epoch = _series(past, "V", epochs - 1, self.agent_id)
            else:

                def from_box(secret: bytes, public: bytes) -> fedmf.FedMFUser:
                    scheme = jk.load_shared(secret, public, f"user {u}")
                    log.info("agent %s holds the shared key %s", self.agent_id, scheme.fingerprint)
                    return make_user(scheme)

                follower = keys.KeyFollower(cfg.job_id, me, trust, 0, LEADER)
                self.role = UserParty(u, cfg, follower=follower, make_user=from_box)
        if state is None:
            self.metrics_path.write_text("", encoding="utf-8")
        else:
            epochs = int(state["epoch"])
            if self.agent_id != fedmf.SERVER_ID:
                self.vectors = _series(past, "u", epochs, self.agent_id)
            self._reported = epochs
            truncate_metrics(self.metrics_path, "epoch", epochs)
            log.info("agent %s resuming after epoch %d", self.agent_id, epochs)
        self._epoch_started = time.perf_counter()
        log.info(
            "agent %s is the %s of job %r", self.agent_id, party_name(self.agent_id), self.job_id
        )

    def peers(self) -> list[AgentId]:
        if self.config is None:
            return []
        if self.agent_id == fedmf.SERVER_ID:
            return [fedmf.user_id(u) for u in range(self.config.n_users)]
        return [fedmf.SERVER_ID]

    def max_round(self) -> int:
        return int(self.config.epochs)  # the final model travels in round `epochs`

    def _epochs_done(self) -> int:
        role = self.role
        if isinstance(role, ServerParty):
            return role.epoch
        return max(role.rounds_done, 0) if role is not None else 0

    def current_round(self) -> int:
        role = self.role
        if isinstance(role, ServerParty):
            return role.epoch if role.relay.complete and role.server.scheme else -1
        return role.rounds_done if role is not None else -1

    def position(self) -> str:
        r = self.current_round()
        return "setup (round -1)" if r < 0 else f"epoch {r} (round {r})"

    def payload_check(self) -> PayloadCheck:
        return FedMFPayloadFormat()

    def waiting_on(self) -> list[AgentId]:
        role = self.role
        if isinstance(role, ServerParty):
            turn = role.server._turn
            if turn is not None:
                return [fedmf.user_id(turn)]
            if not role.relay.complete:
                return [LEADER, *sorted(role.relay.followers - role.relay.certs)]
        return self.peers()

    def silence_limit(self) -> float:
        """Users wait for every other user's turn: up to one peer timeout per user."""
        limit = self.deploy.peer_timeout_s
        if self.agent_id != fedmf.SERVER_ID:
            limit *= max(self.config.n_users, 1)
        if self.current_round() < 0:
            return max(limit, self.deploy.retry.startup_s)
        return limit

    # -- the loop's hooks --------------------------------------------------------------

    def should_begin(self) -> bool:
        return isinstance(self.role, ServerParty) and self.role.at_boundary

    def begin(self, agent: Any) -> None:
        if not self._setup_s:  # the setup's seconds stay out of the first epoch
            self._setup_s = self.profiler.take() or {"crypto": 0.0}
            self._epoch_started = time.perf_counter()
        super().begin(agent)

    def after_deliver(self) -> None:
        if not isinstance(self.role, ServerParty) and self.role.user is not None:
            while len(self.vectors) < self.role.rounds_done:
                self.vectors.append(self.role.user.vector.copy())
        while self._reported < self._epochs_done():
            self._report(self._reported)
        self._checkpoint()

    def _checkpoint(self) -> None:
        """This party's checkpoint after a finished epoch (its turn, for a user), when
        one is due: its role's state and its own earlier vectors (the leader: V's)."""
        ck, role = self.checkpoints, self.role
        epoch = self._epochs_done()
        if ck is None or not ck.due(epoch) or epoch != self._reported:
            return
        past: dict[str, Any] = {}
        if isinstance(role, ServerParty):
            state = role.server.checkpoint_state()
        else:
            assert role.user is not None  # epochs done: the key has arrived
            state = role.user.checkpoint_state()
            past.update({f"u_{e}": v for e, v in enumerate(self.vectors)})
            past.update({f"V_{e}": V for e, V in enumerate(role.V_by_epoch)})
        counters = self.job_counters(before_round=epoch)
        with self.critical():
            ck.save(epoch, state, past, counters)

    def _report(self, epoch: int) -> None:
        assert self.transport is not None
        seconds = self.profiler.take()
        stats, grpc = self.transport.stats, getattr(self.transport, "grpc_bytes_by_round", {})
        measure = (
            self.role.measure.take()
            if isinstance(self.role, UserParty) and self.role.measure
            else {}
        )
        self.append_metrics(
            {
                "epoch": epoch,
                "crypto_s": seconds.get("crypto", 0.0),
                "compute_s": seconds.get("compute", 0.0),
                "measure_s": measure.get("measure", 0.0),
                "wall_s": time.perf_counter() - self._epoch_started,
                "bytes_sent": int(stats.bytes_by_round.get(epoch, 0)),
                "messages_sent": int(stats.messages_by_round.get(epoch, 0)),
                "grpc_bytes_sent": int(grpc.get(epoch, 0)),
            }
        )
        log.info("agent %s (%s) finished epoch %d", self.agent_id, party_name(self.agent_id), epoch)
        self._epoch_started = time.perf_counter()
        self._reported += 1

    # -- output ------------------------------------------------------------------------

    def result_fields(self) -> dict[str, Any]:
        role = self.role
        out: dict[str, Any] = {
            "party": party_name(self.agent_id),
            "epochs_completed": self._reported,
            "resumed_from": self.resume_from,
        }
        scheme = None
        if isinstance(role, ServerParty):
            scheme = role.server.scheme
            if role.server.blocks is not None:
                out["items_per_ciphertext"] = role.server.blocks.per
        elif role is not None and role.user is not None:
            scheme = role.user.scheme
        if scheme is not None:
            out["key_fingerprint"] = scheme.fingerprint  # public: the fingerprint of n
        if self._setup_s:
            out["setup_crypto_s"] = self._setup_s.get("crypto", 0.0)
        return {**out, **self._info}

    def write_outputs(self) -> None:
        role = self.role
        if not isinstance(role, UserParty) or role.V is None:
            return
        arrays: dict[str, Any] = {"V": role.V}
        for e, u in enumerate(self.vectors):
            arrays[f"u_{e}"] = u
        for e, V in enumerate(role.V_by_epoch):
            arrays[f"V_{e}"] = V
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        write_atomic(self.out / FACTORS_FILE, buf.getvalue())
