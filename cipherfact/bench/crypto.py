"""``cipherfact bench crypto``: values/second of naive phe, packed Paillier and CKKS.

Why one command measures all three side by side: the machine is shared and its
speed drifts, so speedups are only meaningful as ratios taken in one run.
Each measurement repeats its operation until a time budget is spent and
reports values per second (not ciphertexts per second), so one-value-per-
ciphertext phe, packed Paillier and CKKS compare like for like.

* naive: ``phe`` as FedMF uses it, ``public_key.encrypt(float)`` one value at
  a time, ``private_key.decrypt``, ``EncryptedNumber + EncryptedNumber``.
* packed: this project's Paillier with every fast path on (packing, gmpy2,
  CRT and DJN randomness for the key owner), one process; the public-key-only
  encryption a neighbour does (full ``r**n``, no CRT) is reported beside it.
  Its bulk exponentiations stay on gmpy2 (``fast_path="gmpy2"``) so that the
  column compares with earlier runs.
* packed + IFMA: the same scheme with ``fast_path="ifma"`` (Intel's
  multi-buffer modexp, ``cipherfact.crypto.ifma``) for the operations it
  changes: decryption (both CRT halves of eight packed ciphertexts, 16 lanes)
  and public-key encryption (eight full ``r**n``). Skipped, with the reason,
  where the library or the CPU feature is missing.
* ckks: TenSEAL CKKS through ``cipherfact.crypto.ckks``.

No randomness pool is filled ahead of time: encryption times include drawing
the randomness.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BenchConfig", "add_arguments", "format_markdown", "format_table", "main", "run_bench"]

#: speedups the project commits to (packed over naive, values/s)
TARGETS = {"encrypt": 100.0, "decrypt": 25.0}
#: operations the multi-buffer (IFMA) fast path changes, measured in its own column
IFMA_OPS = ("public_encrypt", "decrypt")
#: table columns: result-key prefix and header
_SYSTEMS = ("naive", "packed", "ckks", "ifma")


@dataclass(frozen=True)
class BenchConfig:
    """One bench run's settings (built once from the command line)."""

    key_bits: int = 2048
    quick: bool = False
    insecure_test_keys: bool = False
    ckks_params: str = "n8192-depth2"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.key_bits, bool) or not isinstance(self.key_bits, int):
            raise TypeError(f"key_bits must be an int, got {type(self.key_bits).__name__}")
        if self.key_bits < 2048 and not self.insecure_test_keys:
            raise ValueError(
                f"key_bits={self.key_bits} is below 2048; pass --insecure-test-keys for a "
                "test-sized run"
            )

    @property
    def budget_s(self) -> float:
        """Seconds each slow (public-key) measurement runs in total."""
        return 1.0 if self.quick else 8.0

    @property
    def fast_budget_s(self) -> float:
        """Seconds each cheap measurement (additions, CKKS) runs in total."""
        return 0.3 if self.quick else 2.0

    @property
    def rounds(self) -> int:
        """Interleaved rounds: load drift on a shared machine hits every system alike."""
        return 2 if self.quick else 4


@dataclass(frozen=True)
class Measurement:
    """Values processed and the wall-clock seconds it took."""

    values: int
    seconds: float

    @property
    def vps(self) -> float:
        return self.values / self.seconds


@dataclass(frozen=True)
class _Case:
    """One operation of one system: what to call and how many values a call handles."""

    fn: Callable[[], object]
    values: int
    slow: bool


def _measure(fn: Callable[[], object], values_per_call: int, budget_s: float) -> Measurement:
    """Call ``fn`` until ``budget_s`` has passed (at least once); count values."""
    calls = 0
    start = time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget_s:
            return Measurement(calls * values_per_call, elapsed)


def _total(ms: list[Measurement]) -> Measurement:
    return Measurement(sum(m.values for m in ms), sum(m.seconds for m in ms))


