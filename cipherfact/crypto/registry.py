"""Scheme factories by name: ``generate_scheme``, ``load_public_scheme``, ``load_secret_scheme``.

Schemes are imported lazily from ``"module:Class"`` paths so that, e.g., CKKS
(TenSEAL) is loaded only when asked for. Each class provides ``generate``,
``from_public_bytes`` and ``from_secret_bytes`` classmethods; adding a scheme is
one line in ``_SCHEMES``.
"""

from __future__ import annotations

import importlib
from typing import Any

from cipherfact.crypto.base import Scheme
from cipherfact.crypto.errors import DecodeError, InsecureKeyError

__all__ = [
    "available_schemes",
    "check_peer_key",
    "generate_scheme",
    "load_public_scheme",
    "load_secret_scheme",
]

_SCHEMES: dict[str, str] = {
    "paillier": "cipherfact.crypto.paillier:PaillierScheme",
    "plain": "cipherfact.crypto.plain:PlainScheme",
    "ckks": "cipherfact.crypto.ckks:CkksScheme",
}
# scheme id byte of the secret key formats -> scheme name
_SECRET_IDS = {1: "paillier", 2: "plain", 3: "ckks"}


def available_schemes() -> list[str]:
    """Names accepted by ``generate_scheme``."""
    return sorted(_SCHEMES)


def _scheme_class(name: object) -> Any:
    if not isinstance(name, str) or name not in _SCHEMES:
        raise ValueError(f"unknown scheme {name!r}; expected one of {available_schemes()}")
    module, attr = _SCHEMES[name].split(":")
    return getattr(importlib.import_module(module), attr)


def generate_scheme(name: str, **kwargs: Any) -> Scheme:
    """A fresh scheme holding a new secret key.

    Paillier and plain take ``codec``, ``key_bits=2048``, ``insecure_test_keys=False``
    and ``options=PaillierOptions()``; other schemes take their own keywords.
    """
    return _scheme_class(name).generate(**kwargs)


def check_peer_key(scheme: Scheme, key_bits: int, allow_test_keys: bool) -> None:
    """Refuse a peer's Paillier key whose modulus is below the job's ``key_bits``.

    The one rule for every receiver of a peer's public key: a key smaller than
    the job's key size (e.g. a 256-bit key flagged as a *test* key by its
    sender) is accepted only when the receiver itself was started with
    ``insecure_test_keys``. The sender's test flag never waives it. Schemes
    without a modulus to size (plain twin, CKKS) are not checked here.
    """
    if scheme.name != "paillier":
        return
    if isinstance(key_bits, bool) or not isinstance(key_bits, int):
        raise TypeError(f"key_bits must be an int, got {type(key_bits).__name__}")
    found = int(scheme.key_bits)  # type: ignore[attr-defined]
    if found < key_bits and not allow_test_keys:
        raise InsecureKeyError(
            f"peer paillier public key has {found} bits, below the required {key_bits} bits "
            "(the job's key_bits); only a receiver started with insecure_test_keys accepts "
            "smaller keys"
        )


def load_public_scheme(
    name: str, data: bytes, *, min_key_bits: int | None = None, **kwargs: Any
) -> Scheme:
    """A public-only scheme from ``Scheme.public_bytes()`` output (validated).

    With ``min_key_bits`` (a receiver loading a peer's key: the job's key_bits)
    the key also passes ``check_peer_key``, waived only by the receiver's own
    ``insecure_test_keys=True`` (which is passed on to the scheme's loader).
    """
    scheme: Scheme = _scheme_class(name).from_public_bytes(data, **kwargs)
    if min_key_bits is not None:
        check_peer_key(scheme, min_key_bits, bool(kwargs.get("insecure_test_keys", False)))
    return scheme


def load_secret_scheme(data: bytes, codec: Any = None, **kwargs: Any) -> Scheme:
    """A scheme holding the secret key, from ``export_secret_key_bytes()`` output.

    The scheme is read from the bytes' header (byte 5), so callers need not know it.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 6 or data[:4] != b"CFSK":
        raise DecodeError("not cipherfact secret key bytes (bad magic or truncated)")
    name = _SECRET_IDS.get(data[5])
    if name is None:
        raise DecodeError(f"secret key bytes name unknown scheme id {data[5]}")
    if codec is not None and name != "ckks":  # CKKS keys carry no fixed-point codec
        kwargs["codec"] = codec
    return _scheme_class(name).from_secret_bytes(data, **kwargs)
