"""Encryption schemes behind one ``Scheme`` interface: packed Paillier and its plain twin.

Imports neither ray, grpc nor torch. Typical use::

    codec = FixedPointCodec(frac_bits=24, int_bits=8, scalar_bits=16, max_terms=16)
    own = generate_scheme("paillier", codec=codec)            # holds the secret key
    pub = load_public_scheme("paillier", own.public_bytes(), codec=codec)
"""

from cipherfact.crypto.base import Ciphertext, Scheme
from cipherfact.crypto.codec import FixedPointCodec, Layout
from cipherfact.crypto.errors import (
    BudgetExceededError,
    CryptoError,
    DecodeError,
    InsecureParameterError,
    KeyMismatchError,
    MissingSecretKeyError,
)
from cipherfact.crypto.options import PaillierOptions
from cipherfact.crypto.packed import PackedCiphertext, PackedScheme
from cipherfact.crypto.paillier import PaillierScheme
from cipherfact.crypto.plain import PlainScheme
from cipherfact.crypto.registry import (
    available_schemes,
    check_peer_key,
    generate_scheme,
    load_public_scheme,
    load_secret_scheme,
)

__all__ = [
    "BudgetExceededError",
    "Ciphertext",
    "CryptoError",
    "DecodeError",
    "FixedPointCodec",
    "InsecureParameterError",
    "KeyMismatchError",
    "Layout",
    "MissingSecretKeyError",
    "PackedCiphertext",
    "PackedScheme",
    "PaillierOptions",
    "PaillierScheme",
    "PlainScheme",
    "Scheme",
    "available_schemes",
    "check_peer_key",
    "generate_scheme",
    "load_public_scheme",
    "load_secret_scheme",
]
