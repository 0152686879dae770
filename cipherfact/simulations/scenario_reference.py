"""The scenario field reference and the ``summary.json`` glossary, kept next to the schema.

``docs/scenario-reference.md`` is generated from this module and the scenario
dataclasses (``cipherfact scenario reference``): the field names, types and
defaults come from the dataclasses themselves, the ranges and meanings from
``FIELD_DOCS``. A test regenerates the page and checks that every dataclass
field is described, so the page cannot drift from the code.

``scenario_toml`` prints a resolved scenario as TOML that ``load_scenario``
reads back to the same scenario (``cipherfact scenario show``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from typing import Any

from cipherfact.registry import PROTOCOLS
from cipherfact.simulations.scenario import scenario_type, unused_generator_fields

__all__ = ["FIELD_DOCS", "SUMMARY_DOCS", "reference_markdown", "scenario_fields", "scenario_toml"]

# dataclass name -> field -> (allowed values or range, meaning)
FIELD_DOCS: dict[str, dict[str, tuple[str, str]]] = {
    "PPDNMFScenario": {
        "protocol": (
            "`ppdnmf`",
            "Selects the protocol, and so this table of fields; a file without it is ppdnmf.",
        ),
        "name": (
            "any string",
            "Label in the default output folder and plot titles; defaults to "
            "the file name or the bundled name.",
        ),
        "seed": (
            "0 to 2**63 - 1",
            "Seeds the synthetic data, the graph, the column partition, "
            "the initial factors and the private weights. Keys and mask secrets always come "
            "from the OS. Same seed and fields: the same numbers on every backend.",
        ),
        "n_agents": (
            "2 to 4096; secagg needs >= 3",
            "Agents the columns of X are split over (one private block X_i each).",
        ),
        "rank": (
            "1 to min(1024, rows, cols)",
            "Rank r of the factorization X ~ W H (W: m x r shared, H_i: r x n_i private).",
        ),
        "outer_iters": (
            "1 to 10**7 / inner_iters",
            "Block-coordinate-descent iterations: each "
            "agent updates its H_i locally, then `inner_iters` ADMM rounds on W.",
        ),
        "inner_iters": (
            ">= 1; outer_iters * inner_iters <= 10**7",
            "Decentralized ADMM rounds per outer iteration, one exchange between neighbours each.",
        ),
        "exchange": (
            "`secagg`, `pairwise`",
            "How agent i gets its neighbours' W_j: secagg (sum "
            "only, pairwise masks; needs >= 2 neighbours per agent) or pairwise (the "
            "paper's construction; reveals more per neighbour, see "
            "docs/privacy-ppdnmf.md).",
        ),
        "topology": ("-", "The communication graph (`[topology]` below)."),
        "data": ("-", "Where X comes from (`[data]` below)."),
        "crypto": ("-", "Encryption and fixed-point codec (`[crypto]` below)."),
        "admm": ("-", "ADMM parameters (`[admm]` below)."),
        "solver": ("-", "Local solver (`[solver]` below)."),
    },
    "TopologySpec": {
        "kind": (
            "`ring`, `complete`, `erdos_renyi`, `geometric`, `small_world`",
            "Graph family; a random kind is redrawn (up to 100 times) until it is "
            "connected, then `min_degree` adds edges where needed.",
        ),
        "degree": (
            "(0, n_agents - 1]; random kinds only",
            "Target average number of "
            "neighbours. Unset: 3.0 for the random kinds unless `p`, `radius` or `k` is "
            "given; ring and complete take no degree.",
        ),
        "p": ("(0, 1]; erdos_renyi", "Edge probability, instead of `degree`."),
        "radius": (
            "(0, sqrt(2)]; geometric",
            "Connection radius of agents placed uniformly in the unit square, instead of `degree`.",
        ),
        "k": (
            "even, 2 <= k < n_agents; small_world",
            "Neighbours on the ring lattice before rewiring (Watts-Strogatz), instead of `degree`.",
        ),
        "rewire": ("[0, 1]; small_world", "Rewiring probability (unset: 0.1)."),
        "min_degree": (
            "1 to n_agents - 1",
            "Every agent gets at least this many neighbours "
            "(edges are added where needed). secagg needs 2.",
        ),
    },
    "DataSpec": {
        "kind": (
            "`synthetic`, `digits`, `file`",
            "synthetic: the paper's generator "
            "(exponential factors plus noise); digits: scikit-learn's digits as 64 x 1797 "
            "(pixels x images) in [0, 1]; file: `path`. Setting `path` implies `file`.",
        ),
        "rows": (
            "1 to 2**27; rows * cols <= 2**27",
            "Rows m of the generated X (synthetic "
            "only; a `--set` of it with file or digits data is refused).",
        ),
        "cols": (
            "1 to 2**27",
            "Columns n of the generated X, split over the agents (synthetic only).",
        ),
        "snr_db": (
            "[-300, 300] dB, or unset (no noise)",
            "Signal-to-noise ratio of the generated X (synthetic only).",
        ),
        "path": (
            "a `.npy` or `.csv` file",
            "Your matrix: nonnegative, finite, at most 1e100, "
            "not all zero; a CSV may have one header line. A file that looks like ratings "
            "(user/item/rating columns) is refused: use csr_fhe_mf or fedmf for those.",
        ),
        "max_cols": (">= 1, or unset", "Use only the first `max_cols` columns (digits, file)."),
        "agent_cols": (
            "n_agents ints >= 1 summing to the columns, or unset",
            "Columns per agent, e.g. `[4, 40, ...]`; unset: an even split.",
        ),
    },
    "CryptoSpec": {
        "scheme": (
            "`paillier`, `none` (alias `plain`)",
            "paillier: every share is also "
            "encrypted under its receiver's key; none: no encryption (secagg's masks "
            "still hide each share; pairwise then has no privacy). Same factors either "
            "way.",
        ),
        "key_bits": (
            "256 to 16384; < 2048 needs `insecure_test_keys`",
            "Paillier modulus size of every agent's key (paillier only).",
        ),
        "insecure_test_keys": ("bool", "Allow keys below 2048 bits (tests only)."),
        "frac_bits": (
            "0 to 60",
            "Fraction bits of the fixed-point codec: values travel as "
            "integers of x * 2**frac_bits.",
        ),
        "int_bits": (
            "0 to 60; int_bits + frac_bits >= 1",
            "Integer bits of the codec: every "
            "exchanged W entry must satisfy |w| < 2**int_bits, else the run stops "
            "naming the agent.",
        ),
        "processes": (
            "1 to 1024",
            "Worker processes of one shared Paillier decryption pool (in-memory backend).",
        ),
        "djn_public": (
            "bool",
            "Short-exponent (Damgard-Jurik-Nielsen) randomness also when "
            "re-randomizing under a neighbour's key: about 30x faster, rests on the "
            "DJN assumption.",
        ),
        "fast_path": (
            "`auto`, `ifma`, `gmpy2`",
            "Bulk modular exponentiation: auto uses "
            "Intel's multi-buffer library (`pip install cipherfact[fast]`, AVX-512 "
            "IFMA CPUs) where it wins, else gmpy2. Same numbers either way.",
        ),
        "prefetch": (
            "`auto`, `on`, `off`",
            "A worker process computes encryption randomness ahead of use "
            "(BENCHMARKS.md, issue 13). In memory, auto: when the process may use a "
            "second core. On Ray, one worker per actor: at the actor's priority when "
            "the actor reserves two CPUs (the default with Paillier), at nice 19 when "
            "it reserves one, so that it mostly uses the time the actors wait for "
            "messages (auto: where the actor's key tables fit the worker's 96 MB "
            "budget; on: always, serving keys up to it). "
            "off on a heavily loaded machine, where it costs more than it saves. Same "
            "numbers either way.",
        ),
    },
    "AdmmSpec": {
        "penalty": (
            "(0, 1e100]",
            "ADMM penalty c: d_i = c (sum_j W_j - deg_i W_i). Smaller "
            "suits data with small values (ppdnmf-digits uses 1.0).",
        ),
        "weight_bits": (
            "1 to 16; pairwise only",
            "Private weights a_ij drawn from [2**(b-1), 2**b).",
        ),
        "reply_noise_bits": (
            "1 to 24; frac_bits + it <= 60; pairwise only",
            "Noise added to "
            "each reply, amplitude 2**(weight_bits + reply_noise_bits) at a "
            "finer precision (hides the private weight).",
        ),
    },
    "SolverSpec": {
        "backend": (
            "`numpy`, `torch`",
            "Library of the local updates (torch is optional: `pip install torch`).",
        ),
        "device": (
            "`cpu`, `cuda`, `auto`",
            "Device of the torch backend; cuda needs a CUDA "
            "build of PyTorch and a GPU; numpy is CPU-only.",
        ),
        "rule": ("`hals`, `mu`", "Local H update: HALS or multiplicative updates."),
        "h_sweeps": ("1 to 1000", "Local H sweeps per outer iteration."),
    },
    "CsrFheMFScenario": {
        "protocol": ("`csr_fhe_mf`", "Selects the protocol."),
        "name": ("any string", "Label in the default output folder and plot titles."),
        "seed": (
            "0 to 2**63 - 1",
            "Seeds the synthetic ratings, the train/test split and the "
            "(public) initial factors; CKKS keys, masks and dummies come from the OS.",
        ),
        "n_factors": ("1 to 1024", "Latent factors f: U is users x f, V items x f."),
        "epochs": ("1 to 100000", "Full-batch gradient epochs, one RS-CSP round trip each."),
        "lr": (
            "(0, 1e100]",
            "Step size of the gradient step the CSP applies each epoch. Too "
            "large is refused up front (the plaintext twin is run before any key).",
        ),
        "reg": ("[0, 1e100]", "L2 regularization of U and V."),
        "init_scale": (
            "(0, 1e100]",
            "Standard deviation of the Gaussian initial factors (public).",
        ),
        "rating_offset": (
            "[-1e6, 1e6]",
            "Subtracted from every rating before training and "
            "added to every prediction; |rating - offset| <= "
            "crypto.value_bound.",
        ),
        "item_norm": (
            "[0, 1e100]",
            "Divisor of each item's gradient step: 0 divides by "
            "the item's rating count (with hide_pattern by the largest item's count, "
            "which is then public); > 0 by this constant.",
        ),
        "data": ("-", "The ratings (`[data]`, shared with fedmf, below)."),
        "crypto": ("-", "CKKS and masking (`[crypto]` below)."),
    },
    "RatingsSpec": {
        "n_users": (">= 1; n_users * n_items <= 2**27", "Users of the synthetic generator."),
        "n_items": (">= 1", "Items of the synthetic generator."),
        "rank": ("1 to 1024", "Rank of the synthetic ratings' signal."),
        "density": (
            "(0, 1]",
            "Fraction of (user, item) pairs rated (synthetic; item "
            "popularity follows a power law).",
        ),
        "noise": ("[0, 1e100]", "Standard deviation of the synthetic ratings' noise."),
        "scale_low": ("[-1e6, 1e6], < scale_high", "Lowest synthetic rating."),
        "scale_high": ("[-1e6, 1e6]", "Highest synthetic rating."),
        "path": (
            "a ratings file",
            "Your ratings: a MovieLens ratings.csv, an ml-100k u.data, or "
            "any CSV with a header (name its columns with the `*_col` fields). Split by "
            "`split`. A `--set` of a synthetic field with it is refused.",
        ),
        "format": (
            "`auto`, `movielens_csv`, `ml100k`, `csv`",
            "File format; auto: ml100k for "
            "tab-separated lines, movielens_csv for a userId,movieId,rating header, "
            "else csv.",
        ),
        "user_col": (
            "a header name, or empty",
            "User id column of a CSV (empty: `user`, or "
            "`userId` for MovieLens). Ids may be any strings.",
        ),
        "item_col": ("a header name, or empty", "Item id column (empty: `item`, or `movieId`)."),
        "rating_col": ("a header name, or empty", "Rating column (empty: `rating`)."),
        "timestamp_col": (
            "a header name, or empty",
            'Timestamp column (needed by `split = "last_k"`; MovieLens: `timestamp`).',
        ),
        "split": (
            "`random`, `last_k`",
            "random: `test_fraction` of the ratings go to the "
            "test set; last_k: each user's last `last_k` ratings by timestamp.",
        ),
        "test_fraction": ("(0, 1)", 'Test share of the ratings with `split = "random"`.'),
        "last_k": (">= 1", 'Test ratings per user with `split = "last_k"`.'),
        "train": (
            "a ratings file, with `test`",
            "Explicit training file instead of `path`; "
            "test ratings whose user or item is not in it are dropped "
            "(`dropped_test_ratings`).",
        ),
        "test": ("a ratings file, with `train`", "Explicit test file."),
        "generator": (
            "`lowrank`, `movielens`",
            "Synthetic generator: `lowrank` (users alike, power-law items) or "
            "`movielens` (ml-latest-small's shape: heavy-tailed users with >= 20 "
            "ratings, power-law items, half stars; `density` sets the number of ratings).",
        ),
    },
    "CsrCryptoSpec": {
        "params": (
            "`auto` or a named CKKS set (`n4096-depth1`, `n8192-depth2`, "
            "`n8192-depth3`, `n16384-depth4`, `n16384-depth7`, `n32768-depth16`)",
            "CKKS parameters; auto: the cheapest set that fits the depth, the masked "
            "values and `max_error` (a named set is checked the same way).",
        ),
        "mask_bits": (
            "0 to 60",
            "Statistical hiding of RS's masks on the values the CSP "
            "decrypts: each value is hidden with statistical distance <= "
            "2**-mask_bits.",
        ),
        "value_bound": (
            "(0, 1e100]",
            "Bound on |rating - offset| and on the gradients the "
            "masks hide; the CSP stops a run whose masked values exceed it "
            "(raise it, or lower lr).",
        ),
        "factor_mask_bits": (
            "0 to 60",
            "Statistical hiding bits of the masks on the factors the CSP returns.",
        ),
        "factor_bound": ("(0, 1e100]", "Bound on |U| and |V| entries, for those masks."),
        "max_error": (
            "(0, 1e100]",
            "Largest CKKS decoding error the planner accepts (reported as `predicted_error`).",
        ),
        "hide_pattern": (
            "bool",
            "Pad every user to `pad_to` entries with encrypted-zero "
            "dummies so RS cannot tell which items (or how many) a user rated; "
            "one more multiplicative level.",
        ),
        "pad_to": (
            ">= 0",
            "Entries per user with `hide_pattern`; 0: the largest user's "
            "count (which is then public).",
        ),
    },
    "FedMFScenario": {
        "protocol": ("`fedmf`", "Selects the protocol (Chai et al.'s FedMF baseline)."),
        "name": ("any string", "Label in the default output folder and plot titles."),
        "seed": (
            "0 to 2**63 - 1",
            "Seeds the synthetic ratings and the split; the key comes from the OS.",
        ),
        "n_factors": ("1 to 1024", "Latent factors per user and item."),
        "epochs": (
            "1 to 100000, within the codec's additions",
            "Passes over the users; each "
            "user downloads Enc(V) and uploads encrypted gradients once per epoch.",
        ),
        "mode": (
            "`full`, `part`",
            "full: every user uploads a gradient for every item (zero "
            "for unrated ones, hiding which it rated); part: only rated items' blocks "
            "(faster, reveals them).",
        ),
        "lr": ("(0, 1e100]", "Learning rate of the users' SGD steps."),
        "reg_u": ("[0, 1e100]", "L2 regularization of the user vectors."),
        "reg_v": ("[0, 1e100]", "L2 regularization of the item vectors."),
        "init_value": (
            "[-1e6, 1e6]",
            "Every initial factor entry (the original's constant initialization).",
        ),
        "rating_offset": (
            "[-1e6, 1e6]",
            "Subtracted from every rating before training, added "
            "to predictions; |rating - offset| <= 2**(crypto.int_bits - 1).",
        ),
        "data": ("-", "The ratings (`[data]`, as for csr_fhe_mf)."),
        "crypto": ("-", "Paillier (`[crypto]` below)."),
    },
    "FedMFCryptoSpec": {
        "scheme": (
            "`paillier`, `plain`",
            "paillier: V stays encrypted at the server; plain: "
            "the same fixed-point arithmetic unencrypted (the twin, for timing).",
        ),
        "key_bits": (
            "256 to 16384; < 2048 needs `insecure_test_keys`",
            "Paillier modulus size of the users' shared key.",
        ),
        "insecure_test_keys": ("bool", "Allow keys below 2048 bits (tests only)."),
        "naive": (
            "bool",
            "true: one value per ciphertext, as the original (phe); false: "
            "packed, many items per ciphertext.",
        ),
        "frac_bits": ("0 to 60", "Fraction bits of the fixed-point codec."),
        "int_bits": (
            "0 to 60; int_bits + frac_bits >= 1",
            "Integer bits of the codec; |rating - offset| must be <= 2**(int_bits - 1).",
        ),
    },
}

# summary.json key -> (protocols, meaning); "all" = every protocol
SUMMARY_DOCS: dict[str, tuple[str, str]] = {
    "protocol": ("all", "ppdnmf, csr_fhe_mf or fedmf."),
    "scenario": ("all", "The resolved scenario, every field (as `cipherfact scenario show`)."),
    "backend": ("all", "inmemory or ray."),
    "status": (
        "all",
        "running, completed, or `failed: <error>` (the summary of an "
        "interrupted run is still written).",
    ),
    "machine": ("all", "CPU, cores, Python and platform of the run."),
    "versions": ("all", "Versions of cipherfact and its main dependencies."),
    "wall_s": ("all", "Seconds the whole run took (keys, setup, iterations)."),
    "bytes_setup": (
        "all",
        "Bytes of the setup messages (public keys, uploads before the first iteration).",
    ),
    "bytes_total": ("all", "Bytes of every message between parties, setup included."),
    "traffic": ("all", "Bytes and messages by edge (`i->j`), by stage and in total."),
    "ray": ("all, ray backend", "The Ray pool: actors, their CPUs/GPUs and agent placement."),
    "scheme": ("ppdnmf, fedmf", "`crypto.scheme` of the run."),
    "exchange": ("ppdnmf", "`exchange` of the run."),
    "n_agents": ("ppdnmf", "Agents."),
    "data_shape": (
        "ppdnmf",
        "[rows, cols] of the X actually factorized (from the file when `data.path` is set).",
    ),
    "graph": ("ppdnmf", "The communication graph: edges and average degree."),
    "slot_bits": ("ppdnmf, fedmf", "Bits per packed fixed-point slot."),
    "outer_iters_completed": (
        "ppdnmf",
        "Outer iterations finished (all of them unless the run failed or was interrupted).",
    ),
    "rel_error": (
        "ppdnmf",
        "sqrt(sum_i ||X_i - W_i H_i||^2) / ||X||: each agent's block against its own W_i.",
    ),
    "centralized_rel_error": (
        "ppdnmf",
        "Relative error of centralized NMF (one party holding "
        "all of X) from the same start, same number of iterations.",
    ),
    "decentralized_plain_rel_error": (
        "ppdnmf",
        "Relative error of the same decentralized "
        "algorithm in plain floating point (no codec, no "
        "crypto).",
    ),
    "rel_error_gap": (
        "ppdnmf",
        "(rel_error - centralized_rel_error) / centralized_rel_error: "
        "the price of decentralization and fixed point (design target: <= "
        "0.01 at the paper's iteration counts).",
    ),
    "consensus_spread": (
        "ppdnmf",
        "max_i ||W_i - mean W||_F / ||mean W||_F at the end: 0 at exact consensus.",
    ),
    "protocol_s": ("ppdnmf", "Seconds inside the outer iterations (wall_s less keys and setup)."),
    "seconds": (
        "ppdnmf",
        "protocol_s split into crypto, compute (local solver) and transport (the rest).",
    ),
    "messages_total": ("ppdnmf", "Messages between agents, setup included."),
    "traffic_per_agent": ("ppdnmf", "Bytes and messages each agent sent and received."),
    "network": (
        "all, with --latency-ms/--bandwidth-mbps/--loss",
        "The emulated network model, its setup seconds and the retransmissions drawn.",
    ),
    "simulated_network_s": (
        "all, with network emulation",
        "Seconds the messages would "
        "spend on that network (setup included); no message is really "
        "delayed.",
    ),
    "estimated_total_s": (
        "all, with network emulation",
        "Measured protocol seconds (ppdnmf: protocol_s; csr_fhe_mf, fedmf: setup_s plus the "
        "epochs' wall_s) + simulated_network_s: the run's expected duration on that network.",
    ),
    "model": (
        "csr_fhe_mf, fedmf",
        "`model.npz` in the results folder: user factors U, item factors V, their ids in the "
        "data, the rating offset and the training pattern; `cipherfact recommend` / `predict` "
        "and `cipherfact.RatingsModel` use it. Written after the last epoch, or after the last "
        "completed one when a run fails.",
    ),
    "n_users": (
        "csr_fhe_mf, fedmf",
        "Users in the training data (from the file when `data.path` is set).",
    ),
    "n_items": ("csr_fhe_mf, fedmf", "Items in the training data."),
    "train_ratings": ("csr_fhe_mf, fedmf", "Ratings in the training set."),
    "test_ratings": ("csr_fhe_mf, fedmf", "Ratings in the test set."),
    "dropped_test_ratings": (
        "csr_fhe_mf, fedmf",
        "Test ratings dropped because their user or item has no training rating.",
    ),
    "epochs": ("csr_fhe_mf, fedmf", "Epochs finished."),
    "train_rmse": (
        "csr_fhe_mf, fedmf",
        "RMSE of the protocol's factors on the training ratings (offset added back).",
    ),
    "test_rmse": ("csr_fhe_mf, fedmf", "RMSE of the protocol's factors on the test ratings."),
    "plain_train_rmse": (
        "csr_fhe_mf, fedmf",
        "Training RMSE of the plaintext twin (the same algorithm without encryption).",
    ),
    "plain_test_rmse": (
        "csr_fhe_mf, fedmf",
        "Test RMSE of the plaintext twin; differs from test_rmse by the encryption's noise only.",
    ),
    "mf_reference_test_rmse": (
        "csr_fhe_mf",
        "Test RMSE of a centralized plaintext ALS with "
        "biases (10 epochs, same rank): what the data allow, for "
        "comparison; absent when n_factors > min(users, items).",
    ),
    "setup_s": ("csr_fhe_mf, fedmf", "Seconds before the first epoch (keys, uploads)."),
    "seconds_per_epoch": ("csr_fhe_mf, fedmf", "Mean wall seconds per epoch."),
    "bytes_per_epoch": ("csr_fhe_mf, fedmf", "Mean bytes per epoch."),
    "bytes_per_party": (
        "csr_fhe_mf, fedmf",
        "Bytes sent and received per party group (rs, csp, users; server, users).",
    ),
    "seconds_per_party": ("csr_fhe_mf, fedmf", "Compute seconds per party group."),
    "ckks_params": ("csr_fhe_mf", "Name of the CKKS parameter set used."),
    "ckks": ("csr_fhe_mf", "That set: ring degree, modulus chain, scale, slots, fingerprint."),
    "depth": ("csr_fhe_mf", "Multiplicative depth per epoch (2, or 3 with hide_pattern)."),
    "mask_bits": ("csr_fhe_mf", "`crypto.mask_bits` of the run."),
    "factor_mask_bits": ("csr_fhe_mf", "`crypto.factor_mask_bits` of the run."),
    "predicted_error": (
        "csr_fhe_mf",
        "The planner's bound on the CKKS decoding error of a "
        "masked value (must be <= crypto.max_error).",
    ),
    "hide_pattern": ("csr_fhe_mf", "`crypto.hide_pattern` of the run."),
    "pad_to": ("csr_fhe_mf", "Entries per user with hide_pattern (0 without)."),
    "slots_used": ("csr_fhe_mf", "CKKS slots holding ratings (dummies included)."),
    "real_ratings": ("csr_fhe_mf", "Training ratings among those slots."),
    "chunks": (
        "csr_fhe_mf",
        "Ciphertext chunks per factor dimension (slots_used / slot count, rounded up).",
    ),
    "mode": ("fedmf", "`mode` of the run."),
    "naive": ("fedmf", "`crypto.naive` of the run."),
    "key_bits": ("fedmf", "`crypto.key_bits` of the run."),
    "items_per_ciphertext": ("fedmf", "Items packed into one Paillier ciphertext (1 when naive)."),
}


def _value(value: Any) -> str:
    """A TOML literal (strings JSON-quoted, which TOML basic strings accept)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML literal for {value!r}")


