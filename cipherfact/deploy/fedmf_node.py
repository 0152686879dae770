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
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.crypto.base import Scheme
from cipherfact.crypto.errors import CryptoError
from cipherfact.deploy.gather import GatherRun
from cipherfact.deploy.jobfile import DeployJob, JobFileError, insecure_refusal
from cipherfact.deploy.node_base import BaseNode, numbered, save_npz, series
from cipherfact.deploy.recsys_gather import Epochs, gather_ratings, setup_bytes
from cipherfact.deploy.servicer import PayloadCheck
from cipherfact.deploy.tls import agent_identity, check_tls_files
from cipherfact.protocols.base import Profiler, ProtocolError, StateMachine
from cipherfact.protocols.csr_fhe_mf.layout import decode_parts, encode_parts
from cipherfact.protocols.fedmf import keys
from cipherfact.protocols.fedmf import roles as fedmf
from cipherfact.protocols.ratings.job import fedmf_config, load_split

log = logging.getLogger("cipherfact.deploy")

__all__ = ["FACTORS_FILE", "FedMFNode", "ServerParty", "UserParty", "load_identity", "read_fedmf"]

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


class FedMFNode(BaseNode):
    """One FedMF party over gRPC (mTLS only); which one is fixed by its agent id."""

    needs_certificates = True
    supports_resume = True
    unit = "epoch"
    completed_key = "epochs_completed"
    drivers = frozenset({fedmf.SERVER_ID})
    party_names: ClassVar[Mapping[AgentId, str]] = {
        fedmf.SERVER_ID: "server",
        LEADER: "user 0 (key leader)",
    }
    party_titles: ClassVar[Mapping[AgentId, str]] = {
        fedmf.SERVER_ID: "the server (holds Enc(V) and the public key only)",
        LEADER: "user 0, the key leader (generates the shared key)",
    }
    first_user = fedmf.user_id(0)
    parties_text = "{users} users, so the server (0) and users (1..)"
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
    #: a user's own vector after each epoch
    vectors: list[np.ndarray]
    _slot_bits: int | None = None
    _setup_s: dict[str, float] | None = None  # the setup's seconds (the server)

    @classmethod
    def party_count(cls, scenario: Any) -> int:
        return load_split(scenario.data, scenario.seed).train.n_users + 1

    @classmethod
    def gather(cls, run: GatherRun) -> dict[str, Any]:
        return gather_ratings(run, read_fedmf)

    # -- building --------------------------------------------------------------------

    def prepare(self) -> None:
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
        state, past = self.open_checkpoints(int(cfg.epochs)) or (None, {})  # before keys
        epochs, who = int(self.resume_from or 0), f"agent {self.agent_id}"
        jk = JobKeys(scenario.crypto, fedmf.fedmf_codec(cfg))
        self._slot_bits = jk.codec.slot_bits
        followers = [fedmf.user_id(u) for u in range(1, cfg.n_users)]
        if self.agent_id == fedmf.SERVER_ID:
            server = fedmf.FedMFServer(cfg, jk.load_public, self.profiler)
            if state is not None:
                server.restore_state(state)  # Enc(V) comes from the last user, fresh key
            self.role = ServerParty(server, keys.KeyRelay(cfg.job_id, 0, LEADER, followers))
            return
        u = self.agent_id - fedmf.user_id(0)
        mask = train.users == u
        items, values = train.items[mask], train.values[mask]
        self.vectors = series(past, "u", epochs, who) if state is not None else []

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
            leader = keys.KeyLeader(cfg.job_id, me, trust, 0, followers, secret, key.public_bytes())
            user = make_user(key, send_key=True)
            self.role = UserParty(u, cfg, user=user, leader=leader, measure=Profiler())
            if state is not None:  # V after each epoch before the last one it decrypted
                self.role.V_by_epoch = series(past, "V", epochs - 1, who)
        else:

            def from_box(secret: bytes, public: bytes) -> fedmf.FedMFUser:
                scheme = jk.load_shared(secret, public, f"user {u}")
                log.info("agent %s holds the shared key %s", self.agent_id, scheme.fingerprint)
                return make_user(scheme)

            follower = keys.KeyFollower(cfg.job_id, me, trust, 0, LEADER)
            self.role = UserParty(u, cfg, follower=follower, make_user=from_box)

    def peers(self) -> list[AgentId]:
        if self.config is None:
            return []
        if self.agent_id == fedmf.SERVER_ID:
            return [fedmf.user_id(u) for u in range(self.config.n_users)]
        return [fedmf.SERVER_ID]

    def max_round(self) -> int:
        return int(self.config.epochs)  # the final model travels in round `epochs`

    def boundaries_done(self) -> int:
        role = self.role
        if isinstance(role, ServerParty):
            return role.epoch
        return max(role.rounds_done, 0) if role is not None else 0

    def current_round(self) -> int:
        role = self.role
        if isinstance(role, ServerParty):
            return role.epoch if role.relay.complete and role.server.scheme else -1
        return role.rounds_done if role is not None else -1

    def in_setup(self) -> bool:
        return self.current_round() < 0

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
        return max(limit, self.deploy.retry.startup_s) if self.in_setup() else limit

    # -- the loop's hooks --------------------------------------------------------------

    def begin(self, agent: Any) -> None:
        if self._setup_s is None:  # the setup's seconds stay out of the first epoch
            self._setup_s = self.profiler.take() or {"crypto": 0.0}
            self._line_started = time.perf_counter()
        super().begin(agent)

    def on_boundary(self, index: int) -> dict[str, Any]:
        role = self.role
        measure: dict[str, float] = {}
        if isinstance(role, UserParty):
            assert role.user is not None  # an epoch done: the key has arrived
            self.vectors.append(role.user.vector.copy())
            measure = role.measure.take() if role.measure else {}
        return {**self.timing(self.profiler.take()), "measure_s": measure.get("measure", 0.0)}

    def boundary_traffic(self, index: int) -> tuple[int, int, int]:
        """The bytes of the epoch's own round, whenever they were sent."""
        assert self.transport is not None
        stats, grpc = self.transport.stats, getattr(self.transport, "grpc_bytes_by_round", {})
        return (
            int(stats.bytes_by_round.get(index, 0)),
            int(stats.messages_by_round.get(index, 0)),
            int(grpc.get(index, 0)),
        )

    def checkpoint_state(self) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        """The server: the epoch only; a user its vector u, the epoch and its earlier
        vectors (the leader: also its earlier V's)."""
        role = self.role
        if isinstance(role, ServerParty):
            return role.server.checkpoint_state(), {}
        assert role.user is not None  # epochs done: the key has arrived
        past = {**numbered("u", self.vectors), **numbered("V", role.V_by_epoch)}
        return role.user.checkpoint_state(), past

    # -- output ------------------------------------------------------------------------

    def result_fields(self) -> dict[str, Any]:
        role = self.role
        out: dict[str, Any] = {}
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
        if self._slot_bits is not None:
            out["slot_bits"] = self._slot_bits
        return out

    def write_outputs(self) -> None:
        role = self.role
        if not isinstance(role, UserParty) or role.V is None:
            return
        arrays = {"V": role.V, **numbered("u", self.vectors), **numbered("V", role.V_by_epoch)}
        save_npz(self.out / FACTORS_FILE, arrays)


