"""Run the solver benchmark (same as ``cipherfact bench solvers``) from a checkout.

    python benchmarks/solvers.py [--quick] [--threads N] [--json] [--out DIR]

The table in benchmarks/results/solvers.md was produced by this script; see
that file for the exact command and machine.
"""

from __future__ import annotations

import argparse

from cipherfact.bench.solvers import add_arguments, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="benchmarks/solvers.py", description=__doc__)
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
