"""The ``Scheme`` interface shared by paillier, ckks and the plain twin.

A scheme object wraps one key (public, or public + secret). It encrypts a whole
numpy vector into one ``Ciphertext`` object (which may hold many packed
ciphertexts inside) and offers the homomorphic operations the protocols need.
Protocols talk to this interface only, so a run can swap ``paillier`` for its
``plain`` twin and get bit-identical numbers at a fraction of the cost.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np


class Ciphertext(ABC):
    """An encrypted vector. Opaque to callers; its scheme knows its insides."""

    #: fingerprint of the public key the vector is encrypted under
    key_fingerprint: str
    #: number of values in the vector
    size: int


class Scheme(ABC):
    """One key's view of an additively homomorphic encryption scheme.

    Every method that takes a ciphertext raises ``KeyMismatchError`` if it was
    made under another key, ``BudgetExceededError`` if the result would
    overflow the slot layout, and never silently wraps.
    """

    name: ClassVar[str]

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """Short hex digest of the public key (safe to log and show)."""

    @property
    @abstractmethod
    def has_secret_key(self) -> bool:
        """Whether this object can decrypt."""

    @abstractmethod
    def public(self) -> Scheme:
        """A copy of this scheme that holds only the public key."""

    @abstractmethod
    def public_bytes(self) -> bytes:
        """Serialized public key/context, for ``load_public_scheme``."""

    @abstractmethod
    def encrypt(self, x: np.ndarray) -> Ciphertext:
        """Encrypt a 1-D float vector (fresh randomness)."""

    @abstractmethod
    def decrypt(self, c: Ciphertext) -> np.ndarray:
        """Decrypt to a 1-D float64 vector; needs the secret key."""

    @abstractmethod
    def add(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        """Enc(x) + Enc(y) -> Enc(x + y)."""

    @abstractmethod
    def add_plain(self, a: Ciphertext, x: np.ndarray) -> Ciphertext:
        """Enc(x) + y -> Enc(x + y) for a plaintext vector y."""

    @abstractmethod
    def mul_scalar(self, a: Ciphertext, k: int, *, k_max: int | None = None) -> Ciphertext:
        """Enc(x) * k -> Enc(k x) for a Python integer k.

        ``k_max`` is a public bound on ``|k|``: schemes whose ciphertexts carry
        metadata (packed Paillier's slot bound) grow it by ``k_max`` rather than
        ``|k|``, so a private scalar does not show in the bytes.
        """

    @abstractmethod
    def rerandomize(self, c: Ciphertext) -> Ciphertext:
        """Same plaintext, fresh randomness: call before anything leaves an agent."""

    @abstractmethod
    def to_bytes(self, c: Ciphertext) -> bytes:
        """Compact versioned bytes (scheme, key fingerprint, layout, payload)."""

    @abstractmethod
    def from_bytes(self, data: bytes) -> Ciphertext:
        """Inverse of ``to_bytes``; ``DecodeError``/``KeyMismatchError`` on bad input."""

    def sum(self, cs: Sequence[Ciphertext]) -> Ciphertext:
        """Homomorphic sum of several ciphertexts (at least one)."""
        if not cs:
            raise ValueError("sum() needs at least one ciphertext, got an empty list")
        total = cs[0]
        for c in cs[1:]:
            total = self.add(total, c)
        return total

    def __repr__(self) -> str:  # never show key material
        kind = "secret" if self.has_secret_key else "public"
        return f"{type(self).__name__}({kind} key {self.fingerprint})"

    def describe(self) -> dict[str, Any]:
        """Parameters worth recording in a run's summary (no key material)."""
        return {"scheme": self.name, "fingerprint": self.fingerprint}
