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
from cipherfact.crypto.errors import DecodeError

__all__ = ["available_schemes", "generate_scheme", "load_public_scheme", "load_secret_scheme"]

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


def load_public_scheme(name: str, data: bytes, **kwargs: Any) -> Scheme:
    """A public-only scheme from ``Scheme.public_bytes()`` output (validated)."""
    return _scheme_class(name).from_public_bytes(data, **kwargs)


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
    if codec is not None:
        kwargs["codec"] = codec
    return _scheme_class(name).from_secret_bytes(data, **kwargs)
