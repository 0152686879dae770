"""Bulk modular exponentiation on AVX-512 IFMA CPUs through Intel's multi-buffer library.

``libcrypto_mb`` (shipped by the ``ipp-crypto`` wheel; ``pip install
cipherfact[fast]``) computes eight independent modular exponentiations per
call with 52-bit IFMA multiply-adds: measured ~4.5x ``gmpy2.powmod`` for the
bare call on a 2048-bit modulus with a 1024-bit exponent (one CRT half of
2048-bit Paillier decryption) when all eight lanes are filled, ~3.9x through
``powmod_batch`` (conversions and the library's per-call Montgomery set-up,
~0.15 ms, included). A call costs the same whatever the number of filled
lanes, so it only pays off for batches: see ``AUTO_MIN_LANES``. ctypes
releases the GIL during a call, so the calls of one batch can run on two
threads (``thread_pool``, ``PaillierOptions.ifma_threads``) and two cores.

No maintained Python binding exists (Intel's ``ipcl-python`` has no wheel for
Python 3.11), so this module is a small hand-written ``ctypes`` binding to the
C signatures of ``crypto_mb/exp.h``::

    int        mbx_exp_BufferSize(int modulusBits);
    mbx_status mbx_exp_mb8(int64u* const out_pa[8], const int64u* const base_pa[8],
                           const int64u* const exp_pa[8], int exp_bits,
                           const int64u* const mod_pa[8], int mod_bits,
                           int8u* pBuffer, int bufferLen);

Numbers are little-endian arrays of 64-bit words, ``ceil(mod_bits / 64)``
words for bases, moduli and results, ``ceil(exp_bits / 64)`` for exponents.
The returned status holds 4 bits per lane (0 = OK). The library accepts moduli
of ``mod_bits`` in 989-1038, 2029-2078, 3069-3118 or 4057-4106 (its 1k/2k/3k/4k
sizes in 52-bit digits) and exponents of at most ``mod_bits`` bits; lanes
outside that (or with an even modulus) are computed with ``gmpy2.powmod`` so
that ``powmod_batch`` always returns exactly ``pow(b, e, m)``. Lanes of one
call may hold different moduli of the same size slot (``mod_bits`` is then the
longest; p**2 and q**2 share calls): checked against ``pow`` in the tests.

The wheel's ``libcrypto_mb.so`` links against ``libsvml``, ``libimf``,
``libirng`` and ``libintlc`` from the ``intel-cmplr-lib-rt`` wheel, which the
loader does not find on its own: they are loaded first with ``RTLD_GLOBAL``
from that wheel's library folder. Nothing is loaded until first use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import gmpy2

__all__ = [
    "AUTO_MIN_LANES",
    "AUTO_THREADS",
    "EXTRA_HINT",
    "LANES",
    "IfmaUnavailableError",
    "auto_threads",
    "available",
    "cpu_has_ifma",
    "powmod_batch",
    "require",
    "supported_modulus_bits",
    "thread_pool",
    "unavailable_reason",
]

#: lanes (independent exponentiations) per library call
LANES = 8
#: smallest number of filled lanes for which a call beats gmpy2 ("auto" mode).
#: Measured on a 2-core AVX512-IFMA EPYC (interleaved, same run), speed relative
#: to one gmpy2.powmod per lane, for 1024- to 4096-bit moduli with half-length
#: exponents: 1 lane 0.44-0.51x, 2 lanes 0.90-1.08x, 3 lanes 1.14-1.51x, 8 lanes 3.6-4.0x.
AUTO_MIN_LANES = 3
EXTRA_HINT = "pip install cipherfact[fast]"
#: most threads ``auto_threads`` gives one bulk operation: a 2-core host's both cores
AUTO_THREADS = 2

_DIGIT = 52  # crypto_mb's radix-2**52 digits
_SIZES = (1024, 2048, 3072, 4096)
#: compiler runtime libraries libcrypto_mb needs, in dependency order
_RUNTIME = ("libintlc.so.5", "libintlc.so", "libirng.so", "libimf.so", "libsvml.so")
_MBX_ALGO_EXP = 15  # enum MBX_ALGO in crypto_mb/cpu_features.h
_MBX_WIDTH_MB8 = 8


class IfmaUnavailableError(RuntimeError):
    """The multi-buffer fast path was requested but cannot run here."""


def cpu_has_ifma() -> bool:
    """Whether this CPU reports AVX-512 IFMA (``avx512ifma`` in /proc/cpuinfo; Linux only)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return "avx512ifma" in line.split()
    except OSError:
        pass
    return False