# -- gathering (``recsys_gather``) -------------------------------------------------------


def read_fedmf(run: GatherRun, split: Any) -> Epochs:
    """(U, V) per epoch, the float twin, and traffic per epoch. Each user wrote its own
    vector after every epoch and the key leader V after every epoch: stacked, they are
    the factors the simulation measures with the users' key. Traffic per epoch is every
    party's bytes of that round; the key distribution (round -1) and the final model
    download (round ``epochs``) are outside the epochs, as the simulation has neither."""
    deploy, scenario, train = run.deploy, run.deploy.scenario, split.train
    cfg = fedmf_config(scenario, train)
    server = run.results[fedmf.SERVER_ID]
    c = scenario.crypto
    info = {
        "mode": cfg.mode,
        "naive": c.naive,
        "scheme": c.scheme,
        "key_bits": c.key_bits,
        "items_per_ciphertext": server.get("items_per_ciphertext"),
        "slot_bits": server.get("slot_bits"),
    }
    groups = {i: "server" if i == fedmf.SERVER_ID else "users" for i in range(len(run.results))}
    out = Epochs(info, groups, cfg.rating_offset)
    if not run.ok:
        return out
    out.twin = fedmf.fedmf_reference(train.users, train.items, train.values, cfg)
    vectors = []
    for u in range(cfg.n_users):
        with np.load(deploy.agent_out(fedmf.user_id(u)) / FACTORS_FILE, allow_pickle=False) as f:
            vectors.append([f[f"u_{e}"] for e in range(cfg.epochs)])
    with np.load(deploy.agent_out(LEADER) / FACTORS_FILE, allow_pickle=False) as f:
        Vs = [f[f"V_{e}"] for e in range(cfg.epochs)]
    by_epoch = [{m["epoch"]: m for m in run.metrics(i)} for i in groups]
    for e in range(cfg.epochs):
        out.factors.append((np.stack([v[e] for v in vectors]), Vs[e]))
        rows = [p[e] for p in by_epoch]
        secs = {g: 0.0 for g in ("server", "users")}
        for i, m in enumerate(rows):
            secs[groups[i]] += m["crypto_s"] + m["compute_s"]
        out.records.append(
            {
                "bytes": sum(m["bytes_sent"] for m in rows),
                "grpc_bytes": sum(m["grpc_bytes_sent"] for m in rows),
                "wall_s": rows[fedmf.SERVER_ID]["wall_s"],
                **{f"{g}_s": s for g, s in secs.items()},
            }
        )
    out.setup_bytes = setup_bytes(run.results)
    return out