def _machine() -> dict[str, Any]:
    """CPU model, cores and package versions (for the results table)."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for pkg in ("phe", "gmpy2", "tenseal", "numpy", "ipp-crypto"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "absent"
    return {
        "cpu_model": model,
        "logical_cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **versions,
    }


def _naive_cases(cfg: BenchConfig, x: np.ndarray) -> tuple[dict[str, _Case], float]:
    """phe one value per ciphertext: the FedMF baseline."""
    import phe

    pk, sk = phe.generate_paillier_keypair(n_length=cfg.key_bits)
    batch = [float(v) for v in x[:8]]
    cts = [pk.encrypt(v) for v in batch]
    others = [pk.encrypt(float(v)) for v in x[8:16]]
    cases = {
        "encrypt": _Case(lambda: [pk.encrypt(v) for v in batch], len(batch), True),
        "decrypt": _Case(lambda: [sk.decrypt(c) for c in cts], len(cts), True),
        "add": _Case(lambda: [a + b for a, b in zip(cts, others, strict=True)], len(cts), False),
    }
    # FedMF-style binary size: one ciphertext mod n**2 per value (exponent not counted)
    return cases, float((pk.nsquare.bit_length() + 7) // 8)


def _packed_cases(
    cfg: BenchConfig, x: np.ndarray, fast_path: str = "gmpy2"
) -> tuple[dict[str, _Case], float, int]:
    """This project's packed Paillier, every fast path on, one process."""
    from cipherfact.crypto import FixedPointCodec, PaillierOptions, generate_scheme

    codec = FixedPointCodec(frac_bits=24, int_bits=8, scalar_bits=16, max_terms=16, guard_bits=2)
    owner = generate_scheme(
        "paillier",
        codec=codec,
        key_bits=cfg.key_bits,
        insecure_test_keys=cfg.insecure_test_keys,
        options=PaillierOptions(fast_path=fast_path),
    )
    public = owner.public()
    slots = _slots_of(owner)
    n = slots * 8  # eight full plaintexts per call
    batch, batch2 = x[:n], x[n : 2 * n]
    c, other = owner.encrypt(batch), owner.encrypt(batch2)
    cases = {
        "encrypt": _Case(lambda: owner.encrypt(batch), n, True),
        "public_encrypt": _Case(lambda: public.encrypt(batch), n, True),
        "decrypt": _Case(lambda: owner.decrypt(c), n, True),
        "add": _Case(lambda: owner.add(c, other), n, False),
    }
    return cases, len(owner.to_bytes(c)) / n, slots


def _slots_of(scheme: Any) -> int:
    """Values per Paillier plaintext, read from the scheme's layout (1 if unknown)."""
    slots = getattr(getattr(scheme, "layout", None), "slots", None)
    return slots if isinstance(slots, int) and slots > 0 else 1


def _ckks_cases(cfg: BenchConfig, x: np.ndarray) -> tuple[dict[str, _Case], float]:
    """TenSEAL CKKS through this project's wrapper."""
    from cipherfact.crypto.ckks import make_ckks_scheme

    scheme = make_ckks_scheme(cfg.ckks_params)
    n = scheme.params.slot_count * 4
    batch = np.resize(x, n)
    c, other = scheme.encrypt(batch), scheme.encrypt(batch[::-1].copy())
    cases = {
        "encrypt": _Case(lambda: scheme.encrypt(batch), n, False),
        "decrypt": _Case(lambda: scheme.decrypt(c), n, False),
        "add": _Case(lambda: scheme.add(c, other), n, False),
        "mul": _Case(lambda: scheme.mul(c, other), n, False),
    }
    return cases, len(scheme.to_bytes(c)) / n


def _interleave(cfg: BenchConfig, cases: dict[str, _Case]) -> dict[str, list[Measurement]]:
    """Measure every case in ``cfg.rounds`` alternating rounds."""
    per: dict[str, list[Measurement]] = {k: [] for k in cases}
    for _ in range(cfg.rounds):
        for key, case in cases.items():
            budget = cfg.budget_s if case.slow else cfg.fast_budget_s
            per[key].append(_measure(case.fn, case.values, budget / cfg.rounds))
    return per


