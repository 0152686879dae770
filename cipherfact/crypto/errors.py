"""Errors raised by the crypto layer.

All are ``ValueError`` subclasses so that callers validating untrusted input can
catch one family; none of them ever carries key material or plaintext in its
message.
"""


class CryptoError(ValueError):
    """Base class of every error the crypto layer raises on bad input."""


class DecodeError(CryptoError):
    """Bytes that are malformed, truncated, of an unknown version or scheme."""


class KeyMismatchError(CryptoError):
    """A ciphertext or key was used with a scheme holding a different key."""


class BudgetExceededError(CryptoError):
    """An encoding or homomorphic operation would overflow the slot budget.

    Packed Paillier slots wrap silently when they overflow, corrupting the
    neighbouring slot; we refuse the operation instead.
    """


class MissingSecretKeyError(CryptoError):
    """Decryption was asked of a scheme that holds only a public key."""


class InsecureParameterError(CryptoError):
    """Key or context parameters below the security floor were requested."""


class InsecureKeyError(InsecureParameterError, DecodeError):
    """Key bytes that parse but name a key below the security floor.

    Both an ``InsecureParameterError`` and a ``DecodeError``, so code that
    treats every bad key blob alike can catch ``DecodeError``.
    """
