"""Tests for loading a user's matrix from .npy / .csv."""

from pathlib import Path

import numpy as np
import pytest

from cipherfact.data.matrix_io import load_matrix


def test_npy_roundtrip(tmp_path: Path) -> None:
    X = np.arange(12, dtype=np.int32).reshape(3, 4)
    path = tmp_path / "x.npy"
    np.save(path, X)
    loaded = load_matrix(path)
    assert loaded.dtype == np.float64
    np.testing.assert_array_equal(loaded, X)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,2,3\n4,5,6\n", [[1, 2, 3], [4, 5, 6]]),
        ("a,b,c\n1,2,3\n4,5,6.5\n", [[1, 2, 3], [4, 5, 6.5]]),
        ("\n1.5e0, 2\n\n3,4\n", [[1.5, 2], [3, 4]]),
        ("x\n1\n2\n", [[1], [2]]),
    ],
)
def test_csv(tmp_path: Path, text: str, expected: list) -> None:
    path = tmp_path / "x.csv"
    path.write_text(text)
    loaded = load_matrix(str(path))
    assert loaded.dtype == np.float64 and loaded.ndim == 2
    np.testing.assert_array_equal(loaded, np.array(expected, dtype=float))


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("x.csv", "1,2\n3,abc\n", r"x\.csv, line 2, column 2: non-numeric value 'abc'"),
        ("x.csv", "1,2\n3\n", r"line 2: expected 2 columns \(as on line 1\), got 1"),
        ("x.csv", "1,nan\n", r"line 1, column 2: non-finite value 'nan'"),
        ("x.csv", "", "empty matrix"),
        ("x.csv", "a,b\n", "empty matrix"),
    ],
)
def test_csv_errors(tmp_path: Path, name: str, text: str, match: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_matrix(path)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.arange(3.0), r"expected a 2-D matrix, got 1-D"),
        (np.zeros((2, 2, 2)), r"expected a 2-D matrix, got 3-D"),
        (np.zeros((0, 3)), "empty matrix"),
        (np.array([["a", "b"]]), "non-numeric dtype"),
        (np.array([[1.0, np.inf]]), r"non-finite value inf at index \(0, 1\)"),
        (np.array([[1, None]], dtype=object), "not a plain numeric .npy array"),
    ],
)
def test_npy_errors(tmp_path: Path, array: np.ndarray, match: str) -> None:
    path = tmp_path / "x.npy"
    np.save(path, array, allow_pickle=True)
    with pytest.raises(ValueError, match=match):
        load_matrix(path)


def test_missing_file_and_extension(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"matrix file not found: .*nope\.npy"):
        load_matrix(tmp_path / "nope.npy")
    other = tmp_path / "x.txt"
    other.write_text("1,2\n")
    with pytest.raises(ValueError, match=r"unsupported extension '\.txt'"):
        load_matrix(other)