def run_bench(cfg: BenchConfig, progress: bool = False) -> dict[str, Any]:
    """Run every measurement in one process; return a flat JSON-able dict.

    ``progress``: a bar on stderr over the key generation and the measured
    operations (the whole bench takes about a minute without ``quick``)."""
    from cipherfact.simulations.progress import progress_bar

    start = time.perf_counter()
    ops = ("encrypt", "public_encrypt", "decrypt", "add", "mul")
    bar = progress_bar(1 + len(ops), "bench crypto", "step", enabled=progress)
    bar.set_postfix(step="keys")
    rng = np.random.default_rng(cfg.seed)
    x = rng.uniform(-1.0, 1.0, 1 << 16)
    naive, naive_bytes = _naive_cases(cfg, x)
    packed, packed_bytes, slots = _packed_cases(cfg, x)
    ckks, ckks_bytes = _ckks_cases(cfg, x)
    systems = {"naive": naive, "packed": packed, "ckks": ckks}
    from cipherfact.crypto import ifma

    ifma_reason = ifma.unavailable_reason()
    if ifma_reason is None:
        fast, _, _ = _packed_cases(cfg, x, "ifma")
        systems["ifma"] = {op: fast[op] for op in IFMA_OPS}
    bar.update(1)
    rounds: dict[str, list[Measurement]] = {}
    with bar:
        for op in ops:
            bar.set_postfix(step=op)
            group = {f"{name}_{op}": cases[op] for name, cases in systems.items() if op in cases}
            rounds.update(_interleave(cfg, group))
            bar.update(1)
    totals = {key: _total(ms) for key, ms in rounds.items()}
    out: dict[str, Any] = {
        "key_bits": cfg.key_bits,
        "quick": cfg.quick,
        "insecure_test_keys": cfg.insecure_test_keys,
        "ckks_params": cfg.ckks_params,
        "packed_slots_per_ciphertext": slots,
        "rounds": cfg.rounds,
        "ifma_available": ifma_reason is None,
        "ifma_unavailable_reason": ifma_reason,
    }
    for key, m in totals.items():
        out[f"{key}_vps"] = m.vps
    out["bytes_per_value_naive"] = naive_bytes
    out["bytes_per_value_packed"] = packed_bytes
    out["bytes_per_value_ckks"] = ckks_bytes
    for op in ("encrypt", "decrypt", "add"):
        out[f"speedup_{op}"] = totals[f"packed_{op}"].vps / totals[f"naive_{op}"].vps
        per_round = [
            p.vps / q.vps
            for p, q in zip(rounds[f"packed_{op}"], rounds[f"naive_{op}"], strict=True)
        ]
        out[f"speedup_{op}_range"] = [min(per_round), max(per_round)]
    if ifma_reason is None:
        out["bytes_per_value_ifma"] = packed_bytes
        for op in IFMA_OPS:
            out[f"ifma_over_packed_{op}"] = totals[f"ifma_{op}"].vps / totals[f"packed_{op}"].vps
            per_round = [
                p.vps / q.vps
                for p, q in zip(rounds[f"ifma_{op}"], rounds[f"packed_{op}"], strict=True)
            ]
            out[f"ifma_over_packed_{op}_range"] = [min(per_round), max(per_round)]
        out["speedup_decrypt_ifma"] = totals["ifma_decrypt"].vps / totals["naive_decrypt"].vps
    out["targets"] = {
        op: {"speedup_needed": need, "met": out[f"speedup_{op}"] >= need}
        for op, need in TARGETS.items()
    }
    out["measurements"] = {
        key: {"values": m.values, "seconds": round(m.seconds, 4)} for key, m in totals.items()
    }
    out["machine"] = _machine()
    out["total_seconds"] = time.perf_counter() - start
    return out


_ROWS = [
    ("encrypt", "encrypt_vps"),
    ("encrypt (public key only)", "public_encrypt_vps"),
    ("decrypt", "decrypt_vps"),
    ("add (ct + ct)", "add_vps"),
    ("mul (ct x ct)", "mul_vps"),
]


def _cell(result: dict[str, Any], key: str) -> str:
    value = result.get(key)
    return "-" if value is None else f"{value:,.0f}"


def _table_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = [[label] + [_cell(result, f"{p}_{suffix}") for p in _SYSTEMS] for label, suffix in _ROWS]
    rows.append(
        ["bytes per value"]
        + [
            "-"
            if result.get(f"bytes_per_value_{p}") is None
            else f"{result[f'bytes_per_value_{p}']:,.1f}"
            for p in _SYSTEMS
        ]
    )
    return rows


