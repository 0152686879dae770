"""FedMF baseline: trains, matches its float twin, rejects bad messages."""

from __future__ import annotations

import numpy as np
import pytest

from cipherfact.agents.envelope import Envelope
from cipherfact.crypto import PaillierOptions, generate_scheme, load_public_scheme
from cipherfact.data.ratings import synthetic_ratings
from cipherfact.protocols.base import ProtocolError
from cipherfact.protocols.csr_fhe_mf.layout import encode_parts
from cipherfact.protocols.fedmf import roles as fedmf
from cipherfact.simulations.engine import InMemoryEngine

KEY_BITS = 512


@pytest.fixture(scope="module")
def ratings():
    return synthetic_ratings(6, 10, 2, 0.4, rng=np.random.default_rng(0))


def _config(r, mode: str, epochs: int = 3) -> fedmf.FedMFConfig:
    return fedmf.FedMFConfig(
        "f",
        r.n_users,
        r.n_items,
        n_factors=2,
        epochs=epochs,
        mode=mode,
        lr=0.1,
        init_value=0.1,
        rating_offset=3.0,
    )


def _run(r, cfg: fedmf.FedMFConfig, naive: bool, scheme_name: str = "paillier"):
    codec = fedmf.fedmf_codec(cfg)
    options = PaillierOptions(packing=not naive)
    extra = {"insecure_test_keys": True} if scheme_name == "paillier" else {}
    key = generate_scheme(scheme_name, codec=codec, key_bits=KEY_BITS, options=options, **extra)

    def load(b: bytes):
        return load_public_scheme(scheme_name, b, codec=codec, options=options, **extra)

    server = fedmf.FedMFServer(cfg, load)
    roles = {0: server}
    users = []
    for u in range(cfg.n_users):
        m = r.users == u
        users.append(fedmf.FedMFUser(u, r.items[m], r.values[m], cfg, key, send_key=(u == 0)))
        roles[fedmf.user_id(u)] = users[-1]
    engine = InMemoryEngine(roles)
    engine.start()
    history = []
    for _ in range(cfg.epochs):
        engine.run_outer()
        U = np.stack([x.vector for x in users])
        V = np.concatenate([key.decrypt(c) for c in server.encrypted_v]).reshape(-1, 2)
        history.append((U, V[: cfg.n_items]))
    return history, engine, server, key


def _rmse(r, U, V, offset=3.0) -> float:
    pred = offset + np.einsum("sf,sf->s", U[r.users], V[r.items])
    return float(np.sqrt(np.mean((r.values - pred) ** 2)))


@pytest.mark.parametrize(
    ("mode", "naive"), [("full", False), ("part", False), ("full", True), ("part", True)]
)
def test_fedmf_trains_and_matches_twin(ratings, mode, naive) -> None:
    cfg = _config(ratings, mode)
    history, _, _, _ = _run(ratings, cfg, naive)
    ref = fedmf.fedmf_reference(ratings.users, ratings.items, ratings.values, cfg)
    got = [_rmse(ratings, U, V) for U, V in history]
    want = [_rmse(ratings, U, V) for U, V in ref]
    assert got[-1] < _rmse(ratings, np.full((6, 2), 0.1), np.full((10, 2), 0.1)) - 0.01
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-3
    assert np.abs(history[-1][1] - ref[-1][1]).max() < 1e-4


def test_part_sends_fewer_bytes_than_full(ratings) -> None:
    _, full, _, _ = _run(ratings, _config(ratings, "full", 1), naive=True)
    _, part, _, _ = _run(ratings, _config(ratings, "part", 1), naive=True)
    assert part.stats.bytes_by_stage["grads"] < full.stats.bytes_by_stage["grads"]
    assert part.stats.bytes_by_stage["items"] == full.stats.bytes_by_stage["items"]


def test_plain_twin_is_bit_identical(ratings) -> None:
    cfg = _config(ratings, "full", 2)
    enc, _, _, _ = _run(ratings, cfg, naive=False)
    plain, _, _, _ = _run(ratings, cfg, naive=False, scheme_name="plain")
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(enc, plain, strict=True))


def test_server_rejects_bad_messages(ratings) -> None:
    cfg = _config(ratings, "full", 1)
    _, _, server, key = _run(ratings, cfg, naive=False)
    with pytest.raises(ProtocolError, match="unexpected stage 'items' from agent 1"):
        server.step(Envelope("f", 0, "items", 1, 0, b""))
    with pytest.raises(ProtocolError, match="gradients for round 1 from agent 1: unexpected"):
        server.step(Envelope("f", 1, "grads", 1, 0, b""))
    with pytest.raises(ProtocolError, match="duplicate public key from agent 2"):
        server.step(Envelope("f", -1, "key", 2, 0, key.public_bytes()))
    with pytest.raises(ProtocolError, match="unknown agent 99"):
        server.step(Envelope("f", 0, "grads", 99, 0, b""))


def test_server_rejects_foreign_ciphertexts(ratings) -> None:
    cfg = _config(ratings, "part", 2)
    codec = fedmf.fedmf_codec(cfg)
    key = generate_scheme("paillier", codec=codec, key_bits=KEY_BITS, insecure_test_keys=True)
    other = generate_scheme("paillier", codec=codec, key_bits=KEY_BITS, insecure_test_keys=True)
    server = fedmf.FedMFServer(
        cfg, lambda b: load_public_scheme("paillier", b, codec=codec, insecure_test_keys=True)
    )
    server.step(Envelope("f", -1, "key", 1, 0, key.public_bytes()))
    server.begin_outer()
    size = server.encrypted_v[0].size
    payload = encode_parts([(0).to_bytes(4, "big"), other.to_bytes(other.encrypt(np.zeros(size)))])
    with pytest.raises(ProtocolError, match=r"bad ciphertext for block 0: .*key"):
        server.step(Envelope("f", 0, "grads", 1, 0, payload))
    payload = encode_parts([(0).to_bytes(4, "big"), key.to_bytes(key.encrypt(np.zeros(1)))])
    with pytest.raises(ProtocolError, match=f"block 0 holds 1 values, expected {size}"):
        server.step(Envelope("f", 0, "grads", 1, 0, payload))
    payload = encode_parts([(7).to_bytes(4, "big")])
    with pytest.raises(ProtocolError, match="1 block indices for 0 blocks"):
        server.step(Envelope("f", 0, "grads", 1, 0, payload))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(mode="half"), "mode must be one of"),
        (dict(lr=0.0), "lr must be > 0"),
        (dict(n_factors=0), "n_factors must be a positive int"),
        (dict(reg_u=-1.0), "reg_u and reg_v must be >= 0"),
    ],
)
def test_config_validation(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        fedmf.FedMFConfig("f", 2, 3, **kwargs)  # type: ignore[arg-type]


def test_codec_refuses_too_many_updates() -> None:
    with pytest.raises(ValueError, match="exceeds the codec's 65534 additions"):
        fedmf.fedmf_codec(fedmf.FedMFConfig("f", 70000, 3, epochs=1))


def test_user_needs_secret_key(ratings) -> None:
    cfg = _config(ratings, "full")
    key = generate_scheme(
        "paillier", codec=fedmf.fedmf_codec(cfg), key_bits=KEY_BITS, insecure_test_keys=True
    )
    with pytest.raises(ValueError, match="share the secret key"):
        fedmf.FedMFUser(0, np.array([1]), np.array([3.0]), cfg, key.public())