def scenario_toml(scenario: Any, header: str = "") -> str:
    """Every field of a resolved scenario as TOML; unset (None) fields as comments."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    tables: list[tuple[str, Any]] = []
    for f in dataclasses.fields(scenario):
        value = getattr(scenario, f.name)
        if dataclasses.is_dataclass(value):
            tables.append((f.name, value))
        elif value is None:
            lines.append(f"# {f.name} is unset")
        else:
            lines.append(f"{f.name} = {_value(value)}")
    unused = unused_generator_fields(scenario)
    for name, table in tables:
        lines += ["", f"[{name}]"]
        for f in dataclasses.fields(table):
            value = getattr(table, f.name)
            line = f"# {f.name} is unset" if value is None else f"{f.name} = {_value(value)}"
            if name == "data" and f.name in unused:
                line += f"  # unused: {unused[f.name]}"
            lines.append(line)
    return "\n".join(lines) + "\n"


def scenario_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, type, dataclasses.Field]]:
    """(dotted name, owning dataclass, field) of every field, tables included."""
    for f in dataclasses.fields(cls):
        yield f"{prefix}{f.name}", cls, f
        default = _default(f)
        if dataclasses.is_dataclass(default):
            yield from scenario_fields(type(default), f"{prefix}{f.name}.")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _default_text(f: dataclasses.Field) -> str:
    default = _default(f)
    if dataclasses.is_dataclass(default):
        return "-"
    if default is None:
        return "unset"
    if default == "":
        return '`""`'
    return f"`{_value(default)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference_markdown() -> str:
    """The page ``docs/scenario-reference.md`` (``cipherfact scenario reference``)."""
    from cipherfact.simulations.scenario import bundled_scenarios, load_scenario

    bundled: dict[str, list[str]] = {}
    for name in bundled_scenarios():
        bundled.setdefault(load_scenario(name).protocol, []).append(f"`{name}`")
    out = [
        "# Scenario fields and summary.json",
        "",
        "<!-- Generated by `cipherfact scenario reference` from the scenario dataclasses",
        "     and cipherfact/simulations/scenario_reference.py; edit those, not this page. -->",
        "",
        "A scenario is a TOML file (or a bundled name) plus `--set key=value` overrides; "
        "`protocol` selects one of the tables below. Unknown fields and wrongly typed values "
        "are errors, and every range is checked before any data is made or key generated. "
        "The **default** is what a field gets when neither the file nor `--set` gives it; "
        "the bundled scenarios set their own values: `cipherfact scenario list` names them "
        "and `cipherfact scenario show NAME [--set k=v ...]` prints one fully resolved, as "
        "TOML that `cipherfact simulate` reads back. Nested fields are written `table.field` "
        "with `--set` (`--set crypto.key_bits=3072`) and under `[table]` in a file. "
        "String values in `--set` may be quoted (`--set exchange='pairwise'`) or not.",
        "",
    ]
    for protocol in PROTOCOLS:
        cls = scenario_type(protocol)
        out += [f"## {protocol}", ""]
        if protocol in bundled:
            out += [f"Bundled: {', '.join(bundled[protocol])}.", ""]
        out += ["| field | type | default | allowed | meaning |", "|---|---|---|---|---|"]
        for dotted, owner, f in scenario_fields(cls):
            allowed, meaning = FIELD_DOCS[owner.__name__][f.name]
            table = dataclasses.is_dataclass(_default(f))
            type_text = "table" if table else f"`{f.type}`"
            out.append(
                f"| `{dotted}` | {_cell(type_text)} | {_cell(_default_text(f))} | "
                f"{_cell(allowed)} | {_cell(meaning)} |"
            )
        out.append("")
    out += [
        "## summary.json",
        "",
        "Every run writes `summary.json` into its results folder (next to `metrics.jsonl`, "
        "one line per outer iteration or epoch, and the plots). Top-level fields:",
        "",
        "| field | protocols | meaning |",
        "|---|---|---|",
    ]
    for key, (protocols, meaning) in SUMMARY_DOCS.items():
        out.append(f"| `{key}` | {_cell(protocols)} | {_cell(meaning)} |")
    return "\n".join(out) + "\n"
