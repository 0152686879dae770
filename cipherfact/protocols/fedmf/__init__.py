"""FedMF (Chai et al.): the Paillier-encrypted federated MF baseline.

``roles``: the server and the users; ``keys``: how a deployed key leader hands
the users' shared secret key to the others through the server; the app that
runs them is the ratings protocols' shared one (``protocols/ratings/app.py``).
"""