def _wheel_libdirs(dist: str) -> list[Path]:
    """Folders holding a wheel's shared libraries (its data/lib lands in <prefix>/lib)."""
    dirs: list[Path] = []
    try:
        distribution = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return dirs
    for f in distribution.files or []:
        if ".so" in f.name:
            folder = Path(str(distribution.locate_file(f))).resolve().parent
            if folder not in dirs:
                dirs.append(folder)
    return dirs


def _candidates(name: str, dirs: Sequence[Path]) -> Iterator[str]:
    for d in dirs:
        yield from (str(p) for p in sorted(d.glob(name + "*")) if p.is_file())


class _Library:
    """The loaded ``libcrypto_mb`` with typed entry points."""

    def __init__(self, cdll: ctypes.CDLL, path: str) -> None:
        self.path = path
        self.exp = cdll.mbx_exp_mb8
        self.exp.restype = ctypes.c_uint32
        self.exp.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_int,
        ]
        self.buffer_size = cdll.mbx_exp_BufferSize
        self.buffer_size.restype = ctypes.c_int
        self.buffer_size.argtypes = [ctypes.c_int]
        algo_info = cdll.mbx_get_algo_info
        algo_info.restype = ctypes.c_uint64
        algo_info.argtypes = [ctypes.c_int]
        self.applicable = bool(algo_info(_MBX_ALGO_EXP) & _MBX_WIDTH_MB8)


@functools.cache
def _load() -> _Library | str:
    """The library, or why it cannot be used (cached per process)."""
    if not sys.platform.startswith("linux"):
        return f"the multi-buffer fast path is Linux-only (this is {sys.platform})"
    if not cpu_has_ifma():
        return "this CPU lacks AVX-512 IFMA (no avx512ifma flag)"
    runtime_dirs = [*_wheel_libdirs("intel-cmplr-lib-rt"), Path(sys.prefix) / "lib"]
    for name in _RUNTIME:
        for path in _candidates(name, runtime_dirs):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                break
            except OSError:
                continue
    paths = list(_candidates("libcrypto_mb.so", _wheel_libdirs("ipp-crypto")))
    paths += list(_candidates("libcrypto_mb.so", [Path(sys.prefix) / "lib"]))
    system = ctypes.util.find_library("crypto_mb")
    if system:
        paths.append(system)
    if not paths:
        return "Intel's libcrypto_mb was not found (the ipp-crypto wheel is not installed)"
    errors = []
    for path in dict.fromkeys(paths):
        try:
            lib = _Library(ctypes.CDLL(path), path)
        except (OSError, AttributeError) as exc:
            errors.append(f"{path}: {exc}")
            continue
        if not lib.applicable:
            return f"{path} reports mbx_exp_mb8 unsupported on this CPU"
        return lib
    return (
        "libcrypto_mb failed to load (its runtime comes from the intel-cmplr-lib-rt wheel): "
        + "; ".join(errors)
    )


def available() -> bool:
    """Whether ``powmod_batch`` can use the library here (CPU flag and library load)."""
    return isinstance(_load(), _Library)


def unavailable_reason() -> str | None:
    """Why the fast path is unavailable, or None when it is available."""
    lib = _load()
    return None if isinstance(lib, _Library) else lib


def require() -> None:
    """Raise ``IfmaUnavailableError`` (one line, naming the extra) unless available."""
    reason = unavailable_reason()
    if reason is not None:
        raise IfmaUnavailableError(
            f"fast_path='ifma' needs Intel's multi-buffer library on an AVX-512 IFMA CPU "
            f"({EXTRA_HINT}): {reason}"
        )


