"""Produce the crypto speed table: ``python benchmarks/crypto.py [--quick] [--out DIR]``.

A thin wrapper around ``cipherfact bench crypto`` so that every BENCHMARKS.md
table comes from a script in this folder; all logic lives in
``cipherfact.bench.crypto``.
"""

from __future__ import annotations

import argparse
import sys

from cipherfact.bench.crypto import add_arguments, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="benchmarks/crypto.py", description=__doc__)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
