"""FedMF's shared Paillier key, handed from one user to the others through the server.

FedMF (``fedmf.py``) needs every user to hold the same Paillier key pair
while the server, which relays all traffic, holds only the public key. In one
process the users simply share the key object; deployed, one user, the *key
leader* (user 0), generates the pair and sends each other user a **key box**:
the secret key encrypted to that user's own certificate key and signed with
the leader's certificate key. Certificates are the job's mTLS certificates,
issued by the job CA and naming ``identity_of(agent_id)``.

The exchange, every message relayed verbatim by the server (round -1):

1. each other user v -> server -> leader: ``STAGE_CERT``, v's certificate (public);
2. leader -> server -> v: ``STAGE_KEYBOX``, ``seal_key``'s box for v.

A box (ECIES on the certificates' curve, P-256 for ``deploy certs``):
ephemeral ECDH with v's certificate key, HKDF-SHA256 over the shared secret
and the header, AES-256-GCM of the secret key with the header as associated
data; the header names the job, the leader, v, the ephemeral key, v's
certificate digest and the public key's digest; the leader signs header,
nonce and ciphertext with ECDSA-SHA256 and attaches its certificate.

What each party sees: the server sees every user's certificate (public), the
Paillier public key, and per user one box: an ephemeral public key, a nonce,
an AES-GCM ciphertext of fixed length and a signature. Without v's
certificate key it learns nothing about the secret key (the ECDH shared
secret is unknown to it). It cannot substitute a key pair of its own: a box
is accepted only when signed by a certificate that the job CA issued to the
leader, for this job, for this recipient and this recipient's certificate,
and only for the public key it names (the secret key must match it). It can
drop or delay boxes (the job then fails, naming the missing user), not read
or forge them. A user sees the key pair, as FedMF intends. The CA is the
trust root: a CA that issues a second "leader" certificate defeats this, as it
defeats mTLS. Nothing here logs or stores key material; ``open_key`` returns
the secret key bytes to the caller, which loads them into a scheme at once.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cipherfact.agents.envelope import AgentId, Envelope
from cipherfact.crypto.certs import cert_names
from cipherfact.protocols.base import ProtocolError

__all__ = [
    "KEY_STAGES",
    "STAGE_CERT",
    "STAGE_KEYBOX",
    "Identity",
    "KeyBoxError",
    "KeyFollower",
    "KeyLeader",
    "KeyRelay",
    "Trust",
    "box_recipient",
    "open_key",
    "seal_key",
]

STAGE_CERT = "key_cert"
STAGE_KEYBOX = "key_box"
KEY_STAGES = frozenset({STAGE_CERT, STAGE_KEYBOX})
SETUP_ROUND = -1
VERSION = 1
DOMAIN = b"cipherfact/fedmf/keybox/v1"
#: a box holds a key pair of a few KB and a certificate; anything far larger is refused
MAX_MESSAGE_BYTES = 256 * 1024


class KeyBoxError(ValueError):
    """A certificate message or key box that must not be used (one line, says why)."""


@dataclass(frozen=True)
class Identity:
    """One party's certificate (PEM) and its private key (never shown, never serialized)."""

    agent_id: AgentId
    cert_pem: bytes
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)

    def __reduce__(self) -> Any:
        raise TypeError("an Identity holds a private key and is never pickled")


