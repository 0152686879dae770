"""Scenario dataclasses for the recommendation protocols (csr_fhe_mf, fedmf).

Strict like every scenario: unknown fields are errors (``build_dataclass``).
The data source is chosen by which fields are set: ``train`` + ``test``
(explicit files), else ``path`` (one file, split by ``split``), else the
synthetic generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cipherfact.simulations.scenario import ScenarioError

__all__ = ["CsrCryptoSpec", "CsrFheMFScenario", "FedMFCryptoSpec", "FedMFScenario", "RatingsSpec"]

_SPLITS = ("random", "last_k")
_FORMATS = ("auto", "movielens_csv", "ml100k", "csv")


@dataclass(frozen=True)
class RatingsSpec:
    """Where the ratings come from and how they are split."""

    n_users: int = 100
    n_items: int = 300
    rank: int = 4
    density: float = 0.1
    noise: float = 0.5
    scale_low: float = 1.0
    scale_high: float = 5.0
    path: str = ""
    format: str = "auto"
    user_col: str = ""
    item_col: str = ""
    rating_col: str = ""
    timestamp_col: str = ""
    split: str = "random"
    test_fraction: float = 0.2
    last_k: int = 1
    train: str = ""
    test: str = ""

    def __post_init__(self) -> None:
        if self.split not in _SPLITS:
            raise ScenarioError(f"data.split must be one of {_SPLITS}, got {self.split!r}")
        if self.format not in _FORMATS:
            raise ScenarioError(f"data.format must be one of {_FORMATS}, got {self.format!r}")
        if bool(self.train) != bool(self.test):
            raise ScenarioError("data.train and data.test must be given together")
        if self.train and self.path:
            raise ScenarioError("give either data.path or data.train + data.test, not both")
        if not 0.0 < self.test_fraction < 1.0:
            raise ScenarioError(f"data.test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.last_k < 1:
            raise ScenarioError(f"data.last_k must be >= 1, got {self.last_k}")
        if min(self.n_users, self.n_items, self.rank) < 1:
            raise ScenarioError("data.n_users, data.n_items and data.rank must be >= 1")

    @property
    def source(self) -> str:
        """ "explicit", "file" or "synthetic"."""
        return "explicit" if self.train else "file" if self.path else "synthetic"


@dataclass(frozen=True)
class CsrCryptoSpec:
    """CKKS and masking parameters of csr_fhe_mf (see ``plan_csr_params``)."""

    params: str = "auto"
    mask_bits: int = 20
    value_bound: float = 16.0
    factor_mask_bits: int = 16
    factor_bound: float = 4.0
    max_error: float = 1e-2
    hide_pattern: bool = False
    pad_to: int = 0  # 0: the largest user's count (that maximum is then public)


@dataclass(frozen=True)
class CsrFheMFScenario:
    protocol: str = "csr_fhe_mf"
    name: str = "custom"
    seed: int = 0
    n_factors: int = 4
    epochs: int = 20
    lr: float = 1.0
    reg: float = 0.05
    init_scale: float = 0.3
    rating_offset: float = 3.0
    data: RatingsSpec = field(default_factory=RatingsSpec)
    crypto: CsrCryptoSpec = field(default_factory=CsrCryptoSpec)

    def __post_init__(self) -> None:
        if self.n_factors < 1 or self.epochs < 1:
            raise ScenarioError(
                f"n_factors and epochs must be >= 1, got {self.n_factors} and {self.epochs}"
            )


@dataclass(frozen=True)
class FedMFCryptoSpec:
    """Paillier for FedMF; ``naive``: one value per ciphertext, as the original."""

    scheme: str = "paillier"  # paillier | plain
    key_bits: int = 2048
    insecure_test_keys: bool = False
    naive: bool = False
    frac_bits: int = 20
    int_bits: int = 8

    def __post_init__(self) -> None:
        if self.scheme not in ("paillier", "plain"):
            raise ScenarioError(
                f"crypto.scheme must be 'paillier' or 'plain' for fedmf, got {self.scheme!r}"
            )


@dataclass(frozen=True)
class FedMFScenario:
    protocol: str = "fedmf"
    name: str = "custom"
    seed: int = 0
    n_factors: int = 4
    epochs: int = 5
    mode: str = "full"
    lr: float = 1e-3
    reg_u: float = 1e-4
    reg_v: float = 1e-4
    init_value: float = 0.01
    rating_offset: float = 0.0
    data: RatingsSpec = field(default_factory=RatingsSpec)
    crypto: FedMFCryptoSpec = field(default_factory=FedMFCryptoSpec)

    def __post_init__(self) -> None:
        if self.mode not in ("full", "part"):
            raise ScenarioError(f"mode must be 'full' or 'part', got {self.mode!r}")
        if self.n_factors < 1 or self.epochs < 1:
            raise ScenarioError(
                f"n_factors and epochs must be >= 1, got {self.n_factors} and {self.epochs}"
            )