def _header(result: dict[str, Any]) -> list[str]:
    return [
        "values/s",
        "naive phe",
        "packed Paillier",
        f"CKKS {result['ckks_params']}",
        "packed + IFMA",
    ]


def _speedup_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for op in ("encrypt", "decrypt", "add"):
        ratio = result[f"speedup_{op}"]
        target = result["targets"].get(op)
        note = ""
        if target is not None:
            need = target["speedup_needed"]
            note = f" (target >= {need:g}x: {'met' if target['met'] else 'MISSED'})"
        low, high = result[f"speedup_{op}_range"]
        lines.append(f"packed / naive {op}: {ratio:,.1f}x (rounds {low:,.1f}-{high:,.1f}x){note}")
    if result.get("ifma_available"):
        lines.append(f"packed + IFMA / naive decrypt: {result['speedup_decrypt_ifma']:,.1f}x")
        for op in IFMA_OPS:
            ratio = result[f"ifma_over_packed_{op}"]
            low, high = result[f"ifma_over_packed_{op}_range"]
            lines.append(
                f"packed + IFMA / packed (gmpy2) {op}: {ratio:,.2f}x "
                f"(rounds {low:,.2f}-{high:,.2f}x)"
            )
    elif "ifma_available" in result:
        reason = result["ifma_unavailable_reason"]
        lines.append(f"IFMA multi-buffer fast path not measured: {reason}")
    return lines


def format_table(result: dict[str, Any]) -> str:
    """Plain-text table for the terminal."""
    header = _header(result)
    rows = [header, *_table_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    m = result["machine"]
    lines += [
        "",
        *_speedup_lines(result),
        f"key bits {result['key_bits']}, {result['packed_slots_per_ciphertext']} values "
        f"per Paillier ciphertext; {m['cpu_model']}, {m['logical_cores']} cores; "
        f"{result['total_seconds']:.0f} s",
    ]
    return "\n".join(lines)


def format_markdown(result: dict[str, Any]) -> str:
    """Markdown table (for benchmarks/results and BENCHMARKS.md)."""
    header = _header(result)
    rows = [header, ["---"] + ["---:"] * (len(header) - 1), *_table_rows(result)]
    table = "\n".join("| " + " | ".join(r) + " |" for r in rows)
    m = result["machine"]
    return "\n".join(
        [
            table,
            "",
            *[f"- {line}" for line in _speedup_lines(result)],
            f"- key bits {result['key_bits']}; {result['packed_slots_per_ciphertext']} values per "
            f"Paillier ciphertext; machine: {m['cpu_model']}, {m['logical_cores']} logical cores; "
            f"phe {m['phe']}, gmpy2 {m['gmpy2']}, tenseal {m['tenseal']}, "
            f"ipp-crypto {m.get('ipp-crypto', 'absent')}, "
            f"Python {m['python']}",
            "",
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``cipherfact bench crypto``."""
    parser.add_argument(
        "--key-bits",
        type=int,
        default=2048,
        help="Paillier modulus bits for both phe and the packed scheme",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--quick", action="store_true", help="short budgets (~20 s)")
    parser.add_argument(
        "--out", type=Path, default=None, help="directory to write crypto.json and crypto.md into"
    )
    parser.add_argument(
        "--insecure-test-keys",
        action="store_true",
        help="allow key sizes below 2048 bits (tests only)",
    )
    parser.add_argument(
        "--ckks-params",
        default="n8192-depth2",
        help="named CKKS parameter set (default n8192-depth2)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the benchmark data")


def main(args: argparse.Namespace) -> int:
    """Run the bench; print a table or JSON; optionally write files. Returns 0."""
    cfg = BenchConfig(
        key_bits=args.key_bits,
        quick=args.quick,
        insecure_test_keys=args.insecure_test_keys,
        ckks_params=args.ckks_params,
        seed=args.seed,
    )
    result = run_bench(cfg, progress=True)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "crypto.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        (out / "crypto.md").write_text(format_markdown(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="cipherfact bench crypto", description=__doc__)
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
