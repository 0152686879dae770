"""Job certificates: one CA per job and one certificate per agent (mutual TLS).

Every agent certificate names its agent as ``agent-<id>`` (common name and DNS
subject alternative name) and is valid for both server and client use, so the
same file authenticates an agent when it listens and when it dials. A peer is
accepted only with a certificate signed by the job CA whose identity is the
sender it claims (checked in the servicer). Private keys are written with mode
0600 and never logged.

``check_tls_files`` loads an agent's three files with ``cryptography`` before
its server starts, so that a missing, unreadable or garbage file, a key that
does not belong to the certificate, a certificate from another CA, an expired
one or one naming another agent each get their own one-line error (gRPC would
report all of them as "Failed to bind").
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cipherfact.agents.envelope import AgentId
from cipherfact.crypto.certs import cert_names

IDENTITY_PREFIX = "agent-"


def agent_identity(agent_id: AgentId) -> str:
    """The name an agent's certificate carries (and the TLS target name peers check)."""
    return f"{IDENTITY_PREFIX}{agent_id}"


@dataclass(frozen=True)
class TlsFiles:
    """Paths one agent needs: the job CA, its own certificate and key."""

    ca: Path
    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(ca, cert, key) bytes; a missing file raises with its role named."""
        out = []
        roles = (("CA certificate", self.ca), ("certificate", self.cert), ("key", self.key))
        for role, path in roles:
            if not Path(path).is_file():
                raise FileNotFoundError(f"TLS {role} file {str(path)!r} does not exist")
            out.append(Path(path).read_bytes())
        return out[0], out[1], out[2]


class TlsFileError(ValueError):
    """An agent's CA, certificate or key file is unusable (one line, names the file)."""


def _pem_certs(path: Path, data: bytes, role: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TlsFileError(
            f"TLS {role} file {str(path)!r} is not a PEM certificate ({_first_line(exc)})"
        ) from exc
    if not certs:
        raise TlsFileError(f"TLS {role} file {str(path)!r} holds no certificate")
    return certs


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_tls_files(files: TlsFiles, identity: str | None = None) -> tuple[bytes, bytes, bytes]:
    """(ca, cert, key) bytes after checking that they make a usable mTLS identity.

    Raises ``TlsFileError`` naming the file and what is wrong: missing or
    unreadable, not PEM, an encrypted key, a key that does not match the
    certificate, a certificate not issued by the CA, outside its validity, or
    (with ``identity``) not naming that identity.
    """
    roles = (("CA certificate", files.ca), ("certificate", files.cert), ("key", files.key))
    raw: list[bytes] = []
    for role, path in roles:
        try:
            raw.append(Path(path).read_bytes())
        except FileNotFoundError as exc:
            raise TlsFileError(f"TLS {role} file {str(path)!r} does not exist") from exc
        except OSError as exc:
            raise TlsFileError(
                f"TLS {role} file {str(path)!r} cannot be read ({exc.strerror or exc})"
            ) from exc
    ca_pem, cert_pem, key_pem = raw
    cas = _pem_certs(files.ca, ca_pem, "CA certificate")
    chain = _pem_certs(files.cert, cert_pem, "certificate")
    leaf = chain[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:  # encrypted, and no password given
        raise TlsFileError(
            f"TLS key file {str(files.key)!r} is encrypted; an agent needs an unencrypted key "
            "(keep it mode 0600)"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise TlsFileError(
            f"TLS key file {str(files.key)!r} is not a PEM private key ({_first_line(exc)})"
        ) from exc
    if _spki(key.public_key()) != _spki(leaf.public_key()):
        raise TlsFileError(
            f"TLS certificate {str(files.cert)!r} and key {str(files.key)!r} do not match "
            "(the key belongs to another certificate)"
        )
    issuers = [*cas, *chain[1:]]
    if not any(_issued_by(leaf, ca) for ca in issuers):
        raise TlsFileError(
            f"TLS certificate {str(files.cert)!r} is not issued by the CA in "
            f"{str(files.ca)!r} (a certificate of another job?)"
        )
    now = datetime.datetime.now(datetime.timezone.utc)
    if now > leaf.not_valid_after_utc:
        raise TlsFileError(
            f"TLS certificate {str(files.cert)!r} expired on {leaf.not_valid_after_utc:%Y-%m-%d}"
        )
    if now < leaf.not_valid_before_utc:
        raise TlsFileError(
            f"TLS certificate {str(files.cert)!r} is not valid before "
            f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    if identity is not None and identity not in (names := cert_names(leaf)):
        raise TlsFileError(
            f"TLS certificate {str(files.cert)!r} names {names}, not {identity!r}: "
            "its peers would refuse it"
        )
    return ca_pem, cert_pem, key_pem


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cipherfact"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    """Create with 0600 from the start, so the key is never world-readable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_ca(name: str, days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA (key from the OS's randomness via ``cryptography``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_agent_cert(
    agent_id: AgentId,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    days: int,
    *,
    extra_dns: tuple[str, ...] = (),
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """An agent certificate for server and client authentication, named ``agent-<id>``."""
    ident = agent_identity(agent_id)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    names: list[x509.GeneralName] = [x509.DNSName(ident), *(x509.DNSName(d) for d in extra_dns)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(ident))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def cert_paths(out_dir: str | Path, agent_id: AgentId) -> TlsFiles:
    """Where ``write_job_certs`` puts agent ``agent_id``'s files."""
    out = Path(out_dir)
    ident = agent_identity(agent_id)
    return TlsFiles(out / "ca.pem", out / f"{ident}.pem", out / f"{ident}-key.pem")


def write_job_certs(
    out_dir: str | Path, n_agents: int, *, days: int = 30, ca_name: str = "cipherfact job CA"
) -> list[TlsFiles]:
    """Create ``ca.pem`` (+ ``ca-key.pem``, 0600) and ``agent-<i>.pem``/``-key.pem`` for each agent.

    Keep ``ca-key.pem`` off the agent machines: it is needed only to issue
    more certificates for this job.
    """
    if not isinstance(n_agents, int) or isinstance(n_agents, bool) or n_agents < 1:
        raise ValueError(f"n_agents must be a positive integer, got {n_agents!r}")
    if not isinstance(days, int) or days < 1:
        raise ValueError(f"days must be a positive integer, got {days!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca(ca_name, days)
    (out / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(out / "ca-key.pem", _key_pem(ca_key))
    files = []
    for i in range(n_agents):
        key, cert = make_agent_cert(i, ca_key, ca_cert, days)
        paths = cert_paths(out, i)
        paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(paths.key, _key_pem(key))
        files.append(paths)
    return files
