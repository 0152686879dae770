"""ppdnmf: privacy-preserving decentralized NMF over a graph (one agent's role).

Agent i holds X_i (m x n_i), its private H_i (r x n_i) and a local copy W_i of
the shared left factor. Block coordinate descent alternates a local H_i update
with S rounds of decentralized linearized ADMM (DLM, Ling et al. 2015) on the
W_i, projected to W_i >= 0::

    d_i      = sum_j rho_ij (W_j - W_i)                  (secure exchange)
    alpha_i += -d_i                                       (dual, skipped on the first round)
    W_i      = max(0, W_i - tau_i (grad f_i(W_i) + alpha_i - d_i))

The step tau_i = 1 / (L_i + 2 deg_i c) uses only what i knows: L_i =
||H_i H_i^T||_2 and the public bound c on rho_ij.

Two exchanges produce d_i; what a neighbour learns differs:

* ``secagg`` (``secagg.py``, the default of the bundled scenarios): i learns
  only sum_{j in N_i} W_j per round; rho_ij = c.
* ``pairwise`` (``pairwise.py``, the paper's construction with noised
  replies): i learns, per neighbour and round, the direction of W_j - W_i and
  its size within a factor of 2, up to noise.

``make_agent`` builds the right role from the config.
"""

from __future__ import annotations

from typing import Any

from cipherfact.agents.envelope import AgentId
from cipherfact.protocols.ppdnmf.agent import (
    PPDNMFAgent,
    PublicSchemeLoader,
    load_state_npz,
    save_state_npz,
)
from cipherfact.protocols.ppdnmf.config import (
    EXCHANGES,
    SETUP_ROUND,
    STAGE_KEY,
    STAGE_OFFER,
    STAGE_PEERS,
    STAGE_REPLY,
    STAGE_SHARE,
    OuterRecord,
    PPDNMFConfig,
    initial_h,
    reply_noise,
    round_weights,
)
from cipherfact.protocols.ppdnmf.pairwise import PairwiseAgent
from cipherfact.protocols.ppdnmf.secagg import SecAggAgent

__all__ = [
    "EXCHANGES",
    "SETUP_ROUND",
    "STAGES",
    "STAGE_KEY",
    "STAGE_OFFER",
    "STAGE_PEERS",
    "STAGE_REPLY",
    "STAGE_SHARE",
    "OuterRecord",
    "PPDNMFAgent",
    "PPDNMFConfig",
    "PairwiseAgent",
    "PublicSchemeLoader",
    "SecAggAgent",
    "initial_h",
    "load_state_npz",
    "make_agent",
    "reply_noise",
    "round_weights",
    "save_state_npz",
]

#: the stages each exchange sends
STAGES = {
    "pairwise": frozenset({STAGE_KEY, STAGE_OFFER, STAGE_REPLY}),
    "secagg": frozenset({STAGE_KEY, STAGE_PEERS, STAGE_SHARE}),
}


def make_agent(agent_id: AgentId, *args: Any, **kwargs: Any) -> PPDNMFAgent:
    """The role for ``config.exchange`` (same arguments as ``PPDNMFAgent``)."""
    config: PPDNMFConfig = args[2] if len(args) > 2 else kwargs["config"]
    cls = SecAggAgent if config.exchange == "secagg" else PairwiseAgent
    return cls(agent_id, *args, **kwargs)
