"""The synthetic NMF data of Lari, Arablouei & Werner (2024).

Ground-truth factors with i.i.d. exponential entries let a test compare a
recovered factorization against the truth, and a noise level given as an SNR
in dB makes runs comparable with the paper's reported setup (30 x 200, rank 5,
20 dB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["SyntheticNMF", "measure_snr_db", "synthetic_nmf"]


@dataclass(frozen=True)
class SyntheticNMF:
    """A synthetic nonnegative matrix and the factors it was built from.

    ``snr_db`` is the requested SNR, which holds exactly for the noise *before*
    clipping; ``snr_db_clipped`` is the SNR measured on the returned ``X``
    (clipping negative entries to 0 removes a little noise, so it is slightly
    higher). Both are ``None`` for noiseless data.
    """

    X: np.ndarray
    W_true: np.ndarray
    H_true: np.ndarray
    snr_db: float | None
    snr_db_clipped: float | None = None


def measure_snr_db(signal: np.ndarray, noisy: np.ndarray) -> float:
    """Return 10 log10(||signal||^2 / ||noisy - signal||^2) in dB (inf if equal)."""
    noise_energy = float(np.sum((noisy - signal) ** 2))
    if noise_energy == 0.0:
        return math.inf
    return 10.0 * math.log10(float(np.sum(signal**2)) / noise_energy)


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def synthetic_nmf(
    rows: int = 30,
    cols: int = 200,
    rank: int = 5,
    snr_db: float | None = 20.0,
    *,
    rng: np.random.Generator,
) -> SyntheticNMF:
    """Draw W (rows x rank), H (rank x cols) ~ Exp(1) and X = W H + Gaussian noise.

    The noise is rescaled so that 10 log10(||WH||^2 / ||noise||^2) equals
    ``snr_db`` exactly, then X is clipped at 0 so that it stays nonnegative
    (NMF needs that); clipping slightly raises the realised SNR, which is
    reported in ``snr_db_clipped``. ``snr_db=None`` gives noiseless X = W H.
    """
    rows = _check_positive_int("rows", rows)
    cols = _check_positive_int("cols", cols)
    rank = _check_positive_int("rank", rank)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if snr_db is not None:
        if isinstance(snr_db, bool) or not isinstance(snr_db, (int, float, np.floating)):
            raise TypeError(f"snr_db must be a number or None, got {type(snr_db).__name__}")
        if not math.isfinite(snr_db):
            raise ValueError(f"snr_db must be finite (use None for no noise), got {snr_db}")

    W = rng.exponential(1.0, size=(rows, rank))
    H = rng.exponential(1.0, size=(rank, cols))
    clean = W @ H
    if snr_db is None:
        return SyntheticNMF(X=clean, W_true=W, H_true=H, snr_db=None, snr_db_clipped=None)

    noise = rng.standard_normal(size=clean.shape)
    noise *= np.linalg.norm(clean) / np.linalg.norm(noise) * 10.0 ** (-float(snr_db) / 20.0)
    X = np.maximum(clean + noise, 0.0)
    return SyntheticNMF(
        X=X,
        W_true=W,
        H_true=H,
        snr_db=float(snr_db),
        snr_db_clipped=measure_snr_db(clean, X),
    )
