"""Scenario dataclasses for the recommendation protocols (csr_fhe_mf, fedmf).

Strict like every scenario: unknown fields are errors (``build_dataclass``).
The data source is chosen by which fields are set: ``train`` + ``test``
(explicit files), else ``path`` (one file, split by ``split``), else the
synthetic generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cipherfact.simulations.scenario import (
    MAX_CELLS,
    MAX_EPOCHS,
    MAX_FACTORS,
    ScenarioError,
    check_int,
    check_number,
    check_paillier_codec,
    check_seed,
)

__all__ = ["CsrCryptoSpec", "CsrFheMFScenario", "FedMFCryptoSpec", "FedMFScenario", "RatingsSpec"]

_SPLITS = ("random", "last_k")
#: Largest |rating| a synthetic scale may reach (the protocols' own bounds on the
#: ratings are checked against the data in ``job.check_ratings``).
FLOAT_SCALE = 1e6
_FORMATS = ("auto", "movielens_csv", "ml100k", "csv")
#: lowrank: ``data.ratings.synthetic_ratings`` (users alike); movielens: heavy-tailed
#: users, half stars (``data.synthetic_ratings.movielens_like_ratings``)
_GENERATORS = ("lowrank", "movielens")


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
    generator: str = "lowrank"

    def __post_init__(self) -> None:
        if self.generator not in _GENERATORS:
            raise ScenarioError(
                f"data.generator must be one of {_GENERATORS}, got {self.generator!r}"
            )
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
        if self.source == "synthetic":
            cells = self.n_users * self.n_items
            if cells > MAX_CELLS:
                raise ScenarioError(
                    f"data.n_users * data.n_items must be <= {MAX_CELLS} (2**27 cells; the "
                    f"generator may draw over all of them), got {self.n_users} * "
                    f"{self.n_items} = {cells}"
                )
            check_int("data.rank", self.rank, 1, MAX_FACTORS)
        check_number("data.density", self.density, low=0.0, high=1.0, low_open=True)
        check_number("data.noise", self.noise, low=0.0)
        check_number("data.scale_low", self.scale_low, low=-FLOAT_SCALE, high=FLOAT_SCALE)
        check_number("data.scale_high", self.scale_high, low=-FLOAT_SCALE, high=FLOAT_SCALE)
        if not self.scale_low < self.scale_high:
            raise ScenarioError(
                f"data.scale_low must be < data.scale_high, got {self.scale_low} and "
                f"{self.scale_high}"
            )

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
    #: 0: items' steps divided by their rating counts (with hide_pattern: by the
    #: largest item's count, then public); > 0: by this constant (CsrFheMFConfig)
    item_norm: float = 0.0
    data: RatingsSpec = field(default_factory=RatingsSpec)
    crypto: CsrCryptoSpec = field(default_factory=CsrCryptoSpec)

    def __post_init__(self) -> None:
        if self.n_factors < 1 or self.epochs < 1:
            raise ScenarioError(
                f"n_factors and epochs must be >= 1, got {self.n_factors} and {self.epochs}"
            )
        _check_common(self)
        check_number("reg", self.reg, low=0.0)
        check_number("init_scale", self.init_scale, low=0.0, low_open=True)
        check_number("item_norm", self.item_norm, low=0.0)
        c = self.crypto
        check_int("crypto.mask_bits", c.mask_bits, 0, 60)
        check_int("crypto.factor_mask_bits", c.factor_mask_bits, 0, 60)
        check_number("crypto.value_bound", c.value_bound, low=0.0, low_open=True)
        check_number("crypto.factor_bound", c.factor_bound, low=0.0, low_open=True)
        check_number("crypto.max_error", c.max_error, low=0.0, low_open=True)
        if c.pad_to < 0:
            raise ScenarioError(f"crypto.pad_to must be >= 0, got {c.pad_to}")


def _check_common(scenario: CsrFheMFScenario | FedMFScenario) -> None:
    """Fields both recommendation protocols share."""
    check_seed(scenario.seed)
    check_int("n_factors", scenario.n_factors, 1, MAX_FACTORS)
    check_int("epochs", scenario.epochs, 1, MAX_EPOCHS)
    check_number("lr", scenario.lr, low=0.0, low_open=True)
    check_number("rating_offset", scenario.rating_offset, low=-FLOAT_SCALE, high=FLOAT_SCALE)


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
        check_paillier_codec(self.scheme, self.key_bits, self.frac_bits, self.int_bits)


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
        _check_common(self)
        check_number("reg_u", self.reg_u, low=0.0)
        check_number("reg_v", self.reg_v, low=0.0)
        check_number("init_value", self.init_value, low=-FLOAT_SCALE, high=FLOAT_SCALE)