@dataclass(frozen=True)
class Trust:
    """How to check a peer's certificate: the job CA and the name each agent's carries.

    ``now``: check validity periods at this time (None: the caller's TLS
    layer already checks them; protocols keep no clock).
    """

    ca_pem: bytes
    identity_of: Callable[[AgentId], str]
    now: datetime.datetime | None = None

    def verify(self, cert_pem: bytes, agent_id: AgentId) -> ec.EllipticCurvePublicKey:
        """The EC public key of ``cert_pem`` once it is shown to be ``agent_id``'s."""
        who = self.identity_of(agent_id)
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            cas = x509.load_pem_x509_certificates(self.ca_pem)
        except ValueError as exc:
            raise KeyBoxError(f"certificate for {who} is not PEM: {_first(exc)}") from exc
        if not any(_issued_by(cert, ca) for ca in cas):
            raise KeyBoxError(f"certificate for {who} is not issued by the job CA")
        if who not in cert_names(cert):
            raise KeyBoxError(f"certificate names {cert_names(cert)}, not {who!r}")
        if self.now is not None and not (
            cert.not_valid_before_utc <= self.now <= cert.not_valid_after_utc
        ):
            raise KeyBoxError(f"certificate of {who} is outside its validity period")
        key = cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise KeyBoxError(
                f"certificate of {who} has a {type(key).__name__}; key boxes need EC keys"
            )
        return key


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cert_digest(cert_pem: bytes) -> str:
    try:
        der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    except ValueError as exc:
        raise KeyBoxError(f"not a PEM certificate: {_first(exc)}") from exc
    return _digest(der)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise KeyBoxError(f"key box field {what!r} is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise KeyBoxError(f"key box field {what!r} is not base64") from exc


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _load_json(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_MESSAGE_BYTES:
        raise KeyBoxError(f"{what} of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        obj = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise KeyBoxError(f"{what} is not JSON: {_first(exc)}") from exc
    if not isinstance(obj, dict):
        raise KeyBoxError(f"{what} is not a JSON object")
    return obj


def _aead_key(shared: bytes, header: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=DOMAIN + header).derive(
        shared
    )


def seal_key(
    secret_key: bytes,
    public_key: bytes,
    *,
    job_id: str,
    leader: Identity,
    recipient: AgentId,
    recipient_cert_pem: bytes,
    trust: Trust,
) -> bytes:
    """A key box: ``secret_key`` readable only with ``recipient``'s certificate key,
    signed by ``leader`` (fresh ephemeral key and nonce every call)."""
    their_key = trust.verify(recipient_cert_pem, recipient)
    ephemeral = ec.generate_private_key(their_key.curve)  # from the OS's randomness
    eph_pub = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    header = _canonical(
        {
            "v": VERSION,
            "job": job_id,
            "sender": leader.agent_id,
            "recipient": recipient,
            "ephemeral": _b64(eph_pub),
            "recipient_cert": _cert_digest(recipient_cert_pem),
            "public_key": _digest(public_key),
        }
    )
    key = _aead_key(ephemeral.exchange(ec.ECDH(), their_key), header)
    nonce = secrets.token_bytes(12)
    ciphertext = AESGCM(key).encrypt(nonce, secret_key, header)
    signature = leader.private_key.sign(
        DOMAIN + header + nonce + ciphertext, ec.ECDSA(hashes.SHA256())
    )
    box = {
        "header": header.decode("utf-8"),
        "nonce": _b64(nonce),
        "ciphertext": _b64(ciphertext),
        "public_key": _b64(public_key),
        "cert": leader.cert_pem.decode("ascii"),
        "signature": _b64(signature),
    }
    return _canonical(box)


def box_recipient(box: bytes) -> AgentId:
    """Who a box is for (all the relaying server reads of it)."""
    obj = _load_json(box, "key box")
    header = obj.get("header")
    if not isinstance(header, str):
        raise KeyBoxError("key box has no header")
    recipient = _load_json(header.encode("utf-8"), "key box header").get("recipient")
    if isinstance(recipient, bool) or not isinstance(recipient, int):
        raise KeyBoxError(f"key box names no recipient ({recipient!r})")
    return recipient


def open_key(
    box: bytes, *, job_id: str, leader_id: AgentId, me: Identity, trust: Trust
) -> tuple[bytes, bytes]:
    """(secret key, public key) from a box for ``me``; ``KeyBoxError`` unless the job
    CA's certificate for ``leader_id`` signed it, for this job, for ``me`` and
    ``me``'s certificate, and it decrypts."""
    obj = _load_json(box, "key box")
    header_text = obj.get("header")
    cert = obj.get("cert")
    if not isinstance(header_text, str) or not isinstance(cert, str):
        raise KeyBoxError("key box lacks its header or the leader's certificate")
    header_bytes = header_text.encode("utf-8")
    header = _load_json(header_bytes, "key box header")
    expected = {"v": VERSION, "job": job_id, "sender": leader_id, "recipient": me.agent_id}
    for name, want in expected.items():
        if header.get(name) != want:
            raise KeyBoxError(f"key box has {name} {header.get(name)!r}, expected {want!r}")
    if header.get("recipient_cert") != _cert_digest(me.cert_pem):
        raise KeyBoxError("key box is sealed to another certificate than this agent's")
    nonce = _unb64(obj.get("nonce"), "nonce")
    ciphertext = _unb64(obj.get("ciphertext"), "ciphertext")
    public_key = _unb64(obj.get("public_key"), "public_key")
    signature = _unb64(obj.get("signature"), "signature")
    leader_key = trust.verify(cert.encode("ascii", "replace"), leader_id)
    try:
        leader_key.verify(
            signature, DOMAIN + header_bytes + nonce + ciphertext, ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature as exc:
        raise KeyBoxError(
            f"key box signature is not the key leader's ({trust.identity_of(leader_id)})"
        ) from exc
    if header.get("public_key") != _digest(public_key):
        raise KeyBoxError("key box's public key does not match its signed digest")
    eph_pub = _unb64(header.get("ephemeral"), "ephemeral")
    curve = me.private_key.curve
    try:
        ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(curve, eph_pub)
        key = _aead_key(me.private_key.exchange(ec.ECDH(), ephemeral), header_bytes)
        secret_key = AESGCM(key).decrypt(nonce, ciphertext, header_bytes)
    except (ValueError, InvalidTag) as exc:
        raise KeyBoxError("key box does not decrypt with this agent's certificate key") from exc
    return secret_key, public_key


# --- the three parties of the exchange ------------------------------------------------


def _cert_message(me: Identity) -> bytes:
    return _canonical({"agent": me.agent_id, "cert": me.cert_pem.decode("ascii")})


def _read_cert_message(payload: bytes) -> tuple[AgentId, bytes]:
    obj = _load_json(payload, "certificate message")
    agent, cert = obj.get("agent"), obj.get("cert")
    if isinstance(agent, bool) or not isinstance(agent, int) or not isinstance(cert, str):
        raise KeyBoxError("certificate message needs an integer 'agent' and a PEM 'cert'")
    return agent, cert.encode("ascii", "replace")


class KeyRelay:
    """The server's part: forward each follower's certificate to the leader and the
    leader's box for each follower to it, once each; it opens nothing."""

    def __init__(
        self, job_id: str, server: AgentId, leader: AgentId, followers: list[AgentId]
    ) -> None:
        self.job_id, self.server, self.leader = job_id, server, leader
        self.followers = frozenset(followers)
        self.certs: set[AgentId] = set()
        self.boxes: set[AgentId] = set()

    @property
    def complete(self) -> bool:
        """Every follower's box has been passed on."""
        return self.boxes == self.followers

    def step(self, env: Envelope) -> list[Envelope]:
        who = f"server: {env.stage!r} from agent {env.sender}"
        try:
            if env.stage == STAGE_CERT:
                claimed, _ = _read_cert_message(bytes(env.payload))
                if env.sender not in self.followers or claimed != env.sender:
                    raise ProtocolError(f"{who}: not a certificate of a user awaiting the key")
                if env.sender in self.certs:
                    raise ProtocolError(f"{who}: duplicate certificate")
                self.certs.add(env.sender)
                to = self.leader
            elif env.stage == STAGE_KEYBOX:
                to = box_recipient(bytes(env.payload))
                if env.sender != self.leader or to not in self.followers or to in self.boxes:
                    raise ProtocolError(f"{who}: unexpected key box for agent {to}")
                self.boxes.add(to)
            else:
                raise ProtocolError(f"{who}: not a key distribution stage")
        except KeyBoxError as exc:
            raise ProtocolError(f"{who}: {exc}") from exc
        return [Envelope(self.job_id, SETUP_ROUND, env.stage, self.server, to, env.payload)]


class KeyLeader:
    """The leader's part: answer each follower's certificate with a box for it."""

    def __init__(
        self,
        job_id: str,
        me: Identity,
        trust: Trust,
        server: AgentId,
        followers: list[AgentId],
        secret_key: Callable[[], bytes],
        public_key: bytes,
    ) -> None:
        self.job_id, self.me, self.trust, self.server = job_id, me, trust, server
        self.followers = frozenset(followers)
        self._secret_key = secret_key  # called per box: the bytes are not kept here
        self.public_key = public_key
        self.sealed: set[AgentId] = set()

    def step(self, env: Envelope) -> list[Envelope]:
        who = f"key leader: certificate relayed by agent {env.sender}"
        if env.stage != STAGE_CERT or env.sender != self.server:
            raise ProtocolError(f"{who}: expected {STAGE_CERT!r} from the server")
        try:
            agent, cert = _read_cert_message(bytes(env.payload))
            if agent not in self.followers or agent in self.sealed:
                raise KeyBoxError(f"no key box due for agent {agent}")
            box = seal_key(
                self._secret_key(),
                self.public_key,
                job_id=self.job_id,
                leader=self.me,
                recipient=agent,
                recipient_cert_pem=cert,
                trust=self.trust,
            )
        except KeyBoxError as exc:
            raise ProtocolError(f"{who}: {exc}") from exc
        self.sealed.add(agent)
        return [
            Envelope(self.job_id, SETUP_ROUND, STAGE_KEYBOX, self.me.agent_id, self.server, box)
        ]


class KeyFollower:
    """A follower's part: send its certificate, then open the one box it gets."""

    def __init__(
        self, job_id: str, me: Identity, trust: Trust, server: AgentId, leader: AgentId
    ) -> None:
        self.job_id, self.me, self.trust = job_id, me, trust
        self.server, self.leader = server, leader
        self.opened = False

    def start(self) -> list[Envelope]:
        payload = _cert_message(self.me)
        return [
            Envelope(self.job_id, SETUP_ROUND, STAGE_CERT, self.me.agent_id, self.server, payload)
        ]

    def step(self, env: Envelope) -> tuple[bytes, bytes]:
        """(secret key, public key) from the leader's box; ``ProtocolError`` if refused."""
        who = f"agent {self.me.agent_id}: key box relayed by agent {env.sender}"
        if env.stage != STAGE_KEYBOX or env.sender != self.server or self.opened:
            raise ProtocolError(f"{who}: unexpected {env.stage!r}")
        try:
            keys = open_key(
                bytes(env.payload),
                job_id=self.job_id,
                leader_id=self.leader,
                me=self.me,
                trust=self.trust,
            )
        except KeyBoxError as exc:
            raise ProtocolError(f"{who}: refused: {exc}") from exc
        self.opened = True
        return keys
