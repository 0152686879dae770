"""Public parameters of a ppdnmf job and the private draws every agent makes."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

import numpy as np

from cipherfact.agents.envelope import AgentId

#: the exchanges an agent can run for d_i (see the package docstring)
EXCHANGES = ("secagg", "pairwise")

STAGE_KEY = "key"  # both: an agent's public key(s), to each neighbour
STAGE_OFFER = "offer"  # pairwise: Enc_i(-W_i)
STAGE_REPLY = "reply"  # pairwise: a_ji (Enc_i(-W_i) + W_j) + noise
STAGE_PEERS = "peers"  # secagg: a hub relays its members' mask keys
STAGE_SHARE = "share"  # secagg: W_j plus pairwise masks, for one hub
SETUP_ROUND = -1


@dataclass(frozen=True)
class PPDNMFConfig:
    """Public parameters of a ppdnmf job: every agent holds the same copy.

    ``exchange`` picks how an agent obtains d_i = sum_j rho_ij (W_j - W_i):
    ``"secagg"`` (masked sum of the neighbours' W_j, rho_ij = penalty) or
    ``"pairwise"`` (Paillier offers and weighted, noised replies, rho_ij =
    penalty * a_ij a_ji / 4^weight_bits). ``reply_noise_bits`` (pairwise
    only) sets the noise a replier adds after weighting: uniform integers in
    [-2^(weight_bits + reply_noise_bits), 2^(weight_bits + reply_noise_bits))
    at the codec's fixed point, whose fraction is that many bits finer than
    the scenario's (``job.codec_for``). 0 reproduces the paper's
    construction, whose replies reveal a_ji by a gcd (kept for the attack
    tests only).
    """

    job_id: str
    rank: int
    outer_iters: int = 100
    inner_iters: int = 30
    penalty: float = 10.0
    weight_bits: int = 6
    h_sweeps: int = 1
    init_seed: int = 0
    init_scale: float = 1.0
    exchange: str = "pairwise"
    reply_noise_bits: int = 8

    def __post_init__(self) -> None:
        for name in ("rank", "outer_iters", "inner_iters", "h_sweeps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 1 <= self.weight_bits <= 16:
            raise ValueError(f"weight_bits must be in [1, 16], got {self.weight_bits}")
        if not self.penalty > 0:
            raise ValueError(f"penalty must be > 0, got {self.penalty}")
        if not self.init_scale > 0:
            raise ValueError(f"init_scale must be > 0, got {self.init_scale}")
        if self.exchange not in EXCHANGES:
            raise ValueError(f"exchange must be one of {EXCHANGES}, got {self.exchange!r}")
        if not 0 <= self.reply_noise_bits <= 24:
            raise ValueError(f"reply_noise_bits must be in [0, 24], got {self.reply_noise_bits}")

    @property
    def total_rounds(self) -> int:
        return self.outer_iters * self.inner_iters

    def initial_w(self, n_rows: int) -> np.ndarray:
        """The common starting W: public, derived from the job's init seed."""
        rng = np.random.default_rng([self.init_seed, 0x57])
        return self.init_scale * rng.uniform(0.0, 1.0, size=(n_rows, self.rank))

    @property
    def weight_max(self) -> int:
        """Public bound on every private weight (passed as ``k_max``)."""
        return 2**self.weight_bits - 1

    def weight_scale(self) -> float:
        """rho_ij = weight_scale * a_ij * a_ji (pairwise)."""
        return self.penalty / float(4**self.weight_bits)

    @property
    def noise_amplitude_bits(self) -> int:
        """Pairwise reply noise is uniform in [-2^this, 2^this) codec units."""
        return self.weight_bits + self.reply_noise_bits


def round_weights(
    weight_seed: int, round_index: int, neighbors: tuple[AgentId, ...], bits: int
) -> dict[AgentId, int]:
    """Agent i's private weights a_ij for one round (pairwise).

    Drawn from a generator keyed by (private seed, round), so the values do not
    depend on message arrival order: the same run on any transport draws the
    same weights. In a deployment the seed is each agent's secret.
    """
    rng = np.random.default_rng([weight_seed, round_index])
    draws = rng.integers(2 ** (bits - 1), 2**bits, size=len(neighbors)).tolist()
    return dict(zip(neighbors, draws, strict=True))


def reply_noise(
    private_seed: int, round_index: int, receiver: AgentId, size: int, amplitude_bits: int
) -> np.ndarray:
    """Uniform integers in [-2^amplitude_bits, 2^amplitude_bits) for one pairwise reply.

    A SHAKE-256 stream keyed by the replier's private seed, the round and the
    receiver: unpredictable without the seed (secret from the OS in a
    deployment), yet the same on every transport, so a Paillier run and its
    plain twin stay bit-identical.
    """
    width = (amplitude_bits + 1 + 7) // 8 + 1  # whole bytes, one spare: <= 7 bytes
    key = struct.pack(">QqQ", private_seed & (2**64 - 1), round_index, receiver)
    stream = hashlib.shake_256(b"cipherfact-reply-noise|" + key).digest(width * size)
    # each value: its `width` big-endian bytes mod 2^(amplitude_bits + 1), in uint64
    # (right-aligned in 8 zeroed bytes, read as one big-endian uint64 per value)
    padded = np.zeros((size, 8), dtype=np.uint8)
    padded[:, 8 - width :] = np.frombuffer(stream, dtype=np.uint8).reshape(size, width)
    words = padded.view(">u8").ravel() & np.uint64((1 << (amplitude_bits + 1)) - 1)
    return words.astype(np.int64) - (1 << amplitude_bits)


def initial_h(config: PPDNMFConfig, h_seed: int, agent_id: AgentId, n_cols: int) -> np.ndarray:
    """Agent i's private starting H_i, from its private seed."""
    rng = np.random.default_rng([h_seed, agent_id])
    return config.init_scale * rng.uniform(0.0, 1.0, size=(config.rank, n_cols))


@dataclass
class OuterRecord:
    """What one agent measured during one outer iteration."""

    outer: int
    local_sq_error: float
    seconds: dict[str, float] = field(default_factory=dict)
