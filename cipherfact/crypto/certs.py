"""The names an X.509 certificate vouches for (one place for mTLS and FedMF's key boxes).

Both the gRPC layer (a peer's identity) and FedMF's key hand-over (whose
certificate signed a box) accept a certificate for a name if it carries that
name as a DNS subject alternative name or as its common name.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

__all__ = ["cert_names"]


def cert_names(cert: x509.Certificate) -> list[str]:
    """The DNS subject alternative names and common names a certificate carries."""
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += [str(n) for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        pass
    names += [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return list(dict.fromkeys(names))
