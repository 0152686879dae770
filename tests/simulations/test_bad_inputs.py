"""Bad inputs to `cipherfact simulate` (issue 16): one clear line, exit code != 0,
no traceback, and before any key is generated (so each case takes milliseconds).

Each case is a class of input, not one value: non-finite or out-of-range floats,
unbounded sizes and iteration counts, data the arithmetic cannot carry (matrix
values, ratings), files that are empty or malformed, topology parameters.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cipherfact import cli
from cipherfact.protocols.ppdnmf import job as ppdnmf_job
from cipherfact.protocols.references import relative_error
from cipherfact.simulations.scenario import load_scenario

PP = "ppdnmf-synthetic"
CSR = "csr-fhe-mf-synthetic"
FED = "fedmf-synthetic"
TINY = {
    PP: ["n_agents=4", "rank=2", "data.rows=10", "data.cols=24", "outer_iters=2",
         "inner_iters=2", "crypto.scheme='none'"],
    CSR: ["data.n_users=10", "data.n_items=20", "data.density=0.3", "epochs=2"],
    FED: ["data.n_users=10", "data.n_items=20", "data.density=0.3", "epochs=2",
          "crypto.scheme='plain'"],
}  # fmt: skip

# writes file(s) under a folder; returns the override(s) naming them, or a scenario path
Writer = Callable[[Path], "str | list[str]"]


def matrix(X: np.ndarray, name: str = "x.npy") -> Writer:
    def write(folder: Path) -> str:
        path = folder / name
        if name.endswith(".npy"):
            np.save(path, X)
        else:
            np.savetxt(path, X, delimiter=",")
        return f"data.path='{path}'"

    return write


def text(content: str, name: str, field: str = "data.path") -> Writer:
    def write(folder: Path) -> str:
        path = folder / name
        path.write_text(content)
        return f"{field}='{path}'" if field else str(path)

    return write


def raw(content: bytes, name: str) -> Writer:
    def write(folder: Path) -> str:
        (folder / name).write_bytes(content)
        return f"data.path='{folder / name}'"

    return write


def _base(n: int = 10, m: int = 20) -> np.ndarray:
    return np.random.default_rng(0).uniform(0.0, 1.0, (n, m))


def _with(X: np.ndarray, value: float) -> np.ndarray:
    X = X.copy()
    X[0, 0] = value
    return X


def ratings(extreme: float | None = None, where: str = "train") -> Writer:
    """A small ratings file (every user rates items 0..5) with one extreme rating,
    in the training file or in an explicit test file."""

    def rows(values: dict[tuple[int, int], float]) -> str:
        return "user,item,rating\n" + "".join(f"{u},{i},{r}\n" for (u, i), r in values.items())

    def write(folder: Path) -> str:
        rng = np.random.default_rng(1)
        train = {(u, i): float(rng.integers(1, 6)) for u in range(8) for i in range(6)}
        test = {(u, 6): float(rng.integers(1, 6)) for u in range(8)}
        train.update({(u, 6): 3.0 for u in range(8, 10)})  # item 6 occurs in training
        if extreme is not None:
            (train if where == "train" else test)[(0, 1 if where == "train" else 6)] = extreme
        if where == "nooverlap":
            test = {(u + 100, 0): 3.0 for u in range(3)}
        (folder / "train.csv").write_text(rows(train))
        if where == "train":
            return f"data.path='{folder / 'train.csv'}'"
        (folder / "test.csv").write_text(rows(test))
        return f"data.train='{folder / 'train.csv'}'"

    def both(folder: Path) -> list[str]:
        first = write(folder)
        if first.startswith("data.train"):
            return [first, f"data.test='{folder / 'test.csv'}'"]
        return [first]

    return both


# (id, scenario, overrides, file writer or None, message regex)
CASES: list[tuple[str, str, list[str], Writer | None, str]] = [
    # --- ppdnmf: floats that must be finite and in range
    ("penalty-inf", PP, ["admm.penalty=inf"], None,
     r"admm\.penalty must be a finite number in \(0, 1e\+100\], got inf"),
    ("penalty-nan", PP, ["admm.penalty=nan"], None, r"admm\.penalty .*got nan"),
    ("penalty-negative", PP, ["admm.penalty=-1.0"], None, r"admm\.penalty .*got -1\.0"),
    ("penalty-zero", PP, ["admm.penalty=0.0"], None, r"admm\.penalty .*got 0\.0"),
    ("penalty-huge", PP, ["admm.penalty=1e300"], None, r"admm\.penalty .*1e\+100"),
    ("snr-nan", PP, ["data.snr_db=nan"], None, r"data\.snr_db must be a finite number"),
    ("snr-huge-noise", PP, ["data.snr_db=-1e6"], None, r"data\.snr_db .*\[-300, 300\]"),
    ("degree-inf", PP, ["topology.degree=inf"], None, r"topology\.degree .*got inf"),
    ("p-above-one", PP, ["topology.kind='erdos_renyi'", "topology.p=1.5"], None,
     r"topology\.p must be a finite number in \(0, 1\]"),
    # --- ppdnmf: sizes and iteration counts
    ("rows-10e12", PP, ["data.rows=1000000000000"], None,
     r"data\.rows must be between 1 and 134217728, got 1000000000000"),
    ("rows-times-cols", PP, ["data.rows=100000", "data.cols=100000"], None,
     r"data\.rows \* data\.cols must be <= 134217728"),
    ("rows-zero", PP, ["data.rows=0"], None, r"data\.rows must be between 1"),
    ("outer-iters-huge", PP, ["outer_iters=99999999999999999999"], None,
     r"outer_iters \* inner_iters must be <= 10000000 ADMM rounds"),
    ("rounds-product", PP, ["outer_iters=100000", "inner_iters=1000"], None,
     r"outer_iters \* inner_iters must be <= 10000000"),
    ("outer-iters-zero", PP, ["outer_iters=0"], None, r"outer_iters must be >= 1, got 0"),
    ("rank-huge", PP, ["rank=1000000"], None, r"rank must be between 1 and 1024"),
    ("rank-above-shape", PP, ["rank=20"], None,
     r"rank must be between 1 and min\(data\.rows, data\.cols\) = 10, got 20"),
    ("agents-huge", PP, ["n_agents=1000000"], None, r"n_agents must be between 2 and 4096"),
    ("agents-one", PP, ["n_agents=1"], None, r"n_agents must be >= 2"),
    ("seed-negative", PP, ["seed=-1"], None, r"seed must be between 0 and 2\*\*63 - 1, got -1"),
    ("h-sweeps-zero", PP, ["solver.h_sweeps=0"], None, r"solver\.h_sweeps must be between 1"),
    ("processes-huge", PP, ["crypto.processes=100000"], None, r"crypto\.processes must be betw"),
    # --- ppdnmf: crypto fields the codec and the keys can carry
    ("frac-bits", PP, ["crypto.frac_bits=99"], None, r"crypto\.frac_bits must be between 0 and 60"),
    ("int-bits-negative", PP, ["crypto.int_bits=-1"], None, r"crypto\.int_bits must be between"),
    ("key-bits-huge", PP, ["crypto.scheme='paillier'", "crypto.key_bits=100000"], None,
     r"crypto\.key_bits must be between 256 and 16384, got 100000"),
    ("weight-bits", PP, ["admm.weight_bits=0"], None, r"admm\.weight_bits must be between 1"),
    ("noise-plus-frac", PP,
     ["exchange='pairwise'", "crypto.frac_bits=50", "admm.reply_noise_bits=20"], None,
     r"crypto\.frac_bits \+ admm\.reply_noise_bits must be <= 60"),
    # --- ppdnmf: names
    ("solver-rule", PP, ["solver.rule='bogus'"], None, r"solver\.rule must be one of"),
    ("solver-cuda-numpy", PP, ["solver.device='cuda'"], None, r"solver: .*needs backend='torch'"),
    ("topology-kind", PP, ["topology.kind='star'"], None, r"topology\.kind must be one of"),
    ("ring-with-degree", PP, ["topology.kind='ring'", "topology.degree=3.0"], None,
     r"topology: ring graph does not take degree"),
    ("unknown-field", PP, ["colour='blue'"], None, r"unknown scenario field 'colour'"),
    ("agent-cols-count", PP, ["data.agent_cols=[12, 12]"], None,
     r"data\.agent_cols: sizes has 2 entries but n_agents is 4"),
    ("agent-cols-sum", PP, ["data.agent_cols=[6, 6, 6, 5]"], None,
     r"data\.agent_cols: sizes sum to 23 but n_cols is 24"),
    ("wrong-type", PP, ["data.rows='ten'"], None, r"'data\.rows' must be int"),
    # --- ppdnmf: data files (values the arithmetic can carry, shapes, formats)
    ("value-1e308", PP, [], matrix(_with(_base(), 1e308)),
     r"data value 1e\+308 at row 0, column 0 exceeds the limit 1e\+100"),
    ("all-1e300", PP, [], matrix(np.full((10, 20), 1e300)), r"data value 1e\+300 .*1e\+100"),
    ("all-1e120-csv", PP, [], matrix(np.full((10, 20), 1e120), "x.csv"),
     r"data value 1e\+120 .*exceeds the limit"),
    ("negative", PP, [], matrix(_with(_base(), -2.0)), r"Negative values in data \(first -2"),
    ("nan", PP, [], matrix(_with(_base(), np.nan)), r"non-finite value nan"),
    ("inf-csv", PP, [], text("1,2\n3,inf\n", "x.csv"), r"line 2, column 2: non-finite value"),
    ("all-zero", PP, [], matrix(np.zeros((10, 20))), r"data is all zeros"),
    ("subnormal", PP, [], matrix(np.full((10, 20), 1e-320)), r"data values are subnormal"),
    ("three-d", PP, [], matrix(np.ones((2, 3, 4))), r"expected a 2-D matrix, got 3-D"),
    ("ragged-csv", PP, [], text("1,2,3\n4,5\n", "x.csv"), r"line 2: expected 3 columns"),
    ("empty-csv", PP, [], text("", "x.csv"), r"empty matrix"),
    ("text-csv", PP, [], text("1,2\n3,abc\n", "x.csv"), r"non-numeric value 'abc'"),
    ("bad-extension", PP, [], text("1,2\n", "x.txt"), r"unsupported extension '\.txt'"),
    ("empty-npy", PP, [], raw(b"", "x.npy"), r"x\.npy: not a plain numeric \.npy array"),
    ("binary-csv", PP, [], raw(b"\xff\xfe\x00\x01", "x.csv"), r"x\.csv: cannot be read as a text"),
    ("missing-file", PP, ["data.path='/nonexistent/x.npy'"], None, r"matrix file not found"),
    ("fewer-columns-than-agents", PP, [], matrix(_base(10, 3)),
     r"more agents \(4\) than columns \(3\)"),
    # --- scenario files
    ("empty-file", "FILE", [], text("", "s.toml", field=""), r"scenario file '.*s\.toml' is empty"),
    ("comments-only", "FILE", [], text("# nothing here\n\n", "s.toml", field=""), r"is empty"),
    ("empty-tables", "FILE", [], text("[data]\n[crypto]\n", "s.toml", field=""), r"is empty"),
    ("not-toml", "FILE", [], text("protocol = \n", "s.toml", field=""), r"is not valid TOML"),
    ("protocol-type", "FILE", [], text("protocol = 5\n", "s.toml", field=""),
     r"scenario field 'protocol' must be str, got 5"),
    ("file-ring-degree", "FILE", [],
     text("n_agents = 4\n[topology]\nkind = 'ring'\ndegree = 2.0\n", "s.toml", field=""),
     r"ring graph does not take degree"),
    # --- csr_fhe_mf
    ("csr-lr-inf", CSR, ["lr=inf"], None, r"lr must be a finite number in \(0, 1e\+100\], got inf"),
    ("csr-lr-negative", CSR, ["lr=-1.0"], None, r"lr must be a finite number"),
    ("csr-reg-nan", CSR, ["reg=nan"], None, r"reg must be a finite number in \[0"),
    ("csr-epochs-huge", CSR, ["epochs=99999999999"], None, r"epochs must be between 1 and 100000"),
    ("csr-density", CSR, ["data.density=2.0"], None, r"data\.density must be a finite number"),
    ("csr-cells", CSR, ["data.n_users=1000000", "data.n_items=1000000"], None,
     r"data\.n_users \* data\.n_items must be <= 134217728"),
    ("csr-value-bound", CSR, ["crypto.value_bound=inf"], None, r"crypto\.value_bound must be"),
    ("csr-scale", CSR, ["data.scale_low=5.0", "data.scale_high=1.0"], None,
     r"data\.scale_low must be < data\.scale_high"),
    ("csr-test-fraction", CSR, ["data.test_fraction=1.5"], None, r"data\.test_fraction"),
    ("csr-rating-1e6", CSR, [], ratings(1e6),
     r"csr_fhe_mf: training rating 1e\+06 \(user 0, item 1\) .*at most crypto\.value_bound = 16"),
    ("csr-rating-1e308", CSR, [], ratings(1e308), r"training rating 1e\+308 .*value_bound"),
    ("csr-test-rating-1e308", CSR, [], ratings(1e308, "test"),
     r"csr_fhe_mf: test rating 1e\+308 \(user 0, item 6\)"),
    ("csr-no-test", CSR, [], ratings(None, "nooverlap"), r"the split leaves no test rating"),
    ("csr-diverging-lr", CSR, ["lr=100.0"], None,
     r"plaintext twin \(run before any key\) .*lower lr"),
    ("csr-rating-nan", CSR, [], text("user,item,rating\n1,2,nan\n", "r.csv"),
     r"non-finite rating 'nan'"),
    # --- fedmf
    ("fed-lr-nan", FED, ["lr=nan"], None, r"lr must be a finite number .*got nan"),
    ("fed-reg-negative", FED, ["reg_u=-1.0"], None, r"reg_u must be a finite number in \[0"),
    ("fed-init-inf", FED, ["init_value=inf"], None, r"init_value must be a finite number"),
    ("fed-mode", FED, ["mode='half'"], None, r"mode must be 'full' or 'part'"),
    ("fed-int-bits", FED, ["crypto.int_bits=99"], None, r"crypto\.int_bits must be between 0"),
    ("fed-key-bits", FED, ["crypto.scheme='paillier'", "crypto.key_bits=10"], None,
     r"crypto\.key_bits must be between 256 and 16384, got 10"),
    ("fed-epochs-codec", FED, ["epochs=10000"], None, r"exceeds the codec's 65534 additions"),
    ("fed-rating-1e6", FED, [], ratings(1e6),
     r"fedmf: training rating 1e\+06 .*at most 2\*\*\(crypto\.int_bits - 1\) = 128"),
    ("fed-rating-1e308", FED, [], ratings(1e308), r"fedmf: training rating 1e\+308"),
    ("fed-test-rating-1e308", FED, [], ratings(1e308, "test"), r"fedmf: test rating 1e\+308"),
    ("fed-diverging-lr", FED, ["lr=10.0"], None,
     r"fedmf: .*\(float twin, before any key\), not below 2\*\*\(crypto\.int_bits - 1\)"),
    ("fed-seed", FED, ["seed=-5"], None, r"seed must be between 0"),
    ("fed-binary-ratings", FED, [], raw(b"\xff\xfe\x00\x01", "r.csv"),
     r"r\.csv: cannot be read as a text ratings file"),
    # --- issue 15: messages that name the field, the cause and the fix
    ("agents-too-few-for-secagg", PP, ["n_agents=2"], None,
     r"n_agents = 2 is too few for exchange = 'secagg': every agent needs at least 2 "
     r"neighbours, so at least 3 agents; set n_agents >= 3"),
    ("degree-above-agents", PP, ["n_agents=3"], None,
     r"topology\.degree = 3\.0 is more than 3 agents allow .* set topology\.degree <= 2, "
     r"raise n_agents, or use topology\.kind = 'complete'"),
    ("default-degree-above-agents", "FILE", [],
     text("n_agents = 3\nrank = 2\n[topology]\nkind = 'erdos_renyi'\n", "s.toml", field=""),
     r"topology\.degree = 3\.0 \(the default\) is more than 3 agents allow"),
    ("min-degree-above-agents", PP, ["n_agents=2", "exchange='pairwise'"], None,
     r"topology\.min_degree = 2 is more than 2 agents allow .* set topology\.min_degree <= 1"),
    ("rows-with-file", PP, ["data.rows=5"], matrix(_base()),
     r"data\.rows only applies to synthetic data, but the data come from data\.path = "),
    ("cols-with-digits", PP, ["data.kind='digits'", "data.cols=5"], None,
     r"data\.cols only applies to synthetic data, but the data come from data\.kind = 'digits'"),
    ("ratings-csv-to-ppdnmf", PP, [],
     text("user,item,rating\n" + "".join(f"{u},{i},4\n" for u in range(12) for i in range(3)),
          "r.csv"),
     r"r\.csv: looks like a ratings file \(its header user,item,rating names users, items or "
     r"ratings\), not a matrix: .* use a recommendation protocol \(cipherfact simulate "
     r"csr-fhe-mf-synthetic or fedmf-synthetic"),
    ("headerless-ratings-csv-to-ppdnmf", PP, [],
     text("".join(f"{u},{i},{1 + (u + i) % 5},{964982703 + u + i}\n"
                  for u in range(12) for i in range(u % 3, 24, 5)), "r.csv"),
     r"r\.csv: looks like a ratings file \(4 columns, the first two integer ids .* save it as "
     r"\.npy"),
    ("npy-to-fedmf", FED, [], matrix(_base()),
     r"x\.npy: a NumPy \.npy array, but the recommendation protocols \(csr_fhe_mf, fedmf\) read "
     r"ratings: .* a matrix is factorized by ppdnmf"),
    ("npy-to-csr", CSR, [], matrix(_base()), r"x\.npy: a NumPy \.npy array"),
    ("fed-other-column-names", FED, [], text("uid,iid,stars\n1,2,3\n", "r.csv"),
     r"missing column\(s\) \['user', 'item', 'rating'\] \(found \['uid', 'iid', 'stars'\]\); "
     r"name the user, item and rating columns with data\.user_col, data\.item_col and "
     r"data\.rating_col"),
    ("csr-matrix-csv", CSR, [], matrix(_base(), "x.csv"),
     r"x\.csv, line 1: no header line .* a dense matrix is factorized by ppdnmf"),
    ("csr-users-with-file", CSR, [], lambda folder: [*ratings()(folder), "data.n_users=50"],
     r"data\.n_users only applies to synthetic data, but the data come from data\.path"),
]  # fmt: skip

#: Fields of the synthetic generators: TINY's values for them are dropped when a case
#: gives a data file (a --set of one next to a file is refused: issue 15).
GENERATOR_SETS = ("data.rows=", "data.cols=", "data.snr_db=", "data.n_users=", "data.n_items=",
                  "data.density=", "data.rank=", "data.noise=")  # fmt: skip


@pytest.fixture(scope="module")
def warm() -> None:
    """Import what the first simulate call imports, so the timing measures the checks."""
    import contextlib
    import io

    for scenario in (PP, CSR, FED):
        with contextlib.redirect_stderr(io.StringIO()):
            cli.main(["simulate", scenario, "--quiet", "--set", "seed=-1"])


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any key generation fails the test: every check must come before it."""

    def forbidden(*_a: object, **_k: object) -> None:
        raise AssertionError("a key was generated before the input was refused")

    import cipherfact.crypto
    import cipherfact.crypto.ckks

    monkeypatch.setattr(ppdnmf_job, "generate_key", forbidden)
    monkeypatch.setattr(cipherfact.crypto, "generate_scheme", forbidden)
    monkeypatch.setattr(cipherfact.crypto.ckks, "make_ckks_scheme", forbidden)


