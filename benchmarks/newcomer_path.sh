#!/bin/bash
# A newcomer's path, timed: fresh clone -> fresh venv -> the README's install ->
# the quickstart's complete results folder. Usage: benchmarks/newcomer_path.sh [REPO] [WORKDIR]
set -euo pipefail
repo=${1:-$(git -C "$(dirname "$0")" rev-parse --show-toplevel)}
work=${2:-$(mktemp -d)}
cd "$work"
s=$(date +%s.%N)
git clone -q "$repo" clone
cd clone
python -m venv ../venv
# shellcheck disable=SC1091
. ../venv/bin/activate
t0=$(date +%s.%N)
pip install -q -e ".[dev]" > ../install.log 2>&1
t1=$(date +%s.%N)
cipherfact simulate ppdnmf-quickstart --out runs/quick > ../quick.log 2>&1
t2=$(date +%s.%N)
ls runs/quick
echo "clone+venv $(echo "$t0 - $s" | bc) s, install $(echo "$t1 - $t0" | bc) s," \
  "quickstart $(echo "$t2 - $t1" | bc) s, total $(echo "$t2 - $s" | bc) s"
uptime
