"""One deployed csr_fhe_mf party: the recommender server, the CSP, or one user.

Agent ids follow the protocol: 0 is the recommender server (RS), 1 the crypto
service provider (CSP), ``2 + u`` user ``u``. Every party derives the public
parameters (the config, the planned CKKS set) from JOB.toml. A user keeps only
its own ratings: read from its own ``data_path`` file when the job gives
every user one (RS and the CSP then load no ratings at all), else taken from
the scenario's data. The CSP generates the CKKS key pair in its own process
and sends the public context; the secret key never leaves it.

RS drives the epochs: it begins the next one as soon as the previous round
trip with the CSP has ended. A user is done once RS has accepted its
encrypted upload and exits then. What each party writes:

* RS: ``share.npz`` with its factor masks M after every epoch;
* CSP: ``share.npz`` with its masked factors A = (U, V) + M after every epoch;
* every party: ``metrics.jsonl`` (RS and CSP: one line per epoch) and
  ``result.json``.

With ``checkpoint_every``, RS and the CSP also keep their own checkpoints
(``party_checkpoint.py``): RS its masks M, the CSP its masked factors A, each
with its own earlier shares; never the CKKS key nor a ciphertext. A resumed
job redoes the setup under a fresh key (users upload again: they keep
nothing), the CSP sends Enc(A) (stage ``resume``) and RS removes its masks,
so training goes on from the same factors, to CKKS noise.

The model is the difference of the two shares: neither party alone learns
it, and only a step that sees both (``deploy local``'s gathering, a
measurement hook like the simulation's) can evaluate it.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from typing import Any

import numpy as np

from cipherfact.agents.agent import Agent
from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.data.ratings import load_user_ratings
from cipherfact.deploy.jobfile import DeployJob, JobFileError
from cipherfact.deploy.node_base import BaseNode, NodeError, write_atomic
from cipherfact.deploy.party_checkpoint import truncate_metrics
from cipherfact.deploy.servicer import PayloadCheck
from cipherfact.protocols.base import Profiler
from cipherfact.protocols.csr_fhe_mf import roles as csr
from cipherfact.protocols.csr_fhe_mf.layout import decode_parts
from cipherfact.protocols.ratings.job import (
    csr_config,
    csr_config_for,
    csr_user,
    load_split,
)

log = logging.getLogger("cipherfact.deploy")

__all__ = ["CsrNode", "CsrPayloadFormat", "party_name"]

SHARE_FILE = "share.npz"
# Upper bounds for the cheap format checks (a public CKKS context with
# relinearization keys at N = 32768 is far below this).
MAX_CONTEXT_BYTES = 512 * 1024 * 1024


def party_name(agent_id: AgentId) -> str:
    if agent_id == csr.RS_ID:
        return "rs"
    if agent_id == csr.CSP_ID:
        return "csp"
    return f"user {agent_id - csr.user_id(0)}"


class CsrPayloadFormat:
    """Framing checks of each csr_fhe_mf payload before it reaches the protocol.

    Only the shape of the bytes is checked here (lengths, the parts framing);
    ciphertexts are parsed by the role, which answers a bad one with a
    ``ProtocolError`` that ends the job with a clear message.
    """

    def __call__(self, env: Envelope) -> None:
        data = bytes(env.payload)
        stage = env.stage
        if stage == csr.STAGE_CONTEXT:
            if not data or len(data) > MAX_CONTEXT_BYTES:
                raise ValueError(f"a CKKS context of {len(data)} bytes")
        elif stage == csr.STAGE_STRUCTURE:
            # users send item indices (8 bytes each); RS sends the CSP a parts-free layout
            if env.sender != csr.RS_ID and (not data or len(data) % 8):
                raise ValueError(f"{len(data)} bytes is not a list of 8-byte item indices")
        elif stage == csr.STAGE_LAYOUT:
            if len(data) != 24:
                raise ValueError(f"a layout message is 24 bytes, got {len(data)}")
        elif stage in (csr.STAGE_RATINGS, csr.STAGE_MASKED, csr.STAGE_REFRESHED, csr.STAGE_RESUME):
            decode_parts(data, f"{stage} payload")


class CsrNode(BaseNode):
    """One csr_fhe_mf party over gRPC; which one is fixed by its agent id."""

    gatherer = "cipherfact.deploy.recsys_gather:gather_ratings"
    supports_resume = True

    stages = frozenset(
        {
            csr.STAGE_CONTEXT,
            csr.STAGE_STRUCTURE,
            csr.STAGE_LAYOUT,
            csr.STAGE_RATINGS,
            csr.STAGE_MASKED,
            csr.STAGE_REFRESHED,
            csr.STAGE_RESUME,
        }
    )

    @classmethod
    def keeps_checkpoints(cls, agent_id: AgentId) -> bool:
        """RS and the CSP; a user keeps nothing (on resume it uploads again)."""
        return agent_id in (csr.RS_ID, csr.CSP_ID)

    @classmethod
    def party_count(cls, scenario: Any) -> int:
        return load_split(scenario.data, scenario.seed).train.n_users + 2

    @classmethod
    def describe_parties(cls, n: int) -> str:
        return f"{n - 2} users, so RS (0), CSP (1) and users (2..)"

    @classmethod
    def role_title(cls, agent_id: AgentId) -> str:
        if agent_id == csr.RS_ID:
            return "the recommender server (RS)"
        if agent_id == csr.CSP_ID:
            return "the crypto service provider (CSP, holds the CKKS secret key)"
        return f"user {agent_id - csr.user_id(0)}"

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
        self.shares: list[tuple[np.ndarray, np.ndarray]] = []
        self._epoch_started = 0.0
        self._epochs_reported = 0
        self._setup_reported = False

    # -- building --------------------------------------------------------------------

    def prepare(self) -> None:
        scenario = self.deploy.scenario
        train = None
        if self.deploy.users_own_ratings:
            # Public sizes from the job; each user reads only its own file.
            cfg = csr_config_for(
                scenario, len(self.deploy.agents) - 2, scenario.data.n_items, scenario.crypto.pad_to
            )
        else:
            train = load_split(scenario.data, scenario.seed).train
            cfg = csr_config(scenario, train)
        self.config = cfg
        self.job_id = cfg.job_id
        resumed = None  # a user keeps nothing: on resume it uploads again, under the new key
        if self.keeps_checkpoints(self.agent_id):  # a bad resume fails before any key
            config = self.checkpoint_config(scenario, len(self.deploy.agents))
            resumed = self.open_checkpoints(config, int(cfg.epochs))
        if self.agent_id == csr.RS_ID:
            from cipherfact.crypto.ckks import load_public_ckks

            self.role = csr.RecommenderServer(cfg, load_public_ckks, self.profiler)
        elif self.agent_id == csr.CSP_ID:
            from cipherfact.crypto.ckks import make_ckks_scheme

            scheme = make_ckks_scheme(cfg.plan().params)
            self.role = csr.CryptoServiceProvider(cfg, scheme, self.profiler)
        else:
            u = self.agent_id - csr.user_id(0)
            if not 0 <= u < cfg.n_users:
                raise JobFileError(
                    f"agent id {self.agent_id} is not a party of this job (0 = RS, 1 = CSP, "
                    f"2..{cfg.n_users + 1} = users)"
                )
            # Dummy items (hide_pattern) always come from the OS CSPRNG, drawn by the
            # protocol itself, whatever private_seeds says: RS sees the padded item
            # lists, so a seeded draw would let it strip the dummies.
            data_path = self.deploy.agent(self.agent_id).data_path
            if train is None and data_path is not None:
                from cipherfact.crypto.ckks import load_public_ckks

                items, values = load_user_ratings(data_path, cfg.n_items)
                self.role = csr.CsrUser(
                    u, items, values, cfg, load_public_ckks, profiler=self.profiler
                )
            else:
                assert train is not None
                self.role = csr_user(scenario, train, cfg, u, self.profiler)
        if resumed is None:
            self.metrics_path.write_text("", encoding="utf-8")
        else:
            self._restore(*resumed)
        log.info(
            "agent %s is the %s of job %r", self.agent_id, party_name(self.agent_id), self.job_id
        )

    def _restore(self, state: dict[str, Any], past: dict[str, Any]) -> None:
        """The role's state, the earlier shares and the metrics up to the checkpoint."""
        self.role.restore_state(state)
        epochs = int(self.role.epoch)
        try:
            self.shares = [(past[f"U_{e}"], past[f"V_{e}"]) for e in range(epochs)]
        except KeyError as exc:
            raise NodeError(f"agent {self.agent_id}: checkpoint lacks share {exc}") from exc
        self._epochs_reported = epochs
        truncate_metrics(self.metrics_path, "epoch", epochs)
        log.info("agent %s resuming after epoch %d", self.agent_id, epochs)

    def peers(self) -> list[AgentId]:
        if self.config is None:
            return []
        users = [csr.user_id(u) for u in range(self.config.n_users)]
        if self.agent_id == csr.RS_ID:
            return [csr.CSP_ID, *users]
        if self.agent_id == csr.CSP_ID:
            return [csr.RS_ID, *users]
        return [csr.RS_ID, csr.CSP_ID]

    def max_round(self) -> int:
        return int(self.config.epochs)

    def current_round(self) -> int:
        return int(getattr(self.role, "epoch", csr.SETUP_ROUND)) if self._in_epochs() else -1

    def position(self) -> str:
        if self._in_epochs():
            return f"epoch {self.role.epoch} (round {self.role.epoch})"
        return "setup (round -1)"

    def _in_epochs(self) -> bool:
        role = self.role
        if isinstance(role, csr.RecommenderServer):
            return bool(role.ready)
        if isinstance(role, csr.CryptoServiceProvider):
            return role.layout is not None
        return False

    def payload_check(self) -> PayloadCheck:
        return CsrPayloadFormat()

    def waiting_on(self) -> list[AgentId]:
        role = self.role
        if isinstance(role, csr.RecommenderServer):
            if role.ready:
                return [csr.CSP_ID]
            return [j for j in self.peers() if j != csr.CSP_ID] if role.scheme else [csr.CSP_ID]
        if isinstance(role, csr.CryptoServiceProvider):
            return [csr.RS_ID]
        return [csr.RS_ID] if role.has_context else [csr.CSP_ID]

    def silence_limit(self) -> float:
        # Until the epochs start, peers may still be starting or generating keys.
        if self._in_epochs():
            return self.deploy.peer_timeout_s
        return max(self.deploy.peer_timeout_s, self.deploy.retry.startup_s)

    # -- the loop's hooks --------------------------------------------------------------

    def should_begin(self) -> bool:
        return isinstance(self.role, csr.RecommenderServer) and self.role.at_boundary

    def begin(self, agent: Agent) -> None:
        log.info("agent %s (RS) begins epoch %d", self.agent_id, self.role.epoch)
        super().begin(agent)

    def after_deliver(self) -> None:
        role = self.role
        if self._in_epochs() and not self._setup_reported:
            self._report_setup()
        epoch = getattr(role, "epoch", 0)
        while self._epochs_reported < epoch:
            if isinstance(role, csr.RecommenderServer):
                self.shares.append(role.factor_masks())
            else:
                self.shares.append(role.masked_factors())
            seconds = self.profiler.take()
            payload, messages, grpc_bytes = self.traffic_since_last()
            self.append_metrics(
                {
                    "epoch": self._epochs_reported,
                    "crypto_s": seconds.get("crypto", 0.0),
                    "compute_s": seconds.get("compute", 0.0),
                    "wall_s": time.perf_counter() - self._epoch_started,
                    "bytes_sent": payload,
                    "messages_sent": messages,
                    "grpc_bytes_sent": grpc_bytes,
                }
            )
            log.info(
                "agent %s (%s) finished epoch %d",
                self.agent_id,
                party_name(self.agent_id),
                self._epochs_reported,
            )
            self._epoch_started = time.perf_counter()
            self._epochs_reported += 1
        self._checkpoint()

    def _checkpoint(self) -> None:
        """RS's or the CSP's checkpoint after a finished epoch, when one is due."""
        ck = self.checkpoints
        epoch = int(getattr(self.role, "epoch", 0))
        if ck is None or not ck.due(epoch) or epoch != self._epochs_reported:
            return
        past: dict[str, Any] = {}
        for e, (U, V) in enumerate(self.shares):
            past[f"U_{e}"], past[f"V_{e}"] = U, V
        state = self.role.checkpoint_state()
        counters = self.job_counters(before_round=epoch)
        with self.critical():
            ck.save(epoch, state, past, counters)

    def finish(self) -> None:
        if not self._setup_reported:  # a user: its whole part is the setup
            self._report_setup()

    def _report_setup(self) -> None:
        """One metrics line for the setup (keys, structure, uploads)."""
        seconds = self.profiler.take()
        payload, messages, grpc_bytes = self.traffic_since_last()
        self.append_metrics(
            {
                "epoch": -1,
                "crypto_s": seconds.get("crypto", 0.0),
                "compute_s": seconds.get("compute", 0.0),
                "bytes_sent": payload,
                "messages_sent": messages,
                "grpc_bytes_sent": grpc_bytes,
            }
        )
        self._setup_reported = True
        self._epoch_started = time.perf_counter()

    # -- output ------------------------------------------------------------------------

    def result_fields(self) -> dict[str, Any]:
        role = self.role
        out: dict[str, Any] = {
            "party": party_name(self.agent_id),
            "epochs_completed": self._epochs_reported,
            "resumed_from": self.resume_from,
        }
        if isinstance(role, csr.CryptoServiceProvider):
            out.update(key_fingerprint=role.scheme.fingerprint, ckks=role.scheme.describe())
        return out

    def write_outputs(self) -> None:
        if not self.shares:
            return
        kind = "masks" if self.agent_id == csr.RS_ID else "masked_factors"
        arrays: dict[str, Any] = {"kind": np.array(kind)}
        layout = getattr(self.role, "layout", None)
        if layout is not None:  # the public structure (the twin needs the users' dummies)
            arrays["slot_users"], arrays["slot_items"] = layout.slot_users, layout.slot_items
        for e, (U, V) in enumerate(self.shares):
            arrays[f"U_{e}"], arrays[f"V_{e}"] = U, V
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        write_atomic(self.out / SHARE_FILE, buf.getvalue())
