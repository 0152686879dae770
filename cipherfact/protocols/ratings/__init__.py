"""What the two ratings protocols (csr_fhe_mf, FedMF) share: their scenario
schema (``scenario``), job preparation, plaintext twins and summaries
(``job``), and the app that runs either on a grid (``app``)."""
