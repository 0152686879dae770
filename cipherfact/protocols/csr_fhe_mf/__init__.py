"""csr_fhe_mf: matrix factorization on CSR ratings under CKKS (users, RS, CSP).

``roles``: the parties' state machines; ``layout``: how CSR values fill CKKS
slots (and the dummies that hide the pattern); the app that runs them is the
ratings protocols' shared one (``protocols/ratings/app.py``).
"""