@pytest.mark.usefixtures("warm", "no_keys")
@pytest.mark.parametrize(
    ("scenario", "overrides", "writer", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_bad_input_is_one_line_before_any_key(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    scenario: str,
    overrides: list[str],
    writer: Writer | None,
    message: str,
) -> None:
    tiny = TINY.get(scenario, [])
    if writer is not None or any(o.startswith(("data.path", "data.train")) for o in overrides):
        tiny = [s for s in tiny if not s.startswith(GENERATOR_SETS)]
    sets = [*tiny, *overrides]
    if writer is not None:
        made = writer(tmp_path)
        if scenario == "FILE":
            assert isinstance(made, str)
            scenario = made
        else:
            sets += made if isinstance(made, list) else [made]
    argv = ["simulate", scenario, "--quiet", "--out", str(tmp_path / "out")]
    argv += [a for s in sets for a in ("--set", s)]
    started = time.perf_counter()
    rc = cli.main(argv)
    seconds = time.perf_counter() - started
    out, err = capsys.readouterr()
    assert rc != 0
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert re.search(message, lines[0]), lines[0]
    assert seconds < 1.0, f"{seconds:.2f} s: the input was not refused up front"


@pytest.mark.usefixtures("warm", "no_keys")
def test_cuda_request_on_cpu_only_torch_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a GPU (or without torch) a CUDA request is one line that says what to
    install, not a traceback; checked before any key."""
    try:
        import torch
    except ImportError:
        message = r"solver: backend 'torch' needs PyTorch, which is not installed: pip install"
    else:
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        message = r"solver: device='cuda' requested but .* use device='cpu' / 'auto'"
    test_bad_input_is_one_line_before_any_key(
        tmp_path, capsys, PP, ["solver.backend='torch'", "solver.device='cuda'"], None, message
    )


def test_enough_cases_across_the_protocols() -> None:
    by_protocol = {name: sum(1 for c in CASES if c[1] == name) for name in (PP, CSR, FED)}
    assert len(CASES) >= 40 and min(by_protocol.values()) >= 8, by_protocol


def test_a_value_the_codec_cannot_carry_mid_run_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The net behind the checks: an agent stopping on a bad value (W outgrowing
    crypto.int_bits = 0) ends the command with one line, not a traceback."""
    sets = [*TINY[PP], "crypto.int_bits=0"]
    rc = cli.main(["simulate", PP, "--quiet", "--out", str(tmp_path / "o")]
                  + [a for s in sets for a in ("--set", s)])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "out of the codec range" in lines[0], err


# --------------------------------------------------------------------------- runs that work


def _tiny_run(X: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    scenario = load_scenario(PP, TINY[PP])
    job = ppdnmf_job.prepare_job(scenario, X=X)
    last = None
    for last in ppdnmf_job.run_inmemory(job):  # noqa: B007 - only the final state counts
        pass
    assert last is not None
    return job.blocks, last.Ws, last.Hs


@pytest.mark.parametrize("scale", [1e-300, 2.0**-1000, 1e-200, 1e200, 1e300])
def test_relative_error_is_scale_invariant(scale: float) -> None:
    """The same factorization of data scaled by 1e-300 (squares underflow) or
    1e300 (squares overflow) has the same relative error as at scale 1."""
    blocks, Ws, Hs = _tiny_run(np.random.default_rng(3).uniform(0.0, 1.0, (10, 24)))
    reference = relative_error(blocks, Ws, Hs)
    assert 0.0 < reference < 1.0
    scaled = relative_error([X * scale for X in blocks], Ws, [H * scale for H in Hs])
    assert scaled == pytest.approx(reference, rel=1e-12)


def test_tiny_data_reports_its_true_relative_error(tmp_path: Path) -> None:
    """A matrix of values around 1e-300 runs, and the reported relative error is
    that of its factors (computed on the data scaled to 1), not 0.0."""
    X = np.random.default_rng(4).uniform(0.0, 1.0, (10, 24)) * 1e-300
    path = tmp_path / "x.npy"
    np.save(path, X)
    out = tmp_path / "run"
    sets = [*(s for s in TINY[PP] if not s.startswith(GENERATOR_SETS)), f"data.path='{path}'"]
    rc = cli.main(["simulate", PP, "--quiet", "--out", str(out)]
                  + [a for s in sets for a in ("--set", s)])  # fmt: skip
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    factors = np.load(out / "factors.npz")
    W = [factors[f"W_{i}"] for i in range(4)]
    H = [factors[f"H_{i}"] * 1e300 for i in range(4)]
    blocks = np.array_split(X * 1e300, 4, axis=1)  # the even split partition_columns makes
    assert summary["rel_error"] > 0.1
    assert summary["rel_error"] == pytest.approx(relative_error(blocks, W, H), rel=1e-9)


@pytest.mark.parametrize(
    "overrides",
    [
        ["topology.kind='ring'"],
        ["topology.kind='complete'"],
        ["topology.kind='erdos_renyi'", "topology.p=0.9"],
        ["topology.kind='small_world'", "topology.k=2"],
        ["topology.kind='ring'", "exchange='pairwise'"],
    ],
)
def test_every_topology_kind_runs_from_the_bundled_scenario(
    tmp_path: Path, overrides: list[str]
) -> None:
    """The bundled file's degree (set for its geometric graph) does not follow
    ``--set topology.kind`` to a kind that takes no degree or an alternative."""
    sets = [*TINY[PP], *overrides]
    rc = cli.main(["simulate", PP, "--quiet", "--out", str(tmp_path / "o")]
                  + [a for s in sets for a in ("--set", s)])  # fmt: skip
    assert rc == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["status"] == "completed"
    degrees = {len(n) for n in _neighbours(summary["graph"])}
    if "complete" in overrides[0]:
        assert degrees == {3}
    if "ring" in overrides[0]:
        assert degrees == {2}  # secagg's minimum of 2 neighbours: a ring has it


def _neighbours(graph: dict) -> list[set[int]]:
    out: list[set[int]] = [set() for _ in range(graph["n_agents"])]
    for i, j in graph["edges"]:
        out[i].add(j)
        out[j].add(i)
    return out


def test_ring_from_a_file_without_degree(tmp_path: Path) -> None:
    """A scenario file naming a ring and no degree: the default degree is not passed."""
    path = tmp_path / "ring.toml"
    path.write_text("n_agents = 4\n[topology]\nkind = 'ring'\n")
    scenario = load_scenario(str(path), TINY[PP])
    job = ppdnmf_job.prepare_job(scenario)
    assert job.graph.average_degree == 2.0
    assert scenario.topology.degree is None


def test_random_kinds_keep_the_default_degree() -> None:
    scenario = load_scenario(PP, ["topology.kind='small_world'"])
    assert scenario.topology.graph_params()["degree"] == 3.0
    scenario = load_scenario(PP, ["topology.kind='geometric'", "topology.radius=0.5"])
    assert scenario.topology.graph_params()["degree"] is None
