"""One pairwise reply at the replier, bytes in to bytes out: parse the offer
(``from_bytes``), ``scale_shift`` (``a * (Enc(-W_i) + W_j) + eta``) and
``to_bytes``, 2048-bit Paillier under a public key, 150 values (the pairwise
scenario's W), 48-bit slots. The re-randomization is left out: its factor
comes from the prefetch worker.

Prints microseconds per reply. To compare two trees, run it alternately under
each (their ratio then sees the same machine load)::

    for i in $(seq 8); do
        PYTHONPATH=NEW python benchmarks/reply_path.py
        PYTHONPATH=OLD python benchmarks/reply_path.py
    done
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cipherfact.crypto import FixedPointCodec, PaillierScheme
from cipherfact.crypto.keys import generate_key_material


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="time to spend timing")
    args = parser.parse_args()
    codec = FixedPointCodec(frac_bits=15, int_bits=6, scalar_bits=12, max_terms=16)
    owner = PaillierScheme(generate_key_material(2048), codec=codec)
    peer = owner.public()
    rng = np.random.default_rng(0)
    offer = owner.to_bytes(owner.encrypt(rng.uniform(-1, 1, 150)))
    w = rng.uniform(0, 1, 150)
    noise = np.ldexp(rng.integers(-(2**12), 2**12, 150).astype(float), -15)

    def reply() -> bytes:
        c = peer.from_bytes(offer)
        return peer.to_bytes(peer.scale_shift(c, 37, -w, noise, k_max=63))

    got = owner.decrypt(peer.from_bytes(reply()))
    want = 37 * (owner.decrypt(peer.from_bytes(offer)) - w) + noise
    assert np.abs(got - want).max() <= 38 * 2.0**-15  # W_j's and the offer's rounding
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        reply()
        n += 1
    print(f"{(time.perf_counter() - t0) / n * 1e6:.1f}")


if __name__ == "__main__":
    main()
