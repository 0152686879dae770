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
it, and only a step that sees both (``deploy local``'s gathering,
``read_csr``, like the simulation's measurement hook) can evaluate it. A
real deployment has no such step: no single party holds both shares.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.data.ratings import load_user_ratings
from cipherfact.deploy.gather import GatherRun
from cipherfact.deploy.jobfile import JobFileError
from cipherfact.deploy.node_base import BaseNode, numbered, save_npz, series
from cipherfact.deploy.recsys_gather import Epochs, gather_ratings, setup_bytes
from cipherfact.deploy.servicer import PayloadCheck
from cipherfact.protocols.csr_fhe_mf import roles as csr
from cipherfact.protocols.csr_fhe_mf.layout import decode_parts
from cipherfact.protocols.ratings.job import (
    csr_config,
    csr_config_for,
    csr_info,
    csr_layout,
    csr_twin,
    csr_user,
    load_split,
)

__all__ = ["SHARE_FILE", "CsrNode", "CsrPayloadFormat", "read_csr"]

SHARE_FILE = "share.npz"
# Upper bounds for the cheap format checks (a public CKKS context with
# relinearization keys at N = 32768 is far below this).
MAX_CONTEXT_BYTES = 512 * 1024 * 1024


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
        elif stage == csr.STAGE_STRUCTURE:  # a user's item indices, 8 bytes each
            if not data or len(data) % 8:
                raise ValueError(f"{len(data)} bytes is not a list of 8-byte item indices")
        elif stage == csr.STAGE_LAYOUT:
            # a user's offsets (24 bytes); the CSP's copy is the whole slot layout
            if env.receiver != csr.CSP_ID and len(data) != 24:
                raise ValueError(f"a layout message is 24 bytes, got {len(data)}")
        elif stage in (csr.STAGE_RATINGS, csr.STAGE_MASKED, csr.STAGE_REFRESHED, csr.STAGE_RESUME):
            decode_parts(data, f"{stage} payload")


class CsrNode(BaseNode):
    """One csr_fhe_mf party over gRPC; which one is fixed by its agent id."""

    supports_resume = True
    unit = "epoch"
    completed_key = "epochs_completed"
    drivers = frozenset({csr.RS_ID})
    party_names: ClassVar[Mapping[AgentId, str]] = {csr.RS_ID: "rs", csr.CSP_ID: "csp"}
    party_titles: ClassVar[Mapping[AgentId, str]] = {
        csr.RS_ID: "the recommender server (RS)",
        csr.CSP_ID: "the crypto service provider (CSP, holds the CKKS secret key)",
    }
    first_user = csr.user_id(0)
    parties_text = "{users} users, so RS (0), CSP (1) and users (2..)"
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
    #: RS's masks M or the CSP's masked factors A after each epoch ({"U": [...], "V": [...]})
    shares: dict[str, list[np.ndarray]]
    _setup_reported = False

    @classmethod
    def keeps_checkpoints(cls, agent_id: AgentId) -> bool:
        """RS and the CSP; a user keeps nothing (on resume it uploads again)."""
        return agent_id in (csr.RS_ID, csr.CSP_ID)

    @classmethod
    def party_count(cls, scenario: Any) -> int:
        return load_split(scenario.data, scenario.seed).train.n_users + 2

    @classmethod
    def gather(cls, run: GatherRun) -> dict[str, Any]:
        return gather_ratings(run, read_csr)

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
        # a user keeps nothing: on resume it uploads again, under the new key
        resumed = self.open_checkpoints(int(cfg.epochs))  # a bad resume fails before any key
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
        self.shares = {"U": [], "V": []}
        if resumed is not None:  # the role's state and the shares up to the checkpoint
            self.role.restore_state(resumed[0])
            epochs, who = int(self.role.epoch), f"agent {self.agent_id}"
            self.shares = {k: series(resumed[1], k, epochs, who) for k in self.shares}

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
        return -1 if self.in_setup() else int(self.role.epoch)

    def boundaries_done(self) -> int:
        return int(getattr(self.role, "epoch", 0))

    def in_setup(self) -> bool:
        role = self.role
        if isinstance(role, csr.RecommenderServer):
            return not role.ready
        if isinstance(role, csr.CryptoServiceProvider):
            return role.layout is None
        return True

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

    # -- the loop's hooks --------------------------------------------------------------

    def after_deliver(self) -> None:
        if not self.in_setup() and not self._setup_reported:
            self._report_setup()
        super().after_deliver()

    def on_boundary(self, index: int) -> dict[str, Any]:
        role = self.role
        rs = isinstance(role, csr.RecommenderServer)
        U, V = role.factor_masks() if rs else role.masked_factors()
        self.shares["U"].append(U)
        self.shares["V"].append(V)
        return self.timing(self.profiler.take())

    def checkpoint_state(self) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        past = {**numbered("U", self.shares["U"]), **numbered("V", self.shares["V"])}
        return self.role.checkpoint_state(), past

    def finish(self) -> None:
        if not self._setup_reported:  # a user: its whole part is the setup
            self._report_setup()

    def _report_setup(self) -> None:
        """One metrics line for the setup (keys, structure, uploads)."""
        self.append_report(-1, self.timing(self.profiler.take(), wall=False))
        self._setup_reported = True

    # -- output ------------------------------------------------------------------------

    def result_fields(self) -> dict[str, Any]:
        role = self.role
        if isinstance(role, csr.CryptoServiceProvider):
            return {"key_fingerprint": role.scheme.fingerprint, "ckks": role.scheme.describe()}
        return {}

    def write_outputs(self) -> None:
        if not self.shares["U"]:
            return
        kind = "masks" if self.agent_id == csr.RS_ID else "masked_factors"
        arrays: dict[str, Any] = {"kind": np.array(kind)}
        layout = getattr(self.role, "layout", None)
        if layout is not None:  # the public structure (the twin needs the users' dummies)
            arrays["slot_users"], arrays["slot_items"] = layout.slot_users, layout.slot_items
        for k, share in self.shares.items():
            arrays.update(numbered(k, share))
        save_npz(self.out / SHARE_FILE, arrays)


# -- gathering (``recsys_gather``): the only step that sees both shares ---------------------


def _group(agent_id: int) -> str:
    return "rs" if agent_id == csr.RS_ID else "csp" if agent_id == csr.CSP_ID else "users"


def _shares(path: Path, epochs: int) -> list[tuple[np.ndarray, np.ndarray]]:
    with np.load(path, allow_pickle=False) as f:
        return [(f[f"U_{e}"], f[f"V_{e}"]) for e in range(epochs)]


def _layout(path: Path, cfg: Any) -> Any:
    """The public structure the CSP received: the users' dummies are secret draws,
    so the twin takes them from here."""
    with np.load(path, allow_pickle=False) as f:
        users, items = f["slot_users"], f["slot_items"]
    structures = [items[users == u] for u in range(cfg.n_users)]
    return csr_layout(cfg, structures)


def read_csr(run: GatherRun, split: Any) -> Epochs:
    """The model A - M per epoch (RS wrote its masks M, the CSP its masked factors A),
    the twin of the structure the CSP saw, and RS's and the CSP's traffic and seconds
    per epoch."""
    deploy, results, train = run.deploy, run.results, split.train
    cfg = csr_config(deploy.scenario, train)
    nnz = cfg.n_users * cfg.pad_to if cfg.hide_pattern else train.n_ratings
    sizes = {"slots_used": nnz, "chunks": -(-nnz // cfg.plan().params.slot_count)}
    info = csr_info(cfg, results[csr.CSP_ID].get("ckks"), train, sizes)
    out = Epochs(info, {i: _group(i) for i in range(len(results))}, cfg.rating_offset)
    if not run.ok:
        return out
    rs_out, csp_out = deploy.agent_out(csr.RS_ID), deploy.agent_out(csr.CSP_ID)
    out.twin, _ = csr_twin(train, cfg, _layout(csp_out / SHARE_FILE, cfg))
    masks = _shares(rs_out / SHARE_FILE, cfg.epochs)
    masked = _shares(csp_out / SHARE_FILE, cfg.epochs)
    rs_lines = {m["epoch"]: m for m in run.metrics(csr.RS_ID)}
    csp_lines = {m["epoch"]: m for m in run.metrics(csr.CSP_ID)}
    for e in range(cfg.epochs):
        out.factors.append((masked[e][0] - masks[e][0], masked[e][1] - masks[e][1]))
        rs_m, csp_m = rs_lines[e], csp_lines[e]
        out.records.append(
            {
                "bytes": rs_m["bytes_sent"] + csp_m["bytes_sent"],
                "grpc_bytes": rs_m["grpc_bytes_sent"] + csp_m["grpc_bytes_sent"],
                "wall_s": rs_m["wall_s"],
                "rs_s": rs_m["crypto_s"] + rs_m["compute_s"],
                "csp_s": csp_m["crypto_s"] + csp_m["compute_s"],
            }
        )
    out.setup_bytes = setup_bytes(results)
    return out
