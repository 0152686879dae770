"""Role-level checkpoint state of FedMF and csr_fhe_mf: a fresh set of roles (fresh
keys) restored from a checkpoint continues exactly (FedMF); bad states and
unexpected resume messages are refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cipherfact.agents.envelope import Envelope
from cipherfact.crypto import PaillierOptions, generate_scheme, load_public_scheme
from cipherfact.crypto.ckks import load_public_ckks, make_ckks_scheme
from cipherfact.data.ratings import synthetic_ratings
from cipherfact.protocols.base import ProtocolError
from cipherfact.protocols.csr_fhe_mf import roles as csr
from cipherfact.protocols.fedmf import roles as fedmf
from cipherfact.simulations.checkpoint import state_from_npz, state_to_npz
from cipherfact.simulations.engine import InMemoryEngine

R = synthetic_ratings(5, 9, 2, 0.5, rng=np.random.default_rng(1))


def _fedmf_roles(cfg: fedmf.FedMFConfig, scheme: str, naive: bool) -> dict[int, Any]:
    codec = fedmf.fedmf_codec(cfg)
    options = PaillierOptions(packing=not naive)
    extra = {"insecure_test_keys": True} if scheme == "paillier" else {}
    key = generate_scheme(scheme, codec=codec, key_bits=512, options=options, **extra)

    def load(b: bytes) -> Any:
        return load_public_scheme(scheme, b, codec=codec, options=options, **extra)

    roles: dict[int, Any] = {fedmf.SERVER_ID: fedmf.FedMFServer(cfg, load)}
    for u in range(cfg.n_users):
        m = R.users == u
        roles[fedmf.user_id(u)] = fedmf.FedMFUser(
            u, R.items[m], R.values[m], cfg, key, send_key=(u == 0)
        )
    return roles


def _factors(roles: dict[int, Any]) -> tuple[np.ndarray, np.ndarray]:
    server, users = roles[0], [roles[i] for i in sorted(roles) if i > 0]
    key = users[0].scheme
    V = np.concatenate([key.decrypt(c) for c in server.encrypted_v])
    return np.stack([u.vector for u in users]), V.reshape(-1, server.config.n_factors)[
        : server.config.n_items
    ]


@pytest.mark.parametrize(
    ("scheme", "mode", "naive"),
    [("plain", "full", False), ("plain", "part", False), ("paillier", "part", True)],
)
def test_fedmf_restored_roles_continue_exactly(scheme: str, mode: str, naive: bool) -> None:
    cfg = fedmf.FedMFConfig("f", R.n_users, R.n_items, n_factors=2, epochs=4, mode=mode, lr=0.1)
    full = _fedmf_roles(cfg, scheme, naive)
    engine = InMemoryEngine(full)
    engine.start()
    states: dict[int, bytes] = {}
    for epoch in range(cfg.epochs):
        engine.run_outer()
        if epoch == 1:  # through the bytes a checkpoint file holds
            states = {i: state_to_npz(r.checkpoint_state()) for i, r in full.items()}
    resumed = _fedmf_roles(cfg, scheme, naive)  # a fresh key pair
    for i, role in resumed.items():
        role.restore_state(state_from_npz(states[i]))
    engine = InMemoryEngine(resumed)
    engine.start()
    for _ in range(2):
        engine.run_outer()
    assert all(r.done for r in resumed.values())
    (Ua, Va), (Ub, Vb) = _factors(full), _factors(resumed)
    assert np.array_equal(Ua, Ub) and np.array_equal(Va, Vb)


def test_fedmf_bad_states_and_messages_are_refused() -> None:
    cfg = fedmf.FedMFConfig("f", R.n_users, R.n_items, n_factors=2, epochs=2)
    roles = _fedmf_roles(cfg, "plain", False)
    server, last = roles[0], roles[fedmf.user_id(cfg.n_users - 1)]
    with pytest.raises(ValueError, match="not a server checkpoint"):
        server.restore_state({"role": "user", "epoch": 1})
    with pytest.raises(ValueError, match=r"epoch 3 is outside 1..2"):
        server.restore_state({"role": "server", "epoch": 3})
    with pytest.raises(ValueError, match="checkpoint V has shape"):
        last.restore_state({"role": "user", "epoch": 1, "vector": np.zeros(2), "V": np.zeros(3)})
    with pytest.raises(ProtocolError, match="no turn taken yet"):
        last.checkpoint_state()
    # a server that did not resume takes no Enc(V) from a user
    env = Envelope("f", fedmf.SETUP_ROUND, fedmf.STAGE_RESTORE, fedmf.user_id(0), 0, b"")
    with pytest.raises(ProtocolError, match="unexpected stage 'restore'"):
        server.step(env)


def test_state_to_npz_takes_numbers_and_text_only() -> None:
    data = state_to_npz({"role": "rs", "epoch": 3, "M": np.ones((2, 2)), "none": None})
    assert state_from_npz(data)["role"] == "rs" and state_from_npz(data)["epoch"] == 3
    with pytest.raises(TypeError, match="not numbers or text"):
        state_to_npz({"key": object()})


def test_csr_restore_checks_and_unexpected_resume() -> None:
    cfg = csr.CsrFheMFConfig("c", R.n_users, R.n_items, epochs=3)
    rs = csr.RecommenderServer(cfg, load_public_ckks)
    csp = csr.CryptoServiceProvider(cfg, make_ckks_scheme(cfg.plan().params))
    with pytest.raises(ValueError, match="not a rs checkpoint"):
        rs.restore_state(csp.checkpoint_state() | {"epoch": 1})
    with pytest.raises(ValueError, match=r"checkpoint A_U must be finite of shape \(5, 4\)"):
        csp.restore_state({"role": "csp", "epoch": 1, "A_U": np.zeros((4, 4)), "A_V": 0})
    env = Envelope("c", csr.SETUP_ROUND, csr.STAGE_RESUME, csr.CSP_ID, csr.RS_ID, b"")
    with pytest.raises(ProtocolError, match="unexpected \\(RS did not resume\\)"):
        rs.step(env)