def auto_threads() -> int:
    """Threads for one bulk operation's library calls: up to ``AUTO_THREADS``, no more
    than the cores this process may run on (its CPU affinity)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(AUTO_THREADS, cores))


@functools.cache
def thread_pool(threads: int) -> ThreadPoolExecutor:
    """The process's pool of ``threads`` threads for library calls (made once, on first use).

    ``mbx_exp_mb8`` runs without the GIL (ctypes releases it), so calls on two
    threads use two cores. One pool per size for the whole process rather
    than one per key: a simulation holds dozens of keys.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    return ThreadPoolExecutor(threads, thread_name_prefix="ifma")


def _size_class(bits: int) -> int:
    """crypto_mb's size slot for a ``bits``-bit modulus (0: unsupported)."""
    digits = -(-bits // _DIGIT)
    if digits != -(-(bits + 2) // _DIGIT):
        return 0
    for size in _SIZES:
        if digits == -(-size // _DIGIT):
            return size
    return 0


def supported_modulus_bits(bits: int) -> bool:
    """Whether a modulus of ``bits`` bits fits one of the library's sizes."""
    return _size_class(bits) != 0


def _words(bits: int) -> int:
    return max(1, -(-bits // 64))


def _run_chunk(
    lib: _Library, lanes: Sequence[tuple[Any, Any, Any]], mod_bits: int, exp_bits: int
) -> list[Any]:
    """One library call: up to 8 (base, exp, mod) with base < mod; unused lanes repeat lane 0."""
    nw, ew = _words(mod_bits), _words(exp_bits)
    nb, eb = nw * 8, ew * 8
    # one contiguous little-endian buffer per operand kind, lane after lane
    bases = bytearray(b"".join(b.to_bytes(nb, "little") for b, _, _ in lanes))
    exps = bytearray(b"".join(e.to_bytes(eb, "little") for _, e, _ in lanes))
    mods_seen: dict[int, int] = {}
    mod_bytes: list[bytes] = []
    for _, _, m in lanes:
        if id(m) not in mods_seen:
            mods_seen[id(m)] = len(mod_bytes)
            mod_bytes.append(m.to_bytes(nb, "little"))
    mods = bytearray(b"".join(mod_bytes))
    out = bytearray(nb * LANES)
    base_buf = (ctypes.c_char * len(bases)).from_buffer(bases)
    exp_buf = (ctypes.c_char * len(exps)).from_buffer(exps)
    mod_buf = (ctypes.c_char * len(mods)).from_buffer(mods)
    out_buf = (ctypes.c_char * len(out)).from_buffer(out)
    a_base, a_exp = ctypes.addressof(base_buf), ctypes.addressof(exp_buf)
    a_mod, a_out = ctypes.addressof(mod_buf), ctypes.addressof(out_buf)
    k = len(lanes)
    lane_of = [i if i < k else 0 for i in range(LANES)]
    ptrs = ctypes.c_void_p * LANES
    out_pa = ptrs(*[a_out + i * nb for i in range(LANES)])
    base_pa = ptrs(*[a_base + j * nb for j in lane_of])
    exp_pa = ptrs(*[a_exp + j * eb for j in lane_of])
    mod_pa = ptrs(*[a_mod + mods_seen[id(lanes[j][2])] * nb for j in lane_of])
    size = lib.buffer_size(mod_bits) + 64
    scratch = ctypes.create_string_buffer(size)
    status = lib.exp(out_pa, base_pa, exp_pa, exp_bits, mod_pa, mod_bits, scratch, size)
    if status:
        raise RuntimeError(f"mbx_exp_mb8 failed: per-lane status {status:#010x}")
    ctypes.memset(scratch, 0, size)  # the scratch held exponents (secret in CRT decryption)
    ctypes.memset(exp_buf, 0, len(exps))
    from_bytes = gmpy2.mpz.from_bytes
    results = []
    for i in range(k):
        r = from_bytes(bytes(out[i * nb : (i + 1) * nb]), "little")
        m = lanes[i][2]
        results.append(r - m if r >= m else r)
    return results


def _as_list(value: Any, count: int, name: str) -> list[Any]:
    if isinstance(value, Sequence):
        if len(value) != count:
            raise ValueError(f"{name} has {len(value)} entries for {count} bases")
        return list(value)
    return [value] * count


def powmod_batch(
    bases: Sequence[Any],
    exps: Any,
    mods: Any,
    *,
    min_lanes: int = 1,
    executor: Executor | None = None,
) -> list[Any]:
    """``[pow(b, e, m) for ...]`` as ``gmpy2.mpz``, eight exponentiations per library call.

    ``exps`` and ``mods`` are one integer for every base or a sequence with one
    per base; lanes with different moduli share a call when the moduli fall in
    the same size slot (both CRT halves of a Paillier key do). Groups that
    would fill fewer than ``min_lanes`` lanes of a call, and lanes the library
    cannot take (even or odd-sized modulus, negative or over-long exponent,
    modulus < 2), go to ``gmpy2.powmod``. Results equal ``pow`` bit for bit.
    ``executor`` (threads): library calls of a batch run on it side by side;
    they release the GIL, so two threads use two cores. Raises
    ``IfmaUnavailableError`` when the library cannot run here.
    """
    lib = _load()
    if not isinstance(lib, _Library):
        require()
        raise AssertionError("unreachable")  # pragma: no cover
    if isinstance(min_lanes, bool) or not isinstance(min_lanes, int) or min_lanes < 1:
        raise ValueError(f"min_lanes must be a positive int, got {min_lanes!r}")
    count = len(bases)
    mpz = gmpy2.mpz
    exp_list = [mpz(e) for e in _as_list(exps, count, "exps")]
    mod_list = _as_list(mods, count, "mods")
    # one mpz object per distinct modulus: lanes sharing it share one buffer
    distinct: dict[int, Any] = {}
    mod_list = [distinct.setdefault(int(m), mpz(m)) for m in mod_list]
    out: list[Any] = [None] * count
    groups: dict[int, list[int]] = {}
    for i, (e, m) in enumerate(zip(exp_list, mod_list, strict=True)):
        size = _size_class(m.bit_length()) if m > 1 and m & 1 else 0
        if size and e >= 0 and e.bit_length() <= m.bit_length():
            groups.setdefault(size, []).append(i)
        else:
            out[i] = gmpy2.powmod(bases[i], e, m)
    calls: list[tuple[list[int], list[tuple[Any, Any, Any]], int, int]] = []
    for idx in groups.values():
        # similar exponent lengths share a call: its cost follows the longest
        idx.sort(key=lambda i: exp_list[i].bit_length(), reverse=True)
        for start in range(0, len(idx), LANES):
            chunk = idx[start : start + LANES]
            if len(chunk) < min_lanes:
                for i in chunk:
                    out[i] = gmpy2.powmod(bases[i], exp_list[i], mod_list[i])
                continue
            exp_bits = max(exp_list[i].bit_length() for i in chunk)
            if exp_bits == 0:  # x**0 = 1 for every lane (moduli > 1)
                for i in chunk:
                    out[i] = mpz(1)
                continue
            mod_bits = max(mod_list[i].bit_length() for i in chunk)
            lanes = [(mpz(bases[i]) % mod_list[i], exp_list[i], mod_list[i]) for i in chunk]
            calls.append((chunk, lanes, mod_bits, exp_bits))

    def run(call: tuple[list[int], list[tuple[Any, Any, Any]], int, int]) -> list[Any]:
        return _run_chunk(lib, call[1], call[2], call[3])

    results = (
        executor.map(run, calls) if executor is not None and len(calls) > 1 else map(run, calls)
    )
    for (chunk, _, _, _), values in zip(calls, results, strict=True):
        for i, r in zip(chunk, values, strict=True):
            out[i] = r
    return out
