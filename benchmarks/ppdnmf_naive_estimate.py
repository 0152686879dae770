"""Estimate ppdnmf's run time with naive per-value phe, from one measured round.

Runs, with python-paillier used the way a straightforward implementation would
(one value per ciphertext, ``EncryptedNumber`` arithmetic, phe's own
re-randomization), exactly one agent's share of one ppdnmf round for a given
W size and degree: encrypt -W_i, and for each neighbour add W_j, multiply by a
weight and re-randomize, then weight, sum and decrypt. The measured seconds
are multiplied by the number of agent-rounds of the scenario. An estimate,
not a run: the full naive run would take days.

    python benchmarks/ppdnmf_naive_estimate.py --values 150 --degree 3 \
        --agents 10 --rounds 3000 --key-bits 2048
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from phe import paillier


def one_agent_round(values: int, degree: int, key_bits: int, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    pub, priv = paillier.generate_paillier_keypair(n_length=key_bits)
    W_i = rng.uniform(0, 2, values)
    t0 = time.perf_counter()
    offer = [pub.encrypt(float(-x), precision=2**-15) for x in W_i]
    t_encrypt = time.perf_counter() - t0
    t0 = time.perf_counter()
    replies = []
    for _ in range(degree):
        W_j = rng.uniform(0, 2, values)
        a = int(rng.integers(32, 64))
        reply = []
        for c, w in zip(offer, W_j, strict=True):
            r = (c + float(w)) * a
            r.obfuscate()  # phe's re-randomization: a full r^n
            reply.append(r)
        replies.append(reply)
    t_reply = time.perf_counter() - t0
    t0 = time.perf_counter()
    weights = [int(rng.integers(32, 64)) for _ in range(degree)]
    total = [
        sum(rep[k] * w for rep, w in zip(replies, weights, strict=True)) for k in range(values)
    ]
    _ = [priv.decrypt(c) for c in total]
    t_decrypt = time.perf_counter() - t0
    return {
        "encrypt_s": t_encrypt,
        "replies_s": t_reply,
        "combine_decrypt_s": t_decrypt,
        "agent_round_s": t_encrypt + t_reply + t_decrypt,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--values", type=int, default=150, help="entries of W (m x r)")
    parser.add_argument("--degree", type=float, default=3.0, help="average graph degree")
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3000, help="outer x inner iterations")
    parser.add_argument("--key-bits", type=int, default=2048)
    args = parser.parse_args()
    degree = max(1, round(args.degree))
    measured = one_agent_round(args.values, degree, args.key_bits)
    total = measured["agent_round_s"] * args.agents * args.rounds
    print(
        json.dumps(
            {
                **vars(args),
                **measured,
                "estimated_total_s": total,
                "estimated_total_h": total / 3600,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
