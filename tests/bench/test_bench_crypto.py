"""``cipherfact bench crypto``: one quick run at a test key size, checked end to end."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

from cipherfact.bench.crypto import BenchConfig, add_arguments, main

REQUIRED = [
    "naive_encrypt_vps",
    "packed_encrypt_vps",
    "naive_decrypt_vps",
    "packed_decrypt_vps",
    "ckks_encrypt_vps",
    "ckks_decrypt_vps",
    "naive_add_vps",
    "packed_add_vps",
    "ckks_add_vps",
    "bytes_per_value_naive",
    "bytes_per_value_packed",
    "bytes_per_value_ckks",
    "speedup_encrypt",
    "speedup_decrypt",
]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench")
    args = _parse(
        ["--quick", "--json", "--key-bits", "512", "--insecure-test-keys", "--out", str(out)]
    )
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(args) == 0
    return json.loads(stdout.getvalue()), out


@pytest.mark.parametrize("key", REQUIRED)
def test_json_has_positive_numbers(quick_run: tuple[dict[str, Any], Path], key: str) -> None:
    result, _ = quick_run
    value = result[key]
    assert isinstance(value, float | int) and math.isfinite(value) and value > 0


def test_json_describes_the_run(quick_run: tuple[dict[str, Any], Path]) -> None:
    result, _ = quick_run
    assert result["key_bits"] == 512 and result["quick"] is True
    assert result["bytes_per_value_naive"] == 128.0  # n**2 of a 512-bit n
    # packing puts several values in one ciphertext, so each costs fewer bytes
    assert result["packed_slots_per_ciphertext"] > 1
    assert result["bytes_per_value_packed"] < result["bytes_per_value_naive"]
    assert result["machine"]["logical_cores"] >= 1 and result["machine"]["tenseal"]
    assert set(result["targets"]) == {"encrypt", "decrypt"}


def test_out_dir_gets_json_and_markdown(quick_run: tuple[dict[str, Any], Path]) -> None:
    result, out = quick_run
    assert json.loads((out / "crypto.json").read_text())["key_bits"] == result["key_bits"]
    md = (out / "crypto.md").read_text()
    assert md.startswith("| values/s | naive phe | packed Paillier |")
    assert "packed / naive encrypt" in md


def test_small_keys_need_the_insecure_flag() -> None:
    with pytest.raises(ValueError, match="key_bits=512 is below 2048; pass --insecure-test-keys"):
        BenchConfig(key_bits=512)
