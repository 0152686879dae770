"""The DistributedNMF estimator: scikit-learn conventions, results, messages."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from cipherfact import DistributedNMF, cli
from cipherfact.data.synthetic import synthetic_nmf
from cipherfact.protocols.ppdnmf import job as ppdnmf_job
from cipherfact.solvers import nmf

README = Path(__file__).resolve().parents[2] / "README.md"


def quick(**params: object) -> DistributedNMF:
    """A fit in well under a second: no encryption, few iterations, no progress."""
    base: dict[str, object] = dict(
        n_components=2, n_agents=3, topology="complete", scheme="none", outer_iters=5,
        inner_iters=3, verbose=0,
    )  # fmt: skip
    base.update(params)
    return DistributedNMF(**base)  # type: ignore[arg-type]


def test_fit_matches_centralized_nmf_and_keeps_h_private_per_agent():
    Xp = synthetic_nmf(20, 80, 3, 30.0, rng=np.random.default_rng(1)).X  # paper's m x n
    X = Xp.T  # scikit-learn's n_samples x n_features: the 80 samples are split over agents
    model = DistributedNMF(3, n_agents=5, scheme="plain", outer_iters=40, inner_iters=15,
                           seed=2, verbose=0).fit(X)  # fmt: skip
    assert model.components_.shape == (3, 20) and model.W_.shape == (20, 3)
    assert np.array_equal(model.W_, model.components_.T)
    assert model.H_.shape == (3, 80) and model.n_iter_ == 40 and len(model.history_) == 40
    assert len(model.agent_H_) == 5 and sum(h.shape[1] for h in model.agent_H_) == 80
    assert sorted(np.concatenate(model.agent_samples_).tolist()) == list(range(80))
    central = nmf(Xp, 3, max_iter=200, tol=0.0, seed=0)
    assert model.rel_error_ <= 1.01 * central.rel_error + 1e-3
    assert model.consensus_spread_ < 0.05
    assert model.bytes_total_ > 0 and model.messages_total_ > 0
    recon = np.linalg.norm(X - model.H_.T @ model.components_) / np.linalg.norm(X)
    assert recon < 1.05 * model.rel_error_ + 1e-3
    assert model.reconstruction_err_ == pytest.approx(recon * np.linalg.norm(X))
    # fit_transform = fit().transform(): coefficients against the consensus basis,
    # within the consensus spread of the agents' own H_i
    H = clone(model).fit_transform(X)
    assert H.shape == (80, 3)
    assert np.allclose(H, model.transform(X))
    assert np.linalg.norm(H - model.H_.T) < 0.05 * np.linalg.norm(H)


def test_same_numbers_as_the_simulate_command(tmp_path: Path) -> None:
    """The estimator is the ppdnmf protocol: its factors are the CLI's, bit for bit,
    for the same data (transposed: the CLI splits columns, the estimator rows)."""
    Xp = np.random.default_rng(5).uniform(0.0, 1.0, (10, 24))
    np.save(tmp_path / "x.npy", Xp)
    sets = ["n_agents=4", "rank=2", "outer_iters=3", "inner_iters=2", "crypto.scheme='none'",
            "seed=7", f"data.path='{tmp_path / 'x.npy'}'"]  # fmt: skip
    argv = ["simulate", "ppdnmf-synthetic", "--quiet", "--out", str(tmp_path / "o")]
    assert cli.main(argv + [a for s in sets for a in ("--set", s)]) == 0
    factors = np.load(tmp_path / "o" / "factors.npz")
    model = DistributedNMF(2, n_agents=4, scheme="none", outer_iters=3, inner_iters=2, seed=7,
                           verbose=0).fit(Xp.T)  # fmt: skip
    for i in range(4):
        assert np.array_equal(model.agent_W_[i], factors[f"W_{i}"])
        assert np.array_equal(model.agent_H_[i], factors[f"H_{i}"])


def test_params_follow_scikit_learn_conventions():
    model = DistributedNMF(3, n_agents=4, key_bits=3072)
    params = model.get_params()
    assert params["n_components"] == 3 and params["key_bits"] == 3072 and params["verbose"] == 1
    assert set(params) >= {"n_agents", "topology", "degree", "scheme", "exchange", "seed"}
    assert model.set_params(n_agents=6) is model and model.n_agents == 6
    copy = clone(model)
    assert copy.get_params() == model.get_params() and copy is not model
    assert "n_components=3" in repr(model)
    fitted = quick().fit(np.random.default_rng(0).uniform(0, 1, (12, 5)))
    assert fitted.get_params() == quick().get_params()  # fit changes no parameter
    assert not hasattr(quick(), "components_")  # __init__ only stores


def test_transform_is_local_nnls_against_the_basis(monkeypatch: pytest.MonkeyPatch):
    X = np.random.default_rng(1).uniform(0, 1, (30, 6))
    model = quick(n_components=3).fit(X)

    def no_protocol(*_a: object, **_k: object) -> None:
        raise AssertionError("transform must not run the protocol")

    monkeypatch.setattr(ppdnmf_job, "run_inmemory", no_protocol)
    monkeypatch.setattr(ppdnmf_job, "generate_keys", no_protocol)
    truth = np.random.default_rng(2).uniform(0.1, 1.0, (4, 3))
    new_rows = truth @ model.components_  # exactly representable, nonnegative
    assert np.allclose(model.transform(new_rows), truth, atol=1e-8)
    assert np.allclose(model.inverse_transform(truth), new_rows)
    assert np.array_equal(model.transform(np.zeros((2, 6))), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="X has 5 features, but DistributedNMF is expecting 6"):
        model.transform(X[:, :5])
    with pytest.raises(ValueError, match=r"Negative values in data passed to .*transform"):
        model.transform(-X)


def _message(model: DistributedNMF, X: object) -> str:
    with pytest.raises(ValueError) as info:
        model.fit(X)
    return str(info.value)


@pytest.mark.parametrize(
    ("params", "X", "pattern"),
    [
        ({}, np.ones(12), r"Expected 2D array, got 1D array"),
        ({}, -np.ones((12, 4)),
         r"Negative values in data passed to DistributedNMF\.fit \(first -1"),
        ({}, np.where(np.eye(12, 4) > 0, np.nan, 1.0), r"Input X contains NaN"),
        ({}, np.full((12, 4), np.inf), r"Input X contains infinity"),
        ({}, np.zeros((12, 4)), r"X is all zeros"),
        ({"n_agents": 5}, np.ones((4, 6)),
         r"n_agents=5 agents need at least one sample \(row of X\) each, but X has 4 samples"),
        ({"n_components": 9}, np.ones((12, 4)),
         r"n_components must be between 1 and min\(n_samples, n_features\) = 4, got 9"),
        ({"scheme": "paillier", "key_bits": 512}, np.ones((12, 4)),
         r"^key_bits=512 is below 2048; set insecure_test_keys=True to allow it for tests$"),
        ({"n_agents": 3, "topology": "geometric"}, np.ones((12, 4)),
         r"^degree=3\.0 is more than 3 agents allow .* set degree <= 2, raise n_agents, or use "
         r"topology='complete'$"),
        ({"n_agents": 2}, np.ones((12, 4)), r"^n_agents=2 is too few for exchange='secagg'"),
        ({"penalty": -1.0}, np.ones((12, 4)), r"^penalty must be a finite number"),
        ({"solver": "numpy", "device": "cuda"}, np.ones((12, 4)), r"needs backend='torch'"),
    ],
)  # fmt: skip
def test_bad_input_messages_speak_python(params: dict, X: object, pattern: str) -> None:
    message = _message(quick(**params), X)
    assert re.search(pattern, message), message
    assert "crypto." not in message and "topology." not in message and "--set" not in message


def test_cuda_on_cpu_only_torch_is_a_short_error() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match=r"device='cuda' requested but .*use device='cpu'") as info:
        quick(solver="torch", device="cuda").fit(np.ones((12, 4)))
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_verbose_shows_progress_and_zero_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    X = np.random.default_rng(0).uniform(0, 1, (12, 4))
    quick(verbose=2).fit(X)
    err = capsys.readouterr().err
    assert "DistributedNMF" in err and "5/5" in err and "rel_error=" in err
    quick(verbose=0).fit(X)
    assert capsys.readouterr().err == ""
    assert DistributedNMF().verbose == 1  # the default is not silent for a long fit


def test_readme_example_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    """Every Python block of the README that uses DistributedNMF runs as written."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    blocks = [b for b in blocks if "DistributedNMF" in b]
    assert blocks, "the README shows no DistributedNMF example"
    for block in blocks:
        namespace: dict[str, object] = {}
        exec(compile(block, "README.md", "exec"), namespace)
        model = namespace["model"]
        assert isinstance(model, DistributedNMF) and hasattr(model, "components_")
        assert 0.0 < model.rel_error_ < 0.5
    capsys.readouterr()


def _sklearn_checks():  # collected lazily: a missing or old scikit-learn skips only these
    sklearn = pytest.importorskip("sklearn")
    major, minor = (int(p) for p in sklearn.__version__.split(".")[:2])
    if (major, minor) < (1, 6):
        return []
    from sklearn.utils.estimator_checks import check_estimator

    return check_estimator(quick(), on_fail=None, on_skip=None)


def test_scikit_learn_estimator_checks() -> None:
    """scikit-learn's own checks, run on a quick configuration (no encryption: the
    checks test the API, and Paillier gives the same numbers). None is excluded;
    only check_array_api_input skips itself (SCIPY_ARRAY_API unset)."""
    results = _sklearn_checks()
    if not results:
        pytest.skip("scikit-learn < 1.6 has no check_estimator(on_fail=None)")
    failed = [(r["check_name"], repr(r["exception"])) for r in results if r["status"] == "failed"]
    assert not failed, failed
    assert sum(r["status"] == "passed" for r in results) >= 40
